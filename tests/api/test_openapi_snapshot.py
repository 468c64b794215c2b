"""The OpenAPI document is part of the contract: any change to it shows up here as a diff to review.

After a deliberate change of the HTTP contract, regenerate the snapshot with
``VT_UPDATE_OPENAPI_SNAPSHOT=1 .venv/bin/pytest tests/api/test_openapi_snapshot.py`` and commit it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import make_settings
from vision_trainer.api.app import create_app

SNAPSHOT = Path(__file__).with_name("openapi.json")


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_the_openapi_document_matches_the_committed_snapshot(tmp_path: Path) -> None:
    current = render(create_app(make_settings(tmp_path / "data")).openapi())
    if os.environ.get("VT_UPDATE_OPENAPI_SNAPSHOT") == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    assert current == SNAPSHOT.read_text(encoding="utf-8"), (
        "the OpenAPI document changed; if that was meant, regenerate tests/api/openapi.json "
        "(VT_UPDATE_OPENAPI_SNAPSHOT=1) and commit it"
    )
