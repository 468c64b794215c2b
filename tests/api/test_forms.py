"""Unknown form fields and JSON keys are refused with 422 `unknown_field`, naming the closest valid name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.datastructures import FormData

from tests.conftest import data_dir_files, image_bytes, make_settings
from vision_trainer.api.form_fields import check_field_names
from vision_trainer.api.uploads import check_train_fields
from vision_trainer.services.errors import InvalidRequest
from vision_trainer.settings import Settings

PNG = ("a.png", image_bytes((200, 30, 30)), "image/png")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: these checks happen before any database work."""
    return make_settings(tmp_path / "data", augment_views=0)


def refusal(response) -> str:
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unknown_field", response.text
    return response.json()["detail"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["epoch"], "unknown field 'epoch'; did you mean 'epochs'?"),
        (["file1"], "unknown field 'file1'; did you mean 'files1'?"),
        (["files"], "unknown field 'files'; did you mean 'files1'?"),
        (["lable3"], "unknown field 'lable3'; did you mean 'label3'?"),
        (["Backbone"], "unknown field 'Backbone'; did you mean 'backbone'?"),
        (["test-split"], "unknown field 'test-split'; did you mean 'test_split'?"),
    ],
)
def test_train_fields_name_the_closest_valid_field(names: list[str], message: str) -> None:
    form = FormData([("label1", "cat"), ("label2", "dog"), *((n, "x") for n in names)])
    with pytest.raises(InvalidRequest) as caught:
        check_train_fields(form)
    assert caught.value.code == "unknown_field"
    assert caught.value.detail == message


def test_train_fields_accept_every_documented_field() -> None:
    names = [
        "label1",
        "files1",
        "label12",
        "files12",
        "archive",
        "epochs",
        "backbone",
        "test_split",
        "seed",
        "name",
        "augment_views",
        "early_stopping",
        "wait",
        "skip_invalid",
    ]
    check_train_fields(FormData([(n, "x") for n in names]))


def test_several_unknown_fields_are_all_named_with_the_valid_ones() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_field_names(["zzz", "epoch", "epoch"], allowed=["epochs", "seed"], numbered=["label"])
    assert caught.value.detail == (
        "unknown fields 'zzz', 'epoch' (did you mean 'epochs'?); valid fields: epochs, seed, label1..labelN"
    )


@pytest.mark.parametrize("name", ["label", "label1x", "label-1", "label١"])  # the last: an Arabic-Indic digit
def test_numbered_fields_need_an_ascii_number(name: str) -> None:
    with pytest.raises(InvalidRequest):
        check_field_names([name], allowed=[], numbered=["label"])


def test_predict_refuses_a_misspelt_field_before_anything_else(client) -> None:
    # No model exists: without the field check this would be 409 no_model.
    detail = refusal(client.post("/predict", files={"file": PNG}, data={"topk": "2"}))
    assert detail == "unknown field 'topk'; did you mean 'top_k'?"
    assert refusal(client.post("/predict", files={"fil": PNG})) == "unknown field 'fil'; did you mean 'file'?"


def test_predict_batch_refuses_file_for_files(client) -> None:
    detail = refusal(client.post("/predict/batch", files=[("file", PNG)]))
    assert detail == "unknown field 'file'; did you mean 'files'?"


def test_import_names_every_unknown_field_and_keeps_nothing(client, settings: Settings) -> None:
    before = data_dir_files(settings.data_dir)
    response = client.post(
        "/models/import", files={"checkpoint": ("m.pth", b"x" * 1000, "application/octet-stream")}, data={"nam": "mine"}
    )
    detail = refusal(response)
    assert "'checkpoint'" in detail and "'nam' (did you mean 'name'?)" in detail
    assert "valid fields: file, name, backbone" in detail
    assert data_dir_files(settings.data_dir) == before


def test_json_bodies_refuse_unknown_keys(client) -> None:
    detail = refusal(client.patch("/models/0123456789abcdef0123456789abcdef", json={"nme": "pets"}))
    assert detail == "unknown field 'nme'; did you mean 'name'?"
    detail = refusal(client.put("/models/default", json={"model": "0123456789abcdef0123456789abcdef"}))
    assert detail == "unknown field 'model'; did you mean 'model_id'?"
    both = client.patch("/models/0123456789abcdef0123456789abcdef", json={"name": "pets", "colour": "red"})
    assert refusal(both).startswith("unknown field 'colour'")
    # Known keys still reach the route: an unknown model is a 404, not a validation error.
    assert client.patch("/models/0123456789abcdef0123456789abcdef", json={"name": "pets"}).status_code == 404


# --- hostile bodies -------------------------------------------------------------------------------

BOUNDARY = "vt-test-boundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
ANY_ID = "0123456789abcdef0123456789abcdef"


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def multipart_routes(client) -> list[tuple[str, str]]:
    """Every route that takes a multipart form: those the API document describes so, and analyze."""
    routes = [
        (method.upper(), path)
        for path, item in client.app.openapi()["paths"].items()
        for method, operation in item.items()
        if "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
    ]
    return [*routes, ("POST", "/datasets/{dataset_id}/analyze")]


def test_every_multipart_route_refuses_a_body_cut_before_its_closing_boundary(client, settings: Settings) -> None:
    whole = part("label1", b"cat") + part("files1", image_bytes((200, 30, 30)), "a.png")
    routes = multipart_routes(client)
    assert {("POST", "/train"), ("POST", "/predict"), ("POST", "/models/import")} <= set(routes)
    before = data_dir_files(settings.data_dir)
    for method, template in routes:
        path = re.sub(r"\{[a-z_]+\}", ANY_ID, template)
        for body in (whole, whole + f"--{BOUNDARY}".encode(), whole[:-40]):  # cut in the last part's data, too
            response = client.request(method, path, content=body, headers=MULTIPART)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["code"] == "invalid_form", (path, response.text)
            assert "closing boundary" in response.json()["detail"], (path, response.text)
    assert data_dir_files(settings.data_dir) == before


def test_a_whole_body_still_reaches_the_route(client) -> None:
    whole = part("topk", b"2") + part("file", image_bytes((200, 30, 30)), "a.png") + f"--{BOUNDARY}--\r\n".encode()
    assert refusal(client.post("/predict", content=whole, headers=MULTIPART)).startswith("unknown field 'topk'")


def test_unknown_fields_are_named_up_to_a_bound() -> None:
    names = [f"x{i}" for i in range(5000)]
    with pytest.raises(InvalidRequest) as caught:
        check_field_names(names, allowed=["epochs"])
    detail = caught.value.detail
    assert detail.startswith("unknown fields 'x0', 'x1'") and "'x9'" in detail and "'x10'" not in detail
    assert detail.endswith(" and more; valid fields: epochs")


def test_a_streamed_form_is_refused_at_its_eleventh_unknown_field(client, settings: Settings) -> None:
    # Eleven made-up fields, then a body that never ends properly: refused for the fields, so the
    # parser stopped there instead of reading (and listing) everything.
    body = b"".join(part(f"junk{i}", b"x") for i in range(11)) + part("file", b"y" * 1000, "m.pth")[:-30]
    detail = refusal(client.post("/models/import", content=body, headers=MULTIPART))
    assert detail.startswith("unknown fields 'junk0'") and "'junk9'" in detail and "'junk10'" not in detail
    assert detail.endswith(" and more; valid fields: file, name, backbone")
    repeated = b"".join(part("junk", b"x") for _ in range(50)) + f"--{BOUNDARY}--\r\n".encode()
    assert refusal(client.post("/models/import", content=repeated, headers=MULTIPART)).startswith(
        "unknown field 'junk'"
    )
