from vision_trainer.ml.metrics import classification_report, confusion_matrix


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
