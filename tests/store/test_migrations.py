"""A data dir made by v1 (before migrations) upgrades at start-up with its jobs and models intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from vision_trainer.api.app import create_app
from vision_trainer.ml.backbones import create_backbone, resolve_backbone
from vision_trainer.ml.checkpoint import build_checkpoint, save_checkpoint
from vision_trainer.store.db import MIGRATIONS, Database

from ..conftest import image_bytes, make_settings, wait_for_job

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1-data"
FINISHED_JOB, MODEL, QUEUED_JOB = (
    "a55f8536071649e187ee7134e659107a",
    "8412a8731e2d473789a182ab7327367c",
    "6c664e2b2ad0443781e10460fde4e176",
)
RED, BLUE = (200, 30, 30), (30, 30, 200)


def v1_checkpoint(path: Path) -> None:
    """The full trained_model.pth v1 wrote for the fixture's model (a red-vs-blue head on lite0)."""
    spec = resolve_backbone("efficientnet_lite0")
    model = create_backbone(spec, num_classes=2, pretrained=True)
    torch.manual_seed(0)
    save_checkpoint(
        path,
        build_checkpoint(
            model_state_dict=model.state_dict(),
            class_names=["red", "blue"],
            backbone=spec.name,
            preprocessing=spec.preprocessing(),
        ),
    )


def check_upgraded(client: TestClient) -> None:
    jobs = {job["job_id"]: job for job in client.get("/jobs").json()["items"]}
    assert set(jobs) == {FINISHED_JOB, QUEUED_JOB}
    finished = jobs[FINISHED_JOB]
    assert finished["status"] == "succeeded" and finished["model_id"] == MODEL and finished["dataset_id"] is None
    assert any(line.startswith("Epoch 1/1") for line in finished["log"])
    model = client.get(f"/models/{MODEL}").json()
    assert model["class_names"] == ["red", "blue"] and model["data"]["per_class_counts"] == {"red": 4, "blue": 4}
    assert client.get("/models/default").json()["model_id"] == MODEL
    answer = client.post("/predict", data={"model_id": MODEL}, files={"file": ("r.png", image_bytes(RED), "image/png")})
    assert answer.status_code == 200 and answer.json()["prediction"] in ("red", "blue")
    assert client.get(f"/models/{MODEL}/checkpoint").content[:2] == b"PK"  # the v1 file, served as it is
    # The job v1 left queued runs from its own upload folder, as v1 would have run it.
    requeued = wait_for_job(client, QUEUED_JOB)
    assert requeued["status"] == "succeeded", requeued
    # And the upgraded database takes v2 datasets.
    dataset = client.post("/datasets", json={"name": "after the upgrade"})
    assert dataset.status_code == 201 and dataset.json()["version"] == 1


def test_a_v1_sqlite_data_dir_upgrades_at_start_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE, data_dir)
    v1_checkpoint(data_dir / "models" / MODEL / "trained_model.pth")
    with TestClient(create_app(make_settings(data_dir, augment_views=0))) as client:
        check_upgraded(client)
    engine = sa.create_engine(f"sqlite:///{data_dir / 'vision_trainer.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0002"
    engine.dispose()


@pytest.mark.slow
def test_a_v1_postgresql_database_upgrades_at_start_up(tmp_path: Path, postgres_url: str) -> None:
    """The v1 schema on PostgreSQL (revision 0001, which is v1's tables), the fixture's rows copied in."""
    database = Database(postgres_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.exec_driver_sql("DROP TABLE alembic_version")  # as v1 left it: tables, no migration record
    source = sa.create_engine(f"sqlite:///{FIXTURE / 'vision_trainer.db'}")
    with source.connect() as old, database.engine.begin() as new:
        meta = sa.MetaData()
        meta.reflect(old)
        target = sa.MetaData()
        target.reflect(new)
        for table in ("jobs", "job_events", "models", "aliases"):
            rows = [dict(row._mapping) for row in old.execute(meta.tables[table].select())]
            new.execute(target.tables[table].insert(), rows)
        new.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('job_events', 'id'), (SELECT max(id) FROM job_events))"
        )
    source.dispose()
    database.dispose()

    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE, data_dir)
    (data_dir / "vision_trainer.db").unlink()
    v1_checkpoint(data_dir / "models" / MODEL / "trained_model.pth")
    with TestClient(create_app(make_settings(data_dir, augment_views=0, database_url=postgres_url))) as client:
        check_upgraded(client)
