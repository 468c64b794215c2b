"""Every refused training request answers the documented 4xx JSON and leaves no rows and no files."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import data_dir_files, image_bytes, multipart
from vision_trainer.settings import Settings

RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture
def two_classes(colour_images):
    return {"red": colour_images(RED, 3), "blue": colour_images(BLUE, 3)}


def assert_refused(client: TestClient, settings: Settings, response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"]
    assert client.get("/jobs").json()["count"] == 0
    assert data_dir_files(settings.data_dir) == []
    return body


@pytest.mark.parametrize(
    ("labels", "code"),
    [
        (["unknown", "blue"], "reserved_label"),
        (["Red", "UNKNOWN"], "reserved_label"),
        (["red", "RED"], "duplicate_label"),
        (["  ", "blue"], "empty_label"),
        (["a/b", "blue"], "invalid_label"),
        (["x" * 65, "blue"], "invalid_label"),
        (["nul\x00", "blue"], "invalid_label"),
    ],
)
def test_bad_labels_are_refused(client, settings, colour_images, labels, code) -> None:
    data, files = multipart({labels[0]: colour_images(RED, 3), "placeholder": colour_images(BLUE, 3)})
    data["label2"] = labels[1]
    assert_refused(client, settings, client.post("/train", data=data, files=files), 422, code)


def test_one_class_is_too_few(client, settings, colour_images) -> None:
    data, files = multipart({"red": colour_images(RED, 3)})
    assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "too_few_classes")


def test_class_with_one_image_is_too_few(client, settings, colour_images) -> None:
    data, files = multipart({"red": colour_images(RED, 3), "blue": colour_images(BLUE, 1)})
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "too_few_images")
    assert "files2" in body["detail"]


def test_class_of_identical_images_is_too_few(client, settings) -> None:
    same = [("a.png", image_bytes(BLUE), "image/png"), ("b.png", image_bytes(BLUE), "image/png")]
    data, files = multipart(
        {
            "red": [("r.png", image_bytes(RED), "image/png"), ("s.png", image_bytes(RED, size=32), "image/png")],
            "blue": same,
        }
    )
    assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "too_few_images")


def test_gap_in_class_numbers_is_refused(client, settings, two_classes) -> None:
    data, files = multipart(two_classes)
    data["label3"] = "green"  # no files3, and label4 missing would also be a gap
    data["label5"] = "pink"
    assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "invalid_class_fields")


def test_every_bad_file_is_listed_by_position_and_name(client, settings, colour_images) -> None:
    red = colour_images(RED, 3) + [("notes.jpg", b"this is text", "image/jpeg")]
    blue = [("broken.png", image_bytes(BLUE)[:40], "image/png")] + colour_images(BLUE, 2)
    data, files = multipart({"red": red, "blue": blue})
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "invalid_image")
    errors = {(e["field"], e["index"], e["filename"]) for e in body["errors"]}
    assert errors == {("files1", 3, "notes.jpg"), ("files2", 0, "broken.png")}
    assert {e["code"] for e in body["errors"]} == {"unsupported_format", "invalid_image"}
    assert "notes.jpg" in body["detail"] and "broken.png" in body["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", "0"),
        ("epochs", "201"),
        ("epochs", "abc"),
        ("epochs", "1e9"),
        ("epochs", "-1"),
        ("test_split", "0"),
        ("test_split", "1.5"),
        ("augment_views", "99"),
        ("seed", "x"),
    ],
)
def test_out_of_range_options_are_refused(client, settings, two_classes, field, value) -> None:
    data, files = multipart(two_classes, **{field: value})
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "invalid_parameter")
    assert field in body["detail"]


def test_unknown_tuning_depth_names_the_valid_ones(client, settings, two_classes) -> None:
    data, files = multipart(two_classes, tune="everything")
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "invalid_parameter")
    assert "tune" in body["detail"] and all(f"'{depth}'" in body["detail"] for depth in ("head", "top", "full", "auto"))


def test_cut_that_the_backbone_lacks_names_its_cut_points(client, settings, two_classes) -> None:
    data, files = multipart(two_classes, backbone="efficientnet_lite0", tune="top", cut="layer4")
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "invalid_parameter")
    assert "cut" in body["detail"] and "conv_head" in body["detail"] and "blocks.6" in body["detail"]


def test_a_cut_with_tune_full_is_refused(client, settings, two_classes) -> None:
    data, files = multipart(two_classes, tune="full", cut="conv_head")
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "invalid_parameter")
    assert "leave cut out" in body["detail"]


def test_unknown_backbone_lists_the_valid_ones(client, settings, two_classes) -> None:
    data, files = multipart(two_classes, backbone="../../etc/passwd")
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "unknown_backbone")
    assert "resnet18" in body["detail"] and "efficientnet_lite0" in body["detail"]


def test_named_backbone_without_weights_says_how_to_get_them(client, settings, two_classes) -> None:
    data, files = multipart(two_classes, backbone="resnet18")
    body = assert_refused(client, settings, client.post("/train", data=data, files=files), 422, "weights_unavailable")
    assert "resnet18-f37072fd.pth" in body["detail"] and "TORCH_HOME" in body["detail"]


def test_unknown_ids_are_404_and_predict_without_model_is_409(client) -> None:
    missing = "0" * 32
    for path in (
        f"/jobs/{missing}",
        f"/models/{missing}",
        f"/models/{missing}/checkpoint",
        f"/jobs/{missing}/events",
        "/nope",
    ):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    assert client.post(f"/jobs/{missing}/cancel").status_code == 404
    response = client.post("/predict", files={"file": ("x.png", image_bytes(RED), "image/png")})
    assert response.status_code == 409 and response.json()["code"] == "no_model"


def test_predict_validation_errors_are_json(client) -> None:
    response = client.post("/predict")
    assert response.status_code == 422 and response.json()["code"] == "invalid_parameter"
    assert "file" in response.json()["detail"]
