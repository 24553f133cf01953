"""Task metrics from scikit-learn and SciPy (never re-implemented here).

Classification: accuracy, macro F1 (binary F1 for two classes), Matthews correlation.
Regression (STS-B style): Pearson and Spearman correlation, MSE.
"""

from __future__ import annotations

import numpy as np

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
