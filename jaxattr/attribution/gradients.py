"""Gradient attributions in word-embedding space: Saliency, Grad×Input, Integrated Gradients, GradientShap.

Everything here is a pure function of `(params, cfg, batch, ...)` that can run under the caller's
`jit`/`vmap`. Only the **word embeddings** are moved along a path (`forward(..., word_embeds=...)`);
position and token-type embeddings are added by the encoder and never interpolated. Special tokens
([CLS], [SEP]) and padding keep their own embedding in every baseline and get score 0. The one
exception is `embedding_ig` (`ig_embedding`), the IBA paper's IG comparator, which moves the whole
post-LayerNorm embedding output.

The shared building block is `row_contributions`: a batch of *rows*, each one a sequence whose
word embeddings at the positions in `interp` sit at `b + alpha * (x - b)`, returns for every position
`weight * interp * sum_E grad F * (x - b)` (or the absolute gradient for saliency). IG, SIG and
GradientShap are sums of such rows over steps (and, for SIG, over words); the batched driver
(`jaxattr.attribution.driver`) flattens examples x steps (x words) into fixed-shape chunks of rows.

Conventions: `batch` is a dict of [B, T] int arrays `input_ids`, `attention_mask`, `token_type_ids`
and `word_ids` (-1 for special tokens and padding, as `jaxattr.data.pad_batch` makes). The explained
output F is the target class's logit (default, as the SIG/DIG reference code) or its probability
(`output="prob"`); a regression head's single output when `cfg.problem_type == "regression"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.data.batch import resolve_target, token_mask
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, classify, embed, forward, run_layers, word_embeddings
from jaxattr.types import Array

Baseline = Literal["mask", "pad", "zero"]
Output = Literal["logit", "prob"]
METHODS: tuple[str, ...] = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre",
                             "captum_trapezoid")
BASELINES: tuple[str, ...] = ("mask", "pad", "zero")


class Attribution(NamedTuple):
    """Per-example results. `scores` are per token ([B, T], 0 on special tokens and padding)."""

    scores: Array  # [B, T]
    target: Array  # [B] int32 class explained (0 for regression)
    prob: Array  # [B] softmax probability of the target (the raw output for regression)
    f_x: Array  # [B] F(x)
    f_baseline: Array  # [B] F(baseline) (nan where the method has none)
    delta: Array  # [B] convergence delta sum(scores) - (F(x) - F(baseline)) (nan where undefined)


# ----------------------------------------------------------------------------------------------
# Quadrature


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of an integral over [0, 1] (Captum's `approximation_parameters` rules, except below).

    `riemann_trapezoid` is the composite trapezoid rule on n equally spaced points including both ends
    (spacing 1/(n−1), weights summing to 1, exact for linear integrands). `captum_trapezoid` keeps
    Captum's weights (1/n, halved at the ends: they sum to (n−1)/n, so IG's completeness breaks by a
    factor) for parity with Captum's `riemann_trapezoid`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown integration method {method!r}; expected one of {METHODS}")
    n = int(steps)
    if n < 1 or (method != "gausslegendre" and n < 2):
        raise ValueError(f"{method} needs more steps than {n}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (0.5 * (x + 1)).astype(np.float64), (0.5 * w).astype(np.float64)
    w = np.full(n, 1.0 / n)
    kind = method.split("_")[1]
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[0] /= 2
        w[-1] /= 2
        a = np.linspace(0, 1, n)
    elif method == "captum_trapezoid":
        w[0] /= 2
        w[-1] /= 2
        a = np.linspace(0, 1, n)
    elif kind == "left":
        a = np.linspace(0, 1 - 1 / n, n)
    elif kind == "middle":
        a = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        a = np.linspace(1 / n, 1, n)
    return a, w


# ----------------------------------------------------------------------------------------------
# Baselines, masks, targets


def baseline_ids(batch: Mapping[str, Array], baseline: str, mask_id: int | None, pad_id: int | None
                 ) -> tuple[Array, Array]:
    """(baseline token ids [B, T], scale [B, T]): the baseline's word embedding is `emb(ids) * scale`.

    Word pieces become [MASK] / [PAD] (scale 1) or the zero vector (scale 0); special tokens and
    padding keep their own id with scale 1, so they never move.
    """
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
    ids = jnp.asarray(batch["input_ids"])
    m = token_mask(batch)
    if baseline == "zero":
        return ids, jnp.where(m, 0.0, 1.0).astype(jnp.float32)
    tok = mask_id if baseline == "mask" else pad_id
    if tok is None:
        raise ValueError(f"baseline {baseline!r} needs the tokenizer's {baseline} token id")
    return jnp.where(m, tok, ids), jnp.ones(ids.shape, jnp.float32)


def explained_output(logits: Array, target: Array, cfg: EncoderConfig, output: str) -> Array:
    """F: the target's logit or probability per row ([R]); a regression head's output. A token-classification
    model explains a span: `target` [R, T] holds a class per position (-1 outside the span) and F is the sum
    of those positions' logits (or probabilities) for their classes: for an entity, the evidence for every
    tag that makes it up."""
    if cfg.problem_type == "regression":
        return logits[:, 0]
    if output == "prob":
        values = jax.nn.softmax(logits, axis=-1)
    elif output == "logit":
        values = logits
    else:
        raise ValueError(f"unknown output {output!r}; expected 'logit' or 'prob'")
    if cfg.task == "token":
        target = jnp.asarray(target, jnp.int32)
        picked = jnp.take_along_axis(values, jnp.maximum(target, 0)[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(target >= 0, picked, 0.0), axis=-1)
    return jnp.take_along_axis(values, target[:, None].astype(jnp.int32), axis=1)[:, 0]


def predict(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], target: Array | None = None,
            output: str = "logit") -> tuple[Array, Array, Array]:
    """(target, prob, F(x)) for a batch; `target=None` explains the predicted class. A token-classification
    model needs a span target [B, T] (`token_target`): prob is then the mean probability of its classes."""
    logits = forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                     cls_only=True).logits
    if cfg.task == "token":
        tgt = token_target(target, logits)
        probs = jnp.take_along_axis(jax.nn.softmax(logits, -1), jnp.maximum(tgt, 0)[..., None], -1)[..., 0]
        inside = tgt >= 0
        prob = jnp.where(inside, probs, 0.0).sum(-1) / jnp.maximum(inside.sum(-1), 1)
        return tgt, prob, explained_output(logits, tgt, cfg, output)
    if cfg.problem_type == "regression":
        tgt = jnp.zeros(logits.shape[0], jnp.int32)
        return tgt, logits[:, 0], logits[:, 0]
    tgt = resolve_target(target, logits)
    prob = jnp.take_along_axis(jax.nn.softmax(logits, -1), tgt[:, None], 1)[:, 0]
    return tgt, prob, explained_output(logits, tgt, cfg, output)


def token_target(target: Any, logits: Array) -> Array:
    """A token model's target as [B, T] int32 classes (-1 where not explained), checked against `logits`
    [B, T, C] when concrete; `jaxattr.data.entities.span_target` builds one from an entity."""
    if target is None or isinstance(target, str):
        raise UserError("a token-classification model explains a span: give target as [B, T] classes per position "
                        "(-1 elsewhere), e.g. jaxattr.data.entities.span_target(...)")
    b, t, c = logits.shape
    if not isinstance(target, jax.core.Tracer):
        given = np.asarray(target)
        if given.shape != (b, t):
            raise UserError(f"a token model's target must be [B, T] = [{b}, {t}], not {list(given.shape)}")
        if (given >= c).any() or (given < -1).any() or not (given >= 0).any(-1).all():
            raise UserError(f"a token target needs classes in 0..{c - 1} (-1 elsewhere) and at least one position "
                            "per row")
    return jnp.asarray(target, jnp.int32)


# ----------------------------------------------------------------------------------------------
# The row kernel


class Rows(NamedTuple):
    """A batch of R path points. Int arrays are [R, T]; `alpha`, `weight`, `target` are [R]."""

    input_ids: Array
    attention_mask: Array
    token_type_ids: Array
    baseline_ids: Array
    baseline_scale: Array  # float [R, T]
    interp: Array  # float [R, T]: 1 where the word embedding moves along the path
    alpha: Array  # float [R]
    weight: Array  # float [R] quadrature weight (0 for padding rows)
    target: Array  # int [R]; [R, T] classes per position (-1 elsewhere) for a token model


def row_embeddings(params: Params, cfg: EncoderConfig, rows: Rows) -> tuple[Array, Array]:
    """(x, b): input and baseline word embeddings of every row ([R, T, E] each)."""
    x = word_embeddings(params, cfg, rows.input_ids)
    b = word_embeddings(params, cfg, rows.baseline_ids) * rows.baseline_scale[..., None]
    return x, b


def _logits_at(params: Params, cfg: EncoderConfig, rows: Rows, e: Array) -> Array:
    """Logits with word embeddings `e` (the last block runs for [CLS] only: all the head reads)."""
    return forward(params, cfg, None, rows.attention_mask, rows.token_type_ids, word_embeds=e, cls_only=True).logits


def row_logits(params: Params, cfg: EncoderConfig, rows: Rows) -> Array:
    """Logits at each row's path point (no gradient): [R, C]."""
    x, b = row_embeddings(params, cfg, rows)
    return _logits_at(params, cfg, rows, x - (1.0 - rows.alpha[:, None, None]) * rows.interp[..., None] * (x - b))


def row_outputs(params: Params, cfg: EncoderConfig, rows: Rows, output: str = "logit") -> Array:
    """F at each row's path point (no gradient): [R]."""
    return explained_output(row_logits(params, cfg, rows), rows.target, cfg, output)


def row_contributions(params: Params, cfg: EncoderConfig, rows: Rows, output: str = "logit",
                      mode: str = "path", noise: Array | None = None) -> Array:
    """Per-position contributions [R, T] of a batch of path points.

    mode "path": `weight * interp * sum_E dF/de * (x' - b)` at `e = b + alpha (x' - b)` on the
    interpolated positions (x' = x + noise there, GradientShap), x elsewhere: summed over a path's
    quadrature rows this is IG / SIG. mode "abs": `interp * sum_E |dF/de|` at x (saliency).
    """
    x, b = row_embeddings(params, cfg, rows)
    m = rows.interp[..., None].astype(x.dtype)
    if noise is not None:
        x = x + m * noise
    diff = m * (x - b)
    e = x - (1.0 - rows.alpha[:, None, None]) * diff

    def total(e: Array) -> Array:
        return jnp.sum(explained_output(_logits_at(params, cfg, rows, e), rows.target, cfg, output))

    g = jax.grad(total)(e)
    if mode == "abs":
        return rows.interp * jnp.sum(jnp.abs(g), -1)
    if mode != "path":
        raise ValueError(f"unknown contribution mode {mode!r}")
    return rows.weight[:, None] * jnp.sum(g * diff, -1)


def _mapped(fn: Any, rows: Rows, chunk: int | None, *extra: Any) -> Array:
    """Apply a row function in chunks of `chunk` rows under `lax.map` (bounded memory); R % chunk == 0."""
    r = rows.alpha.shape[0]
    if chunk is None or chunk >= r:
        return fn(rows, *extra)
    if r % chunk:
        raise ValueError(f"{r} rows are not a multiple of the chunk size {chunk}")
    split = lambda a: a.reshape((r // chunk, chunk) + a.shape[1:])
    out = jax.lax.map(lambda xs: fn(*xs), (jax.tree.map(split, rows), *map(lambda a: jax.tree.map(split, a), extra)))
    return out.reshape((r,) + out.shape[2:])


def _repeat_rows(batch: Mapping[str, Array], base_ids: Array, base_scale: Array, interp: Array, target: Array,
                 alphas: Array, weights: Array) -> Rows:
    """Rows for every (example, step): [B * S] with example-major order."""
    s = alphas.shape[0]
    rep = lambda a: jnp.repeat(jnp.asarray(a), s, axis=0)
    b = base_ids.shape[0]
    return Rows(rep(batch["input_ids"]), rep(batch["attention_mask"]), rep(token_types(batch)), rep(base_ids),
                rep(base_scale), rep(interp.astype(jnp.float32)), jnp.tile(alphas, b), jnp.tile(weights, b),
                rep(target))


def token_types(batch: Mapping[str, Array]) -> Array:
    tt = batch.get("token_type_ids")
    return jnp.zeros_like(jnp.asarray(batch["input_ids"])) if tt is None else jnp.asarray(tt)


def prepare_path(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], baseline: str, mask_id: int | None,
             pad_id: int | None, target: Array | None, output: str):
    base_ids, base_scale = baseline_ids(batch, baseline, mask_id, pad_id)
    interp = token_mask(batch)
    tgt, prob, f_x = predict(params, cfg, batch, target, output)
    return base_ids, base_scale, interp, tgt, prob, f_x


def _baseline_rows(batch: Mapping[str, Array], base_ids: Array, base_scale: Array, interp: Array,
                   tgt: Array) -> Rows:
    n = tgt.shape[0]
    return Rows(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]), token_types(batch), base_ids,
                base_scale, interp.astype(jnp.float32), jnp.zeros(n), jnp.zeros(n), tgt)


# ----------------------------------------------------------------------------------------------
# Methods (pure)


def saliency(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, target: Array | None = None,
             output: str = "logit") -> Attribution:
    """Saliency: `sum_E |dF/dx|` per token at the input (Simonyan et al.; Captum `Saliency(abs=True)`)."""
    base_ids = jnp.asarray(batch["input_ids"])
    interp = token_mask(batch)
    tgt, prob, f_x = predict(params, cfg, batch, target, output)
    n = tgt.shape[0]
    rows = Rows(base_ids, jnp.asarray(batch["attention_mask"]), token_types(batch), base_ids, jnp.ones(base_ids.shape),
                interp.astype(jnp.float32), jnp.ones(n), jnp.ones(n), tgt)
    scores = row_contributions(params, cfg, rows, output, mode="abs")
    nan = jnp.full(n, jnp.nan)
    return Attribution(scores, tgt, prob, f_x, nan, nan)


def grad_x_input(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, target: Array | None = None,
                 output: str = "logit") -> Attribution:
    """Grad×Input: `sum_E x * dF/dx` per token at the input (Captum `InputXGradient`)."""
    ids = jnp.asarray(batch["input_ids"])
    interp = token_mask(batch)
    tgt, prob, f_x = predict(params, cfg, batch, target, output)
    n = tgt.shape[0]
    # a zero baseline with alpha = 1 makes the row kernel compute grad(x) * x
    rows = Rows(ids, jnp.asarray(batch["attention_mask"]), token_types(batch), ids, jnp.where(interp, 0.0, 1.0),
                interp.astype(jnp.float32), jnp.ones(n), jnp.ones(n), tgt)
    scores = row_contributions(params, cfg, rows, output)
    nan = jnp.full(n, jnp.nan)
    return Attribution(scores, tgt, prob, f_x, nan, nan)


def _path_sum(batch: Mapping[str, Array], base_ids: Array, base_scale: Array, interp: Array, tgt: Array,
              method: str, steps: int, contributions: Any, chunk: int | None) -> Array:
    """[B, T]: the sum over `steps` quadrature points of `method` of `contributions(rows)` ([R, T] per row), the
    path rows of every example run in `chunk`-row pieces (IG over word embeddings or the embedding output)."""
    a, w = quadrature(method, steps)
    rows = _repeat_rows(batch, base_ids, base_scale, interp, tgt, jnp.asarray(a, jnp.float32),
                        jnp.asarray(w, jnp.float32))
    b, t = base_ids.shape
    return _mapped(contributions, rows, chunk).reshape(b, steps, t).sum(1)


def integrated_gradients(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, steps: int = 50,
                         method: str = "gausslegendre", baseline: str = "mask", mask_id: int | None = None,
                         pad_id: int | None = None, target: Array | None = None, output: str = "logit",
                         chunk: int | None = None) -> Attribution:
    """Integrated Gradients (Sundararajan et al. 2017) over word embeddings, all word pieces at once.

    `steps` quadrature points of `method`; the B*steps path points run in chunks of `chunk` rows under
    `lax.map` (None: all at once). `delta` is the completeness gap sum(scores) - (F(x) - F(baseline)).
    """
    base_ids, base_scale, interp, tgt, prob, f_x = prepare_path(params, cfg, batch, baseline, mask_id, pad_id,
                                                           target, output)
    scores = _path_sum(batch, base_ids, base_scale, interp, tgt, method, steps,
                       lambda r: row_contributions(params, cfg, r, output), chunk)
    f_b = row_outputs(params, cfg, _baseline_rows(batch, base_ids, base_scale, interp, tgt), output)
    return Attribution(scores, tgt, prob, f_x, f_b, scores.sum(-1) - (f_x - f_b))


def embedding_path(params: Params, cfg: EncoderConfig, rows: Rows) -> tuple[Array, Array]:
    """(e(x), e(b)) [R, T, H]: the embedding output (`encoder.embed`: word + position + token-type embeddings
    after the embedding LayerNorm) of each row's input ids and of its baseline ids, with the row's own
    positions and token types; e(b) = e(x) outside `interp`."""
    mask, types = rows.attention_mask, rows.token_type_ids
    x = embed(params, cfg, word_embeddings(params, cfg, rows.input_ids), mask, types)
    b = embed(params, cfg, word_embeddings(params, cfg, rows.baseline_ids), mask, types)
    return x, jnp.where(rows.interp[..., None] > 0, b, x)


def _logits_from_embedding(params: Params, cfg: EncoderConfig, rows: Rows, h: Array) -> Array:
    """Logits with embedding output `h` entering block 1 (the last block for [CLS] only)."""
    hidden = run_layers(params, cfg, h, rows.attention_mask, cls_only=True).hidden
    return classify(params, cfg, hidden, rows.attention_mask)


def embedding_contributions(params: Params, cfg: EncoderConfig, rows: Rows, output: str = "logit") -> Array:
    """Per-position `weight * sum_H dF/dh * (e(x) - e(b))` at `h = e(b) + alpha (e(x) - e(b))` ([R, T]):
    `row_contributions` with the embedding output in place of the word embeddings (Captum's
    `LayerIntegratedGradients` on the embeddings module)."""
    x, b = embedding_path(params, cfg, rows)
    diff = x - b

    def total(h: Array) -> Array:
        return jnp.sum(explained_output(_logits_from_embedding(params, cfg, rows, h), rows.target, cfg, output))

    g = jax.grad(total)(x - (1.0 - rows.alpha[:, None, None]) * diff)
    return rows.weight[:, None] * jnp.sum(g * diff, -1)


def embedding_ig(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], *, steps: int = 10,
                 method: str = "gausslegendre", baseline: str = "pad", mask_id: int | None = None,
                 pad_id: int | None = None, target: Array | None = None, output: str = "logit",
                 chunk: int | None = None) -> Attribution:
    """Layer IG over the embedding output, as the IBA paper's reference code (Jiang et al. 2021,
    github.com/bazingagin/IBA `scripts/evaluations/IntegratedGradient_.py`) runs IG.

    The path runs from e(b) to e(x), e the post-LayerNorm embedding output; the baseline input b is x with
    every word piece replaced by [PAD] (`baseline="pad"`, the reference's) or [MASK]; [CLS]/[SEP], positions
    and token types stay as in x, as in the reference (`[CLS] + [PAD] * n + [SEP]`, the input's token types),
    so special tokens and padding score 0. Scores are `sum_H (e(x) - e(b)) * grad` over `steps` points of
    `method` (the reference: Captum's default Gauss-Legendre, 10 steps). The reference explains the softmax
    probability of class 0 and divides the scores by their L2 norm (neither changes a ranking's order):
    `output="prob", target=0` reproduces its F. `delta` = sum(scores) - (F(x) - F(b)).
    """
    if baseline not in ("pad", "mask"):
        raise UserError(f"ig_embedding's baseline must be pad or mask, not {baseline!r}")
    if cfg.window and batch["input_ids"].shape[-1] > cfg.window:
        raise UserError("ig_embedding works on the embedding output, which windowed long inputs do not expose; "
                        "use --long truncate or native")
    base_ids, base_scale, interp, tgt, prob, f_x = prepare_path(params, cfg, batch, baseline, mask_id, pad_id,
                                                                target, output)
    scores = _path_sum(batch, base_ids, base_scale, interp, tgt, method, steps,
                       lambda r: embedding_contributions(params, cfg, r, output), chunk)
    base = _baseline_rows(batch, base_ids, base_scale, interp, tgt)
    f_b = explained_output(_logits_from_embedding(params, cfg, base, embedding_path(params, cfg, base)[1]), tgt, cfg,
                           output)
    return Attribution(scores, tgt, prob, f_x, f_b, scores.sum(-1) - (f_x - f_b))


def gradient_shap(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], key: Array, *,
                  samples: int = 20, stdev: float = 0.0, baseline: str = "mask", mask_id: int | None = None,
                  pad_id: int | None = None, target: Array | None = None, output: str = "logit",
                  chunk: int | None = None) -> Attribution:
    """GradientShap (Lundberg & Lee 2017; Captum `GradientShap` with one baseline): the mean over
    `samples` draws of `(x + eps - b) * dF/de` at `e = b + alpha (x + eps - b)`, alpha ~ U[0, 1],
    eps ~ N(0, stdev^2) on the word pieces. An expected-gradients estimate of IG; `delta` as for IG.
    `key`: one PRNG key (split per example) or one key per example ([B]): the same key, the same draws.
    """
    base_ids, base_scale, interp, tgt, prob, f_x = prepare_path(params, cfg, batch, baseline, mask_id, pad_id,
                                                           target, output)
    b, t = base_ids.shape
    keys = key if key.shape == (b,) else jax.random.split(key, b)
    pairs = jax.vmap(lambda k: jax.random.split(k))(keys)  # [B, 2]
    alphas = jax.vmap(lambda k: jax.random.uniform(k, (samples,)))(pairs[:, 0])
    rows = _repeat_rows(batch, base_ids, base_scale, interp, tgt, jnp.zeros(samples), jnp.full(samples, 1 / samples))
    rows = rows._replace(alpha=alphas.reshape(-1))
    noise = jax.vmap(lambda k: jax.random.normal(k, (samples, t, cfg.emb_size)))(pairs[:, 1])
    noise = stdev * noise.reshape(b * samples, t, cfg.emb_size)
    contrib = _mapped(lambda r, n: row_contributions(params, cfg, r, output, noise=n), rows, chunk, noise)
    scores = contrib.reshape(b, samples, t).sum(1)
    f_b = row_outputs(params, cfg, _baseline_rows(batch, base_ids, base_scale, interp, tgt), output)
    return Attribution(scores, tgt, prob, f_x, f_b, scores.sum(-1) - (f_x - f_b))


# ----------------------------------------------------------------------------------------------
# Helpers for users and the driver


def word_scores(scores: np.ndarray, word_ids: np.ndarray, num_words: int) -> np.ndarray:
    """Sum per-token scores of the word pieces of each word (`word_ids` from `encode_texts`)."""
    out = np.zeros(num_words, np.float64)
    ok = word_ids >= 0
    np.add.at(out, word_ids[ok], np.asarray(scores, np.float64)[ok])
    return out


def batch_from_examples(examples: list[dict[str, Any]], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """Pad encoded examples (from `encode_texts`) to one length: a batch for the pure functions."""
    from jaxattr.data.tokenize import pad_batch

    return pad_batch(examples, length, pad_id)


# ----------------------------------------------------------------------------------------------
# Registration (`jaxattr.attribution.registry`)


def check_path_options(o: Mapping[str, Any]) -> None:
    """The options every path method shares (`steps`, quadrature `method`, `baseline`), checked."""
    from jaxattr.attribution.registry import check_choice, check_int

    if o["steps"] != "auto":  # "auto": the driver's nested trapezoid rules (its `tolerance`)
        check_int("steps", o["steps"], 1 if o["method"] == "gausslegendre" else 2)
    check_choice("method", o["method"], METHODS)
    check_choice("baseline", o["baseline"], BASELINES)


def _check_embedding_ig(o: Mapping[str, Any]) -> None:
    from jaxattr.attribution.registry import check_choice, check_int

    check_int("steps", o["steps"], 1 if o["method"] == "gausslegendre" else 2)
    check_choice("method", o["method"], METHODS)
    check_choice("baseline", o["baseline"], ("pad", "mask"))


def _check_shap(o: Mapping[str, Any]) -> None:
    from jaxattr.attribution.registry import check_choice, check_int

    check_int("samples", o["samples"], 1)
    check_choice("baseline", o["baseline"], BASELINES)
    if not float(o["stdev"]) >= 0:
        raise UserError(f"stdev must be >= 0, not {o['stdev']!r}")


def _ig_finish(raw: np.ndarray, units: np.ndarray, f_gap: np.ndarray) -> tuple[np.ndarray, float]:
    """IG's one unit: the scores are the raw sums; delta = sum(scores) - (F(x) - F(baseline))."""
    return raw, float(raw.sum() - f_gap[0])


def path_cost(o: Mapping[str, Any]) -> int:
    """Rows per unit: the steps (`steps="auto"`: the driver's first rule, 5 points)."""
    return 5 if o["steps"] == "auto" else int(o["steps"])


PATH_OPTIONS: dict[str, Any] = {"steps": 50, "method": "gausslegendre", "baseline": "mask"}


def _register() -> None:
    from jaxattr.attribution.registry import MethodSpec, Paths, register

    register(MethodSpec("saliency", saliency, description="|dF/dx| summed over the embedding", token_models=True))
    register(MethodSpec("gradxinput", grad_x_input, description="x * dF/dx summed over the embedding",
                        token_models=True))
    register(MethodSpec("gradientshap", gradient_shap, {"samples": 20, "stdev": 0.0, "baseline": "mask"},
                        cost=lambda o: o["samples"], validate=_check_shap, token_models=True,
                        description="expected gradients with random points on the baseline-input path"))
    register(MethodSpec("ig", integrated_gradients, PATH_OPTIONS, cost=path_cost,
                        paths=Paths(unit_ids=lambda batch, o: jnp.where(token_mask(batch), 0, -1),
                                    finish=_ig_finish), token_models=True,
                        validate=check_path_options, description="integrated gradients over word embeddings"))
    register(MethodSpec("ig_embedding", embedding_ig, {"steps": 10, "method": "gausslegendre", "baseline": "pad"},
                        cost=lambda o: o["steps"], validate=_check_embedding_ig, windows=False,
                        description="layer IG over the embedding output, as the IBA reference code runs IG"))


_register()
