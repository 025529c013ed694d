"""Job rows: the only SQL about jobs. The row, not the broker, is the truth about a job.

A worker runs a job only while it holds the lease: ``claim`` is one compare-and-set UPDATE (the job is queued,
or running under a lease that ran out, or already held by this same owner), so two workers can never both hold
it, whatever the broker delivered to whom. The holder renews the lease with ``heartbeat`` and ends the job with
``finish``; anyone else's heartbeat or finish is refused. ``due`` lists what must be (re)dispatched: queued jobs,
and running jobs whose holder stopped renewing (it died). Every state change writes an audit entry in the same
transaction. Times are the coordinator's and workers' UTC clocks, so keep them in sync (NTP) at scale.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import JOB_STATES, Job, utcnow
from protocol.errors import BarFedError

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "gated", "cancelled")


def ensure(
    session: Session,
    kind: str,
    key: str,
    params: dict | None = None,
    max_attempts: int = 3,
    actor: str = "coordinator",
) -> Job:
    """The job for (kind, key), created queued in the caller's transaction if there is none (idempotent); the
    audit entry names ``actor``, who asked for it."""
    job = session.scalar(select(Job).where(Job.kind == kind, Job.key == key))
    if job is not None:
        return job
    job = Job(kind=kind, key=key, params=params or {}, max_attempts=max_attempts, state="queued")
    session.add(job)
    session.flush()
    audit.record(session, actor, "job.queued", str(job.id), kind=kind, key=key)
    return job


def queue(registry: Registry, kind: str, key: str, params: dict | None = None, actor: str = "coordinator") -> Job:
    """``ensure`` in a transaction of its own."""
    with registry.session() as session:
        return ensure(session, kind, key, params, actor=actor)


def get(registry: Registry, job_id: int) -> Job:
    with registry.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise BarFedError("UNKNOWN_JOB", f"there is no job {job_id}; `barfed coordinator jobs list` shows them.")
        return job


def find(registry: Registry, kind: str, key: str) -> Job | None:
    with registry.session() as session:
        return session.scalar(select(Job).where(Job.kind == kind, Job.key == key))


def list_jobs(
    registry: Registry,
    kind: str | None = None,
    state: str | None = None,
    limit: int = 200,
    before: int | None = None,
) -> list[Job]:
    """Newest first; ``before`` (the smallest id of the previous page) pages back without skipping or repeating a
    job while new ones are created."""
    if state is not None and state not in JOB_STATES:
        raise BarFedError("BAD_JOB_STATE", f"{state!r} is not a job state; use one of {', '.join(JOB_STATES)}.")
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Job.id < before)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if state is not None:
        query = query.where(Job.state == state)
    with registry.session() as session:
        return list(session.scalars(query))


def counts(registry: Registry) -> dict[tuple[str, str], int]:
    """How many jobs there are of each (kind, state)."""
    with registry.session() as session:
        rows = session.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()
    return {(kind, state): count for kind, state, count in rows}


def done_results(registry: Registry) -> list[tuple[str, dict | None]]:
    """(kind, result) of every job that finished well: its result records its wall time per step."""
    with registry.session() as session:
        return [tuple(row) for row in session.execute(select(Job.kind, Job.result).where(Job.state == "done"))]


def _claimable(job_id: int, owner: str, now: dt.datetime):
    return and_(
        Job.id == job_id,
        or_(
            Job.state == "queued",
            and_(Job.state == "running", or_(Job.lease_expires_at < now, Job.lease_owner == owner)),
        ),
    )


def claim(registry: Registry, job_id: int, owner: str, lease_s: float) -> Job | None:
    """Take the job for ``owner`` for ``lease_s`` seconds, or None when it is not claimable (done, held by a live
    lease, cancelled…). Each new holder counts one attempt; a job out of attempts ends failed instead."""
    now = utcnow()
    same_owner = and_(Job.state == "running", Job.lease_owner == owner)
    with registry.session() as session:
        taken = session.execute(
            update(Job)
            .where(_claimable(job_id, owner, now), or_(Job.attempts < Job.max_attempts, same_owner))
            .values(
                state="running",
                attempts=Job.attempts + case((same_owner, 0), else_=1),
                lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_s),
                heartbeat_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken == 1:
            job = session.get(Job, job_id, populate_existing=True)
            audit.record(session, owner, "job.running", str(job_id), kind=job.kind, key=job.key, attempt=job.attempts)
            return job
        exhausted = session.execute(
            update(Job)
            .where(_claimable(job_id, owner, now), Job.attempts >= Job.max_attempts)
            .values(
                state="failed",
                lease_owner="",
                lease_expires_at=None,
                error_code="ATTEMPTS_EXHAUSTED",
                error_message=(
                    "the job was started as often as its attempt limit allows and never finished (its worker died "
                    "or crashed each time); see the workers' logs, then `barfed coordinator jobs retry` it."
                ),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if exhausted == 1:
            audit.record(session, owner, "job.failed", str(job_id), code="ATTEMPTS_EXHAUSTED")
        return None


def _not_held(session: Session, job_id: int, owner: str) -> BarFedError:
    job = session.get(Job, job_id, populate_existing=True)
    if job is not None and job.state == "cancelled":
        return BarFedError("JOB_CANCELLED", f"job {job_id} was cancelled; its work stops here.")
    holder = "nobody" if job is None or not job.lease_owner else job.lease_owner
    return BarFedError("LEASE_LOST", f"job {job_id} is no longer held by {owner} (now {holder}); stop working on it.")


def heartbeat(registry: Registry, job_id: int, owner: str, lease_s: float, step: str | None = None) -> None:
    """Renew the lease (and record the current step) while ``owner`` still holds it; else LEASE_LOST or
    JOB_CANCELLED."""
    now = utcnow()
    values: dict = {"lease_expires_at": now + dt.timedelta(seconds=lease_s), "heartbeat_at": now}
    with registry.session() as session:
        before = session.scalar(select(Job.step).where(Job.id == job_id))
        if step is not None:
            values["step"] = step
        renewed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.lease_owner == owner)
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if renewed != 1:
            raise _not_held(session, job_id, owner)
        if step is not None and step != before:
            audit.record(session, owner, "job.step", str(job_id), step=step)


def finish(
    registry: Registry,
    job_id: int,
    owner: str,
    state: str,
    result: dict | None = None,
    code: str = "",
    message: str = "",
) -> None:
    """End the job (done, failed or gated); only its holder may."""
    if state not in ("done", "failed", "gated"):
        raise ValueError(f"a job is finished as done, failed or gated, not {state}")
    now = utcnow()
    with registry.session() as session:
        ended = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.lease_owner == owner)
            .values(
                state=state,
                result=result or {},
                error_code=code,
                error_message=message,
                lease_owner="",
                lease_expires_at=None,
                heartbeat_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if ended != 1:
            raise _not_held(session, job_id, owner)
        audit.record(session, owner, f"job.{state}", str(job_id), code=code)


def release(registry: Registry, job_id: int, owner: str, code: str, message: str) -> str:
    """The holder gives the job up after a crash: queued again while attempts remain, else failed with ``code``.
    Returns the new state."""
    now = utcnow()
    with registry.session() as session:
        job = session.get(Job, job_id, populate_existing=True)
        if job is None or job.state != "running" or job.lease_owner != owner:
            raise _not_held(session, job_id, owner)
        state = "queued" if job.attempts < job.max_attempts else "failed"
        ended = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "running", Job.lease_owner == owner)
            .values(
                state=state,
                error_code=code,
                error_message=message,
                lease_owner="",
                lease_expires_at=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if ended != 1:
            raise _not_held(session, job_id, owner)
        audit.record(session, owner, f"job.{state}", str(job_id), code=code, attempt=job.attempts)
        return state


def due(registry: Registry, now: dt.datetime | None = None) -> list[int]:
    """Jobs to (re)dispatch: queued ones, and running ones whose lease ran out (their worker died)."""
    now = now or utcnow()
    with registry.session() as session:
        return list(
            session.scalars(
                select(Job.id)
                .where(or_(Job.state == "queued", and_(Job.state == "running", Job.lease_expires_at < now)))
                .order_by(Job.id)
            )
        )


def retry(registry: Registry, job_id: int, actor: str) -> Job:
    """A failed, gated or cancelled job is queued again with its attempts reset (the caller dispatches it)."""
    with registry.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise BarFedError("UNKNOWN_JOB", f"there is no job {job_id}; `barfed coordinator jobs list` shows them.")
        changed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(("failed", "gated", "cancelled")))
            .values(state="queued", attempts=0, lease_owner="", lease_expires_at=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            raise BarFedError(
                "JOB_NOT_RETRYABLE", f"job {job_id} is {job.state}; only failed, gated or cancelled jobs are retried."
            )
        audit.record(session, actor, "job.retry", str(job_id), was=job.state)
        return session.get(Job, job_id, populate_existing=True)


def cancel(registry: Registry, job_id: int, actor: str) -> Job:
    """A queued or running job is cancelled; a running holder learns it at its next heartbeat and stops."""
    with registry.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise BarFedError("UNKNOWN_JOB", f"there is no job {job_id}; `barfed coordinator jobs list` shows them.")
        changed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_(ACTIVE))
            .values(state="cancelled", lease_expires_at=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            raise BarFedError("JOB_NOT_ACTIVE", f"job {job_id} is {job.state} already; only active jobs are cancelled.")
        audit.record(session, actor, "job.cancelled", str(job_id), was=job.state)
        return session.get(Job, job_id, populate_existing=True)
