"""The `random` attribution baseline (token deletion lives in `jaxattr.data.batch`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxattr.data.batch import per_example_keys, token_mask
from jaxattr.models.config import EncoderConfig
from jaxattr.types import Array


class RandomAttribution(NamedTuple):
    scores: Array  # [B, T] uniform in [0, 1) on non-special valid tokens, 0 elsewhere


def random_attribution(params: Any, cfg: EncoderConfig, batch: Mapping[str, Any], *, key: Array,
                       target: Any = None) -> RandomAttribution:
    """Scores drawn uniformly at random per token (the IBA paper's "random" baseline).

    `key`: one PRNG key (split per example) or one key per example; model and target are ignored.
    """
    mask = jnp.asarray(batch["attention_mask"]).astype(bool)
    keys = per_example_keys(key, mask.shape[0])
    u = jax.vmap(lambda k: jax.random.uniform(k, mask.shape[1:]))(keys)
    return RandomAttribution(jnp.where(token_mask(batch), u, 0.0))


def _register() -> None:
    from jaxattr.attribution.registry import MethodSpec, register

    register(MethodSpec(name="random", fn=random_attribution,
                        description="uniform random scores (the degradation test's floor)"))


_register()
