import numpy as np

from vision_trainer.ml.metrics import (
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    softmax,
)


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    assert confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_report_per_class_scores() -> None:
    report = classification_report([0, 0, 0, 1, 1], [0, 0, 1, 1, 1], ["a", "b"])
    assert report["accuracy"] == 0.8
    assert report["per_class"]["a"] == {"precision": 1.0, "recall": 0.6667, "f1": 0.8, "support": 3}
    assert report["per_class"]["b"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}


def test_class_never_predicted_has_zero_precision_not_nan() -> None:
    report = classification_report([0, 1], [0, 0], ["a", "b"])
    assert report["per_class"]["b"]["precision"] == 0.0 and report["per_class"]["b"]["f1"] == 0.0


def test_ece_is_zero_for_perfect_calibration_and_large_for_overconfidence() -> None:
    probs = np.array([[0.9, 0.1]] * 10)
    labels = [0] * 9 + [1]
    assert expected_calibration_error(probs, labels) < 1e-9
    assert abs(expected_calibration_error(np.array([[0.99, 0.01]] * 10), [0] * 5 + [1] * 5) - 0.49) < 1e-9


def test_temperature_softens_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    # the right class only 70% of the time, but with huge logits: overconfident
    right = np.where(rng.random(400) < 0.7, labels, 1 - labels)
    logits = np.zeros((400, 2))
    logits[np.arange(400), right] = 8.0
    temperature = fit_temperature(logits, labels.tolist())
    assert temperature > 4
    after = expected_calibration_error(softmax(logits / temperature), labels.tolist())
    assert after < expected_calibration_error(softmax(logits), labels.tolist()) / 4
    assert fit_temperature(np.zeros((0, 2)), []) == 1.0


def test_a_small_perfectly_separated_fold_does_not_drive_the_temperature_to_zero() -> None:
    logits = np.array([[2.0, -1.0], [-1.5, 1.0], [1.0, 0.0], [0.0, 2.5], [3.0, 0.5], [-0.5, 1.5]])
    temperature = fit_temperature(logits, [0, 1, 0, 1, 0, 1])
    assert 0.2 < temperature < 1.0
