"""Attacks against a real server process: each gets its documented 4xx (or is cut off) within bounded
time and memory, stores nothing, and leaves the server answering."""

from __future__ import annotations

import gzip
import io
import socket
import tarfile
import threading
import time
import unicodedata
import zipfile

import numpy as np
import pytest
from PIL import Image

from ..conftest import image_bytes
from .conftest import LiveServer, resnet18_checkpoint

pytestmark = pytest.mark.slow


def _dataset(server: LiveServer) -> str:
    response = server.client.post("/datasets", json={"name": "target"})
    assert response.status_code == 201, response.text
    return response.json()["dataset_id"]


def _image_count(server: LiveServer, dataset_id: str) -> int:
    return server.client.get(f"/datasets/{dataset_id}").json()["image_count"]


def _tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo("x")
    info.size = size
    info.type = kind
    header = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    header[0:100] = name.ljust(100, b"\0")
    header[148:156] = b" " * 8
    header[148:155] = f"{sum(header):06o}\0".encode()
    return bytes(header)


def _post_archive(server: LiveServer, dataset_id: str, data: bytes, name: str = "a.tar.gz") -> tuple[int, dict, float]:
    started = time.monotonic()
    response = server.client.post(
        f"/datasets/{dataset_id}/images", files={"archive": (name, data, "application/octet-stream")}
    )
    return response.status_code, response.json(), time.monotonic() - started


def test_pax_header_of_digits_is_refused_at_once(server: LiveServer) -> None:
    """A pax header of a long digit run made CPython's tarfile regex run for seconds holding the GIL."""
    digits = b"1" * (1 << 20)
    body = _tar_header(b"././@PaxHeader", len(digits), tarfile.XHDTYPE) + digits + b"\0" * (-len(digits) % 512)
    data = gzip.compress(body + b"\0" * 1024)
    dataset_id = _dataset(server)
    status, answer, seconds = _post_archive(server, dataset_id, data)
    assert status == 422 and answer["code"] == "invalid_archive", answer
    assert seconds < 10
    assert _image_count(server, dataset_id) == 0
    server.assert_healthy()


def test_health_stays_fast_while_a_hostile_tar_is_parsed(server: LiveServer) -> None:
    """A well-formed pax record whose value is a digit run still reaches tarfile, in the child process:
    meanwhile the server answers at once."""
    value = b"1" * 15000
    record = b"comment=" + value + b"\n"
    length = len(record) + 6
    record = f"{length} ".encode() + record
    body = _tar_header(b"././@PaxHeader", len(record), tarfile.XHDTYPE) + record + b"\0" * (-len(record) % 512)
    data = gzip.compress(body + b"\0" * 1024)
    dataset_id = _dataset(server)
    delays: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.monotonic()
            server.client.get("/health/live")
            delays.append(time.monotonic() - started)
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        status, answer, _ = _post_archive(server, dataset_id, data)
    finally:
        done.set()
        prober.join()
    assert status == 422, answer
    assert max(delays) < 2
    assert _image_count(server, dataset_id) == 0


def test_tar_with_300000_entries_is_refused_while_walking(server: LiveServer) -> None:
    body = io.BytesIO()
    header = _tar_header(b"cats/", 0, tarfile.DIRTYPE)
    for _ in range(300_000):
        body.write(header)
    data = gzip.compress(body.getvalue() + b"\0" * 1024, compresslevel=9)
    dataset_id = _dataset(server)
    before = server.rss_peak_mib()
    status, answer, seconds = _post_archive(server, dataset_id, data)
    assert status == 413 and answer["code"] == "archive_too_large", answer
    assert seconds < 30
    assert server.rss_peak_mib() - before < 100
    assert _image_count(server, dataset_id) == 0
    server.assert_healthy()


def test_gnu_long_name_of_256_mib_is_refused_without_reading_it(server: LiveServer) -> None:
    size = 256 << 20
    stream = io.BytesIO()
    with gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=9) as out:
        out.write(_tar_header(b"././@LongLink", size, tarfile.GNUTYPE_LONGNAME))
        zeros = b"a" * (1 << 20)
        for _ in range(size >> 20):
            out.write(zeros)
        out.write(b"\0" * 1024)
    dataset_id = _dataset(server)
    before = server.rss_peak_mib()
    status, answer, seconds = _post_archive(server, dataset_id, stream.getvalue())
    assert status in (413, 422) and answer["code"] in ("archive_too_large", "invalid_archive"), answer
    assert server.rss_peak_mib() - before < 100
    assert seconds < 30
    assert _image_count(server, dataset_id) == 0


def test_unreadable_zip_entries_are_skipped_not_500(server: LiveServer) -> None:
    good = [image_bytes((200, 30, 30), noise=20, seed=i) for i in range(2)]
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("cats/1.png", good[0])
        archive.writestr("dogs/1.png", good[1])
        archive.writestr("C:\\Windows\\Temp\\x.png", good[0])
        for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
            archive.writestr(f"cats/corrupt{method}.png", image_bytes((1, 2, 3), noise=20, seed=method), method)
        archive.writestr("dogs/secret.png", good[1] + b"x")
    data = bytearray(stream.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):  # scramble the compressed data of these two
        info = infos[f"cats/corrupt{method}.png"]
        start = info.header_offset + 30 + len(info.filename) + 40
        data[start : start + 60] = bytes(range(60))
    secret = infos["dogs/secret.png"]  # flag it encrypted, in the local and the central header
    data[secret.header_offset + 6] |= 1
    central = bytes(data).rfind(b"PK\x01\x02" + bytes(data[secret.header_offset + 4 : secret.header_offset + 6]))
    central = bytes(data).find(b"dogs/secret.png", secret.header_offset + 40) - 46
    data[central + 8] |= 1
    dataset_id = _dataset(server)
    status, answer, _ = _post_archive(server, dataset_id, bytes(data), "a.zip")
    assert status == 200, answer
    skipped = {entry["filename"]: entry["code"] for entry in answer["skipped"]}
    assert {"cats/corrupt12.png", "cats/corrupt14.png", "dogs/secret.png", "C:\\Windows\\Temp\\x.png"} <= set(skipped)
    assert sorted(server.client.get(f"/datasets/{dataset_id}").json()["class_names"]) == ["cats", "dogs"]


def test_elongated_png_is_refused_before_it_costs_memory(server: LiveServer, model_id: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (20000, 10)).save(buffer, format="PNG")
    before = server.rss_peak_mib()
    response = server.client.post("/predict", files={"file": ("long.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 422 and response.json()["code"] == "invalid_image", response.text
    dataset_id = _dataset(server)
    response = server.client.post(
        f"/datasets/{dataset_id}/images", data={"label": "x"}, files=[("files", ("long.png", buffer.getvalue()))]
    )
    assert response.status_code == 422 and response.json()["code"] == "invalid_image", response.text
    assert server.rss_peak_mib() - before < 100
    assert _image_count(server, dataset_id) == 0


def test_batch_of_huge_pngs_streams_under_a_pixel_budget(server: LiveServer, model_id: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), (90, 120, 30)).save(buffer, format="PNG")
    files = [("files", (f"{i}.png", buffer.getvalue(), "image/png")) for i in range(6)]
    before = server.rss_peak_mib()
    response = server.client.post("/predict/batch", files=files, data={"model_id": model_id})
    assert response.status_code == 200, response.text
    entries = response.json()["predictions"]
    assert [bool(e.get("error")) for e in entries] == [False] * 4 + [True] * 2  # 4 x 49 Mpx fit in 200 Mpx
    assert entries[-1]["error"]["code"] == "image_too_large"
    assert server.rss_peak_mib() - before < 700  # all six held at full size cost 1.3 GiB


def test_16_bit_png_converts_without_a_float64_copy(server: LiveServer, model_id: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((5000, 5000), 40000, dtype=np.uint16)).save(buffer, format="PNG")
    before = server.rss_peak_mib()
    response = server.client.post("/predict", files={"file": ("deep.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    assert server.rss_peak_mib() - before < 300


@pytest.mark.parametrize(
    ("extra", "why"),
    [({"temperature": "hot"}, "temperature"), ({"temperature": float("nan")}, "temperature")],
)
def test_imported_temperature_must_be_a_finite_number(server: LiveServer, extra: dict, why: str) -> None:
    count = server.client.get("/models").json()["count"]
    response = server.client.post("/models/import", files={"file": ("m.pth", resnet18_checkpoint(**extra))})
    assert response.status_code == 422 and response.json()["code"] == "invalid_checkpoint", response.text
    assert why in response.json()["detail"]
    assert server.client.get("/models").json()["count"] == count


def test_checkpoint_with_deflated_storage_is_refused_before_loading(server: LiveServer) -> None:
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", b"\0" * (512 << 20))
    before = server.rss_peak_mib()
    response = server.client.post("/models/import", files={"file": ("bomb.pth", stream.getvalue())})
    assert response.status_code == 422 and response.json()["code"] == "invalid_checkpoint", response.text
    assert server.rss_peak_mib() - before < 100


def test_model_named_like_math_renders_its_report(server: LiveServer) -> None:
    response = server.client.post(
        "/models/import", files={"file": ("m.pth", resnet18_checkpoint())}, data={"name": "$\\foo$"}
    )
    assert response.status_code == 201, response.text
    report = server.client.get(f"/models/{response.json()['model_id']}/report.png")
    assert report.status_code == 200 and report.content.startswith(b"\x89PNG")


def test_labels_are_unicode_normalized(server: LiveServer) -> None:
    dataset_id = _dataset(server)
    photo = [("files", ("a.png", image_bytes((10, 200, 10), noise=20, seed=7)))]
    response = server.client.post(f"/datasets/{dataset_id}/images", data={"label": "ｕｎｋｎｏｗｎ"}, files=photo)
    assert response.status_code == 422 and response.json()["code"] == "reserved_label", response.text
    for seed, form in enumerate(("NFC", "NFD")):
        label = unicodedata.normalize(form, "café")
        more = [("files", ("b.png", image_bytes((10, 20, 200), noise=20, seed=seed)))]
        assert (
            server.client.post(f"/datasets/{dataset_id}/images", data={"label": label}, files=more).status_code == 200
        )
    assert server.client.get(f"/datasets/{dataset_id}").json()["class_names"] == [unicodedata.normalize("NFC", "café")]


# --- browsers and slow clients ---------------------------------------------------------------------


def test_cross_site_post_and_foreign_host_are_refused(server: LiveServer) -> None:
    count = server.client.get("/datasets").json()["count"]
    evil = server.client.post("/datasets", json={"name": "x"}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.json()["code"] == "cross_site_request"
    fetch = server.client.post("/datasets", json={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    rebind = server.client.get("/datasets", headers={"Host": "rebind.evil.example"})
    assert rebind.status_code == 400 and rebind.json()["code"] == "invalid_host"
    assert server.client.get("/datasets").json()["count"] == count
    same = server.client.post("/datasets", json={"name": "mine"}, headers={"Origin": server.url})
    assert same.status_code == 201
    server.client.delete(f"/datasets/{same.json()['dataset_id']}")


def test_security_headers_on_the_page_and_on_files(server: LiveServer) -> None:
    page = server.client.get("/ui/")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    dataset_id = _dataset(server)
    photo = [("files", ("p.png", image_bytes((1, 2, 250), noise=20, seed=99)))]
    added = server.client.post(f"/datasets/{dataset_id}/images", data={"label": "p"}, files=photo).json()["added"]
    served = server.client.get(f"/datasets/{dataset_id}/images/{added[0]['image_id']}")
    assert served.status_code == 200
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.headers["x-content-type-options"] == "nosniff"


def _raw(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Trickle ``trickle`` a byte every 0.5 s (or just wait) until the server answers or closes."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    got = b""
    position = 0
    while time.monotonic() < deadline:
        try:
            if position < len(trickle):
                sock.sendall(trickle[position : position + 1])
                position += 1
            chunk = sock.recv(65536)
            if not chunk:
                return True, got
            got += chunk
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, got
    return False, got


def test_client_trickling_headers_is_dropped(server: LiveServer) -> None:
    sock = _raw(server)
    lines = b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: 1\r\n" * 200
    closed, _ = _closed_within(sock, 15, trickle=lines)
    sock.close()
    assert closed  # VT_HEADER_TIMEOUT_S is 2 here
    server.assert_healthy()


def test_upload_at_8_bytes_a_second_is_cut_off(server: LiveServer) -> None:
    sock = _raw(server)
    head = (
        b"POST /models/import HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    sock.sendall(head)
    closed, answer = _closed_within(sock, 20, trickle=b'--b\r\nContent-Disposition: form-data; name="file"' * 50)
    sock.close()
    assert closed and b" 408 " in answer.split(b"\r\n", 1)[0], answer[:200]
    assert b"request_timeout" in answer
    server.assert_healthy()


def test_api_key_is_checked_before_the_body_is_read(tmp_path) -> None:
    live = LiveServer(tmp_path / "data", VT_API_KEYS="sekret")
    try:
        for path in ("/predict", "/datasets", "/models/import"):
            sock = _raw(live)
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: 500000000\r\n\r\n".encode()
            )
            sock.settimeout(5)
            answer = b""
            while b"unauthorized" not in answer:  # no body sent: a 401 that waited for it would never come
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
            sock.close()
            assert b" 401 " in answer.split(b"\r\n", 1)[0] and b"unauthorized" in answer, answer[:300]
        keyed = live.client.post("/datasets", json={"name": "a" * 10}, headers={"X-API-Key": "sekret"})
        assert keyed.status_code == 201
        big = live.client.patch(
            f"/datasets/{keyed.json()['dataset_id']}",
            content=b"{" + b" " * (2 << 20) + b"}",
            headers={"X-API-Key": "sekret", "Content-Type": "application/json"},
        )
        assert big.status_code == 413 and big.json()["code"] == "request_too_large"  # VT_MAX_BODY_KB
        live.assert_healthy()
    finally:
        live.stop()
