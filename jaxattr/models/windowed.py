"""Documents longer than the encoder's positions as one differentiable function: overlapping windows.

With `cfg.window = W` (and `cfg.window_stride = S`, `cfg.window_pool`), `encoder.forward` on an input longer
than W tokens runs this instead of truncating: the document `[CLS] c_1 .. c_m [SEP]` becomes windows
`[CLS] c_{kS+1} .. c_{kS+W-2} [SEP]` (k = 0, 1, ... until the last content token is covered; the same
windows as HF tokenizers' `stride` overflow), each through the unchanged encoder with its own positions
0..W-1, and the classifier's logits are pooled over the windows (mean, or max). The windows are *gathered*
from the document's word embeddings inside the function, so a gradient with respect to those embeddings
(IG, SIG, GradientShap, saliency) reaches every token through every window that contains it, and
completeness holds for the windowed model as for any other. Shapes are static: a [B, T] document always
gives `window_count(T, W, S)` windows; those past the end of a shorter document are masked out of the
pooling.

IBA, whose bottleneck sits inside the encoder, runs on the same windows (`window_index`) as ordinary
examples, one bottleneck per window, its raw capacities averaged over the overlaps (`attribution/iba.py`).

Not covered (a clear error, not a silent truncation): other interventions on hidden states or attention
(attention perturbation, AD-DROP's attention bias, attention maps, IG over the embedding output),
token-classification heads and sentence pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxattr.types import Array

POOLS = ("mean", "max")


def window_count(length: int, window: int, stride: int) -> int:
    """Windows a [.., length] document needs (static): content capacity length - 2 in windows of
    window - 2 content tokens, one every `stride`."""
    content, per = length - 2, window - 2
    return 1 + max(0, math.ceil((content - per) / stride))


def check_window(window: int, stride: int, max_length: int, pool: str = "mean") -> None:
    """ValueError unless 3 <= window <= max_length and 1 <= stride <= window - 2 (windows overlap or touch)."""
    if not 3 <= window <= max_length:
        raise ValueError(f"window {window} must be between 3 and the model's {max_length} positions")
    if not 1 <= stride <= window - 2:
        raise ValueError(f"stride {stride} must be between 1 and window - 2 = {window - 2} (no content token "
                         "may fall between two windows)")
    if pool not in POOLS:
        raise ValueError(f"window pooling {pool!r}: choose {' or '.join(POOLS)}")


def window_index(attention_mask: Array, window: int, stride: int) -> tuple[Array, Array, Array]:
    """(index [B, n, W] into the document's positions, window attention mask [B, n, W], valid [B, n]) for
    documents `[CLS] content [SEP] pad..` given by their [B, T] attention mask."""
    b, t = attention_mask.shape
    n, per = window_count(t, window, stride), window - 2
    real = attention_mask.astype(jnp.int32).sum(-1)  # [B] tokens incl. [CLS] and [SEP]
    content = jnp.maximum(real - 2, 0)[:, None]  # [B, 1]
    start = (jnp.arange(n) * stride)[None, :]  # [1, n]
    count = jnp.clip(content - start, 0, per)  # [B, n] content tokens in each window
    valid = (start == 0) | (start - stride + per < content)  # the previous window did not reach the end
    j = jnp.arange(window)[None, None, :]
    inside = (j >= 1) & (j <= count[..., None])
    sep = j == count[..., None] + 1
    index = jnp.where(inside, start[..., None] + j, jnp.where(sep, (real - 1)[:, None, None], 0))
    mask = (j <= count[..., None] + 1).astype(attention_mask.dtype)
    return index.astype(jnp.int32), mask, valid


def pool_logits(logits: Array, valid: Array, pool: str) -> Array:
    """[B, n, C] window logits -> [B, C] over the valid windows (mean or max)."""
    if pool == "max":
        return jnp.max(jnp.where(valid[..., None], logits, -jnp.inf), axis=1)
    weight = valid.astype(logits.dtype)[..., None]
    return (logits * weight).sum(1) / weight.sum(1)


def windowed_logits(run: Callable[..., Any], word_embeds: Array, attention_mask: Array,
                    token_type_ids: Array | None, *, window: int, stride: int, pool: str) -> Array:
    """Pooled logits [B, C] of a [B, T, H] document: `run(word_embeds [B*n, W, H], attention_mask [B*n, W],
    token_type_ids [B*n, W])` is the encoder on windows and returns [B*n, C] logits."""
    b, t, h = word_embeds.shape
    index, mask, valid = window_index(attention_mask, window, stride)
    n = index.shape[1]
    flat = index.reshape(b, n * window)
    take = lambda a: jnp.take_along_axis(a, flat, axis=1)
    embeds = jax.vmap(lambda e, i: e[i])(word_embeds, flat).reshape(b * n, window, h)
    types = None if token_type_ids is None else take(token_type_ids).reshape(b * n, window)
    logits = run(embeds, mask.reshape(b * n, window), types)
    return pool_logits(logits.reshape(b, n, -1), valid, pool)


LONG_MODES = ("truncate", "window", "native")


def add_long_arguments(parser: Any) -> None:
    """`--long`, `--window`, `--stride`, `--window-pool` for a command that reads texts."""
    parser.add_argument("--long", default="truncate", choices=LONG_MODES,
                        help="inputs longer than the model's positions: truncate (default, with a warning), window "
                             "(overlapping windows whose logits are pooled: one differentiable model of the whole "
                             "document) or native (refuse them: the model's own positions only)")
    parser.add_argument("--window", type=int, default=None,
                        help="--long window: tokens per window, [CLS] and [SEP] included (default: the model's "
                             "positions)")
    parser.add_argument("--stride", type=int, default=None,
                        help="--long window: tokens from one window's start to the next (default: half a window)")
    parser.add_argument("--window-pool", default="mean", choices=POOLS,
                        help="--long window: how the windows' logits combine (default mean)")


def with_long(model: Any, long: str = "truncate", window: int | None = None, stride: int | None = None,
              pool: str = "mean") -> Any:
    """The same `Model` reading long inputs as `long` says: with "window", its config runs documents longer
    than `window` tokens as windows (`cfg.window`, ...); otherwise unchanged."""
    import dataclasses

    from jaxattr.errors import UserError

    if long not in LONG_MODES:
        raise UserError(f"--long {long!r}: choose one of {', '.join(LONG_MODES)}")
    if long != "window":
        if window is not None or stride is not None:
            raise UserError("--window and --stride go with --long window")
        return model
    cfg = model.cfg
    if cfg.task != "sequence":
        raise UserError("--long window pools a sequence classifier's logits; this is a token-classification model")
    window = cfg.max_positions if window is None else window
    stride = max(1, (window - 2) // 2) if stride is None else stride
    try:
        check_window(window, stride, cfg.max_positions, pool)
    except ValueError as e:
        raise UserError(f"--long window: {e}") from None
    return dataclasses.replace(model, cfg=cfg.replace(window=window, window_stride=stride, window_pool=pool))


def token_limit(cfg: Any, long: str) -> int:
    """Tokens to keep when encoding inputs: the model's (or the windows') maximum; with "native" one more, so
    that `check_native` sees the inputs that do not fit."""
    return cfg.max_positions + 1 if long == "native" else cfg.max_length


def check_native(examples: Any, max_positions: int) -> None:
    """`--long native`: a UserError naming `--long window` for the first input longer than the positions."""
    from jaxattr.errors import UserError

    for i, ex in enumerate(examples):
        if len(ex["input_ids"]) > max_positions:
            raise UserError(f"example {ex.get('id', i)!r} is longer than the model's {max_positions} positions; use "
                            "--long window (overlapping windows) or --long truncate")
