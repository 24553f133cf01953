"""AD-DROP: attribution-driven dropout of self-attention positions (Yang et al., NeurIPS 2022, §2.3-2.4).

One AD-DROP step, as a pre-gradient batch transform for the engine (`make_transform`):

1. forward 1 with dropout on, with a zero perturbation `attn_perturb` added to every layer's attention
   probabilities A after attention dropout (the reference takes the gradient there); the pseudo label
   ĉ = argmax of its logits (or the gold label);
2. B = ∂F_ĉ/∂A through `jax.vjp` w.r.t. the perturbation only: no parameter gradient is computed
   (regression: B = −∂loss/∂A with the squared error against the gold target; token classification:
   B = ∂(−L)/∂A, see below);
3. per row (layer, example, head, query), sort the valid (non-padding) keys' scores ascending; the
   threshold is the ⌊(1−p)·n⌋-th smallest (0-based, n = valid keys, exact rational arithmetic); positions
   at or above it form the candidate region (`region="low"`: the ⌊p·n⌋ lowest instead, the paper's §2.2
   prior experiment, as the reference counts them); each candidate is dropped with probability q;
4. the drops become an additive bias (`mask_value`, large negative) on the attention scores of the
   chosen layers; forward 2 with that bias gives the training loss (the engine's `loss_fn`).

Attribution variants: GA (gradient, default), IGA (integrated gradient over the scaled attention of each
chosen layer, m steps, Hao et al. 2021: B = A ⊙ mean_k ∂F(k/m·A)/∂A), AA (the attention weights
themselves), RD (no scores: every valid position dropped independently with probability p·q, as the
reference's `generate_mask_rev_random`). Cross-tuning: plain fine-tuning on odd
epochs, AD-DROP on even epochs (1-indexed). Layers are counted 1..L as in the papers.

Token classification (§2.3 footnote 3: token-level tasks attribute the negative loss). What the reference
NER trainer (TaoYang225/AD-DROP, ner/self_transformers/trainer.py `compute_loss`) does, and so what this
does: the pseudo labels are forward 1's argmax tags at *every real token* (its `active_loss` is
attention_mask == 1: [CLS], [SEP] and every word piece, not only the labelled first pieces), L is their
mean cross-entropy over those tokens, and the scores are B = −∂L/∂A (it passes `-grad` to
`generate_mask_rev`). `labels="gold"`: L is the training loss itself (gold tags at the labelled tokens).
IGA recomputes ∂(−L)/∂logits at each scaled point, the pseudo labels held at forward 1's. (The reference's
NER script also trains on every piece of a word, `label_all_tokens=True`; jaxattr's training data labels first
pieces only, HF's default: that changes the training loss, not what is attributed.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp

from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, forward, mask_value
from jaxattr.training.config import register_section
from jaxattr.training.data import IGNORE
from jaxattr.training.engine import token_cross_entropy
from jaxattr.types import Batch

ATTRIBUTIONS = ("ga", "iga", "aa", "rd")


# unused_fingerprint="": resume fingerprints have always held `"addrop": ""` under the other methods
@register_section("addrop", unused_fingerprint="")
@dataclasses.dataclass(frozen=True)
class ADDropConfig:
    """AD-DROP settings (paper defaults: GA, pseudo labels, p = 0.3, q = 0.2, cross-tuning on): the `addrop:`
    section of a TrainConfig."""

    attribution: str = "ga"  # ga | iga | aa | rd
    p: float = 0.3  # size of the candidate region (fraction of the valid keys of a row)
    q: float = 0.2  # drop probability inside the region
    labels: str = "pseudo"  # pseudo | gold (classification, token; regression always uses the gold target)
    layers: Any = "all"  # "all" or 1-based block indices, e.g. [1] = the first layer only
    cross_tuning: bool = True  # plain on odd epochs, AD-DROP on even epochs
    region: str = "high"  # high (AD-DROP) | low (§2.2: drop the low-attribution positions)
    iga_steps: int = 20
    iga_weighting: str = "hao"  # hao (w_k = 1) | reference (w_k = k/m, as the AD-DROP code): see IGA below

    def validate(self, num_layers: int | None = None) -> ADDropConfig:
        """Raise a one-line UserError for a bad setting; return self (with `layers` normalised)."""
        if self.attribution not in ATTRIBUTIONS:
            raise UserError(f"addrop.attribution {self.attribution!r} is unknown; choose one of {ATTRIBUTIONS}")
        for name in ("p", "q"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
                raise UserError(f"addrop.{name} must lie strictly between 0 and 1, got {v!r}")
        if self.labels not in ("pseudo", "gold"):
            raise UserError(f"addrop.labels must be 'pseudo' or 'gold', got {self.labels!r}")
        if self.region not in ("high", "low"):
            raise UserError(f"addrop.region must be 'high' or 'low', got {self.region!r}")
        if self.iga_weighting not in ("hao", "reference"):
            raise UserError(f"addrop.iga_weighting must be 'hao' or 'reference', got {self.iga_weighting!r}")
        if not isinstance(self.iga_steps, int) or self.iga_steps < 1:
            raise UserError(f"addrop.iga_steps must be a positive integer, got {self.iga_steps!r}")
        layers = self.layers
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = (layers,)
        if layers != "all":
            if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
                raise UserError(f"addrop.layers must be 'all' or a list of 1-based layer numbers, got {layers!r}")
            layers = tuple(layers)
            if num_layers is not None and not all(isinstance(i, int) and 1 <= i <= num_layers for i in layers):
                raise UserError(f"addrop.layers {list(layers)} must be layer numbers in 1..{num_layers}")
        return dataclasses.replace(self, layers=layers, p=float(self.p), q=float(self.q))

    def layer_indices(self, num_layers: int) -> tuple[int, ...]:
        """0-based indices of the chosen blocks."""
        if self.layers == "all":
            return tuple(range(num_layers))
        return tuple(sorted({int(i) - 1 for i in self.layers}))


def use_addrop(epoch: int, cross_tuning: bool) -> bool:
    """Whether AD-DROP runs in `epoch` (1-indexed): every epoch, or only even ones with cross-tuning."""
    return (not cross_tuning) or epoch % 2 == 0


# ----------------------------------------------------------------------------------------------
# Masks from scores.


def _order_key(x: jax.Array) -> jax.Array:
    """int32 keys with the same order as the float32 values (-0.0 and +0.0 get the same key)."""
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x).astype(jnp.float32), jnp.int32)
    return jnp.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _kth_largest(keys: jax.Array, k: jax.Array) -> jax.Array:
    """Per row of `keys` ([..., T] int32), the k-th largest key (k [...] >= 1), by bisection on the key.

    32 vectorised count passes instead of a per-row sort: on CPU, XLA's sort of [L, B, H, T, T]
    scores cost a third of a training step; this costs a few percent and is exact.
    """
    lo = jnp.full(keys.shape[:-1], jnp.iinfo(jnp.int32).min, jnp.int32)  # invariant: count(keys >= lo) >= k
    hi = jnp.full(keys.shape[:-1], jnp.iinfo(jnp.int32).max, jnp.int32)

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        enough = jnp.sum(keys >= mid[..., None], axis=-1) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    return jax.lax.fori_loop(0, 32, halve, (lo, hi))[0]


def threshold_index(p: float, n: int, region: str = "high") -> int:
    """0-based ascending index of a row's threshold among its n valid scores, in exact rational arithmetic.

    "high" (AD-DROP eq. 6; reference `generate_mask_rev`): ⌊(1−p)·n⌋; the candidates are the keys at or
    above it (in float64, 1 − 0.8 = 0.19999999999999996 would give one extra candidate for every n
    divisible by 5). "low" (§2.2; reference `generate_mask`): ⌊p·n⌋; the candidates are the keys strictly
    below it, i.e. the ⌊p·n⌋ lowest.
    """
    frac = Fraction(repr(float(p)))
    return math.floor((frac if region == "low" else 1 - frac) * n)


def candidate_region(scores: jax.Array, key_mask: jax.Array, p: float, region: str = "high") -> jax.Array:
    """Positions eligible for dropping, per row of `scores` ([..., B, H, Tq, Tk]; `key_mask` [B, Tk]).

    With t = `threshold_index(p, n, region)` and θ the t-th smallest valid score of the row: valid keys
    with score ≥ θ ("high") or < θ ("low"), as the reference code compares. Padding is never a candidate.
    """
    valid = jnp.broadcast_to(key_mask.astype(bool)[:, None, None, :], scores.shape)  # [..., B, H, Tq, Tk]
    n = jnp.sum(key_mask.astype(jnp.int32), axis=-1)  # [B]
    table = jnp.asarray([threshold_index(p, k, region) for k in range(scores.shape[-1] + 1)], jnp.int32)
    t = jnp.clip(table[n], 0, jnp.maximum(n - 1, 0))
    # the t-th smallest of n valid scores is the (n - t)-th largest; padding keys sort below everything
    keys = jnp.where(valid, _order_key(scores), jnp.iinfo(jnp.int32).min)
    k = jnp.broadcast_to((n - t)[:, None, None], scores.shape[:-1])
    theta = _kth_largest(keys, k)[..., None]
    return valid & ((keys < theta) if region == "low" else (keys >= theta))


def drop_mask(scores: jax.Array, key_mask: jax.Array, p: float, q: float, rng: jax.Array,
              region: str = "high") -> jax.Array:
    """True where a position is dropped: in the candidate region and chosen with probability q."""
    cand = candidate_region(scores, key_mask, p, region)
    return cand & jax.random.bernoulli(rng, q, cand.shape)


def random_drop_mask(shape: tuple[int, ...], key_mask: jax.Array, p: float, q: float, rng: jax.Array) -> jax.Array:
    """RD as the reference (`generate_mask_rev_random`): every valid key dropped independently with p·q."""
    valid = jnp.broadcast_to(key_mask.astype(bool)[:, None, None, :], shape)
    return valid & jax.random.bernoulli(rng, p * q, shape)


# ----------------------------------------------------------------------------------------------
# Attribution scores.


def _forward_fn(params: Params, cfg: EncoderConfig, batch: Batch, rng: jax.Array, deterministic: bool):
    def f(perturb: jax.Array):
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                      attn_perturb=perturb, return_attention=True, deterministic=deterministic, rng=rng)
        return out.logits, out.attention

    return f


def _token_targets(logits: jax.Array, batch: Batch, labels: str) -> jax.Array:
    """[B, T] tags whose mean cross-entropy L a token model's F = −L is of (`IGNORE` elsewhere): pseudo, the
    argmax tags at every real token (the reference's `active_loss`); gold, the training labels."""
    if labels == "gold":
        return batch["labels"].astype(jnp.int32)
    return jnp.where(batch["attention_mask"] > 0, jnp.argmax(logits, -1), IGNORE).astype(jnp.int32)


def _negative_token_loss(logits: jax.Array, targets: jax.Array, batch: Batch) -> jax.Array:
    """F = −L of a token model: minus `token_cross_entropy` of `targets` (filler rows of weight 0 left out)."""
    weight = batch.get("weight", jnp.ones(logits.shape[0], jnp.float32))
    return -token_cross_entropy(logits, targets, weight)[0]


def _cotangent(cfg: EncoderConfig, logits: jax.Array, batch: Batch, labels: str,
               targets: jax.Array | None = None) -> jax.Array:
    """d(target)/d(logits): one-hot of ĉ (F_ĉ), −d loss/d pred for regression (squared error), or for a
    token model d(−L)/d(logits) of the `_token_targets` (`targets`: held ones, e.g. forward 1's pseudo tags)."""
    if cfg.task == "token":
        targets = _token_targets(logits, batch, labels) if targets is None else targets
        return jax.grad(_negative_token_loss)(logits, jax.lax.stop_gradient(targets), batch)
    if cfg.problem_type == "regression":
        return -2.0 * (logits - batch["labels"].astype(jnp.float32).reshape(logits.shape))
    target = jnp.argmax(logits, -1) if labels == "pseudo" else batch["labels"].astype(jnp.int32)
    return jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)


def attention_gradient(params: Params, cfg: EncoderConfig, batch: Batch, rng: jax.Array | None = None, *,
                       labels: str = "pseudo", deterministic: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(B = ∂F_ĉ/∂A for every layer [L, B, H, T, T], logits, attention) from one forward + one
    activation-only backward (the vjp is taken w.r.t. the attention perturbation, never the params)."""
    b, t = batch["input_ids"].shape
    zeros = jnp.zeros((cfg.num_layers, b, cfg.num_heads, t, t), jnp.float32)
    f = _forward_fn(params, cfg, batch, rng, deterministic)
    logits, vjp, attention = jax.vjp(f, zeros, has_aux=True)
    (grad,) = vjp(jax.lax.stop_gradient(_cotangent(cfg, logits, batch, labels)))
    return grad, logits, attention


def integrated_attention_gradient(params: Params, cfg: EncoderConfig, batch: Batch, rng: jax.Array | None,
                                  layers: Sequence[int], *, steps: int = 20, labels: str = "pseudo",
                                  deterministic: bool = False, weighting: str = "hao") -> jax.Array:
    """IGA for each chosen layer l: A_l ⊙ (1/m) Σ_k w_k ∂F(k/m · A_l)/∂A_l, scaling one layer at a time
    (the other layers as in forward 1, same dropout key). Returns [len(layers), B, H, T, T].

    `weighting="hao"`: w_k = 1, the Riemann sum of Hao et al. 2021's integral. `"reference"`: w_k = k/m,
    what the AD-DROP code computes (it scales the layer's context output by k/m and differentiates
    w.r.t. the unscaled A, which multiplies each gradient by k/m)."""
    b, t = batch["input_ids"].shape
    zeros = jnp.zeros((cfg.num_layers, b, cfg.num_heads, t, t), jnp.float32)
    f = _forward_fn(params, cfg, batch, rng, deterministic)
    logits, attention = f(zeros)
    ct = jax.lax.stop_gradient(_cotangent(cfg, logits, batch, labels))
    held = _token_targets(logits, batch, labels) if cfg.task == "token" else None  # F = −L of forward 1's tags
    attention = jax.lax.stop_gradient(attention)
    alphas = jnp.arange(1, steps + 1, dtype=jnp.float32) / steps

    def one_layer(li):
        a_l = attention[li]

        def step(acc, alpha):
            perturb = zeros.at[li].set((alpha - 1.0) * a_l)
            logits_k, vjp, _ = jax.vjp(f, perturb, has_aux=True)
            ct_k = ct if held is None else jax.lax.stop_gradient(_cotangent(cfg, logits_k, batch, labels, held))
            w = alpha if weighting == "reference" else 1.0
            return acc + w * vjp(ct_k)[0][li], None

        total, _ = jax.lax.scan(step, jnp.zeros_like(a_l), alphas)
        return a_l * total / steps

    return jax.lax.map(one_layer, jnp.asarray(layers, jnp.int32))


def attribution_scores(params: Params, cfg: EncoderConfig, batch: Batch, rng: jax.Array,
                       acfg: ADDropConfig) -> jax.Array:
    """Scores [len(layers), B, H, T, T] for the chosen layers, by the configured attribution method."""
    layers = jnp.asarray(acfg.layer_indices(cfg.num_layers), jnp.int32)
    k_fwd = rng
    if acfg.attribution == "ga":
        grad, _, _ = attention_gradient(params, cfg, batch, k_fwd, labels=acfg.labels)
        return grad[layers]
    if acfg.attribution == "iga":
        return integrated_attention_gradient(params, cfg, batch, k_fwd, acfg.layer_indices(cfg.num_layers),
                                             steps=acfg.iga_steps, labels=acfg.labels,
                                             weighting=acfg.iga_weighting)
    if acfg.attribution == "aa":
        out = forward(params, cfg, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                      return_attention=True, deterministic=False, rng=k_fwd)
        return out.attention[layers].astype(jnp.float32)
    raise UserError(f"addrop.attribution {acfg.attribution!r} has no scores (RD draws its mask directly)")


def addrop_bias(params: Params, cfg: EncoderConfig, batch: Batch, rng: jax.Array, acfg: ADDropConfig) -> jax.Array:
    """The additive attention bias [L, B, H, T, T] of one AD-DROP step (0 on unchosen layers)."""
    k_score, k_drop = jax.random.split(rng)
    if acfg.attribution == "rd":
        b, t = batch["input_ids"].shape
        shape = (len(acfg.layer_indices(cfg.num_layers)), b, cfg.num_heads, t, t)
        dropped = random_drop_mask(shape, batch["attention_mask"], acfg.p, acfg.q, k_drop)
    else:
        scores = jax.lax.stop_gradient(attribution_scores(params, cfg, batch, k_score, acfg))
        dropped = drop_mask(scores, batch["attention_mask"], acfg.p, acfg.q, k_drop, acfg.region)
    bias = jnp.where(dropped, mask_value(jnp.float32), 0.0).astype(jnp.float32)
    b, t = batch["input_ids"].shape
    full = jnp.zeros((cfg.num_layers, b, cfg.num_heads, t, t), jnp.float32)
    return full.at[jnp.asarray(acfg.layer_indices(cfg.num_layers), jnp.int32)].set(bias)


def make_transform(cfg: EncoderConfig, acfg: ADDropConfig):
    """The engine transform that adds AD-DROP's `attn_bias` to a batch (no parameter gradients)."""
    acfg = acfg.validate(cfg.num_layers)

    def transform(params: Params, batch: Batch, rng: jax.Array) -> Batch:
        enc = params["encoder"] if "encoder" in params and "layers" not in params else params
        return {**batch, "attn_bias": addrop_bias(jax.lax.stop_gradient(enc), cfg, batch, rng, acfg)}

    return transform
