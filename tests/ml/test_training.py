from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import image_bytes
from vision_trainer.ml.backbones import create_backbone, resolve_backbone
from vision_trainer.ml.checkpoint import build_head_checkpoint, full_checkpoint, load_checkpoint, save_checkpoint
from vision_trainer.ml.data import LabelledImage, eval_transform, stratified_split
from vision_trainer.ml.errors import CheckpointError, TrainingCancelled
from vision_trainer.ml.images import open_image
from vision_trainer.ml.metrics import expected_calibration_error, softmax
from vision_trainer.ml.predictor import Predictor
from vision_trainer.ml.recipe import Compute, Recipe
from vision_trainer.ml.runtime import RuntimeOptions
from vision_trainer.ml.training import TrainingHooks, train_classifier

LOG_LINE = re.compile(r"^Epoch (\d+)/(\d+) Loss: \d+\.\d{4} Train Acc: [01]\.\d{4} Test Acc: [01]\.\d{4}$")
COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40)]

RANDOM = Compute(pretrained=False)  # random weights: these tests need no download


def colour_dataset(root: Path, per_class: int = 8) -> list[LabelledImage]:
    items = []
    for label, colour in enumerate(COLOURS):
        for i in range(per_class):
            path = root / f"{label}_{i}.png"
            path.write_bytes(image_bytes(colour, size=48, noise=25, seed=i))
            items.append(LabelledImage(path, label, f"{label}-{i}"))
    return items


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("colours")
    split = stratified_split(colour_dataset(root), test_fraction=0.25, seed=0)
    lines: list[str] = []
    phases: list[str] = []
    # Random (not pretrained) features are large and unnormalized: the seed's small lr suits them.
    config = Recipe(epochs=15, lr=0.001, augment_views=1, tune="head")  # the head alone: the seed's log
    hooks = TrainingHooks(progress=lambda phase, *_: phases.append(phase), log=lines.append)
    result = train_classifier(resolve_backbone("resnet18"), split, ["red", "blue", "green"], config, RANDOM, hooks)
    return result, lines, phases, split


def test_training_logs_every_epoch_in_the_seed_shape(trained) -> None:
    result, lines, phases, _ = trained
    assert lines[0] == f"Features: {result.metrics['features_extracted']} computed, 0 reused"
    assert len(lines) == 18 and all(LOG_LINE.match(line) for line in lines[1:16])
    # then the test accuracy with its interval, and (a handful of test photos) the warning that it is rough
    assert lines[16].startswith("Test accuracy ") and "95 % interval" in lines[16] and "cross-validated" in lines[16]
    assert (
        lines[17].startswith("Test accuracy ")
        and f"is rough: it rests on {len(trained[3].test)} test photo(s)" in lines[17]
    )
    assert [row["epoch"] for row in result.history] == list(range(1, 16))
    assert phases[0] == "preparing" and "extracting" in phases and "training" in phases


def test_only_the_head_is_trained_and_it_separates_colours(trained) -> None:
    result, _, _, split = trained
    assert result.metrics["test_accuracy"] >= 0.8
    metrics = result.metrics
    # no validation fold unless early stopping: the temperature is fitted on out-of-fold predictions
    assert metrics["validation_count"] == 0 and metrics["train_count"] == len(split.train)
    assert metrics["calibration"]["fitted_on"] == "out_of_fold" and len(metrics["cv_accuracy"]["folds"]) == 5
    low, high = metrics["test_accuracy_ci"]
    assert low <= metrics["test_accuracy"] <= high and high - low > 0.3  # a handful of test photos: a wide interval
    assert metrics["test_count"] == len(split.test)
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == len(split.test)
    assert set(metrics["per_class"]) == {"red", "blue", "green"}
    # one plain and one augmented view per training image, one view per test image
    assert metrics["images_through_backbone"] == 2 * metrics["train_count"] + len(split.test)
    assert metrics["calibration"]["temperature"] == result.temperature > 0
    wrong = sum(sum(row) for row in metrics["confusion_matrix"]) - sum(
        metrics["confusion_matrix"][i][i] for i in range(3)
    )
    assert len(metrics["misclassified"]) == wrong
    test_ids = {item.path.stem for item in split.test}
    assert all(m["image_id"] in test_ids for m in metrics["misclassified"])


def test_checkpoint_round_trip_gives_the_same_predictions(trained, tmp_path: Path) -> None:
    result, _, _, split = trained
    spec = resolve_backbone("resnet18")
    path = tmp_path / "trained_model.pth"
    # A model stores its head; the full checkpoint puts it on the backbone it was trained on (here the
    # random one train_classifier built after seeding torch with config.seed).
    torch.manual_seed(0)
    backbone = create_backbone(spec, num_classes=None, pretrained=False)
    head = build_head_checkpoint(
        head_state_dict=result.head_state,
        class_names=["red", "blue", "green"],
        backbone="resnet18",
        backbone_fingerprint=result.backbone_fingerprint,
        preprocessing=spec.preprocessing(),
        metrics=result.metrics,
    )
    assert set(head["head_state_dict"]) == {"fc.weight", "fc.bias"}
    save_checkpoint(path, full_checkpoint(head, backbone.state_dict()))
    assert [p.name for p in tmp_path.iterdir()] == ["trained_model.pth"]  # no temp file left behind
    checkpoint = load_checkpoint(path)
    assert {
        "format_version",
        "model_state_dict",
        "class_names",
        "backbone",
        "preprocessing",
        "temperature",
        "metrics",
        "created_at",
    } <= set(checkpoint)
    assert "fc.weight" in checkpoint["model_state_dict"] and checkpoint["model_state_dict"]["fc.weight"].shape == (
        3,
        512,
    )

    images = [open_image(item.path) for item in split.test]
    batch = torch.stack([eval_transform(spec.preprocessing())(image) for image in images])
    model = create_backbone(spec, num_classes=3, pretrained=False)
    model.load_state_dict(checkpoint["model_state_dict"])
    with torch.inference_mode():
        plain = torch.softmax(model.eval()(batch), dim=1)
    restored = Predictor.from_checkpoint(checkpoint, runtime=RuntimeOptions("torch"))
    assert torch.allclose(plain, restored.probabilities(images), atol=1e-6)

    # The report's calibration is that of these test predictions, before and after the temperature.
    labels = [item.label for item in split.test]
    with torch.inference_mode():
        logits = model(batch).double().numpy()
    calibration = result.metrics["calibration"]
    assert calibration["ece_before"] == pytest.approx(expected_calibration_error(softmax(logits), labels), abs=1e-3)
    after = expected_calibration_error(softmax(logits / result.temperature), labels)
    assert calibration["ece_after"] == pytest.approx(after, abs=1e-3)


def test_loading_a_non_checkpoint_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="model_state_dict"):
        load_checkpoint(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_cancellation_stops_between_batches(tmp_path: Path) -> None:
    split = stratified_split(colour_dataset(tmp_path, per_class=4), test_fraction=0.25, seed=0)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(TrainingCancelled):
        train_classifier(
            resolve_backbone("resnet18"),
            split,
            ["r", "b", "g"],
            Recipe(epochs=3, augment_views=0, batch_size=2),
            RANDOM,
            TrainingHooks(should_stop=stop),
        )


def test_early_stopping_keeps_the_epoch_with_the_best_validation_loss() -> None:
    from vision_trainer.ml.training import fit_head

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    y = (x[:, 0] > 0).long()
    # A validation fold labelled against the training rule: its loss only grows as the head learns.
    validation = (x[:16], 1 - y[:16])
    head = torch.nn.Linear(8, 2)
    restored = copy.deepcopy(head)
    lines: list[str] = []
    config = Recipe(epochs=30, patience=2, early_stopping=True)
    history, best_epoch = fit_head(head, (x, y), (x, y), config, TrainingHooks(log=lines.append), validation=validation)
    assert best_epoch == 1 and len(history) == 3
    assert (
        lines[-1] == "Early stopping after epoch 3: the validation loss has not improved for 2 epochs; keeping epoch 1"
    )
    fit_head(restored, (x, y), (x, y), Recipe(epochs=1), TrainingHooks())
    assert torch.allclose(head.weight, restored.weight)  # the kept head is epoch 1's

    plain = torch.nn.Linear(8, 2)
    history, best_epoch = fit_head(plain, (x, y), (x, y), Recipe(epochs=4), TrainingHooks())
    assert len(history) == 4 and best_epoch == 4


class DictCache:
    """A FeatureCache in memory, counting the entries put."""

    def __init__(self) -> None:
        self.entries: dict[str, object] = {}

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, value) -> None:
        time.sleep(0.02)  # as slow as files: without a flush the job would end before the writer
        self.entries[key] = value


def hashed_colour_dataset(root: Path, per_class: int = 4) -> list[LabelledImage]:
    import hashlib

    return [
        LabelledImage(item.path, item.label, hashlib.sha256(item.path.read_bytes()).hexdigest())
        for item in colour_dataset(root, per_class)
    ]


def test_computed_features_are_in_the_cache_when_training_returns_even_if_cancelled(tmp_path: Path) -> None:
    split = stratified_split(hashed_colour_dataset(tmp_path), test_fraction=0.25, seed=0)
    config = Recipe(epochs=3, augment_views=1, batch_size=2)
    cache = DictCache()
    training = []  # the head's epochs start once every feature is computed: cancel in the second
    hooks = TrainingHooks(
        progress=lambda phase, *_: training.append(1) if phase == "training" else None,
        should_stop=lambda: len(training) >= 1,
    )
    with pytest.raises(TrainingCancelled):
        train_classifier(resolve_backbone("resnet18"), split, ["r", "b", "g"], config, RANDOM, hooks, cache=cache)
    assert len(cache.entries) == 2 * len(split.train) + len(split.test)

    again = train_classifier(resolve_backbone("resnet18"), split, ["r", "b", "g"], config, RANDOM, cache=cache)
    assert again.metrics["features_extracted"] == 0
    assert again.metrics["features_reused"] == 2 * len(split.train) + len(split.test)
