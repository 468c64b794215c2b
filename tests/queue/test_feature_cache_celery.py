"""Two Celery workers filling the shared feature cache at once: no half-written entry is ever read."""

from __future__ import annotations

import numpy as np
import pytest

from vision_trainer.ml.backbones import resolve_backbone
from vision_trainer.ml.depths import depth_layout

from ..conftest import image_bytes, wait_for_job
from .test_celery import COLOURS, cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_two_workers_write_the_same_features_at_once(cluster) -> None:  # noqa: F811
    cluster.start_workers(2)
    client = cluster.client
    dataset_id = client.post("/datasets", json={"name": "shared"}).json()["dataset_id"]
    for label, colour in zip(("red", "blue"), COLOURS):
        files = [
            ("files", (f"{label}{i}.png", image_bytes(colour, size=96, noise=20, seed=i), "image/png"))
            for i in range(16)
        ]
        assert client.post(f"/datasets/{dataset_id}/images", data={"label": label}, files=files).status_code == 200
    options = {"epochs": "2", "augment_views": "2", "backbone": "efficientnet_lite0"}
    first = [client.post(f"/datasets/{dataset_id}/train", data=options).json()["job_id"] for _ in range(2)]
    done = [wait_for_job(client, job_id, timeout=240) for job_id in first]
    assert all(job["status"] == "succeeded" and job["attempts"] == 1 for job in done), done
    assert len({job["worker"].split("#")[0] for job in done}) == 2  # both workers trained at the same time

    features = cluster.data_dir / "features"
    entries = [p for p in features.rglob("*") if p.is_file()]
    assert entries and not [p for p in entries if p.name.startswith(".tmp-")]
    sizes = {np.load(p).shape for p in entries}
    assert sizes == {(depth_layout(resolve_backbone("efficientnet_lite0")).width,)}  # final features + stages
    # Every view of every photo is in the cache now: a third job computes nothing.
    third = wait_for_job(
        client, client.post(f"/datasets/{dataset_id}/train", data=options).json()["job_id"], timeout=240
    )
    assert third["status"] == "succeeded" and third["metrics"]["features_extracted"] == 0
    assert third["metrics"]["features_reused"] == len(entries)
