"""Classification metrics from true and predicted class indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    Returns:
        ``{"accuracy", "per_class": {label: {precision, recall, f1, support}}, "confusion_matrix"}``;
        a ratio whose denominator is zero is reported as 0.0.
    """
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    true_pos = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    total = int(matrix.sum())
    per_class = {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": round(float(true_pos.sum() / total), 4) if total else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins."""
    if len(probs) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y_true: Sequence[int]) -> float:
    """The temperature T minimizing the negative log-likelihood of ``softmax(logits / T)``.

    Validation folds here are small, often perfectly separated, and then the likelihood alone keeps
    improving as T -> 0 (every answer certain). A log-normal prior centred on T = 1 (log T ~ N(0, 1))
    keeps such folds from driving T to extremes, and fades as the fold grows. The minimum is found by
    a log-spaced grid search over [0.05, 20], refined once. Returns 1.0 for an empty fold.
    """
    if len(logits) == 0:
        return 1.0
    labels = np.asarray(y_true)

    def nll(temperature: float) -> float:
        probs = softmax(logits / temperature)
        likelihood = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()
        return float(likelihood + np.log(temperature) ** 2 / (2 * len(labels)))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=nll)
    fine = np.exp(np.linspace(np.log(best) - 0.06, np.log(best) + 0.06, 25))
    return round(float(min(fine, key=nll)), 4)
