"""Jobs (verifications and release builds) as `barfed coordinator jobs …` shows and drives them: list, show,
retry (queued again and dispatched now), cancel. Admins and operators change; auditors read."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from coordinator.api.deps import READ_ALL, CurrentPrincipal, CurrentRuntime, allow, dispatch
from coordinator.api.fields import INT32, FromRow, JobIdPath, Limit
from coordinator.state import jobs as store
from coordinator.state.models import JOB_STATES

router = APIRouter(tags=["jobs"])
CHANGERS = ("admin", "operator")


class JobOut(FromRow):
    id: int
    kind: str
    key: str
    state: str
    attempts: int
    max_attempts: int
    step: str
    lease_owner: str
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    params: dict
    result: dict
    error_code: str
    error_message: str
    created_at: dt.datetime
    updated_at: dt.datetime


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
    return [JobOut.model_validate(job) for job in found]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job with its lease and result", **allow(*READ_ALL))
def show_job(job_id: JobIdPath, runtime: CurrentRuntime) -> JobOut:
    return JobOut.model_validate(store.get(runtime.registry, job_id))


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Queue a failed, gated or cancelled job again (attempts start over) and dispatch it",
    **allow(*CHANGERS),
)
def retry(job_id: JobIdPath, request: Request, runtime: CurrentRuntime, principal: CurrentPrincipal) -> JobOut:
    job = store.retry(runtime.registry, job_id, actor=principal.actor)
    dispatch(request, job.id)
    return JobOut.model_validate(job)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued or running job (a running one stops at its next heartbeat)",
    **allow(*CHANGERS),
)
def cancel(job_id: JobIdPath, runtime: CurrentRuntime, principal: CurrentPrincipal) -> JobOut:
    return JobOut.model_validate(store.cancel(runtime.registry, job_id, actor=principal.actor))
