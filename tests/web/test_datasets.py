"""Datasets on the web page: create one, add photos per class (loose, zipped, dropped), train, relabel,
delete, add more, retrain and compare the models side by side; archives of class folders and paging."""

from __future__ import annotations

import base64
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from ..conftest import Server, photos
from .conftest import LONG, OUTPUT, PHONE, Page

pytestmark = pytest.mark.slow

PER_CLASS = 10


def class_row(page: Page, label: str) -> object:
    return page.locator(f"[data-testid=dataset-class][data-label='{label}']")


def wait_for_count(page: Page, label: str, count: int) -> None:
    class_row(page, label).get_by_test_id("class-count").filter(has_text=re.compile(f"^{count}$")).wait_for()


def drop_files(page: Page, target: object, paths: list[Path]) -> None:
    """Drop files on `target` as a file manager would (a DataTransfer holding them)."""
    files = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    transfer = page.evaluate_handle(
        "files => { const t = new DataTransfer(); for (const [name, data] of files) {"
        " const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0)); t.items.add(new File([bytes], name)); }"
        " return t; }",
        files,
    )
    target.dispatch_event("drop", {"dataTransfer": transfer})


def percent(value: float) -> str:
    return f"{value * 100:.1f}\u00a0%"


def train(page: Page, models: int) -> None:
    page.testid("dataset-epochs-input").fill("2")
    page.testid("dataset-train-button").click()
    page.locator("#dataset-view [data-testid=progress]").wait_for(state="visible")  # the progress sits here
    page.testid("dataset-model").nth(models - 1).wait_for(timeout=LONG)


def test_build_a_dataset_train_fix_and_retrain(open_page, server: Server, tmp_path: Path) -> None:
    cats = photos("cats_dogs", "train", "cats", count=PER_CLASS + 3)
    dogs = photos("cats_dogs", "train", "dogs", count=PER_CLASS)
    dogs_zip = tmp_path / "dogs.zip"
    with zipfile.ZipFile(dogs_zip, "w") as archive:
        for path in dogs:
            archive.write(path, f"my dogs/{path.name}")
        archive.writestr("__MACOSX/my dogs/._dog.1.jpg", b"resource fork")
        archive.writestr("my dogs/notes.txt", "not a photo")

    page = open_page()
    page.testid("new-dataset-name").fill("Pets")
    page.testid("create-dataset").click()
    page.testid("dataset-title").filter(has_text="Pets").wait_for()
    page.testid("new-class-name").fill("cat")
    page.testid("new-class-files-input").set_input_files([str(p) for p in cats[:PER_CLASS]])
    wait_for_count(page, "cat", PER_CLASS)
    page.testid("new-class-name").fill("dog")
    page.testid("new-class-files-input").set_input_files(str(dogs_zip))  # a zip on one class: its photos
    wait_for_count(page, "dog", PER_CLASS)
    status = page.testid("dataset-status").inner_text()
    assert f"Added {PER_CLASS} photos" in status and "notes.txt (not a photo)" in status
    page.testid("photos-title").filter(has_text=f"dog: {PER_CLASS} photos").wait_for()  # shows the class just added
    assert page.testid("photo").count() == PER_CLASS
    assert sorted(page.locator(".photo .filename").all_inner_texts()) == sorted(p.name for p in dogs)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.photo img')]"
        ".every((img) => img.src.startsWith('blob:') && img.naturalWidth > 0)"
    )
    dataset_id = server.client.get("/datasets").json()["items"][0]["dataset_id"]

    train(page, models=1)
    first = server.client.get(f"/datasets/{dataset_id}").json()["models"][0]
    assert page.testid("dataset-model-accuracy").inner_text() == percent(first["test_accuracy"])
    assert page.testid("dataset-model-version").inner_text() == "dataset version 3"
    assert page.locator("#dataset-view #chart-svg circle.line-test").count() == 2
    assert "version 3" in page.testid("result-dataset").inner_text()  # the model's result names its data

    # Relabel a cat photo as a dog (click the photo, type the class, Enter), delete another (keyboard).
    class_row(page, "cat").locator(".class-tab").click()
    page.testid("photos-title").filter(has_text=f"cat: {PER_CLASS} photos").wait_for()
    page.testid("photo").first.locator("img").click()
    assert page.testid("selection-count").inner_text() == "1 selected"
    page.testid("relabel-input").fill("dog")
    page.testid("relabel-input").press("Enter")
    wait_for_count(page, "dog", PER_CLASS + 1)
    wait_for_count(page, "cat", PER_CLASS - 1)
    page.testid("photos-title").filter(has_text=f"cat: {PER_CLASS - 1} photos").wait_for()
    page.testid("photo-checkbox").first.focus()
    page.keyboard.press("Space")
    assert page.testid("selection-count").inner_text() == "1 selected"
    page.once("dialog", lambda dialog: dialog.accept())
    page.testid("delete-photos-button").click()
    wait_for_count(page, "cat", PER_CLASS - 2)
    drop_files(page, class_row(page, "cat"), cats[PER_CLASS:])  # three more cats, dropped on the class
    wait_for_count(page, "cat", PER_CLASS + 1)
    assert "version 3 → 6" in page.testid("dataset-models-note").inner_text()

    train(page, models=2)
    models = server.client.get(f"/datasets/{dataset_id}").json()["models"]
    assert [m["dataset_version"] for m in models] == [6, 3]
    assert page.testid("dataset-model-version").all_inner_texts() == ["dataset version 6", "dataset version 3"]
    assert page.testid("dataset-model-accuracy").all_inner_texts() == [percent(m["test_accuracy"]) for m in models]
    assert page.locator(".dataset-model.newest").count() == 1
    boxes = [page.testid("dataset-model").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]  # side by side
    page.locator("#dataset-view").screenshot(path=str(OUTPUT / "desktop-dataset.png"))
    assert page.locator(".models").get_by_text("dataset “Pets” version 6").count() == 1

    phone = open_page(PHONE)
    phone.goto(f"/ui#dataset={dataset_id}")
    phone.testid("dataset-model").nth(1).wait_for()
    phone.wait_for_function(
        "() => [...document.querySelectorAll('.photo img')]"
        ".every((img) => img.src.startsWith('blob:') && img.naturalWidth > 0)"
    )
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the dataset view scrolls sideways on a phone ({width}px)"
    phone.locator("#dataset-view").screenshot(path=str(OUTPUT / "phone-dataset.png"))


def tar_gz(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in paths:
            archive.add(path, arcname=f"more/{path.name}")
    return buffer.getvalue()


def test_archive_of_class_folders_unlabelled_photos_and_paging(open_page, server: Server, tmp_path: Path) -> None:
    cats = photos("cats_dogs", "val", "cats", count=4)
    dogs = photos("cats_dogs", "val", "dogs", count=6)
    loose = photos("cats_dogs", "train", "cats", start=50, count=26)
    classes_zip = tmp_path / "pets.zip"
    with zipfile.ZipFile(classes_zip, "w") as archive:
        for label, paths in (("cat", cats), ("dog", dogs[:4])):
            for path in paths:
                archive.write(path, f"pets/{label}/{path.name}")
        archive.writestr("pets/.DS_Store", b"junk")
    more_dogs = tmp_path / "more dogs.tar.gz"
    more_dogs.write_bytes(tar_gz(dogs[4:]))
    dataset = server.client.post("/datasets", json={"name": "Archive"}).json()

    page = open_page()
    page.get_by_role("button", name="Open dataset: Archive").click()
    page.testid("dataset-archive-input").set_input_files(str(classes_zip))
    wait_for_count(page, "cat", 4)
    wait_for_count(page, "dog", 4)
    class_row(page, "dog").get_by_test_id("dataset-class-files-input").set_input_files(str(more_dogs))
    wait_for_count(page, "dog", 6)

    class_row(page, "").get_by_test_id("dataset-class-files-input").set_input_files([str(p) for p in loose])
    wait_for_count(page, "", 26)
    page.testid("page-info").filter(has_text="1–24 of 26").wait_for()
    page.testid("next-page").click()
    page.testid("page-info").filter(has_text="25–26 of 26").wait_for()
    assert page.testid("photo").count() == 2
    page.get_by_role("button", name="Select page").click()
    page.testid("relabel-input").fill("cat")
    page.testid("relabel-button").click()
    wait_for_count(page, "cat", 6)
    wait_for_count(page, "", 24)
    page.testid("photos-title").filter(has_text="Unlabelled: 24 photos").wait_for()
    assert page.testid("photo").count() == 24 and not page.testid("next-page").is_visible()  # one page left
    current = server.client.get(f"/datasets/{dataset['dataset_id']}").json()
    assert current["per_class_counts"] == {"cat": 6, "dog": 6} and current["unlabelled_count"] == 24

    page.get_by_role("button", name="Close this dataset").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete dataset: Archive").click()
    page.get_by_text("No datasets yet").wait_for()
    assert server.client.get("/datasets").json()["count"] == 0
