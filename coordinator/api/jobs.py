"""Jobs (verifications and release builds) as `barfed coordinator jobs …` shows and drives them: list, show,
retry (queued again and dispatched now), cancel. Admins and operators change; auditors read."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from coordinator.api.fields import INT32, JobIdPath, Limit, Timestamp
from coordinator.api.principals import READ_ALL, CurrentPrincipal, CurrentRuntime, allow
from coordinator.state import jobs as store
from coordinator.state.models import JOB_STATES

router = APIRouter(tags=["jobs"])
CHANGERS = ("admin", "operator")


class JobOut(BaseModel):
    id: int
    kind: str
    key: str
    state: str
    attempts: int
    max_attempts: int
    step: str
    lease_owner: str
    lease_expires_at: Timestamp | None
    heartbeat_at: Timestamp | None
    params: dict
    result: dict
    error_code: str
    error_message: str
    created_at: Timestamp
    updated_at: Timestamp


def job_out(job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        key=job.key,
        state=job.state,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        step=job.step,
        lease_owner=job.lease_owner,
        lease_expires_at=job.lease_expires_at,
        heartbeat_at=job.heartbeat_at,
        params=job.params,
        result=job.result,
        error_code=job.error_code,
        error_message=job.error_message,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.get("/jobs", response_model=list[JobOut], summary="Jobs, newest first", **allow(*READ_ALL))
def list_jobs(
    runtime: CurrentRuntime,
    kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$", description="verify or build")] = None,
    state: Annotated[Literal[JOB_STATES] | None, Query()] = None,  # type: ignore[valid-type]
    limit: Limit = 100,
    before: Annotated[
        int | None, Query(ge=1, le=INT32, description="only jobs older than this id: the last id of the previous page")
    ] = None,
) -> list[JobOut]:
    found = store.list_jobs(runtime.registry, kind=kind, state=state, limit=limit, before=before)
    return [job_out(job) for job in found]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job with its lease and result", **allow(*READ_ALL))
def show_job(job_id: JobIdPath, runtime: CurrentRuntime) -> JobOut:
    return job_out(store.get(runtime.registry, job_id))


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Queue a failed, gated or cancelled job again (attempts start over) and dispatch it",
    **allow(*CHANGERS),
)
def retry(job_id: JobIdPath, request: Request, runtime: CurrentRuntime, principal: CurrentPrincipal) -> JobOut:
    from coordinator.api.app import dispatch  # app.py includes this router

    job = store.retry(runtime.registry, job_id, actor=principal.actor)
    dispatch(request.app, job.id)
    return job_out(job)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued or running job (a running one stops at its next heartbeat)",
    **allow(*CHANGERS),
)
def cancel(job_id: JobIdPath, runtime: CurrentRuntime, principal: CurrentPrincipal) -> JobOut:
    return job_out(store.cancel(runtime.registry, job_id, actor=principal.actor))
