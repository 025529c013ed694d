"""The Celery app: one thin task, ``barfed.run_job(job_id)``, around `coordinator.tasks.runner.run_job`.

Messages only say "look at job N"; the job row decides whether anything runs (see coordinator.state.jobs).
``acks_late`` with ``reject_on_worker_lost``: a message is acknowledged after its task returned, and one whose
worker process was lost goes back to the broker where it can (Redis after its visibility timeout); failures are
acknowledged too (the task records them on the row and never raises). Prefetch 1: a worker holds no message it
is not running, so a long build never hides a verification behind it. JSON only: nothing is unpickled.
"""

from __future__ import annotations

import logging

from celery import Celery

from coordinator.settings import CoordinatorSettings
from coordinator.tasks import broker
from coordinator.tasks.heartbeat import Heartbeat
from coordinator.tasks.runner import Runtime, run_job

log = logging.getLogger(__name__)
TASK_NAME = "barfed.run_job"


def broker_url(settings: CoordinatorSettings) -> str:
    return settings.broker_url or f"sqlite:///{(settings.home / 'broker.db').resolve()}"


def embedded_broker(settings: CoordinatorSettings) -> bool:
    return settings.broker_url is None


def make_app(settings: CoordinatorSettings, runtime: Runtime | None = None) -> Celery:
    """A Celery app for these settings; ``runtime`` shares an embedded coordinator's registry and stores with the
    in-process worker (a worker process builds its own on first use)."""
    app = Celery("barfed", broker=broker_url(settings), set_as_current=False)
    embedded = embedded_broker(settings)
    if embedded:
        settings.home.mkdir(parents=True, exist_ok=True)
    app.conf.update(
        broker_transport=broker.TRANSPORT if embedded else None,
        broker_connection_retry_on_startup=True,
        broker_transport_options={} if embedded else {"visibility_timeout": 3600},
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 2},
        task_default_queue=settings.task_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_pool="threads",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=not embedded,  # the SQL transport has no fanout for remote control
        worker_cancel_long_running_tasks_on_connection_loss=False,
        imports=list(settings.task_imports),
    )
    app.barfed_settings = settings
    app.barfed_runtime = runtime
    if embedded:  # no broadcast on this transport: readiness reads heartbeat files instead of a ping
        app.steps["consumer"].add(Heartbeat)

    # shared=False: Celery would otherwise attach this app's task to every app the process creates later.
    @app.task(name=TASK_NAME, shared=False, ignore_result=True)
    def run_job_task(job_id: int) -> str:
        if app.barfed_runtime is None:
            app.barfed_runtime = Runtime.from_settings(settings)
        return run_job(app.barfed_runtime, int(job_id), redispatch=lambda again: send(app, again))

    return app


def send(app: Celery, job_id: int) -> None:
    """Publish one "run job N" message."""
    app.send_task(TASK_NAME, args=(int(job_id),), queue=app.conf.task_default_queue)
