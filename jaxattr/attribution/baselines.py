"""The `random` attribution baseline and token deletion shared by LIME and the degradation test."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxattr.attribution.iba import _example_keys, special_mask
from jaxattr.models.config import EncoderConfig

Array = jax.Array


class RandomAttribution(NamedTuple):
    scores: Array  # [B, T] uniform in [0, 1) on non-special valid tokens, 0 elsewhere


def random_attribution(params: Any, cfg: EncoderConfig, batch: Mapping[str, Any], *, key: Array,
                       target: Any = None) -> RandomAttribution:
    """Scores drawn uniformly at random per token (the IBA paper's "random" baseline).

    `key`: one PRNG key (split per example) or one key per example; model and target are ignored.
    """
    mask = jnp.asarray(batch["attention_mask"]).astype(bool)
    keys = _example_keys(key, mask.shape[0])
    u = jax.vmap(lambda k: jax.random.uniform(k, mask.shape[1:]))(keys)
    return RandomAttribution(jnp.where(mask & ~special_mask(batch), u, 0.0))


def delete_tokens(batch: Mapping[str, Any], drop: Array, pad_id: int = 0) -> dict[str, Array]:
    """Delete the positions where `drop` ([..., T] bool) is True and close the gaps (tokens shift left).

    Returns `input_ids`, `attention_mask` (and `token_type_ids` if given) of the same shape: exactly the
    shorter input padded with `pad_id` to T. The one token-deletion routine (LIME, degradation,
    comprehensiveness/sufficiency).
    """
    mask = jnp.asarray(batch["attention_mask"]).astype(bool)
    keep = mask & ~drop
    order = jnp.argsort(~keep, axis=-1, stable=True)  # kept positions first, in their order
    n_keep = jnp.sum(keep, axis=-1, keepdims=True)
    new_mask = jnp.arange(mask.shape[-1]) < n_keep
    ids = jnp.take_along_axis(jnp.asarray(batch["input_ids"]), order, axis=-1)
    out = {"input_ids": jnp.where(new_mask, ids, pad_id).astype(jnp.int32),
           "attention_mask": new_mask.astype(jnp.int32)}
    tt = batch.get("token_type_ids")
    if tt is not None:
        out["token_type_ids"] = jnp.where(new_mask, jnp.take_along_axis(jnp.asarray(tt), order, axis=-1), 0)
    return out


def _register() -> None:
    from jaxattr.attribution.registry import MethodSpec, register

    register(MethodSpec(name="random", fn=random_attribution,
                        description="uniform random scores (the degradation test's floor)"))


_register()
