"""A worker's heartbeat file, for readiness where Celery's ping cannot work.

``app.control.ping`` is a broadcast, which needs a fanout-capable transport; the embedded broker (kombu's
SQLAlchemy transport) has none, so its workers run with remote control off and could never answer. With that
broker every worker shares the coordinator's machine (the broker is an SQLite file under ``home``), so each
worker's consumer, once it consumes, touches ``home/workers/<hostname>`` every `INTERVAL_S` and removes it when it
stops; ``/readyz`` counts the files touched within `FRESH_S`. With a real broker (Redis) ``/readyz`` pings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path

from celery import bootsteps

from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)
INTERVAL_S = 1.0
FRESH_S = 3.0  # three missed beats: the worker is gone or stuck


def heartbeat_dir(settings: CoordinatorSettings) -> Path:
    return settings.home / "workers"


def live_workers(settings: CoordinatorSettings, now: float | None = None) -> list[str]:
    """Hostnames of workers whose heartbeat is fresh."""
    now = time.time() if now is None else now
    try:
        beats = list(heartbeat_dir(settings).iterdir())
    except FileNotFoundError:
        return []
    alive = []
    for path in beats:
        try:
            if now - path.stat().st_mtime <= FRESH_S:
                alive.append(path.name)
        except FileNotFoundError:  # removed by its worker meanwhile
            continue
    return sorted(alive)


def heartbeat_step(settings: CoordinatorSettings) -> type[bootsteps.StartStopStep]:
    """The consumer step that keeps this worker's heartbeat file under ``settings.home``."""
    directory = heartbeat_dir(settings)

    class Heartbeat(bootsteps.StartStopStep):
        """Comes after the step that starts consuming: beats only while this worker takes tasks."""

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent, **kwargs) -> None:
            super().__init__(parent, **kwargs)
            self._stop: threading.Event | None = None
            self._thread: threading.Thread | None = None
            self.path: Path | None = None

        def start(self, parent) -> None:
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / re.sub(r"[^A-Za-z0-9@._-]", "_", parent.hostname)[:200]
            body = json.dumps({"hostname": parent.hostname, "pid": os.getpid()})
            stop = self._stop = threading.Event()
            path = self.path

            def beat() -> None:
                while True:
                    try:
                        path.write_text(body)
                    except OSError as exc:
                        log.warning("could not write the worker heartbeat %s: %s", path, exc)
                    if stop.wait(INTERVAL_S):
                        return

            self._thread = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
            self._thread.start()

        def stop(self, parent) -> None:
            if self._stop is not None:
                self._stop.set()
                self._thread.join(timeout=5)
                self._stop = None
            if self.path is not None:
                self.path.unlink(missing_ok=True)

        def shutdown(self, parent) -> None:
            self.stop(parent)

    return Heartbeat
