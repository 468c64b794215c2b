"""The API suite runs twice: on SQLite (the default) and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision_trainer.settings import Settings

from ..conftest import make_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None = the default SQLite file in the data dir; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "data", augment_views=0, database_url=database_url)
