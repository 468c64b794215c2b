"""The Celery backend: the API enqueues job ids on the broker; ``vision-trainer worker`` processes,
on any number of machines sharing the database and the data dir, claim and train them.

Celery only carries the job id. Job state, progress, cancellation and heartbeats live in our
database, so a lost or repeated message can never run a job twice: only the claim's
compare-and-set starts training, and the sweep re-queues jobs whose worker stopped beating.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable

from celery import Celery, signals

from ..services.commits import watch_commits
from ..services.context import Services
from ..services.jobs import job_status
from ..services.work.claim import worker_name
from ..services.work.recovery import sweep_stale_jobs, waiting_jobs_without_images
from ..services.work.runner import run_job
from ..settings import Settings
from .redis_events import RedisEventPublisher, RedisEventSubscriber
from .sweeper import Sweeper

log = logging.getLogger(__name__)

TASK_NAME = "vision_trainer.train"
QUEUE_NAME = "vision_trainer"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for the broker of ``settings``; the same configuration on the API and workers."""
    app = Celery("vision_trainer", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE_NAME,
        task_acks_late=True,  # a message leaves the broker only once its job ended
        task_reject_on_worker_lost=True,
        task_ignore_result=True,  # job state lives in our database
        result_backend=None,
        worker_prefetch_multiplier=1,  # a busy worker does not sit on jobs another could start
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        # Redis hands an unacknowledged message to another worker after this many seconds; it must be
        # longer than any job, or a job still training would be delivered twice. Dead workers are
        # found much sooner by the heartbeat sweep.
        broker_transport_options={"visibility_timeout": int(settings.max_job_hours * 3600) + 3600},
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )
    return app


def publish(app: Celery, job_id: str) -> None:
    """Put a job id on the broker. The task id is the job id, so one revoke covers every delivery."""
    app.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=QUEUE_NAME)


class CeleryJobQueue:
    """The API side: publishes job ids; sweeps for jobs whose worker died; hears of workers' job events."""

    def __init__(self, services: Services, app: Celery | None = None) -> None:
        self.services = services
        self.app = app or make_celery(services.settings)
        self._sweeper = Sweeper(services, self.enqueue, sweep_stale_jobs)
        self._subscriber: RedisEventSubscriber | None = None

    def start(self) -> None:
        # No start-up re-queue here: live workers may be training the jobs marked running.
        self._sweeper.start()

    def enqueue(self, job_id: str) -> None:
        publish(self.app, job_id)

    def cancel(self, job_id: str) -> None:
        # The database flag is what stops a running job; revoking spares workers a queued message.
        try:
            self.app.control.revoke(job_id)
        except Exception:
            log.warning("could not revoke task of job %s (the cancel flag is set anyway)", job_id, exc_info=True)

    def follow_events(self, notify: Callable[[Iterable[str]], None], resync: Callable[[], None]) -> None:
        """Call ``notify(job_ids)`` when workers commit events of those jobs (one Redis subscription)."""
        self._subscriber = RedisEventSubscriber(self.services.settings.broker_url, notify, resync)
        self._subscriber.start()

    def shutdown(self) -> None:
        self._sweeper.stop()
        if self._subscriber is not None:
            self._subscriber.stop()


class WorkerSetupError(RuntimeError):
    """The worker cannot do its work here; the message says what to fix."""


def check_worker_setup(settings: Settings, app: Celery) -> Services:
    """Refuse to start a worker that cannot reach the broker or the database, or cannot see the data dir.

    Returns:
        The worker's services, connected.
    """
    root = settings.data_dir.resolve()
    if not root.is_dir():
        raise WorkerSetupError(
            f"data dir {root} does not exist here: workers need the API's VT_DATA_DIR (a shared volume "
            "mounted at the same path); start the API once to create it"
        )
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise WorkerSetupError(f"data dir {root} is not readable and writable by this user")
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        raise WorkerSetupError(f"cannot reach the broker at {settings.broker_url} (VT_BROKER_URL): {exc}") from None
    try:
        services = Services.create(settings)  # connects and creates missing tables
    except Exception as exc:
        raise WorkerSetupError(
            f"cannot use the database (VT_DATABASE_URL={settings.database_url or 'SQLite in the data dir'}): {exc}"
        ) from None
    missing = waiting_jobs_without_images(services)
    if missing:
        services.close()
        raise WorkerSetupError(
            f"the database lists {len(missing)} waiting job(s) whose images are not under {root} "
            f"(e.g. {missing[0]}): this is not the API's data dir; mount the shared volume there"
        )
    return services


def run_worker(settings: Settings, *, concurrency: int) -> None:
    """Start a Celery worker that trains jobs in ``concurrency`` threads of this process."""
    app = make_celery(settings)
    services = check_worker_setup(settings, app)
    stopping = threading.Event()
    me = worker_name()

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def train(job_id: str) -> str | None:
        status = run_job(services, job_id, worker=me, interrupted=stopping.is_set)
        if stopping.is_set() and job_status(services, job_id) == "queued":
            # Released by a graceful stop: its message is acknowledged with this return, so send a new one.
            publish(app, job_id)
        return status

    sweeper = Sweeper(services, lambda job_id: publish(app, job_id), sweep_stale_jobs)
    # Tell the API processes when this worker commits job events, so their streams read them at once.
    notifications = RedisEventPublisher(settings.broker_url)
    notifications.start()
    unwatch = watch_commits(services.db, notifications)

    @signals.worker_ready.connect(weak=False)
    def _ready(**_: object) -> None:
        sweeper.start()

    @signals.worker_shutting_down.connect(weak=False)
    def _stopping(**_: object) -> None:
        stopping.set()  # running jobs go back to the queue instead of holding up the stop

    try:
        app.worker_main(
            [
                "worker",
                f"--concurrency={concurrency}",
                "--pool=threads",
                f"--queues={QUEUE_NAME}",
                f"--hostname=vision-trainer-{os.getpid()}@{socket.gethostname()}",
                f"--loglevel={settings.log_level.upper()}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        sweeper.stop()
        unwatch()
        notifications.stop()
        services.close()
