"""The evaluation report of a trained head: test accuracy with its interval, per-class scores,
confusion matrix, misclassified photos and calibration before and after the temperature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import LabelledImage
from .hooks import TrainingHooks
from .metrics import classification_report, expected_calibration_error, softmax, wilson_interval

ROUGH_BELOW = 30


def report_uncertainty(metrics: dict[str, Any], hooks: TrainingHooks) -> None:
    """Add the 95 % interval of the test accuracy, and say so when the test split is too small to trust."""
    n = metrics["test_count"]
    low, high = wilson_interval(round(metrics["test_accuracy"] * n), n)
    metrics["test_accuracy_ci"] = [round(low, 4), round(high, 4)]
    warnings = []
    if n < ROUGH_BELOW:
        warnings.append(
            f"Test accuracy {metrics['test_accuracy']:.4f} is rough: it rests on {n} test photo(s); "
            f"95 % interval {low:.2f}-{high:.2f}. Add photos for a figure you can trust."
        )
    metrics["warnings"] = warnings
    cv = metrics.get("cv_accuracy")
    line = f"Test accuracy {metrics['test_accuracy']:.4f} on {n} photos (95 % interval {low:.4f}-{high:.4f})"
    if cv:
        line += (
            f"; cross-validated on the training photos {cv['mean']:.4f} ± {cv['std']:.4f} ({len(cv['folds'])} folds)"
        )
    hooks.log(line)
    for warning in warnings:
        hooks.log(warning)


def evaluate(
    logits: np.ndarray,
    y_true: list[int],
    items: Sequence[LabelledImage],
    class_names: Sequence[str],
    temperature: float,
) -> dict[str, Any]:
    """The evaluation report on the test split: accuracy, per-class scores, confusion matrix,
    misclassified images (by stored image id) and calibration before/after the temperature."""
    before, after = softmax(logits), softmax(logits / temperature)
    predicted = after.argmax(axis=1)
    report = classification_report(y_true, predicted.tolist(), class_names)
    misclassified = [
        {
            "image_id": item.path.stem,
            "filename": item.name,
            "true": class_names[t],
            "predicted": class_names[int(p)],
            "confidence": round(float(after[i, p]), 4),
        }
        for i, (item, t, p) in enumerate(zip(items, y_true, predicted))
        if t != p
    ]
    return {
        "test_accuracy": report["accuracy"],
        "test_count": len(y_true),
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "misclassified": misclassified,
        "calibration": {
            "temperature": temperature,
            "ece_before": round(expected_calibration_error(before, y_true), 4),
            "ece_after": round(expected_calibration_error(after, y_true), 4),
        },
    }
