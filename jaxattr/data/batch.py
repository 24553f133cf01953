"""The batch contract shared by every layer above `data`: which positions are special tokens, and token
deletion with the gaps closed (LIME, the degradation test, comprehensiveness/sufficiency)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


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
