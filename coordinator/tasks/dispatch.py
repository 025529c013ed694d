"""Dispatching jobs: ``Dispatcher.dispatch(job_id)`` publishes "run job N"; the sweeper re-publishes what is due.

Publishing is best effort by design: the job row already exists (committed with whatever created it), so a
message lost to a broker outage, to a worker killed before it acknowledged, or to a coordinator that died right
after its commit is simply sent again by the next sweep: queued jobs, and running jobs whose lease ran out.
A job dispatched within the last ``redispatch_s`` is not sent again meanwhile (its message is still queued
behind other work); duplicates would be harmless anyway, since only one claim can win.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from coordinator.settings import CoordinatorSettings
from coordinator.state import jobs
from coordinator.state.db import Registry
from coordinator.tasks import broker

log = logging.getLogger(__name__)
TASK_NAME = "barfed.run_job"  # the one task; its only argument is the job's id


def send(app: Celery, job_id: int) -> None:
    """Publish one "run job N" message (raises when the broker refuses it)."""
    app.send_task(TASK_NAME, args=(int(job_id),), queue=app.conf.task_default_queue)


class Dispatcher:
    """Sends jobs through ``app`` (a Celery app for ``settings``: coordinator.tasks.celery_app.make_app)."""

    def __init__(self, app: Celery, settings: CoordinatorSettings, redispatch_s: float | None = None) -> None:
        self.app, self.settings = app, settings
        self.redispatch_s = redispatch_s if redispatch_s is not None else max(settings.job_lease_s, 1.0)
        self._sent: dict[int, float] = {}
        self._lock = threading.Lock()

    def dispatch(self, job_id: int) -> bool:
        """Send "run job N" to the workers; False (logged) when the broker refused: the sweeper retries."""
        try:
            send(self.app, job_id)
        except Exception:
            log.warning("could not dispatch job %s now; the sweeper will", job_id, exc_info=True)
            return False
        with self._lock:
            self._sent[job_id] = time.monotonic()
        return True

    def sent_recently(self, job_id: int) -> bool:
        with self._lock:
            at = self._sent.get(job_id)
        return at is not None and time.monotonic() - at < self.redispatch_s

    def sweep(self, registry: Registry) -> list[int]:
        """Dispatch every due job not sent within ``redispatch_s``; returns the ones sent."""
        sent = [job_id for job_id in jobs.due(registry) if not self.sent_recently(job_id) and self.dispatch(job_id)]
        with self._lock:  # forget jobs that ended
            horizon = time.monotonic() - self.redispatch_s
            self._sent = {k: v for k, v in self._sent.items() if v > horizon}
        if broker.is_embedded(self.settings):
            broker.purge_delivered(broker.broker_url(self.settings))
        return sent

    def close(self) -> None:
        self.app.close()


class Sweeper:
    """A thread that sweeps every ``interval_s`` (the coordinator runs one; a test may too)."""

    def __init__(self, dispatcher: Dispatcher, registry: Registry, interval_s: float) -> None:
        self.dispatcher, self.registry, self.interval_s = dispatcher, registry, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            try:
                sent = self.dispatcher.sweep(self.registry)
                if sent:
                    log.info("dispatched jobs %s", sent)
            except Exception:  # the database or broker may be back at the next sweep
                log.exception("sweep failed")
            if self._stop.wait(self.interval_s):
                return
