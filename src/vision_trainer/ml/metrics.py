"""Classification metrics from true and predicted class indices."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
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


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion such as an accuracy of ``correct`` out of ``total``.

    Unlike the normal approximation it stays inside [0, 1] and is sensible for small ``total`` and
    for accuracies near 0 or 1 (a perfect score on 10 photos gives about (0.72, 1.0), not (1.0, 1.0)).

    Args:
        correct: Successes, 0 <= correct <= total.
        total: Trials; 0 gives the uninformative (0.0, 1.0).
        z: Standard-normal quantile of the confidence level (1.96 for 95 %).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: ``correct`` is outside [0, total].
    """
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be between 0 and total ({total}), got {correct}")
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_test(a_correct: Sequence[bool], b_correct: Sequence[bool], exact_below: int = 25) -> dict[str, float]:
    """McNemar's paired test: do two models, judged on the same photos, differ in accuracy?

    Only the discordant photos count: ``b`` = A right and B wrong, ``c`` = A wrong and B right.
    With fewer than ``exact_below`` discordant photos the exact two-sided binomial test is used
    (``statistic`` is then ``min(b, c)``); otherwise the chi-square test with continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` on one degree of freedom.

    Args:
        a_correct: Per photo, whether model A was right.
        b_correct: Per photo, whether model B was right (same photos, same order).
        exact_below: Discordant count under which the exact test is used.

    Returns:
        ``{"b", "c", "statistic", "p_value"}``; no discordant photo gives p_value 1.0.

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(f"both models must be judged on the same photos: got {len(a_correct)} and {len(b_correct)}")
    a, b_ = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    n = b + c
    if n < exact_below:
        k = min(b, c)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
        return {"b": b, "c": c, "statistic": float(k), "p_value": min(1.0, 2 * tail)}
    statistic = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "statistic": statistic, "p_value": math.erfc(math.sqrt(statistic / 2))}
