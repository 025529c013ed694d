"""The Celery app: one thin task, ``barfed.run_job(job_id)``, around `coordinator.tasks.runner.run_job`.

Messages only say "look at job N"; the job row decides whether anything runs (see coordinator.state.jobs).
``acks_late`` with ``reject_on_worker_lost``: a message is acknowledged after its task returned, and one whose
worker process was lost goes back to the broker where it can (Redis after its visibility timeout); failures are
acknowledged too (the task records them on the row and never raises). Prefetch 1: a worker holds no message it
is not running, so a long build never hides a verification behind it. JSON only: nothing is unpickled.

``celery -A coordinator.tasks.celery_app worker`` finds ``app`` here, made on first access from the coordinator's
settings (coordinator.toml or $BARFED_COORDINATOR_CONFIG, and BARFED_COORD_* variables), so importing this
module reads nothing. The coordinator makes its own with `make_app(settings)`.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from coordinator.runtime import Runtime
from coordinator.settings import CoordinatorSettings, load_settings
from coordinator.tasks import broker
from coordinator.tasks.dispatch import TASK_NAME, Dispatcher
from coordinator.tasks.heartbeat import heartbeat_step


def make_app(settings: CoordinatorSettings, runtime: Runtime | None = None) -> Celery:
    """A Celery app for these settings. Its task runs jobs against ``runtime`` (an embedded coordinator shares its
    own with its in-process worker); a worker process makes one from the settings when its first job arrives."""
    embedded = broker.is_embedded(settings)
    if embedded:
        settings.home.mkdir(parents=True, exist_ok=True)  # the queue's SQLite file lives there
    app = Celery("barfed", broker=broker.broker_url(settings), set_as_current=False)
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
    if embedded:  # no broadcast on this transport: readiness reads heartbeat files instead of a ping
        app.steps["consumer"].add(heartbeat_step(settings))
    made: list[Runtime] = [runtime] if runtime is not None else []
    lock = threading.Lock()

    # shared=False: Celery would otherwise attach this app's task to every app the process creates later.
    @app.task(name=TASK_NAME, shared=False, ignore_result=True)
    def run_job_task(job_id: int) -> str:
        from coordinator.tasks.runner import run_job  # the job code (torch, the build) loads where jobs run

        with lock:
            if not made:
                made.append(Runtime.from_settings(settings, dispatcher=Dispatcher(app, settings)))
        return run_job(made[0], int(job_id))

    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``app`` for the celery command line, made from the settings on first access."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = make_app(load_settings())
    return _app
