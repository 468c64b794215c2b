"""Property-based requests generated from our own OpenAPI document: no 5xx, answers as documented."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tests.conftest import make_settings
from vision_trainer.api.app import create_app

schemathesis = pytest.importorskip("schemathesis")

_data_dir = tempfile.TemporaryDirectory(prefix="vt-schema-")
app = create_app(make_settings(Path(_data_dir.name) / "data", augment_views=0))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _running_app():
    with TestClient(app):  # runs the lifespan: database, data dir, job runner
        yield
    _data_dir.cleanup()


# What the contract promises: no 5xx, and every status, content type, header and body as documented.
# Not checked: that schema-valid requests are accepted (an empty label or a random "checkpoint" is valid
# to the schema and rightly refused), and the Allow header of 405s (Starlette lists one route's methods).
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case) -> None:
    case.call_and_validate(checks=CHECKS)
