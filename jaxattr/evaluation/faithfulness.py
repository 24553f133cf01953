"""Faithfulness metrics for token attributions: log-odds, comprehensiveness, sufficiency and AOPC.

Definitions (DESIGN.md §3 SIG; the DIG/tint experiment code; ferret for AOPC), for one example of
``n`` valid tokens (special tokens counted) and the model's **predicted** label ŷ on the original input:

* ``k = int(frac · n)`` with ``frac = 0.2``; the top-k tokens are the k highest-scoring *non-special*
  tokens (ties broken by position). Special tokens ([CLS], [SEP], <s>, </s>) are never selected and are
  always kept, so every perturbed input is still well formed; this is our documented choice (the DIG
  code ranks special tokens too, but they receive 0 attribution from SIG/IG, so they are rarely picked).
* **log-odds** ``LO = log p'(ŷ) − log p(ŷ)``: the top-k tokens' *word embeddings* are replaced by the
  [MASK] word embedding (position and token-type embeddings untouched — identical to replacing the ids
  by ``mask_id``). Lower is better.
* **comprehensiveness** ``Comp = p(ŷ) − p'(ŷ)``: the top-k tokens are *deleted* (the remaining tokens
  close up, so positions are re-numbered exactly as in a shorter input). Higher is better.
* **sufficiency** ``Suff = p(ŷ) − p'(ŷ)``: only the top-k tokens (and the special tokens) are kept.
  When ``k`` rounds to 0 (short inputs) sufficiency is 0, as the DIG code returns (no rationale, no
  perturbation). Lower is better.
* **AOPC** (ferret): comprehensiveness / sufficiency averaged over ``k_v = int(v · m)`` for
  ``v = 0.1, 0.2, …, 1.0``, where ``m`` is the number of non-special tokens (ferret strips [CLS]/[SEP]
  before taking percentages); thresholds whose ``k_v`` is 0 or equal to the previous threshold's ``k_v``
  (the same rationale) are skipped, as ferret does. ferret decodes and re-tokenises; we perturb the token
  ids directly (no re-tokenisation drift).

``protocol="tint"`` (issue 32) is the SIG paper's own code instead (tint ``experiments/nlp/metrics.py``,
``eval_log_odds`` / ``eval_comprehensiveness`` / ``eval_sufficiency``, one unpadded example at a time):
the top ``k = int(frac · n)`` are taken over **every** valid position, special tokens included (our
methods score them 0, so they are picked only when fewer than k tokens score above 0), sufficiency keeps
the top-k alone (a special token outside them is deleted too), and LO writes the run's baseline token
over them: pass it as ``mask_id`` (``pad_id`` for a [PAD]-baseline run). Both protocols read p'(ŷ) of
the class predicted on the original input (tint: ``argmax(logits_original)``; the max logit is only the
output its *attributions* explain). Remaining differences: ties are broken by position here, by
``torch.topk(sorted=False)`` there; padding never counts (tint runs unpadded inputs); tint's
``ForwardModel`` hands HF ``inputs_embeds`` that already hold the position and token-type embeddings and
the embedding LayerNorm, which HF then adds and applies again — we run the model as it was trained. tint's
packaged ``tint.metrics`` (not the paper's code) replaces instead of deleting and keeps
``n − int((1 − frac) · n)`` tokens for sufficiency. AOPC is ferret's metric and has no tint protocol.

**Token-classification models** (``cfg.task == "token"``, issue 34) explain an entity span: ``target``
[B, T] holds each span position's class (-1 elsewhere, `jaxattr.data.entities.span_target`), and p is
the mean over the span's positions of the probability of their class (`gradients.predict`'s ``prob``),
so every metric stays on the [0, 1] scale of the sequence case. Their top-k are chosen as above (the
span's own tokens included) but *replaced* by ``mask_id`` instead of deleted, for comprehensiveness,
sufficiency and AOPC too: deletion would shift the span's positions, and the entity's label is read at
those positions.

All metrics are per example (arrays of shape ``[B]``); the papers report the mean over examples.

Vectorisation: every perturbation of every example is built as one ``[B·P, T]`` batch by pure jnp
functions (`topk_masks`, `replace_tokens`, and `jaxattr.data.batch.delete_tokens`), then run
through the encoder in fixed-size chunks under one `jit` per (chunk, bucket length) shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.attribution.gradients import predict, token_target
from jaxattr.data.batch import delete_tokens, special_mask
from jaxattr.errors import UserError
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import Params, predict_probs
from jaxattr.types import Array

METRICS: tuple[str, ...] = ("log_odds", "comprehensiveness", "sufficiency", "aopc_comprehensiveness",
                            "aopc_sufficiency")
LOWER_IS_BETTER: dict[str, bool] = {"log_odds": True, "comprehensiveness": False, "sufficiency": True,
                                    "aopc_comprehensiveness": False, "aopc_sufficiency": True}
AOPC_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
PROTOCOLS: tuple[str, ...] = ("ours", "tint")


# ----------------------------------------------------------------------------- pure building blocks

def token_ranks(scores: Array, candidates: Array) -> Array:
    """Rank of every position by descending score among `candidates` (0 = top); non-candidates rank last.

    Ties are broken by position (stable sort), so the ranking is deterministic.
    """
    s = jnp.where(candidates, scores.astype(jnp.float32), -jnp.inf)
    order = jnp.argsort(-s, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)
    return jnp.where(candidates, ranks, scores.shape[-1])


def topk_masks(scores: Array, candidates: Array, ks: Array) -> Array:
    """[B, P, T] bool: for each example and each k in `ks` ([B, P] ints), its top-k candidate tokens.

    The one rank-by-score selection of the evaluations (these metrics and the degradation test)."""
    ranks = token_ranks(scores, candidates)
    return ranks[:, None, :] < jnp.asarray(ks).astype(jnp.int32)[:, :, None]


def replace_tokens(input_ids: Array, select: Array, replacement_id: int) -> Array:
    """Replace the selected tokens' ids (hence word embeddings) by `replacement_id`."""
    return jnp.where(select, replacement_id, input_ids)


def span_probs(params: Params, cfg: EncoderConfig, batch: Mapping[str, Array], target: Array,
               chunk: int | None = None) -> Array:
    """[N] a token model's explained probability per row: the mean over the span (`target` [N, T] >= 0) of
    each position's probability of its class (`gradients.predict`'s prob), `chunk` rows at a time under
    `lax.map` (None: all at once)."""
    rows = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "token_type_ids": batch.get("token_type_ids", jnp.zeros_like(batch["input_ids"])), "target": target}
    one = lambda r: predict(params, cfg, r, r["target"])[1]
    n, t = rows["input_ids"].shape
    size = n if chunk is None else max(1, min(int(chunk), n))
    if size == n:
        return one(rows)
    pad = (-n) % size
    padded = jax.tree.map(lambda a: jnp.concatenate([a, a[:pad]]) if pad else a, rows)
    return jax.lax.map(one, jax.tree.map(lambda a: a.reshape(-1, size, t), padded)).reshape(-1)[:n]


def check_token_target(cfg: EncoderConfig, target: Any, shape: tuple[int, int]) -> Array:
    """A token model's span target [B, T] (int32), checked in one line (`gradients.token_target`)."""
    return token_target(target, jax.ShapeDtypeStruct((*shape, cfg.num_labels), jnp.float32))


# ----------------------------------------------------------------------------- model evaluation

@partial(jax.jit, static_argnums=(1,))
def _probs(params: Params, cfg: EncoderConfig, ids: Array, mask: Array, types: Array) -> Array:
    return predict_probs(params, cfg, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})


@partial(jax.jit, static_argnums=(1,))
def _span_probs(params: Params, cfg: EncoderConfig, ids: Array, mask: Array, types: Array, target: Array) -> Array:
    return span_probs(params, cfg, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, target)


def _in_chunks(fn: Callable[..., Array], arrays: Sequence[Any], chunk_size: int) -> np.ndarray:
    """`fn(*arrays)` over rows in fixed-size chunks (the last one padded; fewer rows than a chunk are padded
    to a power of two) so that one bucket length compiles a handful of times."""
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0]
    rows = chunk_size if n >= chunk_size else 1 << (n - 1).bit_length()  # few distinct shapes: few compiles
    out = []
    for s in range(0, n, rows):
        e = min(s + rows, n)
        pad = rows - (e - s)
        part = [np.concatenate([a[s:e], np.repeat(a[s:s + 1], pad, 0)]) if pad else a[s:e] for a in arrays]
        out.append(np.asarray(fn(*part))[: e - s])
    return np.concatenate(out)


def class_probs(params: Params, cfg: EncoderConfig, ids: Array, mask: Array, types: Array, *,
                chunk_size: int = 64) -> np.ndarray:
    """Softmax probabilities [N, C] for N rows of a sequence classifier, run in fixed-size chunks."""
    if np.asarray(ids).shape[0] == 0:
        return np.zeros((0, cfg.num_labels), np.float32)
    return _in_chunks(partial(_probs, params, cfg), (ids, mask, types), chunk_size)


def explained_probs(params: Params, cfg: EncoderConfig, ids: Array, mask: Array, types: Array, target: Array, *,
                    chunk_size: int = 64) -> np.ndarray:
    """[N] the explained probability of N rows: p(target class) for a sequence classifier (`target` [N]), the
    span's mean probability of its classes for a token model (`target` [N, T], `span_probs`)."""
    if cfg.task == "token":
        return _in_chunks(partial(_span_probs, params, cfg), (ids, mask, types, target), chunk_size)
    probs = class_probs(params, cfg, ids, mask, types, chunk_size=chunk_size)
    return probs[np.arange(len(probs)), np.asarray(target)]


def _prepare(cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any) -> tuple[Array, ...]:
    if cfg.problem_type != "classification":
        raise UserError("faithfulness metrics need a classification model (they use the predicted class)")
    ids = jnp.asarray(batch["input_ids"], jnp.int32)
    mask = jnp.asarray(batch["attention_mask"], jnp.int32)
    types = jnp.asarray(batch["token_type_ids"], jnp.int32) if batch.get("token_type_ids") is not None \
        else jnp.zeros_like(ids)
    scores = jnp.asarray(scores, jnp.float32)
    if scores.shape != ids.shape:
        raise UserError(f"scores of shape {tuple(scores.shape)} do not match the batch {tuple(ids.shape)}; "
                        "give one score per token")
    special = special_mask(batch)
    words = mask.astype(bool) & ~special
    return ids, mask, types, scores, special, words


def _frac_of(frac: float, n: Array) -> Array:
    """int(frac * n) in exact integer arithmetic (float32 would round 0.7 * 500 down to 349)."""
    r = round(float(frac) * 10_000)
    return (r * n.astype(jnp.int32)) // 10_000


def _ks_fixed(mask: Array, candidates: Array, frac: float) -> Array:
    return jnp.minimum(_frac_of(frac, mask.sum(-1)), candidates.sum(-1))  # int(frac * n), at most the candidates


def _ks_aopc(words: Array, fractions: Sequence[float]) -> tuple[Array, Array]:
    """k per (example, threshold) over the non-special length, and which thresholds count (ferret)."""
    k = jnp.stack([_frac_of(f, words.sum(-1)) for f in fractions], axis=1)
    prev = jnp.concatenate([jnp.zeros_like(k[:, :1]), k[:, :-1]], axis=1)
    return k, (k > 0) & (k != prev)


def _repeat(a: Array, shape: tuple[int, ...]) -> Array:
    return jnp.broadcast_to(a[:, None, :], shape)


def faithfulness(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, *,
                 mask_id: int | None, metrics: Sequence[str] = METRICS, frac: float = 0.2,
                 fractions: Sequence[float] = AOPC_FRACTIONS, chunk_size: int = 64, target: Any = None,
                 protocol: str = "ours") -> dict[str, np.ndarray]:
    """Per-example faithfulness metrics of `scores` ([B, T], one per token) for the model's predicted class,
    or a token model's span `target` ([B, T] classes, -1 outside the span; required for token models).

    `batch` holds `input_ids`, `attention_mask`, optional `token_type_ids` and `word_ids` (for the
    special-token mask). `mask_id`: the token LO writes over the top-k (tint's protocol: the run's baseline
    token), and the replacement on token models. `protocol`: "ours" or "tint" (module docstring). One
    original forward and one perturbed batch of every requested metric's perturbations, evaluated in
    chunks. Returns {metric: [B] float array}; average over examples to report. Also returns `prob` (p on
    the original input) and, for a sequence classifier, `predicted` (ŷ).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    if protocol not in PROTOCOLS:
        raise UserError(f"protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    if protocol == "tint" and any(m.startswith("aopc") for m in metrics):
        raise UserError("AOPC is ferret's metric: tint's protocol defines log_odds, comprehensiveness and "
                        "sufficiency only")
    token = cfg.task == "token"
    if mask_id is None and ("log_odds" in metrics or token):
        raise UserError("give mask_id: the token written over the top-k tokens (log-odds; every metric on a "
                        "token-classification model)")
    ids, mask, types, scores, special, words = _prepare(cfg, batch, scores)
    b, _ = ids.shape
    out: dict[str, np.ndarray] = {}
    if token:
        tgt = np.asarray(check_token_target(cfg, target, ids.shape))
        p0 = explained_probs(params, cfg, ids, mask, types, tgt, chunk_size=chunk_size)
    elif target is not None:
        raise UserError("target is for token-classification models; a sequence classifier's metrics read its "
                        "predicted class")
    else:
        probs0 = class_probs(params, cfg, ids, mask, types, chunk_size=chunk_size)
        tgt = probs0.argmax(-1)
        p0 = probs0[np.arange(b), tgt]
        out["predicted"] = tgt
    out["prob"] = p0

    valid = mask.astype(bool)
    tint = protocol == "tint"
    candidates = valid if tint else words  # tint ranks every position, special tokens included
    always_kept = jnp.zeros_like(special) if tint else special  # sufficiency: tint keeps the top-k alone
    groups: list[tuple[str, Array, Array, Array]] = []  # (metric, ids, types, mask) each [B, P, T]
    aopc_ok = None
    k_fixed = np.asarray(_ks_fixed(mask, candidates, frac))
    for name in metrics:
        if name in ("log_odds", "comprehensiveness", "sufficiency"):
            ks = jnp.asarray(k_fixed)[:, None]
        else:
            ks, aopc_ok = _ks_aopc(words, fractions)
        top = topk_masks(scores, candidates, ks)  # [B, P, T]
        rep = partial(_repeat, shape=top.shape)
        if name == "log_odds":
            groups.append((name, replace_tokens(rep(ids), top, mask_id), rep(types), rep(mask)))
            continue
        drop = top if name in ("comprehensiveness", "aopc_comprehensiveness") else ~(top | rep(always_kept))
        if token:  # replaced, not deleted: the span keeps its positions
            groups.append((name, replace_tokens(rep(ids), drop & rep(valid), mask_id), rep(types), rep(mask)))
            continue
        g = delete_tokens({"input_ids": rep(ids), "attention_mask": rep(mask), "token_type_ids": rep(types)}, drop,
                          pad_id=cfg.pad_token_id)
        groups.append((name, g["input_ids"], g["token_type_ids"], g["attention_mask"]))

    flat = [(n, i.reshape(-1, i.shape[-1]), t.reshape(-1, t.shape[-1]), m.reshape(-1, m.shape[-1]), i.shape[1])
            for n, i, t, m in groups]
    if not flat:
        return out
    row_tgt = np.concatenate([np.repeat(tgt, p, axis=0) for *_, p in flat])  # each row explains its example's
    all_p = explained_probs(params, cfg, np.concatenate([f[1] for f in flat]), np.concatenate([f[3] for f in flat]),
                            np.concatenate([f[2] for f in flat]), row_tgt, chunk_size=chunk_size)
    start = 0
    for name, g_ids, _, _, p in flat:
        pp = all_p[start:start + g_ids.shape[0]].reshape(b, p)  # [B, P] p'
        start += g_ids.shape[0]
        if name == "log_odds":
            out[name] = (np.log(np.maximum(pp[:, 0], 1e-30)) - np.log(np.maximum(p0, 1e-30))).astype(np.float64)
        elif name == "comprehensiveness":
            out[name] = (p0 - pp[:, 0]).astype(np.float64)
        elif name == "sufficiency":
            out[name] = np.where(k_fixed > 0, p0 - pp[:, 0], 0.0).astype(np.float64)  # DIG: 0 when k = 0
        else:
            ok = np.asarray(aopc_ok)
            diff = (p0[:, None] - pp) * ok
            cnt = ok.sum(-1)
            empty = 0.0 if name == "aopc_comprehensiveness" else 1.0  # ferret's value with no rationale
            out[name] = np.where(cnt > 0, diff.sum(-1) / np.maximum(cnt, 1), empty).astype(np.float64)
    return out


def log_odds(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, *, mask_id: int,
             frac: float = 0.2, chunk_size: int = 64, target: Any = None, protocol: str = "ours") -> np.ndarray:
    """Per-example log-odds: top-k word embeddings -> `mask_id`'s; `log p'(ŷ) − log p(ŷ)` (lower is better)."""
    return faithfulness(params, cfg, batch, scores, mask_id=mask_id, metrics=("log_odds",), frac=frac,
                        chunk_size=chunk_size, target=target, protocol=protocol)["log_odds"]


def comprehensiveness(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, *,
                      frac: float = 0.2, chunk_size: int = 64, target: Any = None, protocol: str = "ours",
                      mask_id: int | None = None) -> np.ndarray:
    """Per-example comprehensiveness: delete the top-k tokens (token models: replace by `mask_id`);
    `p(ŷ) − p'(ŷ)` (higher is better)."""
    return faithfulness(params, cfg, batch, scores, mask_id=mask_id, metrics=("comprehensiveness",), frac=frac,
                        chunk_size=chunk_size, target=target, protocol=protocol)["comprehensiveness"]


def sufficiency(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, *,
                frac: float = 0.2, chunk_size: int = 64, target: Any = None, protocol: str = "ours",
                mask_id: int | None = None) -> np.ndarray:
    """Per-example sufficiency: keep only the top-k tokens (token models: replace the others by `mask_id`);
    `p(ŷ) − p'(ŷ)` (lower is better)."""
    return faithfulness(params, cfg, batch, scores, mask_id=mask_id, metrics=("sufficiency",), frac=frac,
                        chunk_size=chunk_size, target=target, protocol=protocol)["sufficiency"]


def aopc_comprehensiveness(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, *,
                           fractions: Sequence[float] = AOPC_FRACTIONS, chunk_size: int = 64, target: Any = None,
                           mask_id: int | None = None) -> np.ndarray:
    """Per-example AOPC comprehensiveness over 10%..100% of the non-special tokens (ferret)."""
    return faithfulness(params, cfg, batch, scores, mask_id=mask_id, metrics=("aopc_comprehensiveness",),
                        fractions=fractions, chunk_size=chunk_size, target=target)["aopc_comprehensiveness"]


def aopc_sufficiency(params: Params, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, *,
                     fractions: Sequence[float] = AOPC_FRACTIONS, chunk_size: int = 64, target: Any = None,
                     mask_id: int | None = None) -> np.ndarray:
    """Per-example AOPC sufficiency over 10%..100% of the non-special tokens (ferret)."""
    return faithfulness(params, cfg, batch, scores, mask_id=mask_id, metrics=("aopc_sufficiency",),
                        fractions=fractions, chunk_size=chunk_size, target=target)["aopc_sufficiency"]
