"""Bad input and abuse: each gets its documented status and a JSON error, and leaves no trace."""

from __future__ import annotations

import io
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import Server, data_dir_files, image_bytes, make_settings, multipart, wait_for_job
from vision_trainer.api.app import create_app

RED, BLUE = (220, 30, 30), (30, 30, 220)


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG that claims a huge canvas (its IDAT holds barely any data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = image_bytes(RED, fmt="JPEG", size=200, noise=40)
    return data[: len(data) // 2]


BAD_FILES = {
    "zero-byte": (b"", "unsupported_format"),
    "truncated JPEG": (truncated_jpeg(), "invalid_image"),
    "text named .jpg": (b"hello, I am not a photo", "unsupported_format"),
    "PNG decompression bomb": (png_bomb(), "image_too_large"),
    "SVG": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        "unsupported_format",
    ),
    "EPS": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "unsupported_format"),
    "PDF": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "unsupported_format"),
    "over the size limit": (b"\xff\xd8\xff" + b"\0" * (1024 * 1024 + 10), "file_too_large"),
}


@pytest.fixture
def small_limits(tmp_path: Path, database_url: str | None) -> TestClient:
    settings = make_settings(
        tmp_path / "data", augment_views=0, max_file_mb=1, max_files=30, max_request_mb=4, database_url=database_url
    )
    with TestClient(create_app(settings)) as client:
        client.data_dir = settings.data_dir  # type: ignore[attr-defined]
        yield client


def assert_no_trace(client) -> None:
    assert client.get("/jobs").json()["count"] == 0
    assert data_dir_files(client.data_dir) == []


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_in_a_training_upload_is_listed_and_nothing_is_kept(small_limits, colour_images, case) -> None:
    content, code = BAD_FILES[case]
    red = colour_images(RED, 3) + [("bad.jpg", content, "image/jpeg")]
    data, files = multipart({"red": red, "blue": colour_images(BLUE, 3)})
    response = small_limits.post("/train", data=data, files=files)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_image"
    assert [(e["field"], e["index"], e["filename"], e["code"]) for e in body["errors"]] == [
        ("files1", 3, "bad.jpg", code)
    ]
    assert_no_trace(small_limits)


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("zero-byte", 415, "unsupported_format"),
        ("truncated JPEG", 422, "invalid_image"),
        ("text named .jpg", 415, "unsupported_format"),
        ("PNG decompression bomb", 413, "image_too_large"),
        ("SVG", 415, "unsupported_format"),
        ("EPS", 415, "unsupported_format"),
        ("PDF", 415, "unsupported_format"),
        ("over the size limit", 413, "file_too_large"),
    ],
)
def test_bad_file_on_predict(small_limits, colour_images, case, status, code) -> None:
    data, files = multipart({"red": colour_images(RED, 3), "blue": colour_images(BLUE, 3)}, wait="true", epochs="1")
    assert small_limits.post("/train", data=data, files=files).json()["status"] == "succeeded"
    before = data_dir_files(small_limits.data_dir)
    response = small_limits.post("/predict", files={"file": ("x.jpg", BAD_FILES[case][0], "image/jpeg")})
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert data_dir_files(small_limits.data_dir) == before


@pytest.mark.parametrize(
    ("label", "code"),
    [
        ("a/b", "invalid_label"),
        ("..", "invalid_label"),
        ("x\x00y", "invalid_label"),
        ("", "empty_label"),
        ("l" * 5000, "invalid_label"),
        ("Unknown", "reserved_label"),
        ("CAT", "duplicate_label"),
    ],
)
def test_bad_labels(small_limits, colour_images, label, code) -> None:
    data, files = multipart({"cat": colour_images(RED, 3), "x": colour_images(BLUE, 3)})
    data["label2"] = label
    response = small_limits.post("/train", data=data, files=files)
    assert (response.status_code, response.json()["code"]) == (422, code)
    assert_no_trace(small_limits)


def test_too_many_files_and_too_large_bodies_are_413(small_limits, colour_images) -> None:
    data, files = multipart({"red": colour_images(RED, 16), "blue": colour_images(BLUE, 16)})
    response = small_limits.post("/train", data=data, files=files)
    assert (response.status_code, response.json()["code"]) == (413, "too_many_files")
    big = [("big.png", b"\x89PNG" + b"\0" * (900 * 1024), "image/png")] * 5
    data, files = multipart({"red": big, "blue": colour_images(BLUE, 2)})
    response = small_limits.post("/train", data=data, files=files)
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")

    def chunked_body():  # no Content-Length: cut off while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="files1"; filename="a.jpg"\r\n\r\n'
        for _ in range(6):
            yield b"\0" * (1024 * 1024)

    response = small_limits.post(
        "/train", content=chunked_body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")
    assert_no_trace(small_limits)


def test_skip_invalid_trains_on_the_rest_and_lists_what_it_skipped(small_limits, colour_images) -> None:
    red = colour_images(RED, 3) + [("notes.jpg", b"text", "image/jpeg")]
    data, files = multipart({"red": red, "blue": colour_images(BLUE, 3)}, skip_invalid="true", wait="true", epochs="1")
    job = small_limits.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded", job
    assert [e["filename"] for e in job["params"]["skipped_files"]] == ["notes.jpg"]
    assert any(line.startswith("Skipped 1 unusable file(s)") and "notes.jpg" in line for line in job["log"])
    model = small_limits.get(f"/models/{job['model_id']}").json()
    assert model["data"]["per_class_counts"] == {"red": 3, "blue": 3}


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 200, 200, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def odd_images() -> list[tuple[str, bytes, str]]:
    def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        return buffer.getvalue()

    rotated = Image.new("RGB", (80, 40), RED)
    exif = rotated.getexif()
    exif[0x0112] = 6
    return [
        ("png-named.jpg", image_bytes(RED, fmt="PNG", noise=10, seed=1), "image/jpeg"),
        ("gray.png", encode(Image.new("L", (64, 64), 90), "PNG"), "image/png"),
        ("rgba.png", encode(Image.new("RGBA", (64, 64), (220, 30, 30, 128)), "PNG"), "image/png"),
        ("cmyk.jpg", cmyk_jpeg(), "image/jpeg"),
        ("sixteen.png", encode(Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)), "PNG"), "image/png"),
        ("photo.webp", image_bytes(RED, fmt="WEBP", noise=10, seed=2), "image/webp"),
        ("rotated.jpg", encode(rotated, "JPEG", exif=exif.tobytes()), "image/jpeg"),
    ]


def test_valid_but_odd_images_are_accepted(small_limits, colour_images) -> None:
    data, files = multipart({"odd": odd_images(), "blue": colour_images(BLUE, 4)}, wait="true", epochs="1")
    job = small_limits.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded" and job["params"]["skipped_files"] == []
    for name, content, mime in odd_images():
        assert small_limits.post("/predict", files={"file": (name, content, mime)}).status_code == 200, name


def test_client_filename_never_becomes_a_path(small_limits, colour_images) -> None:
    target = Path("/tmp/x.jpg")
    target.unlink(missing_ok=True)
    red = [("../../../../tmp/x.jpg", content, mime) for _, content, mime in colour_images(RED, 3)]
    data, files = multipart({"red": red, "blue": colour_images(BLUE, 3)}, wait="true", epochs="1")
    job = small_limits.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded"
    assert not target.exists()
    stored = data_dir_files(small_limits.data_dir)
    assert all(".." not in name and "x.jpg" not in name for name in stored)


def test_korean_labels_work_end_to_end(small_limits, colour_images) -> None:
    data, files = multipart(
        {"고양이": colour_images(RED, 4), "강아지": colour_images(BLUE, 4)}, wait="true", epochs="2"
    )
    job = small_limits.post("/train", data=data, files=files).json()
    assert job["status"] == "succeeded" and job["class_names"] == ["고양이", "강아지"]
    answer = small_limits.post(
        "/predict", files={"file": ("r.png", image_bytes(RED, noise=20, seed=9), "image/png")}
    ).json()
    assert answer["prediction"] == "고양이"
    assert small_limits.get("/models").json()["items"][0]["class_names"] == ["고양이", "강아지"]


def test_api_keys(tmp_path, database_url) -> None:
    settings = make_settings(tmp_path / "data", api_keys="first-key, second-key", database_url=database_url)
    with TestClient(create_app(settings)) as client:
        for open_path in ("/", "/health/live", "/health/ready", "/openapi.json", "/docs"):
            assert client.get(open_path).status_code == 200, open_path
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"X-API-Key": "first-key-but-longer"},
            {"Authorization": "Basic first-key"},
        ):
            response = client.get("/jobs", headers=headers)
            assert response.status_code == 401 and response.json()["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/jobs", headers={"Authorization": "Bearer first-key"}).status_code == 200
        assert client.get("/models", headers={"X-API-Key": "second-key"}).status_code == 200
        assert client.post("/predict", files={"file": ("a.png", image_bytes(RED), "image/png")}).status_code == 401


def test_overload_answers_429_and_503_with_retry_after(tmp_path, colour_images, database_url) -> None:
    settings = make_settings(
        tmp_path / "data", augment_views=8, max_queued_jobs=1, max_inflight_predictions=1, database_url=database_url
    )
    with TestClient(create_app(settings)) as client:
        data, files = multipart({"red": colour_images(RED, 30), "blue": colour_images(BLUE, 30)})
        running = client.post("/train", data=data, files=files).json()["job_id"]
        wait_for_job(client, running, until=lambda j: j["status"] == "running")
        queued = client.post("/train", data=data, files=files).json()["job_id"]
        refused = client.post("/train", data=data, files=files)
        assert refused.status_code == 429 and refused.json()["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) > 0
        for job_id in (queued, running):
            client.post(f"/jobs/{job_id}/cancel")
        slots = client.app.state.predict_slots
        slots.acquire()
        try:
            busy = client.post("/predict", files={"file": ("a.png", image_bytes(RED), "image/png")})
            assert busy.status_code == 503 and busy.json()["code"] == "busy" and busy.headers["retry-after"]
        finally:
            slots.release()
        wait_for_job(client, running)


def test_client_that_disconnects_mid_upload_leaves_nothing(tmp_path, servers, database_url) -> None:
    server = Server(
        tmp_path / "data", tmp_path / "server.log", **({"VT_DATABASE_URL": database_url} if database_url else {})
    )
    servers.append(server)
    boundary = "vtboundary"
    head = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="label1"\r\n\r\ncat\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files1"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + b"\xff\xd8\xff"
        + b"\0" * 200_000
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST /train HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(head) + 5_000_000}\r\n\r\n".encode()
            + head
        )
    assert server.client.get("/").status_code == 200
    assert server.client.get("/jobs").json()["count"] == 0
    assert data_dir_files(tmp_path / "data") == []


def test_disk_full_during_an_upload_answers_507_and_keeps_nothing(small_limits, colour_images, monkeypatch) -> None:
    import errno

    from vision_trainer.services import uploads

    real_copy = uploads._copy_hashing
    calls = []

    def copy_until_full(stream, path, max_bytes):
        calls.append(path)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(stream, path, max_bytes)

    monkeypatch.setattr(uploads, "_copy_hashing", copy_until_full)
    data, files = multipart({"red": colour_images(RED, 3), "blue": colour_images(BLUE, 3)})
    response = small_limits.post("/train", data=data, files=files)
    assert (response.status_code, response.json()["code"]) == (507, "storage_full")
    assert_no_trace(small_limits)
