"""The command line works on the data dir through the same services as the API: one JSON document on
stdout, logs and progress on stderr, the service's checks and error codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import photos
from vision_trainer.cli import main
from vision_trainer.settings import get_settings

pytestmark = pytest.mark.slow

LITE0 = ["--backbone", "efficientnet_lite0", "--augment-views", "0"]


def run(args: list[str], data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "vision_trainer.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)  # the whole of stdout is one JSON document


Cli = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """``cli("datasets", "list")`` runs ``vision-trainer`` in this process on a fresh data dir."""
    monkeypatch.setenv("VT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    get_settings.cache_clear()

    def call(*args: str) -> Result:
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield call
    get_settings.cache_clear()


def class_folder(root: Path, split: str, count: int, *, start: int = 0) -> Path:
    """``root/cats`` and ``root/dogs`` with ``count`` real photos each."""
    for kind in ("cats", "dogs"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for path in photos("cats_dogs", split, kind, start=start, count=count):
            shutil.copy(path, root / kind / path.name)
    return root


def test_train_predict_models_and_export(tmp_path: Path) -> None:
    folder = class_folder(tmp_path / "pets", "train", 8)
    data_dir = tmp_path / "data"

    trained = run(["train", str(folder), "--epochs", "3", *LITE0], data_dir)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    model_id = summary["model_id"]
    assert summary["status"] == "succeeded"
    metrics = summary["metrics"]
    matrix = metrics["confusion_matrix"]
    assert metrics["test_count"] == sum(map(sum, matrix)) >= 2
    assert metrics["test_accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(2)) / metrics["test_count"])
    assert "Epoch 3/3 Loss:" in trained.stderr and any(line.startswith("Epoch 3/3 Loss:") for line in summary["log"])
    assert summary["log"][-1].startswith("Saved model")
    # Bars in their own units: photos read and features extracted count images, training counts epochs.
    assert re.search(r"reading: .*16/16 img", trained.stderr)
    assert re.search(r"extracting: .*16/16 img", trained.stderr)
    assert re.search(r"training: .*3/3 epoch", trained.stderr) and "/3 img" not in trained.stderr

    listing = run(["models"], data_dir)
    assert [m["model_id"] for m in json.loads(listing.stdout)["items"]] == [model_id]

    val = photos("cats_dogs", "val", "dogs", count=2)
    predicted = run(["predict", *map(str, val), "--model", model_id], data_dir)
    assert predicted.returncode == 0, predicted.stderr
    answers = json.loads(predicted.stdout)["predictions"]
    assert [a["file"] for a in answers] == list(map(str, val))
    for answer in answers:  # a 3-epoch model on 16 photos may still be wrong; its answer must be consistent
        assert {entry["label"] for entry in answer["top_k"]} == {"cats", "dogs"}
        assert answer["prediction"] == answer["top_k"][0]["label"]
        assert answer["confidence"] == answer["top_k"][0]["confidence"] >= 0.5
    assert "accuracy" not in json.loads(predicted.stdout)  # no class folders, nothing to score against

    out = tmp_path / "model.onnx"
    exported = run(["export", model_id, "--format", "onnx", "-o", str(out)], data_dir)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["size_bytes"] == out.stat().st_size > 1_000_000
    # A bundled format: the command runs the export job itself and writes the verified zip.
    bundle = tmp_path / "model-openvino.zip"
    exported = run(["export", model_id, "--format", "openvino", "-o", str(bundle)], data_dir)
    assert exported.returncode == 0, exported.stderr
    verification = json.loads(exported.stdout)["verification"]
    assert verification["ran"] and verification["max_probability_difference"] <= 1e-4
    assert {"model.xml", "model.bin", "metadata.json", "README.txt"} <= set(zipfile.ZipFile(bundle).namelist())

    missing = run(["train", str(tmp_path / "nowhere")], data_dir)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("error (invalid_path): ") and "does not exist" in missing.stderr


def test_datasets_create_add_list_and_train(cli: Cli, tmp_path: Path) -> None:
    pets = class_folder(tmp_path / "pets", "train", 6)
    (pets / "cats" / "notes.txt").write_text("not a photo")
    more = class_folder(tmp_path / "more", "train", 1, start=6)
    unlabelled = class_folder(tmp_path / "unlabelled", "val", 2)
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in photos("cats_dogs", "val", "cats", start=2, count=2):
            zf.write(path, f"pets/cats/{path.name}")
        zf.writestr("pets/.DS_Store", b"junk")

    created = cli("datasets", "create", "pets")
    assert created.code == 0, created.err
    dataset_id = created.json()["dataset_id"]
    assert created.json()["version"] == 1 and created.json()["image_count"] == 0

    added = cli("datasets", "add", dataset_id, str(pets))
    assert added.code == 0, added.err
    assert added.json()["version"] == 2 and len(added.json()["added"]) == 12
    assert [s["filename"] for s in added.json()["skipped"]] == [str(pets / "cats" / "notes.txt")]
    assert "notes.txt" in added.err and re.search(r"reading: .*12/12 img", added.err)

    again = cli("datasets", "add", dataset_id, str(pets / "dogs"), "--label", "dogs")
    assert again.json()["version"] == 2 and len(again.json()["duplicates"]) == 6  # nothing new, no new version
    assert cli("datasets", "add", dataset_id, str(unlabelled / "cats"), "--unlabelled").json()["version"] == 3
    zipped = cli("datasets", "add", dataset_id, str(archive))
    assert zipped.code == 0, zipped.err
    assert [a["label"] for a in zipped.json()["added"]] == ["cats", "cats"]
    assert any(".DS_Store" in s["filename"] for s in zipped.json()["skipped"])

    listing = cli("datasets", "list").json()
    assert listing["count"] == 1
    assert listing["items"][0]["per_class_counts"] == {"cats": 8, "dogs": 6}
    assert listing["items"][0]["unlabelled_count"] == 2

    first = cli("train", "--dataset", dataset_id, "--epochs", "1", *LITE0)
    assert first.code == 0, first.err
    job = first.json()
    assert job["status"] == "succeeded" and job["dataset_id"] == dataset_id and job["dataset_version"] == 4
    assert job["metrics"]["features_extracted"] == 14 and job["metrics"]["features_reused"] == 0
    assert re.search(r"training: .*1/1 epoch", first.err)

    # Two more photos, then a retrain that computes only their features.
    assert cli("datasets", "add", dataset_id, str(more)).json()["version"] == 5
    second = cli("train", "--dataset", dataset_id, "--epochs", "1", *LITE0).json()
    assert second["dataset_version"] == 5
    assert (second["metrics"]["features_extracted"], second["metrics"]["features_reused"]) == (2, 14)

    shown = cli("datasets", "show", dataset_id).json()
    assert [m["model_id"] for m in shown["models"]] == [second["model_id"], job["model_id"]]


def test_a_tuned_top_counts_its_epochs_and_says_what_it_kept(cli: Cli, tmp_path: Path) -> None:
    pets = class_folder(tmp_path / "pets", "train", 8)
    trained = cli("train", str(pets), "--tune", "top", "--tune-epochs", "2", "--epochs", "2", *LITE0)
    assert trained.code == 0, trained.err
    summary = trained.json()
    tuning = summary["metrics"]["tuning"]
    assert tuning["tune"] == "top" and tuning["kept"] == "top" and tuning["epochs"] == 2
    assert [line for line in summary["log"] if line.startswith("Tuned epoch ")][-1].startswith("Tuned epoch 2/2 Loss:")
    assert any(line.startswith("Tuned conv_head: validation ") for line in summary["log"])
    assert re.search(r"tuning: .*2/2 epoch", trained.err)


def test_training_options_get_the_services_checks(cli: Cli, tmp_path: Path) -> None:
    pets = class_folder(tmp_path / "pets", "train", 2)

    zero = cli("train", str(pets), "--epochs", "0")
    assert zero.code == 2 and zero.out == ""
    assert re.match(r"error \(invalid_parameter\): epochs: .*greater than or equal to 1", zero.err)
    assert "reading" not in zero.err  # refused before a photo is read
    assert cli("datasets", "list").json()["count"] == 0  # and nothing stored

    dataset_id = cli("datasets", "create", "pets").json()["dataset_id"]
    split = cli("train", "--dataset", dataset_id, "--test-split", "0.9")
    assert split.code == 2 and split.err.startswith("error (invalid_parameter): test_split:")
    backbone = cli("train", "--dataset", dataset_id, "--backbone", "vgg99")
    assert backbone.code == 2 and backbone.err.startswith("error (unknown_backbone):")
    empty = cli("train", "--dataset", dataset_id)
    assert empty.code == 2 and empty.err.startswith("error (too_few_classes):")
    unknown = cli("train", "--dataset", "0" * 32)
    assert unknown.code == 2 and unknown.err.startswith("error (not_found):")
    both = cli("train", str(pets), "--dataset", dataset_id)
    assert both.code == 2 and both.err.startswith("error (invalid_parameter):")
    cut = cli("train", "--dataset", dataset_id, "--tune", "top", "--cut", "layer4", *LITE0)
    assert cut.code == 2 and cut.err.startswith("error (invalid_parameter): cut:") and "conv_head" in cut.err
    reserved = cli("datasets", "add", dataset_id, str(pets / "cats"), "--label", "unknown")
    assert reserved.code == 2 and reserved.err.startswith("error (reserved_label):")
    assert cli("datasets", "show", dataset_id).json()["version"] == 1


def test_predict_on_a_folder_with_class_folders_reports_accuracy(cli: Cli, tmp_path: Path) -> None:
    trained = cli("train", str(class_folder(tmp_path / "pets", "train", 6)), "--epochs", "2", *LITE0)
    assert trained.code == 0, trained.err
    model_id = trained.json()["model_id"]
    val = class_folder(tmp_path / "val", "val", 3)
    (val / "dogs").rename(val / "Dogs")  # class folders are matched ignoring case
    shutil.copy(photos("cats_dogs", "val", "cats", start=5, count=1)[0], val / "loose.jpg")
    (val / "birds").mkdir()
    shutil.copy(photos("cats_dogs", "val", "dogs", start=5, count=1)[0], val / "birds" / "b.jpg")

    predicted = cli("predict", str(val), "--model", model_id, "--top-k", "1")
    assert predicted.code == 0, predicted.err
    answer = predicted.json()
    assert answer["model_id"] == model_id and answer["count"] == 8
    by_file = {Path(p["file"]).relative_to(val).as_posix(): p for p in answer["predictions"]}
    assert by_file["Dogs/" + photos("cats_dogs", "val", "dogs", count=1)[0].name]["expected"] == "dogs"
    assert "expected" not in by_file["loose.jpg"] and "expected" not in by_file["birds/b.jpg"]
    assert "birds is not named after a class" in predicted.err

    accuracy = answer["accuracy"]
    scored = [p for p in answer["predictions"] if "expected" in p]
    correct = sum(p["prediction"] == p["expected"] for p in scored)
    assert (accuracy["count"], accuracy["correct"]) == (6, correct)
    assert accuracy["overall"] == round(correct / 6, 4)
    assert {name: c["count"] for name, c in accuracy["per_class"].items()} == {"cats": 3, "dogs": 3}
    assert sum(sum(row.values()) for row in accuracy["confusion"].values()) == 6
