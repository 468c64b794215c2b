"""Training use cases: submit an upload as a job, run a job (the one training entry point), cancel."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..ml.backbones import resolve_backbone
from ..ml.checkpoint import build_checkpoint, save_checkpoint
from ..ml.data import LabelledImage, Split, drop_duplicates, stratified_split
from ..ml.errors import MLError, TrainingCancelled
from ..ml.training import TrainConfig, TrainingHooks, TrainResult, train_classifier
from ..store import repository as repo
from ..store.files import remove_tree
from ..store.tables import Job
from .backbones import choose_backbone
from .context import Services
from .errors import Conflict, InsufficientStorage, NotFound, TooManyRequests, Unavailable
from .queue import JobQueue
from .uploads import (
    Upload,
    UploadLimits,
    check_class_sizes,
    check_labels,
    refuse_bad_files,
    store_uploads,
)
from .views import job_view

log = logging.getLogger(__name__)

FINAL_STATUSES = repo.FINAL_STATUSES
PROGRESS_INTERVAL_S = 0.5
CANCEL_POLL_S = 0.5


@dataclass(frozen=True)
class TrainingRequest:
    """A validated-shape training request; ``files[i]`` are the images of ``labels[i]``."""

    labels: Sequence[str]
    files: Sequence[Sequence[Upload]]
    epochs: int = 5
    backbone: str | None = None
    test_split: float = 0.2
    seed: int = 0
    name: str | None = None
    augment_views: int | None = None
    skip_invalid: bool = False
    early_stopping: bool = False


def submit_training(services: Services, queue: JobQueue, request: TrainingRequest) -> dict[str, Any]:
    """Check and store an upload, commit a queued job, then hand its id to the queue.

    Nothing is left behind when a check fails: the files go to a private staging folder that becomes
    the job's folder only after every check passed, and the row is written after the rename.

    Returns:
        The job view.

    Raises:
        InvalidRequest: bad labels, too few images, unusable files, unknown backbone, missing weights.
    """
    settings = services.settings
    class_names = check_labels(list(request.labels), max_classes=settings.max_classes)
    choice = choose_backbone(settings, request.backbone)
    _check_queue_room(services)
    job_id = uuid.uuid4().hex
    job_dir = services.files.job_dir(job_id)
    inputs, skipped = _store_upload(services, request, len(class_names), job_dir)
    params = {
        "epochs": request.epochs,
        "backbone": choice.spec.name,
        "backbone_requested": choice.requested,
        "backbone_note": choice.note,
        "test_split": request.test_split,
        "seed": request.seed,
        "name": request.name,
        "augment_views": settings.augment_views if request.augment_views is None else request.augment_views,
        "early_stopping": request.early_stopping,
        "skip_invalid": request.skip_invalid,
        "skipped_files": skipped,
    }
    try:
        with services.db.session() as session:
            job = repo.create_job(
                session, job_id=job_id, params=params, class_names=class_names, inputs=inputs
            )
            view = job_view(job, [])
    except BaseException:
        remove_tree(job_dir)
        raise
    try:
        queue.enqueue(job_id)
    except Exception as exc:
        # Nobody would ever run it: take the job back so the client can retry with nothing half-made.
        log.error("could not enqueue job %s: %s", job_id, exc)
        with services.db.session() as session:
            withdrawn = repo.set_job_status(session, job_id=job_id, expected=["queued"], status="queued")
            if withdrawn:
                repo.delete_job(session, job_id=job_id)
        if not withdrawn:  # the message went out after all and a worker has the job
            return view
        remove_tree(job_dir)
        raise Unavailable(
            f"the job queue cannot be reached ({type(exc).__name__}); the job was not created, retry later",
            code="queue_unavailable",
        ) from None
    return view


def _store_upload(
    services: Services, request: TrainingRequest, num_classes: int, job_dir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write and check the files in a staging folder, then rename it to ``job_dir``; on any failure
    remove what was written."""
    settings = services.settings
    staging = services.files.staging_dir()
    limits = UploadLimits(max_file_bytes=settings.max_file_bytes, max_pixels=settings.max_image_pixels)
    try:
        inputs, skipped = store_uploads(request.files, staging, limits)
        if skipped and not request.skip_invalid:
            refuse_bad_files(skipped)
        check_class_sizes(inputs, num_classes)
        staging.rename(job_dir)
    except OSError as exc:
        remove_tree(staging)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the data dir is full; free space and retry", code="storage_full") from None
        raise
    except BaseException:
        remove_tree(staging)
        raise
    return inputs, skipped


def _check_queue_room(services: Services) -> None:
    with services.db.session() as session:
        queued = repo.count_jobs(session, statuses=["queued"])
    if queued >= services.settings.max_queued_jobs:
        raise TooManyRequests(
            f"{queued} jobs are already waiting (VT_MAX_QUEUED_JOBS); retry when some have run",
            code="queue_full",
        )


def get_job(services: Services, job_id: str) -> dict[str, Any]:
    """The job view. Raises NotFound."""
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        return job_view(job, repo.log_lines(session, job_ids=[job_id])[job_id])


def list_jobs(services: Services, *, limit: int, offset: int) -> dict[str, Any]:
    with services.db.session() as session:
        jobs, count = repo.list_jobs(session, limit=limit, offset=offset)
        logs = repo.log_lines(session, job_ids=[j.id for j in jobs])
        return {"items": [job_view(j, logs[j.id]) for j in jobs], "count": count}


def job_events(services: Services, job_id: str, after: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``(event id, kind, data)`` of the job's events after ``after``, in order."""
    with services.db.session() as session:
        return [(e.id, e.kind, e.data) for e in repo.events_after(session, job_id=job_id, after_id=after)]


def cancel_job(services: Services, queue: JobQueue, job_id: str) -> dict[str, Any]:
    """Cancel a queued job at once, or flag a running one to stop at its next batch.

    Raises:
        NotFound: no such job.
        Conflict: the job already ended (``job_finished``).
    """
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        now = repo.now()
        if repo.set_job_status(
            session, job_id=job_id, expected=["queued"], status="cancelled", finished_at=now,
            phase="done", cancel_requested=True,
        ):
            repo.add_event(session, job_id=job_id, kind="log", data={"line": "Cancelled before it started"})
            repo.add_event(session, job_id=job_id, kind="status",
                           data={"status": "cancelled", "model_id": None, "error": None})
        elif job.status == "running":
            repo.request_cancel(session, job_id=job_id)
        else:
            raise Conflict(f"job {job_id} already ended ({job.status}); nothing to cancel", code="job_finished")
    queue.cancel(job_id)
    return get_job(services, job_id)


# --- running a job -------------------------------------------------------------------------------


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
        while not self._stop.wait(self.services.settings.heartbeat_interval_s):
            try:
                with self.services.db.session() as session:
                    held = repo.heartbeat(session, job_id=self.job_id, worker_id=self.claim)
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
                continue
            if not held:
                self.lost.set()
                return


class _JobReporter:
    """Writes progress, log lines and cancellation checks of one running job to the database."""

    def __init__(
        self, services: Services, job_id: str, interrupted: Callable[[], bool], lost: threading.Event
    ) -> None:
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
        with self.services.db.session() as session:
            repo.update_job(session, job_id=self.job_id, **values)
            repo.add_event(session, job_id=self.job_id, kind="progress", data={**values, "epoch": epoch})

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        with self.services.db.session() as session:
            repo.add_event(session, job_id=self.job_id, kind="log", data={"line": line})

    def should_stop(self) -> bool:
        if self.interrupted():
            raise JobInterrupted(self.job_id)
        if self.lost.is_set():
            raise JobLost(self.job_id)
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= CANCEL_POLL_S:
            self._last_cancel_check = now
            with self.services.db.session() as session:
                self._cancelled = repo.cancel_requested(session, job_id=self.job_id)
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
    with services.db.session() as session:
        claimed = repo.claim_job(session, job_id=job_id, worker_id=claim)
        job = repo.get_job(session, job_id=job_id) if claimed else None
    if job is None:
        return None
    started = time.monotonic()
    with _Heartbeat(services, job_id, claim) as heartbeat:
        reporter = _JobReporter(services, job_id, interrupted, heartbeat.lost)
        try:
            reporter.log(f"{job.params['backbone_note']} (worker {claim})")
            if skipped := job.params.get("skipped_files"):
                reporter.log(f"Skipped {len(skipped)} unusable file(s): "
                             + "; ".join(f"{e['field']}[{e['index']}] {e['detail']}" for e in skipped))
            if job.attempts > 1:
                reporter.log(f"Attempt {job.attempts}: the previous run was interrupted")
            return _train_and_store(services, job, reporter, claim, started)
        except JobInterrupted:
            _release(services, job_id, claim, "Interrupted: the server is stopping; the job will run again")
            return None
        except JobLost:
            log.warning("job %s: claim %s lost (heartbeat went stale); another worker runs it", job_id, claim)
            return None
        except TrainingCancelled:
            return _finish(services, job_id, claim, "cancelled", line="Cancelled")
        except MLError as exc:
            return _finish(services, job_id, claim, "failed", error=str(exc))
        except Exception as exc:  # a job must end with a status whatever went wrong
            log.exception("job %s failed", job_id)
            return _finish(services, job_id, claim, "failed", error=f"{type(exc).__name__}: {exc}")


def _train_and_store(services: Services, job: Job, reporter: _JobReporter, claim: str, started: float) -> str:
    params = job.params
    spec = resolve_backbone(params["backbone"])
    job_dir = services.files.job_dir(job.id)
    items = [LabelledImage(job_dir / i["file"], i["label"], i["sha256"]) for i in job.inputs]
    unique, removed = drop_duplicates(items)
    if removed:
        reporter.log(f"Dropped {removed} exact duplicate image(s)")
    split = stratified_split(unique, test_fraction=params["test_split"], seed=params["seed"])
    reporter.log(f"Split: {len(split.train)} train / {len(split.test)} test images")
    config = TrainConfig(
        epochs=params["epochs"],
        augment_views=params["augment_views"],
        early_stopping=params.get("early_stopping", False),
        seed=params["seed"],
        runtime=services.runtime,
        num_workers=services.settings.num_workers,
        allow_download=services.settings.download_weights,
    )
    result = train_classifier(spec, split, job.class_names, config, reporter.hooks())
    reporter.progress("saving", 0, 1, params["epochs"])
    if reporter.should_stop():
        raise TrainingCancelled()
    _save_model(services, job, result, claim=claim, started=started, removed=removed, split=split)
    return "succeeded"


def _save_model(
    services: Services, job: Job, result: TrainResult, *, claim: str, started: float, removed: int, split: Split
) -> str:
    """Write the checkpoint, then in one transaction: the model row, the job's success and its last
    events, only while ``claim`` still holds the job. So a job has one model, or none."""
    spec = resolve_backbone(job.params["backbone"])
    model_id = uuid.uuid4().hex
    path = services.files.checkpoint_path(model_id)
    save_checkpoint(
        path,
        build_checkpoint(
            model_state_dict=result.state_dict,
            class_names=job.class_names,
            backbone=spec.name,
            preprocessing=spec.preprocessing(),
            temperature=result.temperature,
            metrics=result.metrics,
        ),
    )
    counts = {name: 0 for name in job.class_names}
    for item in job.inputs:
        counts[job.class_names[item["label"]]] += 1
    duration = time.monotonic() - started
    try:
        with services.db.session() as session:
            if not repo.set_job_status(
                session, job_id=job.id, expected=["running"], status="succeeded", held_by=claim,
                finished_at=repo.now(), phase="done", done=Job.total, model_id=model_id,
                metrics=result.metrics, duration_s=duration, images_per_s=len(job.inputs) / max(duration, 1e-9),
            ):
                raise JobLost(job.id)
            repo.create_model(
                session,
                id=model_id,
                job_id=job.id,
                name=job.params.get("name") or f"{' vs '.join(job.class_names)[:150]} ({spec.name})",
                class_names=job.class_names,
                backbone=spec.name,
                params={k: v for k, v in job.params.items() if k != "name"},
                data={
                    "per_class_counts": counts,
                    "split_seed": job.params["seed"],
                    "content_hash": _content_hash(job.inputs),
                    "duplicates_removed": removed,
                    "train_count": len(split.train),
                    "validation_count": result.metrics["validation_count"],
                    "test_count": len(split.test),
                    "test_image_ids": [item.path.stem for item in split.test],
                },
                history=result.history,
                metrics=result.metrics,
            )
            _final_events(session, job.id, "succeeded", f"Saved model {model_id}", model_id=model_id)
    except BaseException:
        remove_tree(path.parent)
        raise
    log.info("job %s: saved model %s", job.id, model_id)
    return model_id


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


def _finish(
    services: Services, job_id: str, claim: str | None, status: str, *, error: str | None = None,
    line: str | None = None,
) -> str | None:
    """End a job ``claim`` holds as ``failed`` or ``cancelled``; None when the claim was lost."""
    line = line or f"Failed: {error}"
    log.info("job %s: %s", job_id, line)
    with services.db.session() as session:
        if not repo.set_job_status(
            session, job_id=job_id, expected=["running"], status=status, held_by=claim,
            finished_at=repo.now(), phase="done", error=error,
        ):
            return None
        _final_events(session, job_id, status, line, error=error)
    return status


def _release(services: Services, job_id: str, claim: str | None, line: str, *, died: bool = False) -> bool:
    """Put a running job back to ``queued``. A graceful stop (``died=False``) does not use up an attempt."""
    with services.db.session() as session:
        released = repo.set_job_status(
            session, job_id=job_id, expected=["running"], status="queued", held_by=claim,
            phase="queued", done=0, total=0, epoch=None, worker_id=None, heartbeat_at=None,
            **({} if died else {"attempts": Job.attempts - 1}),
        )
        if released:
            repo.add_event(session, job_id=job_id, kind="log", data={"line": line})
    return released


def _recover(services: Services, job: Job, why: str) -> bool:
    """A running job whose worker died: re-queue it; end it as cancelled when a cancel was asked, or as
    failed once it has killed ``max_attempts`` workers. Returns whether it was re-queued."""
    limit = services.settings.max_attempts
    if job.cancel_requested:
        _finish(services, job.id, job.worker_id, "cancelled", line=f"Cancelled: {why}")
    elif job.attempts < limit:
        return _release(services, job.id, job.worker_id, f"Re-queued: {why}", died=True)
    else:
        _finish(services, job.id, job.worker_id, "failed",
                error=f"{why}; it was attempt {job.attempts} of {limit} (VT_MAX_ATTEMPTS), so it is not run again")
    return False


def sweep_stale_jobs(services: Services) -> list[str]:
    """Re-queue (or fail) running jobs whose heartbeat is older than ``VT_HEARTBEAT_TIMEOUT_S``.

    Any number of processes may sweep at once: every change is a compare-and-set on the claim.

    Returns:
        The ids put back to ``queued``; the caller hands them to its queue again.
    """
    timeout = services.settings.heartbeat_timeout_s
    with services.db.session() as session:
        stale = repo.stale_jobs(session, before=repo.now() - timedelta(seconds=timeout))
    requeued = []
    for job in stale:
        why = f"worker {job.worker_id} sent no heartbeat for {timeout:g} s"
        if _recover(services, job, why):
            log.warning("job %s re-queued: %s", job.id, why)
            requeued.append(job.id)
        else:
            log.warning("job %s not re-queued (cancel asked, attempts used up, or taken meanwhile): %s", job.id, why)
    return requeued


def job_status(services: Services, job_id: str) -> str | None:
    """The job's status, or None when there is no such job."""
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        return job.status if job else None


def waiting_jobs_without_images(services: Services) -> list[str]:
    """Queued or running jobs whose uploaded images are not in this process's data dir: a worker that
    sees any is not looking at the API's data dir."""
    with services.db.session() as session:
        waiting = [job.id for job in repo.jobs_with_status(session, statuses=list(repo.ACTIVE_STATUSES))]
    return [job_id for job_id in waiting if not services.files.job_dir(job_id).is_dir()]


def requeue_interrupted(services: Services) -> list[str]:
    """At the local runner's start: jobs a dead process left ``running`` go back to ``queued`` (or
    fail after ``max_attempts``); return every queued job id, oldest first."""
    with services.db.session() as session:
        running = repo.jobs_with_status(session, statuses=["running"])
    for job in running:
        _recover(services, job, "the server stopped while this job ran")
    with services.db.session() as session:
        return [job.id for job in repo.jobs_with_status(session, statuses=["queued"])]


def delete_job(services: Services, job_id: str) -> None:
    """Remove an ended job, its events and its uploaded images; its model stays.

    Raises:
        NotFound: no such job.
        Conflict: the job is still queued or running (``job_active``).
    """
    with services.db.session() as session:
        job = repo.get_job(session, job_id=job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}; GET /jobs lists them")
        if job.status in repo.ACTIVE_STATUSES:
            raise Conflict(f"job {job_id} is {job.status}; cancel it first", code="job_active")
        repo.delete_job(session, job_id=job_id)
    remove_tree(services.files.job_dir(job_id))
