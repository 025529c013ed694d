"""The audit log: entries with filters and pages, and a verify call that recomputes the hash chain.

Both only read, so every reading role may call them: admins, auditors, and operators (on call, they need to see
who did what); org tokens may not.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from coordinator.api.deps import READ_ALL, CurrentRuntime, allow
from coordinator.api.fields import LINE, FromRow, Limit, Offset, Page, Since, page
from coordinator.state import audit as store

router = APIRouter(tags=["audit"])
Filter = Annotated[str | None, Query(min_length=1, max_length=256, pattern=LINE)]


class AuditEntryOut(FromRow):
    id: int
    at: dt.datetime
    actor: str
    action: str
    subject: str
    details: dict
    prev_hash: str
    hash: str


class ChainReport(BaseModel):
    intact: bool
    entries: int = Field(description="entries in the chain when intact; 0 when a link is broken")
    message: str


@router.get("/audit", response_model=Page[AuditEntryOut], summary="Audit entries, oldest first", **allow(*READ_ALL))
def list_entries(
    runtime: CurrentRuntime,
    actor: Filter = None,
    action: Filter = None,
    subject: Annotated[str | None, Query(max_length=256, pattern=LINE, description="subject prefix")] = None,
    since: Since = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> dict:
    rows = store.entries(
        runtime.registry,
        actor=actor,
        action=action,
        subject_prefix=subject,
        since=since,
        offset=offset,
        limit=limit + 1,
    )
    return page(rows, offset, limit, AuditEntryOut.model_validate)


@router.post(
    "/audit/verify",
    response_model=ChainReport,
    summary="Recompute the audit log's hash chain (reads only)",
    **allow(*READ_ALL),
)
def verify(runtime: CurrentRuntime) -> ChainReport:
    try:
        count = store.verify(runtime.registry)
    except ValueError as exc:
        return ChainReport(intact=False, entries=0, message=f"{exc}; the log was altered outside the coordinator.")
    return ChainReport(intact=True, entries=count, message=f"audit log intact: {count} entries")
