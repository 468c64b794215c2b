"""Running a job: claim it, keep its heartbeat, report progress, train, and save the model, once."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from ..ml.backbones import resolve_backbone
from ..ml.checkpoint import build_head_checkpoint, save_checkpoint
from ..ml.data import LabelledImage, Split, drop_duplicates, stable_split
from ..ml.errors import MLError, TrainingCancelled
from ..ml.training import TrainConfig, TrainingHooks, TrainResult, auto_backbone, train_classifier
from ..store import datasets as datasets_repo
from ..store import repository as repo
from ..store.files import remove_tree
from ..store.tables import Job
from .backbones import AUTO, auto_candidates
from .context import Services
from .errors import is_database_outage
from .insights import run_analysis

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
CANCEL_POLL_S = 0.5
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0

T = TypeVar("T")


def retry_on_outage(services: Services, what: str, write: Callable[[], T]) -> T:
    """Run ``write`` (a database transaction), retrying with backoff while the database cannot be
    reached, for up to ``VT_DATABASE_RETRY_S``: a job survives a database restart instead of failing.

    Raises:
        Whatever ``write`` raised, once the database has been unreachable for longer than that, or at
        once for errors that are not about reaching it.
    """
    deadline = time.monotonic() + services.settings.database_retry_s
    delay = RETRY_FIRST_S
    failed_since: float | None = None
    while True:
        try:
            result = write()
        except Exception as exc:
            if not is_database_outage(exc) or time.monotonic() + delay > deadline:
                raise
            if failed_since is None:
                failed_since = time.monotonic()
                log.warning(
                    "%s: the database cannot be reached (%s); retrying for up to %g s",
                    what,
                    type(exc).__name__,
                    services.settings.database_retry_s,
                )
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        if failed_since is not None:
            log.warning("%s: the database is back after %.1f s", what, time.monotonic() - failed_since)
        return result


class JobInterrupted(Exception):
    """The runner is shutting down: the job goes back to the queue instead of ending."""


class JobLost(Exception):
    """This claim no longer holds the job: its heartbeat went stale and the job was re-queued."""


def worker_name() -> str:
    """``host:pid`` of this process, as job rows show who trains them."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Heartbeat:
    """Stamps the job's heartbeat from a thread of its own, so a long batch never looks like a dead
    worker; notices when the claim was lost (the sweep re-queued the job)."""

    def __init__(self, services: Services, job_id: str, claim: str) -> None:
        self.services, self.job_id, self.claim = services, job_id, claim
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vt-heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.services.settings.heartbeat_interval_s):
            try:
                with self.services.db.session() as session:
                    held = repo.heartbeat(session, job_id=self.job_id, worker_id=self.claim)
            except Exception as exc:  # the database is away: beat again at the next interval
                if not failing:
                    log.warning(
                        "job %s: heartbeat failed (%s); retrying every %g s",
                        self.job_id,
                        type(exc).__name__,
                        self.services.settings.heartbeat_interval_s,
                        exc_info=not is_database_outage(exc),
                    )
                failing = True
                continue
            if failing:
                log.warning("job %s: heartbeat stamped again", self.job_id)
                failing = False
            if not held:
                self.lost.set()
                return


class _JobReporter:
    """Writes progress, log lines and cancellation checks of one running job to the database."""

    def __init__(self, services: Services, job_id: str, interrupted: Callable[[], bool], lost: threading.Event) -> None:
        self.services = services
        self.job_id = job_id
        self.interrupted = interrupted
        self.lost = lost
        self._last_phase = ""
        self._last_progress = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def progress(self, phase: str, done: int, total: int, epoch: int | None) -> None:
        now = time.monotonic()
        finished_phase = total > 0 and done >= total
        if phase == self._last_phase and not finished_phase and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_phase, self._last_progress = phase, now
        values: dict[str, Any] = {"phase": phase, "done": done, "total": total}
        if epoch is not None:
            values["epoch"] = epoch

        def write() -> None:
            with self.services.db.session() as session:
                repo.update_job(session, job_id=self.job_id, **values)
                repo.add_event(session, job_id=self.job_id, kind="progress", data={**values, "epoch": epoch})

        retry_on_outage(self.services, f"job {self.job_id}: progress", write)

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)

        def write() -> None:
            with self.services.db.session() as session:
                repo.add_event(session, job_id=self.job_id, kind="log", data={"line": line})

        retry_on_outage(self.services, f"job {self.job_id}: log line", write)

    def should_stop(self) -> bool:
        if self.interrupted():
            raise JobInterrupted(self.job_id)
        if self.lost.is_set():
            raise JobLost(self.job_id)
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= CANCEL_POLL_S:
            self._last_cancel_check = now
            try:
                with self.services.db.session() as session:
                    self._cancelled = repo.cancel_requested(session, job_id=self.job_id)
            except Exception as exc:  # asked again at the next check; the next write waits for the database
                if not is_database_outage(exc):
                    raise
        return self._cancelled

    def hooks(self) -> TrainingHooks:
        return TrainingHooks(progress=self.progress, log=self.log, should_stop=self.should_stop)


def run_training_job(
    services: Services,
    job_id: str,
    *,
    worker: str | None = None,
    interrupted: Callable[[], bool] = lambda: False,
) -> str | None:
    """Claim a queued job and train it to the end: the one entry point every runner calls.

    Safe to call any number of times, from any number of processes, for the same job: only the call
    that moves it ``queued -> running`` trains, and only while its claim holds (a heartbeat thread
    keeps it fresh). When ``interrupted()`` turns True (the runner is stopping) the job is put back
    in the queue.

    Returns:
        The job's final status, or None when this call did not claim the job or lost it.
    """
    claim = f"{worker or worker_name()}#{uuid.uuid4().hex[:8]}"

    def claim_it() -> Job | None:
        with services.db.session() as session:
            claimed = repo.claim_job(session, job_id=job_id, worker_id=claim)
            return repo.get_job(session, job_id=job_id) if claimed else None

    job = retry_on_outage(services, f"job {job_id}: claim", claim_it)
    if job is None:
        return None
    started = time.monotonic()
    with _Heartbeat(services, job_id, claim) as heartbeat:
        reporter = _JobReporter(services, job_id, interrupted, heartbeat.lost)
        try:
            reporter.log(f"{job.params['backbone_note']} (worker {claim})")
            if skipped := job.params.get("skipped_files"):
                reporter.log(
                    f"Skipped {len(skipped)} unusable file(s): "
                    + "; ".join(_where(e) for e in skipped[:20])
                    + (f"; and {len(skipped) - 20} more" if len(skipped) > 20 else "")
                )
            if job.attempts > 1:
                reporter.log(f"Attempt {job.attempts}: the previous run was interrupted")
            if job.kind == "analyze":
                return _analyze_and_store(services, job, reporter, claim, started)
            return _train_and_store(services, job, reporter, claim, started)
        except JobInterrupted:
            release(services, job_id, claim, "Interrupted: the server is stopping; the job will run again")
            return None
        except JobLost:
            log.warning("job %s: claim %s lost (heartbeat went stale); another worker runs it", job_id, claim)
            return None
        except TrainingCancelled:
            return finish(services, job_id, claim, "cancelled", line="Cancelled")
        except MLError as exc:
            return finish(services, job_id, claim, "failed", error=str(exc))
        except Exception as exc:  # a job must end with a status whatever went wrong
            log.exception("job %s failed", job_id)
            return finish(services, job_id, claim, "failed", error=f"{type(exc).__name__}: {exc}")


def _where(error: dict[str, Any]) -> str:
    where = f"{error['field']}[{error['index']}] " if "field" in error and "index" in error else ""
    return where + str(error.get("detail", error.get("filename", "")))


def _items(services: Services, job: Job, reporter: _JobReporter) -> list[LabelledImage]:
    """The job's photos: a dataset's (v2) or the job's own upload folder (jobs queued by v1)."""
    if job.dataset_id is None:
        job_dir = services.files.job_dir(job.id)
        return [LabelledImage(job_dir / i["file"], i["label"], i["sha256"], i.get("filename", "")) for i in job.inputs]
    paths = services.files.dataset_images(job.dataset_id, [i["image_id"] for i in job.inputs])
    items = [LabelledImage(path, i["label"], i["sha256"], i.get("filename", "")) for path, i in zip(paths, job.inputs)]
    present = [item for item in items if item.path.is_file()]
    if len(present) < len(items):
        reporter.log(
            f"{len(items) - len(present)} photo(s) were removed from the dataset after this job was "
            "queued; training without them"
        )
    return present


def _train_and_store(services: Services, job: Job, reporter: _JobReporter, claim: str, started: float) -> str:
    params = job.params
    unique, removed = drop_duplicates(_items(services, job, reporter))
    removed += params.get("duplicates_removed", 0)
    if removed:
        reporter.log(f"Dropped {removed} exact duplicate image(s)")
    split = _keep_copies_together(
        services, job, stable_split(unique, test_fraction=params["test_split"], seed=params["seed"]), reporter
    )
    if job.dataset_id is not None:
        reporter.log(f"Dataset {job.dataset_id} version {job.dataset_version}")
    reporter.log(f"Split: {len(split.train)} train / {len(split.test)} test images")
    config = TrainConfig(
        epochs=params["epochs"],
        augment_views=params["augment_views"],
        early_stopping=params.get("early_stopping", False),
        class_weighting=params.get("class_weighting", "none"),
        seed=params["seed"],
        runtime=services.runtime,
        num_workers=services.settings.num_workers,
        allow_download=services.settings.download_weights,
    )
    selection = None
    if params["backbone"] == AUTO:
        specs = [resolve_backbone(name) for name in auto_candidates(services.settings)]
        spec, selection, why = auto_backbone(
            specs, split, job.class_names, config, reporter.hooks(), cache=services.features
        )
        reporter.log(why)
        job.params = params = {**params, "backbone": spec.name, "backbone_requested": AUTO}
    spec = resolve_backbone(params["backbone"])
    result = train_classifier(spec, split, job.class_names, config, reporter.hooks(), cache=services.features)
    if selection is not None:
        result.metrics["backbone_selection"] = selection
    reporter.progress("saving", 0, 1, params["epochs"])
    if reporter.should_stop():
        raise TrainingCancelled()
    _save_model(services, job, result, claim=claim, started=started, removed=removed, split=split)
    return "succeeded"


def _keep_copies_together(services: Services, job: Job, split: Split, reporter: _JobReporter) -> Split:
    """Near-duplicates found by the dataset's last analysis stay on one side: a test photo with a copy in
    the training photos trains too, so the test accuracy is not flattered by photos seen in training."""
    if job.dataset_id is None:
        return split
    with services.db.session() as session:
        dataset = datasets_repo.get_dataset(session, dataset_id=job.dataset_id)
        groups = (dataset.insights or {}).get("near_duplicates", []) if dataset is not None else []
    train_ids = {item.path.stem for item in split.train}
    moved = {image_id for group in groups if set(group["image_ids"]) & train_ids for image_id in group["image_ids"]}
    leaving = [item for item in split.test if item.path.stem in moved]
    if not leaving or len(leaving) == len(split.test):
        return split
    reporter.log(f"{len(leaving)} test photo(s) have a near-duplicate among the training photos: they train too")
    return Split(train=[*split.train, *leaving], test=[item for item in split.test if item.path.stem not in moved])


def _analyze_and_store(services: Services, job: Job, reporter: _JobReporter, claim: str, started: float) -> str:
    """An analysis job: the insights go onto the dataset; the job ends with their summary as metrics."""
    summary = run_analysis(services, job, reporter.hooks())
    duration = time.monotonic() - started

    def write() -> None:
        with services.db.session() as session:
            if repo.get_job(session, job_id=job.id).status == "succeeded":  # type: ignore[union-attr]
                return  # a previous try committed, but the database went away before it said so
            _mark_succeeded(session, job, claim, duration, metrics=summary)
            _final_events(session, job.id, "succeeded", f"Insights saved: GET /datasets/{job.dataset_id}/insights")

    retry_on_outage(services, f"job {job.id}: saving the insights", write)
    return "succeeded"


def _save_model(
    services: Services, job: Job, result: TrainResult, *, claim: str, started: float, removed: int, split: Split
) -> str:
    """Write the head, then in one transaction: the model row, the job's success and its last events,
    only while ``claim`` still holds the job. So a job has one model, or none."""
    spec = resolve_backbone(job.params["backbone"])
    model_id = uuid.uuid4().hex
    path = services.files.head_path(model_id)
    save_checkpoint(
        path,
        build_head_checkpoint(
            head_state_dict=result.head_state,
            class_names=job.class_names,
            backbone=spec.name,
            backbone_fingerprint=result.backbone_fingerprint,
            preprocessing=spec.preprocessing(),
            temperature=result.temperature,
            metrics=result.metrics,
        ),
    )
    duration = time.monotonic() - started
    tries = 0

    def write() -> None:
        nonlocal tries
        tries += 1
        with services.db.session() as session:
            if tries > 1 and _saved_already(session, job.id, model_id):
                return  # the previous try committed, but the database went away before it said so
            _mark_succeeded(
                session,
                job,
                claim,
                duration,
                model_id=model_id,
                metrics=result.metrics,
                images_per_s=len(job.inputs) / max(duration, 1e-9),
            )
            repo.create_model(
                session,
                id=model_id,
                job_id=job.id,
                dataset_id=job.dataset_id,
                name=job.params.get("name") or f"{' vs '.join(job.class_names)[:150]} ({spec.name})",
                class_names=job.class_names,
                backbone=spec.name,
                params={k: v for k, v in job.params.items() if k != "name"},
                data=_model_data(job, result, split, removed),
                history=result.history,
                metrics=result.metrics,
            )
            _final_events(session, job.id, "succeeded", f"Saved model {model_id}", model_id=model_id)

    try:
        retry_on_outage(services, f"job {job.id}: saving model {model_id}", write)
    except BaseException:
        remove_tree(path.parent)
        raise
    log.info("job %s: saved model %s", job.id, model_id)
    return model_id


def _mark_succeeded(session: Any, job: Job, claim: str, duration: float, **values: Any) -> None:
    """The job's success, only while ``claim`` still holds it. Raises JobLost otherwise."""
    if not repo.set_job_status(
        session,
        job_id=job.id,
        expected=["running"],
        status="succeeded",
        held_by=claim,
        finished_at=repo.now(),
        phase="done",
        done=Job.total,
        duration_s=duration,
        **values,
    ):
        raise JobLost(job.id)


def _saved_already(session: Any, job_id: str, model_id: str) -> bool:
    job = repo.get_job(session, job_id=job_id)
    return job is not None and job.status == "succeeded" and job.model_id == model_id


def _model_data(job: Job, result: TrainResult, split: Split, removed: int) -> dict[str, Any]:
    counts = {name: 0 for name in job.class_names}
    for item in job.inputs:
        counts[job.class_names[item["label"]]] += 1
    return {
        "dataset_id": job.dataset_id,
        "dataset_version": job.dataset_version,
        "per_class_counts": counts,
        "split_seed": job.params["seed"],
        "content_hash": _content_hash(job.inputs),
        "duplicates_removed": removed,
        "train_count": len(split.train),
        "validation_count": result.metrics["validation_count"],
        "test_count": len(split.test),
        "train_image_ids": [item.path.stem for item in result.fit_items],
        "validation_image_ids": [item.path.stem for item in result.validation_items],
        "test_image_ids": [item.path.stem for item in split.test],
        "test_images": [
            {"image_id": item.path.stem, "filename": item.name, "label": job.class_names[item.label]}
            for item in split.test
        ],
    }


def _content_hash(inputs: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for item in sorted(inputs, key=lambda i: (i["label"], i["sha256"])):
        digest.update(f"{item['label']}:{item['sha256']}\n".encode())
    return digest.hexdigest()


def _final_events(
    session: Any, job_id: str, status: str, line: str, *, model_id: str | None = None, error: str | None = None
) -> None:
    repo.add_event(session, job_id=job_id, kind="log", data={"line": line})
    repo.add_event(session, job_id=job_id, kind="status", data={"status": status, "model_id": model_id, "error": error})


def finish(
    services: Services,
    job_id: str,
    claim: str | None,
    status: str,
    *,
    error: str | None = None,
    line: str | None = None,
) -> str | None:
    """End a job ``claim`` holds as ``failed`` or ``cancelled``; None when the claim was lost."""
    line = line or f"Failed: {error}"
    log.info("job %s: %s", job_id, line)

    def write() -> str | None:
        with services.db.session() as session:
            if not repo.set_job_status(
                session,
                job_id=job_id,
                expected=["running"],
                status=status,
                held_by=claim,
                finished_at=repo.now(),
                phase="done",
                error=error,
            ):
                return None
            _final_events(session, job_id, status, line, error=error)
        return status

    return retry_on_outage(services, f"job {job_id}: ending it {status}", write)


def release(services: Services, job_id: str, claim: str | None, line: str, *, died: bool = False) -> bool:
    """Put a running job back to ``queued``. A graceful stop (``died=False``) does not use up an attempt."""

    def write() -> bool:
        with services.db.session() as session:
            released = repo.set_job_status(
                session,
                job_id=job_id,
                expected=["running"],
                status="queued",
                held_by=claim,
                phase="queued",
                done=0,
                total=0,
                epoch=None,
                worker_id=None,
                heartbeat_at=None,
                **({} if died else {"attempts": Job.attempts - 1}),
            )
            if released:
                repo.add_event(session, job_id=job_id, kind="log", data={"line": line})
        return released

    return retry_on_outage(services, f"job {job_id}: putting it back in the queue", write)
