"""Fixtures of the browser tests: Debian's Chromium driven by Playwright against a live server.

Screenshots go to test-output/web/ (desktop 1280x800 and phone 390x844).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import REPO, Server
from ..servers import require_binary

OUTPUT = Path(os.environ.get("VT_TEST_OUTPUT", REPO / "test-output")) / "web"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
LONG = 240_000  # ms: training in the browser test runs on CPU


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = require_binary("chromium")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path: Path, servers: list[Server]) -> Server:
    started = Server(tmp_path / "data", tmp_path / "server.log", VT_AUGMENT_VIEWS="0")
    servers.append(started)
    return started


class Page:
    """A browser page that records uncaught errors; the test fails if any happened."""

    def __init__(self, browser: object, base_url: str, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport, base_url=base_url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.set_default_timeout(30_000)

    def __getattr__(self, name: str) -> object:
        return getattr(self.page, name)

    def testid(self, name: str) -> object:
        return self.page.get_by_test_id(name)

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"uncaught errors in the page: {self.errors}"


@pytest.fixture
def open_page(browser: object, server: Server) -> Iterator[object]:
    pages: list[Page] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Page:
        page = Page(browser, f"http://127.0.0.1:{server.port}", viewport)
        pages.append(page)
        page.goto("/ui")
        page.wait_for_selector("#backbone-input option", state="attached")
        return page

    yield make
    for page in pages:
        page.close()
