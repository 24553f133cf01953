"""LIME for token classification inputs (Ribeiro et al. 2016), as the lime package's text explainer.

Per example: the interpretable features are the non-special tokens. Sample 0 is the input itself; every
other sample deletes `k ~ U{1, d}` features chosen uniformly (`LimeTextExplainer` with
`bow=False`-style positional features, deletion as its default `mask_string=None`). The kernel is the
package's: cosine distance between the binary sample and the all-ones vector, ×100, weight
`sqrt(exp(−dist²/width²))` with width 25. The surrogate is sklearn's `Ridge(alpha=1)` with an intercept
and sample weights, fitted to the target-class probability — done here in closed form per example
(weighted centring, then `(XᵀWX + αI)⁻¹XᵀWy`), so the whole method is one jit-able program: examples ×
samples run as one batch of forwards (in `chunk`-row pieces under `lax.map`), then a batched solve.
With all features kept by `feature_selection="auto"` (more than 6 features → "highest_weights" on all
of them), the package's coefficients are exactly this ridge fit.

`unit="word"` makes the words the features, as the lime package's own text explainer does (it splits
on words): a sample deletes all pieces of a chosen word, and each piece gets its word's coefficient
divided by the word's piece count, so the record's word scores are the words' coefficients.

`unit="bow"` is `LimeTextExplainer`'s default (`bow=True`), which the IBA paper's reference code runs: a
feature is a distinct word *type*, and a sample deletes every occurrence of each chosen one; the kernel's
cosine distance is over these features. Two words are the same type when their word-piece id sequences
are equal: our stand-in for lime's split of the raw string on non-word characters, so case and punctuation
follow the tokenizer (an uncased one merges "Good" and "good"). As the package gives every occurrence of a
word the word's weight, each occurrence gets the feature's coefficient, shared equally by its own pieces:
every occurrence's word score is the coefficient (a word seen twice counts it twice in a sum over the text).
(The reference code instead copies the weight onto each piece of a word.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxattr.attribution.gradients import explained_output, token_target
from jaxattr.data.batch import delete_tokens, per_example_keys, resolve_target, token_mask
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import forward_batch, predict_probs
from jaxattr.types import Array

KERNEL_WIDTH = 25.0
RIDGE_ALPHA = 1.0
UNITS: tuple[str, ...] = ("token", "word", "bow")  # the features: word pieces, words, distinct words (lime's bow)


class LimeOutput(NamedTuple):
    scores: Array  # [B, T] ridge coefficients per token, 0 on special tokens and padding
    intercept: Array  # [B]
    target: Array  # [B]; a token model's span target [B, T]
    features: Array  # [B, S, T] bool: which features each sample kept (sample 0 keeps all)
    probs: Array  # [B, S] target probability of each sample (a token model: the span's F on probabilities)


def lime_samples(key: Array, features: Array, samples: int) -> Array:
    """[S, T] bool keep-masks for one example with feature mask `features` [T] (sample 0 = all kept)."""
    d = jnp.sum(features)
    k_key, p_key = jax.random.split(key)
    n_remove = jax.random.randint(k_key, (samples,), 1, d + 1)  # U{1, d}, as lime's randint(1, d + 1)
    u = jnp.where(features[None], jax.random.uniform(p_key, (samples, features.shape[0])), jnp.inf)
    rank = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
    keep = features[None] & ~(rank < n_remove[:, None])
    return keep.at[0].set(features)


def kernel_weights(keep: Array, features: Array) -> Array:
    """The lime text kernel on cosine distance ×100 between each sample and the all-ones vector."""
    k = jnp.sum(keep & features[None], axis=-1).astype(jnp.float32)
    d = jnp.maximum(jnp.sum(features).astype(jnp.float32), 1.0)
    cos = jnp.where(k > 0, jnp.sqrt(k / d), 0.0)  # (z·1)/(|z||1|) for binary z
    dist = (1.0 - cos) * 100.0
    return jnp.sqrt(jnp.exp(-(dist**2) / KERNEL_WIDTH**2))


def weighted_ridge(x: Array, y: Array, w: Array, alpha: float = RIDGE_ALPHA) -> tuple[Array, Array]:
    """sklearn Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight=w): (coef [D], intercept)."""
    sw = w / jnp.sum(w)
    xm = sw @ x
    ym = sw @ y
    xc, yc = x - xm, y - ym
    a = (xc * w[:, None]).T @ xc + alpha * jnp.eye(x.shape[1], dtype=x.dtype)
    coef = jnp.linalg.solve(a, (xc * w[:, None]).T @ yc)
    return coef, ym - xm @ coef


def _word_features(batch: Mapping[str, Any], tokens: Array) -> tuple[Array, Array, Array]:
    """(word ids clipped to >= 0 [B, T], word feature mask [B, T] (slot k = word k), pieces per word [B, T])."""
    from jaxattr.attribution.sig import unit_ids

    wid = jnp.where(tokens, unit_ids(batch, "word"), -1)
    slots = jnp.arange(wid.shape[-1])
    count = jnp.sum(wid[:, None, :] == slots[None, :, None], axis=-1)  # [B, T]: pieces of word k
    return jnp.maximum(wid, 0), count > 0, count


def word_types(batch: Mapping[str, Any], tokens: Array) -> Array:
    """[B, T]: for word slot k, the first word whose word-piece id sequence equals word k's (k itself for a
    first occurrence; 0 for slots holding no word): lime's bag-of-words features."""
    from jaxattr.attribution.sig import unit_ids

    def one(ids: Array, raw: Array, tok: Array) -> Array:
        t = raw.shape[0]
        pos = jnp.arange(t)
        # a piece's rank inside its word, and table[k, r] = the id of word k's r-th piece (-1: none)
        rank = jnp.sum((raw[None, :] == raw[:, None]) & (pos[None, :] < pos[:, None]), axis=1)
        table = jnp.full((t, t), -1, ids.dtype).at[jnp.where(tok, raw, t), rank].set(ids, mode="drop")
        wid = jnp.maximum(raw, 0)
        match = tok[:, None] & (table[:, rank].T == ids[:, None])  # [T, K]: piece t equals word k's same piece
        hits = jax.ops.segment_sum(match.astype(jnp.int32), wid, num_segments=t)  # [K, K']
        pieces = jax.ops.segment_sum(tok.astype(jnp.int32), wid, num_segments=t)  # [K]
        same = (hits == pieces[:, None]) & (pieces[:, None] == pieces[None, :]) & (pieces[None, :] > 0)
        return jnp.argmax(same, axis=1)

    raw = jnp.where(tokens, unit_ids(batch, "word"), -1)
    return jax.vmap(one)(jnp.asarray(batch["input_ids"]), raw, tokens)


def shift_target(target: Array, drop: Array) -> Array:
    """A span target [N, T] after `delete_tokens(..., drop)` ([N, T] bool): each kept position's class moves
    left by the deletions before it, as its token does; a deleted position's class is gone (-1)."""
    kept = ~drop
    dest = jnp.where(kept & (target >= 0), jnp.cumsum(kept, axis=-1) - 1, target.shape[-1])  # T: dropped
    rows = jnp.arange(target.shape[0])[:, None]
    return jnp.full_like(target, -1).at[rows, dest].set(target, mode="drop")


def span_outputs(params: Any, cfg: EncoderConfig, rows: Mapping[str, Array], target: Array,
                 chunk: int | None = None) -> Array:
    """A token model's F on probabilities [N] (`explained_output`) of each row for its span target [N, T],
    `chunk` rows at a time under `lax.map` (None: all at once), as `predict_probs` bounds its memory."""
    f = lambda r, tg: explained_output(forward_batch(params, cfg, r).logits, tg, cfg, "prob")
    n, t = target.shape
    size = n if chunk is None else max(1, min(int(chunk), n))
    if size == n:
        return f(rows, target)
    pad = (-n) % size
    tree = jax.tree.map(lambda a: jnp.concatenate([a, a[:pad]]) if pad else a, (dict(rows), target))
    out = jax.lax.map(lambda xs: f(*xs), jax.tree.map(lambda a: a.reshape(-1, size, t), tree))
    return out.reshape(n + pad)[:n]


def _sample_outputs(params: Any, cfg: EncoderConfig, batch: Mapping[str, Any], rows: Mapping[str, Array],
                    drop: Array, target: Any, samples: int, chunk: int | None) -> tuple[Array, Array]:
    """(target, y [B, S]): what the surrogate fits for the perturbed `rows` [B*S, T] (`drop`: their deletions):
    the target class's probability, or a token model's span F on probabilities with the span shifted."""
    if cfg.task == "token":
        shifted = shift_target(jnp.repeat(target, samples, axis=0), drop)
        return target, span_outputs(params, cfg, rows, shifted, chunk).reshape(target.shape[0], samples)
    probs = predict_probs(params, cfg, rows, chunk).reshape(-1, samples, cfg.num_labels)
    tgt = resolve_target(target, probs[:, 0], batch)
    return tgt, jnp.take_along_axis(probs, tgt[:, None, None], axis=-1)[..., 0]


def lime(params: Any, cfg: EncoderConfig, batch: Mapping[str, Any], *, key: Array, samples: int = 100,
         target: Any = None, chunk: int | None = None, unit: str = "token") -> LimeOutput:
    """LIME scores for a padded batch: `samples` deletions per example, a weighted ridge fit per example.

    `target`: None (predicted class) or class indices [B]; a token model's span target [B, T] (classes, -1
    elsewhere: see the module docstring); `key`: one key or one per example; `chunk`:
    rows per forward piece (None = all B·S at once); `unit`: "token" (every piece a feature), "word" or
    "bow" (distinct words, the lime package's default). Pure and jit-able (`samples`, `chunk`, `unit`
    static). `features` in the output are the units' (for "bow", slot k is the word type first seen as word k).
    """
    if unit not in UNITS:
        raise UserError(f"LIME unit must be one of {', '.join(UNITS)}, not {unit!r}")
    if cfg.problem_type != "classification":
        raise UserError("LIME here explains a class probability: it needs a classification head")
    if samples < 2:
        raise UserError(f"LIME needs at least 2 samples, not {samples}")
    tokens = token_mask(batch)
    b, t = tokens.shape
    if cfg.task == "token":  # checked before any forward: a span target [B, T] is required
        target = token_target(target, jax.ShapeDtypeStruct((b, t, cfg.num_labels), jnp.float32))
    features = tokens
    if unit != "token":
        wid, features, pieces = _word_features(batch, tokens)
        slot = wid  # the feature slot of each token: its word, or for "bow" its word type's first occurrence
        if unit == "bow":
            first = word_types(batch, tokens)
            features = features & (first == jnp.arange(t))
            slot = jnp.take_along_axis(first, wid, axis=-1)
    keys = per_example_keys(key, b)
    keep = jax.vmap(lambda k, f: lime_samples(k, f, samples))(keys, features)  # [B, S, T] over units
    token_keep = keep if unit == "token" else jnp.take_along_axis(keep, slot[:, None, :], axis=-1) | ~tokens[:, None]
    rep = lambda a: jnp.repeat(jnp.asarray(a), samples, axis=0)
    flat = {"input_ids": rep(batch["input_ids"]), "attention_mask": rep(batch["attention_mask"])}
    if batch.get("token_type_ids") is not None:
        flat["token_type_ids"] = rep(batch["token_type_ids"])
    drop = (tokens[:, None] & ~token_keep).reshape(b * samples, t)
    tgt, y = _sample_outputs(params, cfg, batch, delete_tokens(flat, drop), drop, target, samples, chunk)
    w = jax.vmap(kernel_weights)(keep, features)
    coef, intercept = jax.vmap(weighted_ridge)(keep.astype(jnp.float32), y, w)
    if unit != "token":  # each piece: its feature's coefficient over the pieces of its own word
        per_piece = jnp.take_along_axis(coef, slot, axis=-1) / jnp.maximum(jnp.take_along_axis(pieces, wid, -1), 1)
        return LimeOutput(jnp.where(tokens, per_piece, 0.0), intercept, tgt, keep, y)
    return LimeOutput(jnp.where(features, coef, 0.0), intercept, tgt, keep, y)


def _register() -> None:
    from jaxattr.attribution.registry import MethodSpec, register

    def check(o: Mapping[str, Any]) -> None:
        if not isinstance(o["samples"], int) or o["samples"] < 2:
            raise UserError(f"--samples must be an integer >= 2, not {o['samples']!r}")
        if o["unit"] not in UNITS:
            raise UserError(f"--unit must be one of {', '.join(UNITS)} for LIME, not {o['unit']!r}")

    register(MethodSpec(name="lime", fn=lime, options={"samples": 100, "unit": "token"}, cost=lambda o: o["samples"],
                        validate=check, token_models=True,
                        description="LIME: token deletions, lime's kernel, weighted ridge"))


_register()
