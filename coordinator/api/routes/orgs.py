"""Organizations and their enrollments: invite, list, show, assign domains, revoke; approve or reject enrollments.

The same functions as `barfed coordinator orgs …` and `enrollments …` (coordinator/enrollment.py). Only admins
change anything here; operators and auditors read.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from pydantic import BaseModel, Field

from coordinator import enrollment
from coordinator.api.deps import READ_ALL, CurrentPrincipal, CurrentRuntime, allow
from coordinator.api.fields import MAX_DOMAINS, DomainName, FromRow, IdPath, OrgId, OrgPath, ReasonBody, Strict
from coordinator.state import orgs as state

router = APIRouter(tags=["organizations"])


KNOWN = "each a domain the coordinator knows (`barfed model domains`; UNKNOWN_DOMAIN, 400, otherwise)"


def _known(schema: dict) -> None:
    """The document lists the known domains, read when it is generated (bar_model registers them at import)."""
    schema["items"]["enum"] = enrollment.known_domains()


class InviteBody(Strict):
    org: OrgId
    domains: list[DomainName] = Field(
        min_length=1,
        max_length=MAX_DOMAINS,
        description=f"the domains it may publish, {KNOWN}",
        json_schema_extra=_known,
    )


class Invitation(BaseModel):
    org: str
    domains: list[str]
    token: str = Field(description="the one-time enrollment token: shown only now; hand it to the org out of band")


class Org(BaseModel):
    id: str
    status: str = Field(description="invited, active or revoked")
    domains: list[str]
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class DomainsBody(Strict):
    domains: list[DomainName] = Field(min_length=1, max_length=MAX_DOMAINS, description=KNOWN, json_schema_extra=_known)


class EnrollmentOut(FromRow):
    id: str
    org: str = Field(validation_alias="org_id")
    state: str = Field(description="invited, pending, approved or rejected")
    contact: str
    reason: str
    created_at: dt.datetime


def _org(org, domains: list[str]) -> Org:
    return Org(id=org.id, status=org.status, domains=domains, created_at=org.created_at, revoked_at=org.revoked_at)


@router.post("/orgs", status_code=201, response_model=Invitation, summary="Invite an organization", **allow("admin"))
def invite(body: InviteBody, runtime: CurrentRuntime, principal: CurrentPrincipal) -> Invitation:
    enrollment.check_known_domains(body.domains)
    token = enrollment.invite(runtime.registry, body.org, body.domains, actor=principal.actor)
    _, domains = state.get_org(runtime.registry, body.org)
    return Invitation(org=body.org, domains=domains, token=token)


@router.get("/orgs", response_model=list[Org], summary="Organizations with status and domains", **allow(*READ_ALL))
def list_orgs(runtime: CurrentRuntime) -> list[Org]:
    return [_org(org, domains) for org, domains in state.list_orgs(runtime.registry)]


@router.get("/orgs/{org}", response_model=Org, summary="One organization", **allow(*READ_ALL))
def show_org(org: OrgPath, runtime: CurrentRuntime) -> Org:
    return _org(*state.get_org(runtime.registry, org))


@router.post(
    "/orgs/{org}/domains", response_model=Org, summary="Let an organization publish more domains", **allow("admin")
)
def assign_domains(org: OrgPath, body: DomainsBody, runtime: CurrentRuntime, principal: CurrentPrincipal) -> Org:
    enrollment.check_known_domains(body.domains)
    state.assign_domains(runtime.registry, org, body.domains, principal.actor)
    return _org(*state.get_org(runtime.registry, org))


@router.post(
    "/orgs/{org}/revoke",
    response_model=Org,
    summary="Revoke an organization: its certificates, signing keys and API tokens stop working at once",
    **allow("admin"),
)
def revoke(org: OrgPath, body: ReasonBody, runtime: CurrentRuntime, principal: CurrentPrincipal) -> Org:
    enrollment.revoke(runtime.registry, org, body.reason, actor=principal.actor)
    return _org(*state.get_org(runtime.registry, org))


@router.get("/enrollments", response_model=list[EnrollmentOut], summary="Enrollments, oldest first", **allow(*READ_ALL))
def list_enrollments(runtime: CurrentRuntime) -> list[EnrollmentOut]:
    return [EnrollmentOut.model_validate(row) for row in state.list_enrollments(runtime.registry)]


@router.post(
    "/enrollments/{enrollment_id}/approve",
    response_model=EnrollmentOut,
    summary="Approve a pending enrollment: the CA issues the org's certificate",
    **allow("admin"),
)
def approve(enrollment_id: IdPath, runtime: CurrentRuntime, principal: CurrentPrincipal) -> EnrollmentOut:
    approved = enrollment.approve(runtime.registry, runtime.keys, enrollment_id, actor=principal.actor)
    return EnrollmentOut.model_validate(approved)


@router.post(
    "/enrollments/{enrollment_id}/reject",
    response_model=EnrollmentOut,
    summary="Reject a pending enrollment",
    **allow("admin"),
)
def reject(
    enrollment_id: IdPath, body: ReasonBody, runtime: CurrentRuntime, principal: CurrentPrincipal
) -> EnrollmentOut:
    enrollment.reject(runtime.registry, enrollment_id, body.reason, actor=principal.actor)
    return EnrollmentOut.model_validate(enrollment.get_enrollment(runtime.registry, enrollment_id)[0])
