"""Plausibility of an attribution against a human rationale (ferret's second half; DeYoung et al.'s ERASER):
token F1 and IOU of the top-k tokens, and the area under the precision–recall curve of the soft scores.

Only `valid` positions count (real, non-special tokens). k defaults to the rationale's size, so a map that
ranks exactly the rationale first scores 1 on every metric.

`token_rationale` turns a rationale as a dataset gives it (0/1 per whitespace word of the text, or
character spans) into the token mask `plausibility` takes; `jaxattr.evaluation.evaluate(...,
rationale_column=...)` does both per (example, method).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxattr.errors import UserError


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


def token_rationale(example: Mapping[str, Any], rationale: Any) -> np.ndarray:
    """The token mask [T] (bool) of a human rationale of `example["text"]` (an `encode_texts` example).

    `rationale` (a list, or its JSON text as a CSV cell holds it) is either one 0/1 per whitespace-separated
    word of the text (`text.split()`), or character spans `[[start, end], ...]` (end exclusive) into the
    text; `[]` marks nothing. A token is marked when its tokenizer word (`word_spans`) overlaps a marked word
    or span; tokens of `text_pair` never are. A malformed rationale is a one-line UserError."""
    value = rationale
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = rationale
    text = example["text"]
    if not isinstance(value, (list, tuple)):
        raise UserError(f"rationale {str(rationale)[:60]!r} is not a list of 0/1 per word or of [start, end] spans")
    if value and all(isinstance(v, (list, tuple)) for v in value):
        for v in value:
            ok = len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            if not ok or not 0 <= v[0] < v[1] <= len(text):
                raise UserError(f"rationale span {list(v)} is not [start, end] with 0 <= start < end <= "
                                f"{len(text)} (the text's length)")
        spans = [tuple(v) for v in value]
    elif all(isinstance(v, (bool, int, float)) and v in (0, 1) for v in value):
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        if value and len(value) != len(words):
            raise UserError(f"rationale has {len(value)} marks but the text has {len(words)} whitespace words")
        spans = [w for w, v in zip(words, value) if v]
    else:
        raise UserError(f"rationale {str(rationale)[:60]!r} is not a list of 0/1 per word or of [start, end] spans")
    mask = np.zeros(len(example["input_ids"]), bool)
    word_ids = np.asarray(example["word_ids"])
    for k, (seg, a, b) in enumerate(example["word_spans"]):
        if seg == 0 and any(a < end and start < b for start, end in spans):
            mask[word_ids == k] = True
    return mask
