"""Run one job under its lease: claim, heartbeat, call the handler for its kind, finish. No Celery in here.

A message names a job id and nothing else, so a redelivered message, a duplicate from the sweeper or a second
worker finds the job not claimable and does nothing. Handlers are plain functions ``handler(ctx) -> dict``:
the returned dict is the job's result; ``BarFedError`` fails the job with its code and message; ``Gated(result)``
ends it gated; any other exception is a crash: the lease is released so the job runs again (up to its
``max_attempts``), then it fails with ``JOB_CRASHED``. A handler resumes from what it kept in ``ctx.work_dir``
(the same directory on every attempt) and calls ``ctx.check()`` between steps so that a lost lease or a
cancellation stops it.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.blobs import BlobStore
from coordinator.keys import CoordinatorKeys
from coordinator.runtime import Runtime
from coordinator.settings import CoordinatorSettings
from coordinator.state import jobs
from coordinator.state.db import Registry
from protocol.errors import BarFedError

log = logging.getLogger(__name__)


class Gated(Exception):
    """Raised by a handler whose result must not go further (a build the gate refused): the job ends ``gated``."""

    def __init__(self, result: dict) -> None:
        super().__init__("gated")
        self.result = result


class _Lease:
    """Renews the lease every lease_s/3 on a thread (and at once with each new step); remembers why it was lost."""

    def __init__(self, registry: Registry, job_id: int, owner: str, lease_s: float, step: str) -> None:
        self.registry, self.job_id, self.owner, self.lease_s = registry, job_id, owner, lease_s
        self.step, self.error = step, None
        self._wake, self._stopped = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self, step: str) -> None:
        """Renew now and record ``step`` (raises, and remembers, LEASE_LOST or JOB_CANCELLED)."""
        self.step = step
        try:
            jobs.heartbeat(self.registry, self.job_id, self.owner, self.lease_s, step)
        except BarFedError as exc:
            self.error = exc
            raise

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(timeout=self.lease_s)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.lease_s / 3)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                jobs.heartbeat(self.registry, self.job_id, self.owner, self.lease_s)
            except BarFedError as exc:
                self.error = exc
                log.warning("job %s: %s", self.job_id, exc.message)
                return
            except Exception:  # the database may be back at the next beat; if not, the lease runs out
                log.exception("job %s: heartbeat failed", self.job_id)


@dataclass
class JobContext:
    """A handler's view of its job and of the coordinator's state."""

    settings: CoordinatorSettings
    registry: Registry
    blobs: BlobStore
    keys: CoordinatorKeys
    job_id: int
    kind: str
    key: str
    params: dict
    attempt: int
    work_dir: Path  # settings.home / "jobs" / <id>: kept across attempts, for resuming
    _lease: _Lease = field(repr=False)

    def step(self, name: str) -> None:
        """Record the current step on the job row, at once, renewing the lease (raises if it was lost)."""
        self.check()
        self._lease.beat(name)

    def check(self) -> None:
        """Raise LEASE_LOST or JOB_CANCELLED when this worker must stop working on the job."""
        if self._lease.error is not None:
            raise self._lease.error


Handler = Callable[[JobContext], dict]

# kind -> handler, or "module:function" imported when first needed (the release build lives in
# coordinator.release, which this layer must not import eagerly).
HANDLERS: dict[str, Handler | str] = {
    "verify": "coordinator.tasks.handlers:verify",
    "build": "coordinator.release.build:run_build",
}
# kind -> function(runtime, job) called (idempotently) once a job of that kind ended failed, so what it acted on
# does not stay half-way (a submission VERIFYING forever).
ON_FAILED: dict[str, Callable | str] = {"verify": "coordinator.tasks.handlers:verify_failed"}


def _resolve(table: dict, kind: str) -> Callable | None:
    entry = table.get(kind)
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            if table is HANDLERS:
                raise BarFedError(
                    "NO_HANDLER", f"jobs of kind {kind!r} need {HANDLERS[kind]}, which this installation lacks."
                ) from None
            raise
        table[kind] = entry
    return entry


def handler_for(kind: str) -> Handler:
    handler = _resolve(HANDLERS, kind)
    if handler is None:
        raise BarFedError("NO_HANDLER", f"no handler runs jobs of kind {kind!r}; is the worker the same version?")
    return handler


def new_owner() -> str:
    """A holder name unique to one execution: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _after_failure(runtime: Runtime, job_id: int) -> None:
    try:
        job = jobs.get(runtime.registry, job_id)
    except BarFedError as exc:  # a message for a job this database does not have
        log.warning("job %s: %s", job_id, exc.message)
        return
    hook = _resolve(ON_FAILED, job.kind) if job.state == "failed" else None
    if hook is not None:
        try:
            hook(runtime, job)
        except Exception:
            log.exception("job %s: the failure hook of %s crashed", job_id, job.kind)


def run_job(runtime: Runtime, job_id: int, redispatch: Callable[[int], object] | None = None) -> str:
    """Run job ``job_id`` if it can be claimed; returns what happened (for logs and tests)."""
    settings, registry = runtime.settings, runtime.registry
    owner = new_owner()
    try:
        job = jobs.claim(registry, job_id, owner, settings.job_lease_s)
    except BarFedError as exc:  # e.g. UNKNOWN_JOB: a message for another database, or an old one
        log.warning("job %s: %s", job_id, exc.message)
        return "skipped"
    if job is None:
        _after_failure(runtime, job_id)  # claim may have just ended it out of attempts
        return "skipped"
    log.info("job %s (%s %s) attempt %s by %s", job_id, job.kind, job.key, job.attempts, owner)
    lease = _Lease(registry, job_id, owner, settings.job_lease_s, job.step)
    work_dir = settings.home / "jobs" / str(job_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(
        settings,
        registry,
        runtime.blobs,
        runtime.keys,
        job_id,
        job.kind,
        job.key,
        dict(job.params or {}),
        job.attempts,
        work_dir,
        lease,
    )
    lease.start()
    try:
        return _run_handler(runtime, ctx, lease, redispatch)
    finally:
        lease.stop()  # also when the worker itself is going down (SystemExit): the lease then runs out


def _run_handler(runtime: Runtime, ctx: JobContext, lease: _Lease, redispatch) -> str:
    registry, job_id, owner, work_dir = runtime.registry, ctx.job_id, lease.owner, ctx.work_dir
    outcome: tuple[str, dict, str, str]
    try:
        result = handler_for(ctx.kind)(ctx)
        outcome = ("done", dict(result or {}), "", "")
    except Gated as gated:
        outcome = ("gated", dict(gated.result), "", "")
    except BarFedError as exc:
        if lease.error is not None and exc.code in ("LEASE_LOST", "JOB_CANCELLED"):
            lease.stop()
            log.warning("job %s stopped: %s", job_id, exc.message)
            return "lost"
        outcome = ("failed", {}, exc.code, exc.message)
    except Exception:
        lease.stop()
        log.exception("job %s (%s %s) crashed", job_id, ctx.kind, ctx.key)
        message = "the job crashed; the workers' log has the traceback."
        try:
            state = jobs.release(registry, job_id, owner, "JOB_CRASHED", message)
        except BarFedError as exc:
            log.warning("job %s: %s", job_id, exc.message)
            return "lost"
        if state == "queued" and redispatch is not None:
            redispatch(job_id)
        if state == "failed":
            _after_failure(runtime, job_id)
        return "crashed"
    lease.stop()
    try:
        jobs.finish(registry, job_id, owner, outcome[0], outcome[1], outcome[2], outcome[3])
    except BarFedError as exc:  # cancelled or taken over meanwhile: the row says what counts
        log.warning("job %s: %s", job_id, exc.message)
        return "lost"
    if outcome[0] == "failed":
        _after_failure(runtime, job_id)
    with contextlib.suppress(OSError):
        work_dir.rmdir()  # only when the handler left nothing behind
    return outcome[0]
