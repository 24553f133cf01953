"""The batch contract shared by every layer above `data`.

A batch is a dict of [B, T] int arrays: `input_ids`, `attention_mask`, optionally `token_type_ids`,
`word_ids` (-1 on special tokens and padding, as `pad_batch` makes) and `special_tokens_mask`. Here:
which positions are special tokens (`special_mask`) and which are the real tokens every method scores
(`token_mask`), which class an attribution explains (`resolve_target`), and token deletion with the
gaps closed (LIME, the degradation test, comprehensiveness/sufficiency).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.errors import UserError
from jaxattr.types import Array


def special_mask(batch: Mapping[str, Any]) -> Array:
    """True on special tokens ([CLS], [SEP], ...) of valid positions.

    Uses `special_tokens_mask` if present, else `word_ids < 0` (`pad_batch` output), else the first and
    the last valid position.
    """
    mask = jnp.asarray(batch["attention_mask"]).astype(bool)
    if "special_tokens_mask" in batch:
        return jnp.asarray(batch["special_tokens_mask"]).astype(bool) & mask
    if "word_ids" in batch:
        return (jnp.asarray(batch["word_ids"]) < 0) & mask
    t = mask.shape[-1]
    last = jnp.sum(mask, axis=-1, keepdims=True) - 1
    pos = jnp.arange(t)
    return ((pos == 0) | (pos == last)) & mask


def token_mask(batch: Mapping[str, Any]) -> Array:
    """True on the real, non-special tokens: the positions an attribution scores and perturbs."""
    return jnp.asarray(batch["attention_mask"]).astype(bool) & ~special_mask(batch)


def resolve_target(target: Any, logits: Array, batch: Mapping[str, Any] | None = None, *,
                   num_classes: int | None = None) -> Array:
    """The class each row explains ([B] int32): `None`/"predicted" -> the argmax of `logits` [B, C];
    "gold" -> the batch's `label`/`labels`; an int or [B] ints -> as given. Given classes that are
    concrete (not traced) must lie in 0..num_classes-1 (default: `logits`' last axis)."""
    if target is None or (isinstance(target, str) and target == "predicted"):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if isinstance(target, str):
        if target != "gold":
            raise UserError(f"target {target!r}: use 'gold', 'predicted' or class indices")
        for k in ("label", "labels"):
            if batch is not None and k in batch:
                return jnp.asarray(batch[k]).astype(jnp.int32)
        raise UserError("target 'gold' needs labels in the batch (key 'label'); use target='predicted'")
    n = num_classes if num_classes is not None else (logits.shape[-1] if logits.ndim == 2 else None)
    if n is not None and not isinstance(target, jax.core.Tracer):
        given = np.asarray(target)
        if given.size and (given.min() < 0 or given.max() >= n):
            bad = int(given.min() if given.min() < 0 else given.max())
            raise UserError(f"target class {bad} is outside 0..{n - 1} (the model has {n} classes)")
    return jnp.broadcast_to(jnp.asarray(target).astype(jnp.int32), logits.shape[:1])


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


def per_example_keys(key: Array, b: int) -> Array:
    """One PRNG key per example ([B]): a [B] key array as given, or split from a single key (IBA, LIME, random)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key if key.ndim == 1 else jax.random.split(key, b)
    if key.ndim == 2:  # raw uint32 keys
        return key
    return jax.random.split(key, b)
