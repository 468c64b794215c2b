"""Weights download on first use (``VT_DOWNLOAD_WEIGHTS``, on by default): whole files or none, checked
against the hash in their name, and an offline machine falls back at once instead of waiting on every
request."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vision_trainer.ml import backbones
from vision_trainer.ml.backbones import RESNET18_URL, fetch_weights, resolve_backbone, weights_available
from vision_trainer.services.backbones import choose_backbone
from vision_trainer.settings import Settings

PAYLOAD = b"weights" * 100_000


class Files(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        if self.path != "/w.pth":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Files.hits = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_remembered_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "_fetch_failures", {})


def test_a_download_arrives_whole_and_matches_the_hash_in_its_name(server: str, tmp_path: Path) -> None:
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    destination = tmp_path / "hub" / f"weights-{prefix}.pth"
    assert fetch_weights(f"{server}/w.pth", destination) is None
    assert destination.read_bytes() == PAYLOAD
    assert fetch_weights(f"{server}/w.pth", destination) is None and Files.hits == ["/w.pth"]  # once


def test_a_download_that_does_not_match_its_hash_leaves_nothing(server: str, tmp_path: Path) -> None:
    destination = tmp_path / "weights-00000000.pth"
    why = fetch_weights(f"{server}/w.pth", destination)
    assert why is not None and "SHA-256" in why
    assert list(tmp_path.iterdir()) == []  # no partial file either


def test_an_unreachable_source_fails_once_and_is_not_retried_at_once(server: str, tmp_path: Path) -> None:
    destination = tmp_path / "weights-00000000.pth"
    why = fetch_weights(f"{server}/missing.pth", destination)
    assert why is not None and "404" in why and not destination.exists()
    assert fetch_weights(f"{server}/missing.pth", destination) == why
    assert Files.hits == ["/missing.pth"]  # the second call answered from the remembered failure


def test_the_resnet18_url_is_torchvisions() -> None:
    from torchvision.models import ResNet18_Weights

    assert RESNET18_URL == ResNet18_Weights.IMAGENET1K_V1.url


def test_offline_the_default_backbone_falls_back_and_says_why(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = resolve_backbone("resnet18")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", download_weights=True)  # type: ignore[call-arg]
    offline = dataclasses.replace(spec, weights_url=f"{server}/missing.pth")
    monkeypatch.setitem(backbones._REGISTRY, "resnet18", offline)
    choice = choose_backbone(settings, None)
    assert choice.spec.name == "efficientnet_lite0"
    assert "downloading" in choice.note and "404" in choice.note and "resnet18-f37072fd.pth" in choice.note
    assert not weights_available(offline, allow_download=True) and Files.hits == ["/missing.pth"]


def test_with_downloads_allowed_resnet18_arrives_in_the_hub_cache_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = resolve_backbone("resnet18")
    fetched: list[tuple[str, Path]] = []

    def fetch(url: str, destination: Path) -> None:  # stands in for the network
        fetched.append((url, destination))
        destination.parent.mkdir(parents=True)
        torch.save(spec.build().state_dict(), destination)

    monkeypatch.setattr(backbones, "fetch_weights", fetch)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", download_weights=True)  # type: ignore[call-arg]
    choice = choose_backbone(settings, None)
    assert choice.spec.name == "resnet18" and "the default" in choice.note
    assert fetched == [(RESNET18_URL, tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")]
    model = backbones.create_backbone(spec, num_classes=2, pretrained=True, allow_download=True)
    assert model.fc.out_features == 2 and len(fetched) == 1  # the file is there now: no second download
