"""Task metrics from scikit-learn and SciPy (never re-implemented here).

Classification: accuracy, macro F1 (binary F1 for two classes), Matthews correlation.
Regression (STS-B style): Pearson and Spearman correlation, MSE.
Token classification (NER): token accuracy and entity-level micro precision/recall/F1 as seqeval defines
them (seqeval is not a dependency: the entities come from `jaxattr.data.entities`, whose BIO decoding is
seqeval's default, conlleval-style chunking).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxattr.data.entities import entities
from jaxattr.training.data import IGNORE

CLASSIFICATION_METRICS = ("accuracy", "f1", "matthews")
REGRESSION_METRICS = ("pearson", "spearman", "mse")


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, F1 (binary for 2 classes, else macro) and Matthews correlation of argmax predictions."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    logits, labels = np.asarray(logits), np.asarray(labels)
    pred = logits.argmax(-1)
    average = "binary" if logits.shape[-1] == 2 else "macro"
    return {
        "accuracy": float(accuracy_score(labels, pred)),
        "f1": float(f1_score(labels, pred, average=average, zero_division=0)),
        "matthews": float(matthews_corrcoef(labels, pred)),
    }


def regression_metrics(preds: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation (SciPy) and mean squared error of scalar predictions."""
    from scipy.stats import pearsonr, spearmanr

    preds, targets = np.asarray(preds, np.float64).reshape(-1), np.asarray(targets, np.float64).reshape(-1)
    constant = np.ptp(preds) == 0 or np.ptp(targets) == 0
    return {
        "pearson": float("nan") if constant else float(pearsonr(preds, targets)[0]),
        "spearman": float("nan") if constant else float(spearmanr(preds, targets)[0]),
        "mse": float(np.mean((preds - targets) ** 2)),
    }


def task_metrics(problem_type: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metric set for `problem_type` ("classification" or "regression")."""
    if problem_type == "regression":
        return regression_metrics(np.asarray(logits)[..., 0], labels)
    return classification_metrics(logits, labels)


def entity_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) of each entity of one sentence's BIO tags, as seqeval's `get_entities`
    (['B-PER', 'I-PER', 'O', 'B-LOC'] -> [('PER', 0, 1), ('LOC', 3, 3)]): B-X starts one, I-X continues an
    entity of type X and otherwise starts one, O ends one."""
    n = len(tags)
    found = entities(list(tags), range(n), [[0, 0, 0]] * n, [""])  # one "word" per tag, no text needed
    return [(e["label"], e["start"], e["end"] - 1) for e in found]


def token_metrics(logits: np.ndarray, labels: np.ndarray, label_names: Sequence[str]) -> dict[str, float]:
    """Token accuracy over the labelled tokens (`labels` [N, T], `IGNORE` elsewhere) and entity-level micro
    precision, recall and F1 (seqeval's default: an entity counts when its type and extent both match) of the
    argmax tags of `logits` [N, T, C], read at the labelled tokens: a word's first piece."""
    pred, labels = np.asarray(logits).argmax(-1), np.asarray(labels)
    keep = labels != IGNORE
    true: set[tuple[int, str, int, int]] = set()
    found: set[tuple[int, str, int, int]] = set()
    for i in range(len(labels)):
        for ids, into in ((labels[i][keep[i]], true), (pred[i][keep[i]], found)):
            into.update((i, *e) for e in entity_spans([label_names[k] for k in ids]))
    correct = len(true & found)
    precision = correct / len(found) if found else 0.0
    recall = correct / len(true) if true else 0.0
    return {
        "accuracy": float(np.mean(pred[keep] == labels[keep])) if keep.any() else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
