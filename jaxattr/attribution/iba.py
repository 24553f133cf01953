"""IBA: information bottleneck attribution for BERT-family encoders (Jiang et al. 2020; DESIGN §3 IBA).

A noise bottleneck `T = λ⊙X + (1−λ)⊙ε`, `λ = sigmoid(α)`, `ε ~ N(μ_X, σ_X²)` is put on the OUTPUT of
block `layer` (blocks counted from 1 like the paper; 0 = the embedding output). α ([T, H] per example,
initialised to 5) is fitted by Adam (lr 1, 10 steps) on `CE(target) + β·mean(KL)` with the input
duplicated `samples` times with independent noise. The map is the KL ("capacity") of the last step's
forward summed over features, min-max normalised over the example's non-special tokens.

Numerics follow the reference code (github.com/bazingagin/IBA):
  * in normalised units `x_norm = (X−μ)/σ`, `m = λ·x_norm`, `s² = (1−λ)²`; the sample is
    `t = m + exp(clip(log s², −10, 10)/2)·ε₀` (ε₀ ~ N(0, 1)), de-normalised as `t·σ + μ`;
  * `KL = −0.5·(1 + log s² − m² − s²)` with the *unclamped* log s² (the reference clamps only where it
    samples); we compute `log s² = 2·log_sigmoid(−α)`, which is the same value without the float32
    underflow of `log((1 − sigmoid(α))²)` for large α;
  * the loss mean of the KL runs over the example's valid tokens × features (the reference takes the
    mean over its unpadded copies, which is the same number); the CE is the mean over the noise samples.

Efficiency (why this is much faster than the reference): blocks 1..l run once per example; only blocks
l+1..L run inside the optimisation loop, which is one compiled `lax.scan` over steps with optax Adam;
examples and noise samples form one batch (Adam is elementwise, so a summed loss over examples gives
exactly each example's own optimisation). `layer="all"` scans over layers inside one program (blocks
below the bottleneck are skipped with `lax.cond`), and `iba_beta_sweep` vmaps over β.

A token-classification model (`cfg.task == "token"`, issue 34) is explained for a span target ([B, T] classes,
-1 elsewhere). IBA's objective is a cross-entropy, so its CE becomes the span's: the mean over the span's tokens
of −log p(class) (then the mean over noise samples). We keep IBA's loss rather than the span's F of the
gradient methods because the bottleneck trades the KL against how well the model still *predicts* the target
(a logit sum has no floor and would reward noise that inflates logits), and the mean, not the sum, over the span
keeps the CE on one token's scale, the scale `DEFAULT_BETA` was tuned for, whatever the span's length; it is
also the token head's training loss (`training.engine`'s mean over labelled tokens).

Long documents (`cfg.window`, `models/windowed.py`, issue 34): an input longer than `cfg.window` tokens is cut
into the windows the windowed classifier runs (`window_index`: `[CLS]` content slice `[SEP]`, positions 0..W-1),
and IBA places one bottleneck per window, each window an ordinary example of the un-windowed model. A window's
bottleneck is fitted on that window's own logits for the document's target class, the window's term of the
pooled logits (fitting every bottleneck on the pooled logits would couple the windows into one problem of n·W
tokens; per window they stay independent problems of W tokens, as IBA's examples are). Each token's raw capacity is
averaged over the valid windows that contain it, then min-max normalised over the document's non-special
tokens as for one sequence. Window k > 0 of a document draws its noise from `fold_in(key, k)`, window 0 from
the document's own key, so a document that fits one window gets plain IBA's map whatever its padding.

Noise statistics (`noise=`), an explicit choice:
  * "sequence" (default, the paper's reading): per-feature mean/std of X over the example's valid tokens;
  * "dataset": per-feature mean/std of each layer's output estimated over a dataset
    (`estimate_noise_stats`, Welford/Chan streaming) and passed as `noise_stats`;
  * "reference": the reference code's behaviour — mean = the hidden state *entering* block `layer`
    (per token and feature; HF `hidden_states[layer-1]`), σ = sqrt(1e-5) everywhere (noise almost
    vanishes). Needs layer ≥ 1.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxattr.attribution.gradients import token_target
from jaxattr.data.batch import per_example_keys, resolve_target, special_mask
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import (
    classify,
    embed,
    forward,
    layer_params,
    run_layers,
    shared_block_params,
    word_embeddings,
)
from jaxattr.models.windowed import window_index
from jaxattr.types import Array, Params

Noise = Literal["sequence", "dataset", "reference"]
NOISE_CHOICES: tuple[str, ...] = ("sequence", "dataset", "reference")

# β per noise mode. β multiplies mean(KL); its scale depends on the noise statistics. With the
# reference's σ = sqrt(1e-5), x_norm ~ 10² and KL ~ 10⁴ per element, so the paper's β = 1e-5 binds. With
# per-feature statistics ("sequence", "dataset") x_norm ~ 1 and KL ≈ 5 per element at α = 5, so 1e-5 is
# ~1e-5 of the cross-entropy and the bottleneck does not bind (maps at β = 1e-5 and β = 0 agree, mean
# Spearman 0.99). 0.3 follows the paper's rule of thumb β ≈ 10·L_CE/L_IB (median β·KL/CE = 14 at the
# first step on 150 dev tweets with the demo classifier), is where the β sweep moves the maps most from
# β = 0 (Spearman 0.39), and sits on the drop@1/9 plateau of 0.1-0.3 (docs/results/iba/beta_sweep.md).
DEFAULT_BETA: dict[str, float] = {"sequence": 0.3, "dataset": 0.3, "reference": 1e-5}
ALPHA_INIT = 5.0
LOG_VAR_CLAMP = 10.0
REFERENCE_VAR = 1e-5  # the reference Estimator's variance floor with one sample (S = 0)
STD_FLOOR_VAR = 1e-5  # variance floor of our own statistics (dead features)


class NoiseStats(NamedTuple):
    """Per-layer, per-feature statistics of every hidden state 0..L (0 = embedding output)."""

    mean: Array  # [L+1, H]
    std: Array  # [L+1, H]
    count: Array  # [] number of tokens seen


class IBAOutput(NamedTuple):
    """IBA result. With `layer="all"` every field has a leading layer axis (layers 1..L)."""

    scores: Array  # [B, T] min-max normalised over non-special valid tokens; 0 on special tokens and padding
    capacity: Array  # [B, T, H] KL of the last step's forward (0 on padding)
    raw: Array  # [B, T] capacity summed over features, un-normalised (the reference's map before min-max)
    target: Array  # [B] the explained class; a token model's span target [B, T]
    layer: Array  # [] the bottleneck layer (1-based; 0 = embeddings)
    ce: Array  # [steps, B] cross-entropy per step (mean over noise samples)
    kl: Array  # [steps, B] mean KL per step


# ----------------------------------------------------------------------------------------------
# Batch helpers


def minmax_scores(raw: Array, valid: Array) -> Array:
    """Min-max normalise `raw` [..., T] over `valid` positions; 0 elsewhere (a constant map gives 0)."""
    big = jnp.finfo(raw.dtype).max
    lo = jnp.min(jnp.where(valid, raw, big), axis=-1, keepdims=True)
    hi = jnp.max(jnp.where(valid, raw, -big), axis=-1, keepdims=True)
    span = hi - lo
    out = jnp.where(span > 0, (raw - lo) / jnp.where(span > 0, span, 1.0), 0.0)
    return jnp.where(valid, out, 0.0)


# ----------------------------------------------------------------------------------------------
# The bottleneck and the optimisation


def bottleneck(alpha: Array, x: Array, mu: Array, sigma: Array, eps: Array) -> tuple[Array, Array]:
    """Noisy sample `t` ([S, ...] for `eps` [S, ...]) and the per-element KL (shape of `x`).

    `alpha`, `x`: [T, H] (or broadcastable); `mu`, `sigma` broadcast against `x`; `eps` standard normal.
    """
    lam = jax.nn.sigmoid(alpha)
    x_norm = (x.astype(jnp.float32) - mu) / sigma
    m = lam * x_norm
    log_var = 2.0 * jax.nn.log_sigmoid(-alpha)  # log (1 − λ)², stable for large α
    noise_std = jnp.exp(jnp.clip(log_var, -LOG_VAR_CLAMP, LOG_VAR_CLAMP) / 2)
    t = (m + noise_std * eps) * sigma + mu
    kl = -0.5 * (1.0 + log_var - m**2 - jnp.exp(log_var))
    return t, kl


def _noise_moments(x: Array, valid: Array, noise: str, layer_index: Any, prev: Array | None,
                   stats: NoiseStats | None) -> tuple[Array, Array]:
    """(μ, σ) broadcastable to x [B, T, H] for the chosen noise statistics."""
    if noise == "sequence":
        w = valid[..., None].astype(jnp.float32)
        n = jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
        xf = x.astype(jnp.float32)
        mu = jnp.sum(xf * w, axis=1, keepdims=True) / n
        var = jnp.sum(((xf - mu) ** 2) * w, axis=1, keepdims=True) / n
        return mu, jnp.sqrt(jnp.maximum(var, STD_FLOOR_VAR))
    if noise == "dataset":
        mu = jnp.asarray(stats.mean)[layer_index].astype(jnp.float32)
        sd = jnp.maximum(jnp.asarray(stats.std)[layer_index].astype(jnp.float32), jnp.sqrt(STD_FLOOR_VAR))
        return mu[None, None, :], sd[None, None, :]
    if noise == "reference":
        return prev.astype(jnp.float32), jnp.full((), np.sqrt(REFERENCE_VAR), jnp.float32)
    raise UserError(f"noise {noise!r}: use one of {NOISE_CHOICES}")


def draw_noise(keys: Array, step: Any, shape: tuple[int, ...]) -> Array:
    """Standard-normal noise [B, *shape] for one optimisation step (per-example keys, folded with the step)."""
    return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, step), shape, jnp.float32))(keys)


def target_ce(logits: Array, target: Array) -> Array:
    """Cross-entropy [B, S] of the target for logits [B, S, C] and classes [B]; for a token model's logits
    [B, S, T, C] and span target [B, T], the mean over the span's tokens of their classes' cross-entropy."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if target.ndim == 1:
        return -jnp.take_along_axis(logp, target[:, None, None], axis=-1)[..., 0]
    inside = (target >= 0)[:, None, :]  # [B, 1, T]
    picked = jnp.take_along_axis(logp, jnp.maximum(target, 0)[:, None, :, None], axis=-1)[..., 0]  # [B, S, T]
    return -jnp.sum(jnp.where(inside, picked, 0.0), -1) / jnp.maximum(jnp.sum(inside, -1), 1)


def _optimise(rest_logits, x: Array, valid: Array, mu: Array, sigma: Array, target: Array, keys: Array,
              beta: Any, lr: Any, steps: int, samples: int, dtype: Any) -> tuple[Array, Array, Array]:
    """Fit α for every example at once; returns (capacity of the last step [B,T,H], ce [steps,B], kl [steps,B])."""
    b, t, h = x.shape
    vf = valid.astype(jnp.float32)
    n_valid = jnp.maximum(jnp.sum(vf, axis=1), 1.0) * h  # [B]
    opt = optax.adam(lr)

    def loss_fn(alpha, eps):
        tt, kl = bottleneck(alpha[:, None], x[:, None], mu[:, None] if mu.ndim == 3 else mu,
                            sigma[:, None] if sigma.ndim == 3 else sigma, eps)
        kl = kl[:, 0] * vf[..., None]  # [B, T, H]
        logits = rest_logits(tt.reshape(b * samples, t, h).astype(dtype))
        ce = jnp.mean(target_ce(logits.reshape((b, samples) + logits.shape[1:]), target), axis=1)  # [B]
        klm = jnp.sum(kl, axis=(1, 2)) / n_valid
        return jnp.sum(ce + beta * klm), (kl, ce, klm)

    def step(carry, s):
        alpha, state, _ = carry
        eps = draw_noise(keys, s, (samples, t, h))
        (_, (kl, ce, klm)), g = jax.value_and_grad(loss_fn, has_aux=True)(alpha, eps)
        upd, state = opt.update(g, state, alpha)
        return (optax.apply_updates(alpha, upd), state, kl), (ce, klm)

    alpha0 = jnp.full((b, t, h), ALPHA_INIT, jnp.float32)
    init = (alpha0, opt.init(alpha0), jnp.zeros((b, t, h), jnp.float32))
    (_, _, capacity), (ces, kls) = jax.lax.scan(step, init, jnp.arange(steps))
    return capacity, ces, kls


def _finish(capacity: Array, valid: Array, special: Array) -> tuple[Array, Array]:
    raw = jnp.sum(capacity, axis=-1)
    return minmax_scores(raw, valid & ~special), raw


def _rep(a: Array, n: int) -> Array:
    return jnp.repeat(a, n, axis=0)


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "steps", "samples", "noise"))
def _iba_layer(params, cfg, input_ids, attention_mask, token_type_ids, special, target, keys, beta, lr, stats,
               *, layer, steps, samples, noise):
    mask = attention_mask
    valid = mask.astype(bool)
    h = embed(params, cfg, word_embeddings(params, cfg, input_ids), mask, token_type_ids)
    prev = run_layers(params, cfg, h, mask, stop=max(layer - 1, 0)).hidden
    x = run_layers(params, cfg, prev, mask, start=max(layer - 1, 0), stop=layer).hidden
    mask_rep = _rep(mask, samples)

    def rest_logits(hid):
        out = run_layers(params, cfg, hid, mask_rep, start=layer, cls_only=True).hidden
        return classify(params, cfg, out, mask_rep)

    if target is None:
        full = run_layers(params, cfg, x, mask, start=layer, cls_only=True).hidden
        target = jnp.argmax(classify(params, cfg, full, mask), axis=-1).astype(jnp.int32)
    mu, sigma = _noise_moments(x, valid, noise, layer, prev, stats)
    capacity, ces, kls = _optimise(rest_logits, x, valid, mu, sigma, target, keys, beta, lr, steps, samples,
                                   cfg.compute_dtype)
    scores, raw = _finish(capacity, valid, special)
    return IBAOutput(scores, capacity, raw, target, jnp.asarray(layer, jnp.int32), ces, kls)


def _one_block(params, cfg, p, hid, mask, index):
    """Block `index` (0-based, absolute: ModernBERT's block type depends on it) with its params `p`
    (and the parameters every block shares: DeBERTa's relative embeddings)."""
    one = {**shared_block_params(params), "layers": jax.tree.map(lambda a: a[None], p)}
    return run_layers(one, cfg.unshared(), hid, mask, start=0, stop=1, layer_offset=index).hidden


@functools.partial(jax.jit, static_argnames=("cfg", "steps", "samples", "noise"))
def _iba_all(params, cfg, input_ids, attention_mask, token_type_ids, special, target, keys, beta, lr, stats,
             *, steps, samples, noise):
    mask = attention_mask
    valid = mask.astype(bool)
    n_layers = cfg.num_layers
    h0 = embed(params, cfg, word_embeddings(params, cfg, input_ids), mask, token_type_ids)

    def collect(hid, xs):
        nxt = _one_block(params, cfg, xs[0], hid, mask, xs[1])
        return nxt, nxt

    last, hs = jax.lax.scan(collect, h0, (layer_params(params, cfg), jnp.arange(n_layers)))
    hiddens = jnp.concatenate([h0[None], hs])  # [L+1, B, T, H]
    if target is None:
        target = jnp.argmax(classify(params, cfg, last, mask), axis=-1).astype(jnp.int32)
    mask_rep = _rep(mask, samples)

    def per_layer(_, layer):
        x, prev = hiddens[layer], hiddens[layer - 1]

        def rest_logits(hid):
            def body(hh, xs):
                p, i = xs
                hh = jax.lax.cond(i >= layer, lambda v: _one_block(params, cfg, p, v, mask_rep, i), lambda v: v, hh)
                return hh, None

            out, _ = jax.lax.scan(body, hid, (layer_params(params, cfg), jnp.arange(n_layers)))
            return classify(params, cfg, out, mask_rep)

        mu, sigma = _noise_moments(x, valid, noise, layer, prev, stats)
        capacity, ces, kls = _optimise(rest_logits, x, valid, mu, sigma, target, keys, beta, lr, steps, samples,
                                       cfg.compute_dtype)
        scores, raw = _finish(capacity, valid, special)
        return None, IBAOutput(scores, capacity, raw, target, layer.astype(jnp.int32), ces, kls)

    _, out = jax.lax.scan(per_layer, None, jnp.arange(1, n_layers + 1))
    return out


def window_keys(keys: Array, n: int) -> Array:
    """[B*n] keys for the n windows of B documents: window 0 keeps the document's key, window k > 0 gets
    `fold_in(key, k)` (deterministic per document, whatever else is in the batch)."""
    folded = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(n)))(keys)
    out = jnp.concatenate([keys[:, None], folded[:, 1:]], axis=1)
    return out.reshape((-1,) + out.shape[2:])


def take_windows(a: Array, index: Array) -> Array:
    """[B, T] per-token values -> [B*n, W] per window-token through `window_index`'s index [B, n, W]."""
    b, n, w = index.shape
    return jnp.take_along_axis(a, index.reshape(b, n * w), axis=1).reshape(b * n, w)


def _overlap_mean(values: Array, index: Array, weight: Array, length: int) -> Array:
    """Per-window values [B, n, W, ...] averaged into document positions [B, length, ...]: each position's
    mean over the windows whose `index` [B, n, W] points at it, weighted by `weight` [B, n, W] (0: not counted)."""
    b = index.shape[0]
    flat = index.reshape(b, -1)
    v = values.reshape((b, flat.shape[1]) + values.shape[3:]).astype(jnp.float32)
    w = weight.reshape(b, -1).astype(jnp.float32)
    w_v = w.reshape(w.shape + (1,) * (v.ndim - 2))
    rows = jnp.arange(b)[:, None]
    total = jnp.zeros((b, length) + values.shape[3:], jnp.float32).at[rows, flat].add(v * w_v)
    count = jnp.zeros((b, length), jnp.float32).at[rows, flat].add(w)
    return total / jnp.maximum(count, 1.0).reshape(count.shape + (1,) * (v.ndim - 2))


def _pool_windows(out: IBAOutput, index: Array, wmask: Array, valid: Array, mask: Array,
                  special: Array) -> IBAOutput:
    """One layer's window results (B*n rows of W) -> the documents' (B rows of T): raw capacity and capacity
    averaged over the valid windows containing a token, scores min-max normalised over the document's
    non-special tokens, ce/kl the mean over its valid windows."""
    b, n, w = index.shape
    weight = wmask.astype(bool) & valid[..., None]
    raw = _overlap_mean(out.raw.reshape(b, n, w), index, weight, mask.shape[1])
    capacity = _overlap_mean(out.capacity.reshape(b, n, w, -1), index, weight, mask.shape[1])
    per = valid.astype(jnp.float32) / jnp.sum(valid, axis=1, keepdims=True)  # [B, n]
    ce, kl = (jnp.einsum("sbn,bn->sb", a.reshape(-1, b, n), per) for a in (out.ce, out.kl))
    scores = minmax_scores(raw, mask.astype(bool) & ~special)
    return IBAOutput(scores, capacity, raw, out.target.reshape(b, n)[:, 0], out.layer, ce, kl)


@functools.partial(jax.jit, static_argnames=("cfg", "layer", "steps", "samples", "noise"))
def _iba_windowed(params, cfg, input_ids, attention_mask, token_type_ids, special, target, keys, beta, lr, stats,
                  *, layer, steps, samples, noise):
    """IBA on documents longer than `cfg.window`: one bottleneck per window (B*n ordinary examples of W tokens
    under the un-windowed config, each fitted on its own logits for the document's target), pooled back."""
    b = input_ids.shape[0]
    index, wmask, valid = window_index(attention_mask, cfg.window, cfg.window_stride)
    n, w = index.shape[1:]
    if target is None:  # the windowed classifier's (pooled) prediction
        logits = forward(params, cfg, input_ids, attention_mask, token_type_ids, cls_only=True).logits
        target = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    take = lambda a: take_windows(a, index)
    flat_mask = wmask.reshape(b * n, w)
    args = (params, cfg.replace(window=0, window_stride=0), take(input_ids), flat_mask,
            None if token_type_ids is None else take(token_type_ids), take(special) & flat_mask.astype(bool),
            jnp.repeat(target, n), window_keys(keys, n), beta, lr, stats)
    if layer == "all":
        out = _iba_all(*args, steps=steps, samples=samples, noise=noise)
        return jax.vmap(lambda o: _pool_windows(o, index, wmask, valid, attention_mask, special))(out)
    out = _iba_layer(*args, layer=layer, steps=steps, samples=samples, noise=noise)
    return _pool_windows(out, index, wmask, valid, attention_mask, special)


def is_windowed(cfg: EncoderConfig, length: int) -> bool:
    """True when a [.., length] input runs as windows (`cfg.window` set and the input longer than it)."""
    return bool(cfg.window) and length > cfg.window


def _check(cfg: EncoderConfig, layer: Any, steps: int, samples: int, noise: str, noise_stats: Any) -> None:
    if cfg.problem_type != "classification":
        raise UserError("IBA explains a class: it needs a classification head, not regression")
    if noise not in NOISE_CHOICES:
        raise UserError(f"noise {noise!r}: use one of {', '.join(NOISE_CHOICES)}")
    if noise == "dataset" and noise_stats is None:
        raise UserError("noise='dataset' needs noise_stats (see estimate_noise_stats)")
    if steps < 1 or samples < 1:
        raise UserError(f"steps ({steps}) and samples ({samples}) must be at least 1")
    if layer != "all":
        if not isinstance(layer, int | np.integer) or not 0 <= int(layer) <= cfg.num_layers:
            raise UserError(f"layer {layer!r}: use 0..{cfg.num_layers} (0 = embeddings) or 'all'")
        if noise == "reference" and int(layer) == 0:
            raise UserError("noise='reference' needs layer >= 1 (its mean is the state entering the block)")


def _prepare(batch: Mapping[str, Any], target: Any, key: Array, cfg: EncoderConfig):
    ids = jnp.asarray(batch["input_ids"], jnp.int32)
    mask = jnp.asarray(batch["attention_mask"], jnp.int32)
    tt = batch.get("token_type_ids")
    tt = None if tt is None else jnp.asarray(tt, jnp.int32)
    special = special_mask(batch)
    if cfg.task == "token":  # a span target [B, T] is required (one-line UserError otherwise)
        tgt = token_target(target, jax.ShapeDtypeStruct(ids.shape + (cfg.num_labels,), jnp.float32))
    elif target is None or (isinstance(target, str) and target == "predicted"):
        tgt = None
    else:
        tgt = resolve_target(target, jnp.zeros((ids.shape[0], 1)), batch,
                             num_classes=None if cfg.problem_type == "regression" else cfg.num_labels)
    return ids, mask, tt, special, tgt, per_example_keys(key, ids.shape[0])


def default_beta(noise: str) -> float:
    """The β that binds for a noise mode (`DEFAULT_BETA`)."""
    if noise not in DEFAULT_BETA:
        raise UserError(f"noise {noise!r}: use one of {', '.join(NOISE_CHOICES)}")
    return DEFAULT_BETA[noise]


def iba(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], *, layer: int | str,
        beta: float | None = None, steps: int = 10, samples: int = 10, lr: float = 1.0, key: Array,
        target: Any = None, noise: Noise = "sequence", noise_stats: NoiseStats | None = None) -> IBAOutput:
    """Information bottleneck attribution for a padded batch (`input_ids`, `attention_mask`, ...).

    `layer`: bottleneck on the output of block `layer` (1..L; 0 = embeddings) or "all" (one map per
    layer 1..L from one compiled program; outputs gain a leading layer axis). `beta`: None = the
    noise mode's `default_beta` (0.3 for per-feature statistics, the paper's 1e-5 for "reference").
    `target`: None/"predicted", "gold" (uses `batch["label"]`) or class indices; a token model's span target
    [B, T] (its CE: see the module docstring). `key`: one PRNG key
    (split per example) or one key per example — the same key gives the same map. Pure and jit-able
    (with `layer`, `steps`, `samples`, `noise` static). With `cfg.window` and an input longer than it, one
    bottleneck per window, averaged over the overlaps (see the module docstring).
    """
    _check(cfg, layer, steps, samples, noise, noise_stats)
    beta = default_beta(noise) if beta is None else beta
    ids, mask, tt, special, tgt, keys = _prepare(batch, target, key, cfg)
    stats = noise_stats if noise == "dataset" else None
    if is_windowed(cfg, ids.shape[1]):
        if cfg.task != "sequence":
            raise UserError("windowed long inputs need a sequence classifier, not a token model")
        return _iba_windowed(params, cfg, ids, mask, tt, special, tgt, keys, beta, lr, stats,
                             layer=layer if layer == "all" else int(layer), steps=steps, samples=samples, noise=noise)
    if layer == "all":
        return _iba_all(params, cfg, ids, mask, tt, special, tgt, keys, beta, lr, stats,
                        steps=steps, samples=samples, noise=noise)
    return _iba_layer(params, cfg, ids, mask, tt, special, tgt, keys, beta, lr, stats,
                      layer=int(layer), steps=steps, samples=samples, noise=noise)


def iba_beta_sweep(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], betas: Any, *, layer: int,
                   steps: int = 10, samples: int = 10, lr: float = 1.0, key: Array, target: Any = None,
                   noise: Noise = "sequence", noise_stats: NoiseStats | None = None) -> IBAOutput:
    """IBA for several β at once (vmap over β; layers 1..l still run once): fields gain a leading β axis."""
    _check(cfg, layer, steps, samples, noise, noise_stats)
    if layer == "all":
        raise UserError("a beta sweep takes one layer; call it per layer or use layer='all' with one beta")
    if is_windowed(cfg, np.shape(batch["input_ids"])[-1]):
        raise UserError("a beta sweep runs on inputs that fit the model; call iba per beta for windowed documents")
    ids, mask, tt, special, tgt, keys = _prepare(batch, target, key, cfg)
    stats = noise_stats if noise == "dataset" else None
    run = lambda b: _iba_layer(params, cfg, ids, mask, tt, special, tgt, keys, b, lr, stats,
                               layer=int(layer), steps=steps, samples=samples, noise=noise)
    return jax.vmap(run)(jnp.asarray(betas, jnp.float32))


# ----------------------------------------------------------------------------------------------
# Dataset noise statistics: Welford / Chan streaming estimate of every layer's output


class Welford(NamedTuple):
    """Running per-layer, per-feature count/mean/M2 (sum of squared deviations)."""

    count: Array  # []
    mean: Array  # [L+1, H]
    m2: Array  # [L+1, H]


def welford_init(num_states: int, hidden: int) -> Welford:
    return Welford(jnp.zeros((), jnp.float32), jnp.zeros((num_states, hidden), jnp.float32),
                   jnp.zeros((num_states, hidden), jnp.float32))


@jax.jit
def welford_update(state: Welford, values: Array, mask: Array) -> Welford:
    """Fold a batch of states `values` [S, B, T, H] at valid positions `mask` [B, T] in (Chan's parallel merge)."""
    w = mask.astype(jnp.float32)[None, ..., None]
    n_b = jnp.sum(mask.astype(jnp.float32))
    v = values.astype(jnp.float32)
    mean_b = jnp.sum(v * w, axis=(1, 2)) / jnp.maximum(n_b, 1.0)
    m2_b = jnp.sum(((v - mean_b[:, None, None]) ** 2) * w, axis=(1, 2))
    n = state.count + n_b
    delta = mean_b - state.mean
    frac = jnp.where(n > 0, n_b / jnp.maximum(n, 1.0), 0.0)
    mean = state.mean + delta * frac
    m2 = state.m2 + m2_b + delta**2 * state.count * frac
    return Welford(n, mean, m2)


def welford_finalize(state: Welford) -> NoiseStats:
    var = state.m2 / jnp.maximum(state.count, 1.0)
    return NoiseStats(state.mean, jnp.sqrt(jnp.maximum(var, STD_FLOOR_VAR)), state.count)


@functools.partial(jax.jit, static_argnames=("cfg",))
def hidden_states(params: Params, cfg: EncoderConfig, input_ids: Array, attention_mask: Array,
                  token_type_ids: Array | None = None) -> Array:
    """Every hidden state [L+1, B, T, H]: the embedding output, then each block's output."""
    h0 = embed(params, cfg, word_embeddings(params, cfg, input_ids), attention_mask, token_type_ids)

    def collect(hid, xs):
        nxt = _one_block(params, cfg, xs[0], hid, attention_mask, xs[1])
        return nxt, nxt

    _, hs = jax.lax.scan(collect, h0, (layer_params(params, cfg), jnp.arange(cfg.num_layers)))
    return jnp.concatenate([h0[None], hs])


def estimate_noise_stats(params: Params, cfg: EncoderConfig, batches: Iterable[Mapping[str, Any]]) -> NoiseStats:
    """Per-layer, per-feature mean/std of every hidden state over the valid tokens of a stream of batches (a
    windowed model's long documents: over the tokens of their valid windows, the states IBA's bottlenecks see)."""
    state = welford_init(cfg.num_layers + 1, cfg.hidden_size)
    seen = False
    for batch in batches:
        mask = jnp.asarray(batch["attention_mask"], jnp.int32)
        tt = batch.get("token_type_ids")
        ids, tt = jnp.asarray(batch["input_ids"], jnp.int32), None if tt is None else jnp.asarray(tt, jnp.int32)
        count = mask
        if is_windowed(cfg, ids.shape[1]):  # the states the windows' bottlenecks see (valid windows counted)
            index, wmask, valid = window_index(mask, cfg.window, cfg.window_stride)
            ids, tt = take_windows(ids, index), None if tt is None else take_windows(tt, index)
            mask, count = wmask.reshape(ids.shape), (wmask * valid[..., None]).reshape(ids.shape)
        hs = hidden_states(params, cfg.replace(window=0, window_stride=0), ids, mask, tt)
        state = welford_update(state, hs, count)
        seen = True
    if not seen:
        raise UserError("estimate_noise_stats got no batches; give a non-empty dataset")
    return welford_finalize(state)


def save_noise_stats(path: str, stats: NoiseStats) -> None:
    np.savez(path, mean=np.asarray(stats.mean), std=np.asarray(stats.std), count=np.asarray(stats.count))


def load_noise_stats(path: str) -> NoiseStats:
    try:
        d = np.load(path)
        return NoiseStats(jnp.asarray(d["mean"]), jnp.asarray(d["std"]), jnp.asarray(d["count"]))
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: not a noise-statistics file ({e})") from None


# ----------------------------------------------------------------------------------------------
# Registration with the attribution driver (`jaxattr attribute --method iba`)

_STATS_CACHE: dict[str, NoiseStats] = {}


def _iba_method(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], *, target: Any, key: Array,
                layer: int | str | None, beta: float | None, noise: str, samples: int, steps: int,
                noise_stats: str | None = None) -> IBAOutput:
    """The driver's entry: `noise_stats` is a path to an .npz from `save_noise_stats` (for noise='dataset')."""
    if layer is None:  # the paper's 9 of 12 blocks, scaled to the model
        layer = max(1, round(0.75 * cfg.num_layers))
    stats = None
    if noise == "dataset":
        if noise_stats not in _STATS_CACHE:
            _STATS_CACHE[noise_stats] = load_noise_stats(noise_stats)
        stats = _STATS_CACHE[noise_stats]
        if stats.mean.shape != (cfg.num_layers + 1, cfg.hidden_size):
            raise UserError(f"{noise_stats}: noise statistics of shape {tuple(stats.mean.shape)} do not fit a model "
                            f"with {cfg.num_layers} layers of {cfg.hidden_size} features")
    return iba(params, cfg, batch, layer=layer, beta=beta, steps=steps, samples=samples, key=key, target=target,
               noise=noise, noise_stats=stats)


def _validate(o: Mapping[str, Any]) -> None:
    layer = o["layer"]
    if layer is not None and layer != "all" and (not isinstance(layer, int) or layer < 0):
        raise UserError(f"--layer must be a block index >= 0 (0 = embeddings) or 'all', not {layer!r}")
    if o["noise"] not in NOISE_CHOICES:
        raise UserError(f"--noise must be one of {', '.join(NOISE_CHOICES)}, not {o['noise']!r}")
    if o["noise"] == "dataset" and not o.get("noise_stats"):
        raise UserError("--noise dataset needs --noise-stats FILE.npz (per-layer statistics written by "
                        "`jaxattr degradation --noise dataset` into OUT/noise_stats.npz, or by save_noise_stats)")
    for k in ("samples", "steps"):
        if not isinstance(o[k], int) or o[k] < 1:
            raise UserError(f"--{k} must be an integer >= 1, not {o[k]!r}")
    if o["beta"] is not None and not float(o["beta"]) >= 0:
        raise UserError(f"--beta must be >= 0, not {o['beta']!r}")


def _outputs(r: IBAOutput) -> dict[str, Any]:
    """Every row carries its layer: one layer gives [1, B, T], layer='all' gives [L, B, T]."""
    scores = r.scores if r.scores.ndim == 3 else r.scores[None]
    layers = np.atleast_1d(np.asarray(r.layer))
    return {"scores": scores, "layers": [int(x) for x in layers]}


def _register() -> None:
    from jaxattr.attribution.registry import MethodSpec, register

    register(MethodSpec(
        name="iba", fn=_iba_method,
        options={"layer": None, "beta": None, "noise": "sequence", "samples": 10, "steps": 10, "noise_stats": None},
        cost=lambda o: o["samples"], outputs=_outputs, validate=_validate, windows=True, token_models=True,
        description="information bottleneck on the output of a layer (1-based; default round(0.75 L); 'all')",
    ))


_register()
