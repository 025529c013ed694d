"""Run one job under its lease: claim, heartbeat, call the handler for its kind, finish. No Celery in here.

A message names a job id and nothing else, so a redelivered message, a duplicate from the sweeper or a second
worker finds the job not claimable and does nothing. The handler (coordinator.tasks.handlers) resumes from what it
kept in ``ctx.work_dir`` (the same directory on every attempt; with an artifact store, restored from it on another
machine) and calls ``ctx.check()`` between steps, so that a lost lease or a cancellation stops it. A crash releases
the lease, so the job runs again (up to its ``max_attempts``), then fails with ``JOB_CRASHED``; so does an artifact
store that is away or refuses (STORE_UNREACHABLE, STORE_ACCESS_DENIED, after obstore's own retries): never a
verdict on the work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid

from coordinator.runtime import Runtime
from coordinator.setup import fetch_anchor
from coordinator.state import jobs
from coordinator.storage import OUTAGE_CODES
from coordinator.tasks.handlers import HANDLERS, ON_FAILED, Gated
from coordinator.tasks.job_context import JobContext, Lease
from coordinator.tasks.scratch import JobScratch, scratch_key
from protocol.errors import BarFedError

log = logging.getLogger(__name__)


def new_owner() -> str:
    """A holder name unique to one execution: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _after_failure(runtime: Runtime, job_id: int) -> None:
    try:
        job = jobs.get(runtime.registry, job_id)
    except BarFedError as exc:  # a message for a job this database does not have
        log.warning("job %s: %s", job_id, exc.message)
        return
    hook = ON_FAILED.get(job.kind) if job.state == "failed" else None
    if hook is not None:
        try:
            hook(runtime, job)
        except Exception:
            log.exception("job %s: the failure hook of %s crashed", job_id, job.kind)


def run_job(runtime: Runtime, job_id: int) -> str:
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
    lease = Lease(registry, job_id, owner, settings.job_lease_s, job.step)
    work_dir = settings.jobs_dir / str(job_id)
    work_dir.mkdir(parents=True, exist_ok=True)
    scratch = None
    if runtime.store is not None:
        scratch = JobScratch(runtime.store, job_id, work_dir, scratch_key(runtime.keys.release_key_path))
    ctx = JobContext(runtime, job_id, job.kind, job.key, dict(job.params or {}), job.attempts, work_dir, lease, scratch)
    lease.start()
    try:
        return _run_handler(ctx)
    finally:
        lease.stop()  # also when the worker itself is going down (SystemExit): the lease then runs out


def _discard(ctx: JobContext) -> None:
    if ctx.scratch is not None:
        try:
            ctx.scratch.discard()
        except BarFedError as exc:
            log.warning("job %s: its scratch stays on the artifact store: %s", ctx.job_id, exc.message)


def _give_back(ctx: JobContext, code: str, message: str, said: str) -> str:
    """Release the job: queued again (and sent) while attempts remain, else failed."""
    runtime = ctx.runtime
    ctx.lease.stop()
    try:
        state = jobs.release(runtime.registry, ctx.job_id, ctx.lease.owner, code, message)
    except BarFedError as exc:
        log.warning("job %s: %s", ctx.job_id, exc.message)
        return "lost"
    if state == "queued":
        runtime.dispatch(ctx.job_id)
    if state == "failed":
        _after_failure(runtime, ctx.job_id)
    return said


def _run_handler(ctx: JobContext) -> str:
    runtime, lease, job_id = ctx.runtime, ctx.lease, ctx.job_id
    handler = HANDLERS.get(ctx.kind)
    try:
        if ctx.scratch is not None:  # a worker with a home of its own: what an earlier attempt kept, and the anchor
            ctx.scratch.restore()
            fetch_anchor(runtime)
        if handler is None:
            raise BarFedError(
                "NO_HANDLER", f"no handler runs jobs of kind {ctx.kind!r}; is the worker the same version?"
            )
        outcome = ("done", dict(handler(ctx) or {}), "", "")
    except Gated as gated:
        outcome = ("gated", dict(gated.result), "", "")
    except BarFedError as exc:
        if lease.error is not None and exc.code in ("LEASE_LOST", "JOB_CANCELLED"):
            lease.stop()
            log.warning("job %s stopped: %s", job_id, exc.message)
            if exc.code == "JOB_CANCELLED":  # nobody resumes it (a lost lease's new holder still needs the scratch)
                _discard(ctx)
            return "lost"
        if exc.code in OUTAGE_CODES:  # the store, not the job: another attempt once it is back
            log.warning("job %s: %s", job_id, exc.message)
            return _give_back(ctx, exc.code, exc.message, "released")
        outcome = ("failed", {}, exc.code, exc.message)
    except Exception:
        log.exception("job %s (%s %s) crashed", job_id, ctx.kind, ctx.key)
        return _give_back(ctx, "JOB_CRASHED", "the job crashed; the workers' log has the traceback.", "crashed")
    lease.stop()
    try:
        jobs.finish(runtime.registry, job_id, lease.owner, *outcome)
    except BarFedError as exc:  # cancelled or taken over meanwhile: the row says what counts
        log.warning("job %s: %s", job_id, exc.message)
        return "lost"
    if outcome[0] == "failed":
        _after_failure(runtime, job_id)
    if outcome[0] == "done":  # a failed or gated job keeps its scratch, as its directory, for `jobs retry`
        _discard(ctx)
    with contextlib.suppress(OSError):
        ctx.work_dir.rmdir()  # only when the handler left nothing behind
    return outcome[0]
