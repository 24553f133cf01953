"""The IBA paper's degradation test (§4.1; reference `Degradation.py`), vectorised.

Per example of n tokens (special tokens included in n): rank tokens by descending score, delete the
top `k = round(f·n)` non-special tokens ([CLS]/[SEP] are never deleted; k is capped by their number)
for f on the reference's grid `np.linspace(0, 1, 10)` (0, 1/9, …, 1: the paper's Fig. 1 axis; its
Table 1 "11%" column is f = 1/9, i.e. round(n/9) tokens) or, as an option, 10%, 20%, …, 100%; and read
the target-class probability of the *original* model on each degraded input. All (example, step)
variants are built as one padded batch on device (deletion closes the gaps, as the reference's
truncation does) and run through the model in fixed-size chunks under `lax.map`: one compiled program
per (batch shape, chunk).

A token-classification model (`cfg.task == "token"`, issue 34) explains an entity span (`target` [B, T]
classes, -1 outside it): the probability read is the span's mean probability of its classes
(`faithfulness.span_probs`, in [0, 1] like the sequence case), and the same top tokens are *replaced* by
`mask_id` ([MASK]) instead of deleted, so that the span keeps its positions.

Summaries (paper): the mean probability per step p̄, the normalised drop `d = (p̄ − m)/(o − m)` with o
the mean original probability and m the minimum over methods of the fully degraded mean probability,
and the absolute drop `o − p̄` after the top 1/9 ("11%") are deleted (Table 1).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxattr.data.batch import delete_tokens, special_mask
from jaxattr.errors import UserError
from jaxattr.evaluation.faithfulness import check_token_target, replace_tokens, span_probs, topk_masks
from jaxattr.models.config import EncoderConfig
from jaxattr.models.encoder import predict_probs
from jaxattr.types import Array

GRIDS: dict[str, tuple[float, ...]] = {
    "reference": tuple(float(f) for f in np.linspace(0, 1, 10)[1:]),  # 1/9, 2/9, ..., 1 (the reference code)
    "tenths": tuple(round(0.1 * i, 1) for i in range(1, 11)),
}
FRACTIONS: tuple[float, ...] = GRIDS["reference"]
TABLE_FRACTION = 1 / 9  # the paper's Table 1 "11%" column: round(n / 9) tokens


def grid_fractions(grid: str) -> tuple[float, ...]:
    """The deletion fractions of a named grid ("reference" | "tenths")."""
    if grid not in GRIDS:
        raise UserError(f"degradation grid {grid!r}: use one of {', '.join(GRIDS)}")
    return GRIDS[grid]


def deletion_masks(scores: Array, valid: Array, special: Array, fractions: Sequence[float]) -> Array:
    """[B, F, T] bool: the top round(f·n) non-special tokens by descending score, per fraction f."""
    cand = valid & ~special
    n = jnp.sum(valid, axis=-1).astype(jnp.float32)  # special tokens count in the length
    k = jnp.round(jnp.asarray(fractions, jnp.float32)[None] * n[:, None])  # [B, F] (half to even, as np.round)
    k = jnp.minimum(k, jnp.sum(cand, axis=-1, keepdims=True))
    return topk_masks(scores, cand, k)  # ties: earlier position first


@functools.partial(jax.jit, static_argnames=("cfg", "fractions", "chunk"))
def _probs(params: Any, cfg: EncoderConfig, batch: Mapping[str, Array], scores: Array, target: Array,
           mask_id: Array, *, fractions: tuple[float, ...], chunk: int) -> Array:
    mask = batch["attention_mask"].astype(bool)
    b, t = mask.shape
    f = len(fractions)
    drop = deletion_masks(scores, mask, special_mask(batch), fractions)  # [B, F, T]
    drop = jnp.concatenate([jnp.zeros((b, 1, t), bool), drop], axis=1).reshape(b * (f + 1), t)
    rep = {k: jnp.repeat(v, f + 1, axis=0) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                              "token_type_ids")}
    if cfg.task == "token":  # replaced, not deleted: the span keeps its positions
        rep["input_ids"] = replace_tokens(rep["input_ids"], drop, mask_id)
        return span_probs(params, cfg, rep, jnp.repeat(target, f + 1, axis=0), chunk).reshape(b, f + 1)
    probs = predict_probs(params, cfg, delete_tokens(rep, drop), chunk).reshape(b, f + 1, -1)
    return jnp.take_along_axis(probs, target[:, None, None], axis=-1)[..., 0]


def degradation_probs(params: Any, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Any, target: Any, *,
                      fractions: Sequence[float] = FRACTIONS, chunk: int = 64, mask_id: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(fractions [F], target probability [B, F+1]; column 0 = the original input).

    `batch`: padded `input_ids`, `attention_mask` (+ `token_type_ids`, `word_ids` to find special
    tokens); `scores` [B, T]; `target` [B] class indices, or a token model's span target [B, T] (then
    `mask_id`, the replacement token, is needed too); `chunk`: rows per forward piece.
    """
    keys = ("input_ids", "attention_mask", "token_type_ids", "word_ids", "special_tokens_mask")
    arrays = {k: jnp.asarray(batch[k], jnp.int32) for k in keys if batch.get(k) is not None}
    if cfg.task == "token":
        target = check_token_target(cfg, target, arrays["input_ids"].shape)
        if mask_id is None:
            raise UserError("the degradation test on a token-classification model replaces tokens: give mask_id")
    fr = tuple(float(x) for x in fractions)
    rows = len(arrays["input_ids"]) * (len(fr) + 1)
    probs = _probs(params, cfg, arrays, jnp.asarray(scores, jnp.float32), jnp.asarray(target, jnp.int32),
                   jnp.int32(0 if mask_id is None else mask_id), fractions=fr, chunk=max(1, min(int(chunk), rows)))
    return np.asarray(fr), np.asarray(probs, np.float64)


@dataclasses.dataclass
class DegradationResult:
    """Mean curves per method (one set of examples, one target per example)."""

    fractions: np.ndarray  # [F+1], starting at 0
    mean_probs: dict[str, np.ndarray]  # method -> [F+1]
    normalised: dict[str, np.ndarray]  # method -> [F+1] d = (p − m)/(o − m)
    drop_11: dict[str, float]  # method -> o − p̄(11%)
    original: float  # o
    minimum: float  # m
    examples: int


def summarise(curves: Mapping[str, np.ndarray], at_11: Mapping[str, np.ndarray], fractions: Sequence[float]
              ) -> DegradationResult:
    """Per-method per-example curves [N, F+1] (column 0 original) and 11% probabilities [N] -> the paper's
    summary (o and m shared by all methods, as in §4.1)."""
    means = {m: np.asarray(c, np.float64).mean(0) for m, c in curves.items()}
    first = next(iter(means.values()))
    o = float(first[0])
    m_ = float(min(v[-1] for v in means.values()))
    span = o - m_ if abs(o - m_) > 1e-12 else 1e-12
    norm = {m: (v - m_) / span for m, v in means.items()}
    drop = {m: float(o - np.mean(at_11[m])) for m in means}
    n = len(next(iter(curves.values())))
    return DegradationResult(np.concatenate([[0.0], np.asarray(fractions, np.float64)]), means, norm, drop, o, m_, n)


def degradation_test(params: Any, cfg: EncoderConfig, batch: Mapping[str, Any], scores: Mapping[str, Any],
                     target: Any, *, fractions: Sequence[float] = FRACTIONS, chunk: int = 64,
                     mask_id: int | None = None) -> DegradationResult:
    """The degradation test for several methods' scores ([B, T] each) on one padded batch (`target`, `mask_id`:
    as `degradation_probs`)."""
    curves, at_11 = {}, {}
    fr = tuple(fractions) + (TABLE_FRACTION,)
    for name, sc in scores.items():
        _, p = degradation_probs(params, cfg, batch, sc, target, fractions=fr, chunk=chunk, mask_id=mask_id)
        curves[name], at_11[name] = p[:, :-1], p[:, -1]
    return summarise(curves, at_11, fractions)


def result_rows(res: DegradationResult, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One table row per method: the 11% drop, the normalised curve's area and every step's p̄ and d."""
    labels = labels or {}
    rows = []
    x = res.fractions
    for m, p in res.mean_probs.items():
        d = res.normalised[m]
        row = {"method": labels.get(m, m), "drop_11": res.drop_11[m],
               "auc_normalised": float(np.trapezoid(d, x) / (x[-1] - x[0]))}
        row.update({f"p@{round(100 * f)}%": float(v) for f, v in zip(x, p)})
        row.update({f"d@{round(100 * f)}%": float(v) for f, v in zip(x, d)})
        rows.append(row)
    return rows


def write_table(res: DegradationResult, out_dir: str, *, labels: Mapping[str, str] | None = None,
                title: str = "Degradation test") -> tuple[str, str]:
    """`degradation.md` (Markdown) and `degradation.csv`; returns their paths."""
    import csv
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(res, labels)
    cols = list(rows[0])
    with open(out / "degradation.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    steps = [f"d@{round(100 * f)}%" for f in res.fractions[1:]]
    head = ["method", "drop@11% ↑", "AUC(d) ↓", *steps]
    lines = [f"## {title}", "", f"{res.examples} examples; o (original p̄) = {res.original:.4f}, "
             f"m (fully degraded p̄, min over methods) = {res.minimum:.4f}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: r["auc_normalised"]):
        vals = [r["method"], f"{r['drop_11']:.4f}", f"{r['auc_normalised']:.4f}", *(f"{r[s]:.3f}" for s in steps)]
        lines.append("| " + " | ".join(vals) + " |")
    (out / "degradation.md").write_text("\n".join(lines) + "\n")
    return str(out / "degradation.md"), str(out / "degradation.csv")


def plot_curves(res: DegradationResult, path: str, *, labels: Mapping[str, str] | None = None,
                title: str = "Degradation test") -> str:
    """The paper's Fig. 1: normalised probability drop vs % of tokens deleted, one line per method (the title
    wrapped to fit the figure: `viz.plots.plot_degradation`)."""
    from jaxattr.viz.plots import plot_degradation

    return plot_degradation(path, res.fractions, res.normalised, labels=labels, title=title)
