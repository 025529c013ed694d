"""Experts and submissions: lists with filters and pages, one with its verification report, and the lifecycle
after acceptance (quarantine, deprecate, opt out; `set_expert_state`, as `barfed coordinator experts set-state`).

An org token sees only its own organization's experts and submissions: another's are as unknown as ones that do
not exist (404), and a list filtered by another org is empty. Admins and operators change; auditors read.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from coordinator.api.deps import READ_ALL, CurrentPrincipal, CurrentRuntime, Principal, allow
from coordinator.api.fields import (
    DomainPath,
    DomainQuery,
    FromRow,
    IdPath,
    Limit,
    Offset,
    OrgQuery,
    Page,
    ReasonBody,
    Since,
    VersionPath,
    page,
)
from coordinator.state import experts as store
from protocol.errors import BarFedError

router = APIRouter(tags=["experts"])
READERS = (*READ_ALL, "org")
CHANGERS = ("admin", "operator")


class ExpertOut(FromRow):
    domain: str
    version: int
    org: str = Field(validation_alias="org_id")
    status: str = Field(description="ACCEPTED, QUARANTINED, DEPRECATED or OPTED_OUT")
    reason: str
    package_digest: str = Field(description="sha256 of the package's expert.json")
    submission_id: str
    files: dict[str, str] = Field(description="path → sha256")
    created_at: dt.datetime


class SubmissionOut(FromRow):
    id: str
    org: str = Field(validation_alias="org_id")
    domain: str
    version: int
    state: str = Field(description="RECEIVED, VERIFYING, ACCEPTED or REJECTED")
    created_at: dt.datetime
    updated_at: dt.datetime


class VerificationReport(BaseModel):
    state: str
    error_code: str = Field(description="the stable code a rejection carries; empty otherwise")
    message: str = Field(description="what the check found and what to do")
    files: dict[str, str] = Field(description="path → sha256 of the package's files")


class SubmissionDetail(SubmissionOut):
    package_digest: str
    report: VerificationReport


def _org_filter(principal: Principal, org: str | None) -> tuple[str | None, bool]:
    """The org a list is limited to, and whether the caller asked for one it may not see (then: nothing)."""
    if principal.role != "org":
        return org, False
    return principal.org_id, org is not None and org != principal.org_id


@router.get("/experts", response_model=Page[ExpertOut], summary="Expert versions, oldest first", **allow(*READERS))
def list_experts(
    runtime: CurrentRuntime,
    principal: CurrentPrincipal,
    domain: DomainQuery = None,
    org: OrgQuery = None,
    state: Annotated[Literal[store.EXPERT_STATES] | None, Query()] = None,  # type: ignore[valid-type]
    since: Since = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> dict:
    org, hidden = _org_filter(principal, org)
    if hidden:
        return {"items": [], "next_offset": None}
    rows = store.find_experts(
        runtime.registry, domain=domain, org=org, state=state, since=since, offset=offset, limit=limit + 1
    )
    return page(rows, offset, limit, ExpertOut.model_validate)


@router.get("/experts/{domain}/{version}", response_model=ExpertOut, summary="One expert version", **allow(*READERS))
def show_expert(domain: DomainPath, version: VersionPath, runtime: CurrentRuntime, principal: CurrentPrincipal):
    expert = store.get_expert(runtime.registry, domain, version)
    if not principal.may_see_org(expert.org_id):
        raise BarFedError("UNKNOWN_EXPERT", f"there is no accepted {domain} v{version}; list the experts to see them.")
    return ExpertOut.model_validate(expert)


def _set_state(target: str):
    def change(
        domain: DomainPath, version: VersionPath, body: ReasonBody, runtime: CurrentRuntime, principal: CurrentPrincipal
    ) -> ExpertOut:
        expert = store.set_expert_state(runtime.registry, domain, version, target, body.reason, actor=principal.actor)
        return ExpertOut.model_validate(expert)

    return change


for _action, _target, _what in (
    ("quarantine", "QUARANTINED", "Quarantine an expert version: no release takes it until it is ACCEPTED again"),
    ("deprecate", "DEPRECATED", "Deprecate an expert version: no later release takes it"),
    ("opt-out", "OPTED_OUT", "Opt an expert version out: the next release leaves it out, for good"),
):
    router.add_api_route(
        f"/experts/{{domain}}/{{version}}/{_action}",
        _set_state(_target),
        methods=["POST"],
        response_model=ExpertOut,
        summary=_what,
        name=f"expert_{_action.replace('-', '_')}",
        **allow(*CHANGERS),
    )


@router.get("/submissions", response_model=Page[SubmissionOut], summary="Submissions, oldest first", **allow(*READERS))
def list_submissions(
    runtime: CurrentRuntime,
    principal: CurrentPrincipal,
    domain: DomainQuery = None,
    org: OrgQuery = None,
    state: Annotated[Literal[store.SUBMISSION_STATES] | None, Query()] = None,  # type: ignore[valid-type]
    since: Since = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> dict:
    org, hidden = _org_filter(principal, org)
    if hidden:
        return {"items": [], "next_offset": None}
    rows = store.find_submissions(
        runtime.registry, domain=domain, org=org, state=state, since=since, offset=offset, limit=limit + 1
    )
    return page(rows, offset, limit, SubmissionOut.model_validate)


@router.get(
    "/submissions/{submission_id}",
    response_model=SubmissionDetail,
    summary="One submission with its verification report",
    **allow(*READERS),
)
def show_submission(submission_id: IdPath, runtime: CurrentRuntime, principal: CurrentPrincipal) -> SubmissionDetail:
    if principal.role == "org":
        row = store.submission_of(runtime.registry, principal.org_id, submission_id)  # another org's: unknown
    else:
        row = store.get_submission(runtime.registry, submission_id)
    report = VerificationReport(state=row.state, error_code=row.error_code, message=row.message, files=row.files)
    summary = SubmissionOut.model_validate(row).model_dump()
    return SubmissionDetail(**summary, package_digest=row.package_digest, report=report)
