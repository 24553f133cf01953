"""Plausibility of an attribution against a human rationale (ferret's second half; DeYoung et al.'s ERASER):
token F1 and IOU of the top-k tokens, and the area under the precision–recall curve of the soft scores.

Only `valid` positions count (real, non-special tokens). k defaults to the rationale's size, so a map that
ranks exactly the rationale first scores 1 on every metric.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Plausibility(NamedTuple):
    """One example's agreement with its rationale (NaN where the rationale is empty or covers everything)."""

    token_f1: float
    iou: float
    auprc: float


def plausibility(scores: np.ndarray, rationale: np.ndarray, valid: np.ndarray | None = None,
                 k: int | None = None) -> Plausibility:
    """scores [T] (higher = more important), rationale [T] (bool: a human marked the token), valid [T]."""
    from sklearn.metrics import average_precision_score

    s = np.asarray(scores, np.float64)
    r = np.asarray(rationale, bool)
    v = np.ones_like(r) if valid is None else np.asarray(valid, bool)
    if not (s.shape == r.shape == v.shape):
        raise ValueError(f"scores, rationale and valid need one shape, got {s.shape}, {r.shape}, {v.shape}")
    s, r = s[v], r[v]
    if not r.any():
        return Plausibility(float("nan"), float("nan"), float("nan"))
    k = int(r.sum()) if k is None else min(int(k), len(s))
    top = np.zeros(len(s), bool)
    top[np.argsort(-s, kind="stable")[:k]] = True
    inter = float(np.sum(top & r))
    f1 = 2 * inter / (top.sum() + r.sum())
    iou = inter / float(np.sum(top | r))
    auprc = float(average_precision_score(r, s)) if not r.all() else float("nan")
    return Plausibility(float(f1), float(iou), auprc)
