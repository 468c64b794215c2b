"""POST /models/import: files that are not checkpoints get a plain-language 422; big uploads are streamed
to disk, refused with 413 over VT_MAX_FILE_MB, and never held in the server's memory."""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import pytest
import torch

from tests.conftest import Server, data_dir_files, image_bytes, make_settings
from vision_trainer.settings import Settings

MiB = 1024 * 1024


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: a refused import never reaches the database."""
    return make_settings(tmp_path / "data", augment_views=0, max_file_mb=1)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("trained_model.pth", b"not really")
    return buffer.getvalue()


def _torch_save(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


BAD_FILES = {
    "a zip": (_zip(), "is a zip archive, but not one written by torch.save"),
    "random bytes": (bytes(range(256)) * 40, "neither a torch.save zip archive nor a legacy torch pickle"),
    "a text file": (b"epochs: 5\nlabels: cat, dog\n", "looks like a text file"),
    "an empty file": (b"", "the file is empty"),
    "a picture": (image_bytes((10, 20, 30)), "is a PNG image"),
    "a pickle with code": (pickle.dumps(_Exploit()), "Python pickle that torch.load cannot read"),
    "a torch file with code": (
        _torch_save({"model_state_dict": _Exploit(), "class_names": ["a", "b"]}),
        "would run code or build objects other than tensors and plain values (posix.system)",
    ),
    "a cut-off checkpoint": (
        _torch_save({"model_state_dict": {"w": torch.zeros(1000)}, "class_names": ["a", "b"]})[:2000],
        "damaged or truncated zip archive",
    ),
    "a tensor, not a dict": (_torch_save(torch.zeros(3)), "is a PyTorch file but not a model checkpoint"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_file_that_is_not_a_checkpoint_gets_a_plain_422(client, settings: Settings, kind: str) -> None:
    content, reason = BAD_FILES[kind]
    before = data_dir_files(settings.data_dir)
    response = client.post("/models/import", files={"file": ("upload.pth", content, "application/octet-stream")})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_checkpoint"
    assert body["detail"].startswith("'upload.pth' is ") and reason in body["detail"], body["detail"]
    for internal in ("enforce fail", "inline_container", "miniz", "Unpickl", "weights_only` argument", "Traceback"):
        assert internal not in body["detail"]
    assert data_dir_files(settings.data_dir) == before  # the streamed upload is gone too


def test_an_upload_over_the_file_limit_is_413_and_leaves_nothing(client, settings: Settings) -> None:
    before = data_dir_files(settings.data_dir)
    response = client.post("/models/import", files={"file": ("big.pth", b"\0" * (MiB + 1), "application/octet-stream")})
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "file_too_large"
    assert "larger than 1 MiB (VT_MAX_FILE_MB)" in response.json()["detail"]
    assert data_dir_files(settings.data_dir) == before
    assert client.get("/models").json()["count"] == 0


def test_import_form_mistakes_are_named(client) -> None:
    missing = client.post("/models/import", data={"name": "x"})
    assert missing.status_code == 422 and missing.json()["code"] == "invalid_parameter"
    assert "file" in missing.json()["detail"]
    as_text = client.post("/models/import", files={"file": (None, "trained_model.pth")})  # a text part
    assert as_text.status_code == 422 and "send a file upload, not text" in as_text.json()["detail"]
    not_multipart = client.post("/models/import", json={"file": "x"})
    assert (
        not_multipart.status_code == 422 and "send the request as multipart/form-data" in not_multipart.json()["detail"]
    )
    no_boundary = client.post("/models/import", content=b"--x--", headers={"Content-Type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and no_boundary.json()["code"] == "invalid_form"
    cut_short = client.post(
        "/models/import",
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.pth"\r\n\r\nabc',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert cut_short.status_code == 400 and "closing boundary" in cut_short.json()["detail"]
    long_name = client.post(
        "/models/import", data={"name": "n" * 201}, files={"file": ("m.pth", b"x", "application/octet-stream")}
    )
    assert long_name.status_code == 422 and "at most 200 characters" in long_name.json()["detail"]


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid`` to its current RSS (Linux 4.0+)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _big_upload(server: Server, path: Path, name: str) -> tuple[int, dict, float, float]:
    """POST ``path`` to /models/import; (status, body, peak RSS growth in MiB, seconds)."""
    pid = server.process.pid
    # Warm up: the code an import runs (torch.load, the multipart parser, worker threads) is loaded
    # before the baseline, so the growth measured is the upload's own.
    warm_up = server.client.post(
        "/models/import", files={"file": ("small.pth", b"x" * 1000, "application/octet-stream")}
    )
    assert warm_up.status_code == 422, warm_up.text
    if not _reset_peak(pid):
        pytest.skip("cannot reset the peak RSS mark (/proc/<pid>/clear_refs)")
    baseline = _status(pid)["VmRSS"]
    started = time.monotonic()
    with path.open("rb") as handle:
        response = server.client.post("/models/import", files={"file": (name, handle, "application/octet-stream")})
    seconds = time.monotonic() - started
    growth = (_status(pid)["VmHWM"] - baseline) / 1024
    return response.status_code, response.json(), growth, seconds


@pytest.mark.slow
def test_a_200_mb_import_is_streamed_not_held_in_memory(tmp_path: Path, servers: list[Server], capsys) -> None:
    big = tmp_path / "big.pth"
    with big.open("wb") as handle:  # 200 MiB that is not a checkpoint
        block = os.urandom(MiB)
        for _ in range(200):
            handle.write(block)
    server = Server(tmp_path / "data", tmp_path / "server.log", VT_MAX_FILE_MB="20")
    servers.append(server)

    status, body, refused_growth, refused_s = _big_upload(server, big, "big.pth")
    assert status == 413 and body["code"] == "file_too_large", body
    assert "larger than 20 MiB (VT_MAX_FILE_MB)" in body["detail"]

    server.kill()  # the same file under a limit it fits: streamed whole to disk, then refused as 422
    server = Server(tmp_path / "data", tmp_path / "server.log", VT_MAX_FILE_MB="300")
    servers.append(server)
    status, body, read_growth, read_s = _big_upload(server, big, "big.pth")
    assert status == 422 and body["code"] == "invalid_checkpoint", body
    assert body["detail"].startswith("'big.pth' is not a PyTorch checkpoint")

    with capsys.disabled():
        print(
            f"\n200 MiB import: 413 after {refused_s:.2f} s, peak RSS +{refused_growth:.1f} MiB; "
            f"streamed whole and refused 422 after {read_s:.2f} s, peak RSS +{read_growth:.1f} MiB"
        )
    assert refused_growth < 8 and read_growth < 8, (refused_growth, read_growth)
    leftovers = [f for f in data_dir_files(tmp_path / "data") if not f.startswith("cache/")]
    assert leftovers == [], leftovers
