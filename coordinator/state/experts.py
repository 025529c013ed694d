"""Expert versions and submissions as the registry holds them, and the lifecycle an operator drives after
acceptance (quarantine, deprecate, opt out, restore)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Expert, Submission
from protocol.errors import BarFedError

TRANSITIONS = {
    "ACCEPTED": {"QUARANTINED", "DEPRECATED", "OPTED_OUT"},
    "QUARANTINED": {"ACCEPTED", "DEPRECATED", "OPTED_OUT"},
    "DEPRECATED": {"OPTED_OUT"},
    "OPTED_OUT": set(),
}


def set_expert_state(registry: Registry, domain: str, version: int, state: str, reason: str, actor: str) -> Expert:
    """Admin lifecycle: quarantine, deprecate, opt out (or release from quarantine)."""
    with registry.session() as session:
        expert = session.scalar(select(Expert).where(Expert.domain == domain, Expert.version == version))
        if expert is None:
            raise BarFedError("UNKNOWN_EXPERT", f"there is no accepted {domain} v{version}.")
        if state not in TRANSITIONS.get(expert.status, set()):
            raise BarFedError("BAD_TRANSITION", f"{domain} v{version} is {expert.status}; it cannot become {state}.")
        previous, expert.status, expert.reason = expert.status, state, reason[:1000]
        audit.record(
            session, actor, "expert.state", f"{domain}/v{version}", previous=previous, state=state, reason=reason[:1000]
        )
        return expert


def list_experts(registry: Registry) -> list[Expert]:
    with registry.session() as session:
        return list(session.scalars(select(Expert).order_by(Expert.domain, Expert.version)))


def rejected_submissions(registry: Registry) -> list[Submission]:
    with registry.session() as session:
        return list(session.scalars(select(Submission).where(Submission.state == "REJECTED")))


def submission_of(registry: Registry, org_id: str, submission_id: str) -> Submission:
    """An organization's own submission; another's is as unknown as one that does not exist."""
    with registry.session() as session:
        row = session.get(Submission, submission_id)
    if row is None or row.org_id != org_id:
        raise BarFedError("UNKNOWN_SUBMISSION", f"there is no submission {submission_id} for {org_id}.")
    return row


def expert_status_of(registry: Registry, submission_id: str) -> str:
    """The status now of the expert version a submission became (QUARANTINED, …); "" when it became none."""
    with registry.session() as session:
        return session.scalar(select(Expert.status).where(Expert.submission_id == submission_id)) or ""


EXPERT_STATES = tuple(TRANSITIONS)
SUBMISSION_STATES = ("RECEIVED", "VERIFYING", "ACCEPTED", "REJECTED")


def _filtered(query, model, state_column, domain, org, state, since):
    """The filters experts and submissions share: each one given narrows the query."""
    for column, value in ((model.domain, domain), (model.org_id, org), (state_column, state)):
        if value is not None:
            query = query.where(column == value)
    return query if since is None else query.where(model.created_at >= since)


def find_experts(
    registry: Registry,
    *,
    domain: str | None = None,
    org: str | None = None,
    state: str | None = None,
    since: dt.datetime | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[Expert]:
    """Expert versions matching every filter given, oldest first (rows are never deleted, so an offset names the
    same place on the next call)."""
    query = select(Expert).order_by(Expert.id)
    query = _filtered(query, Expert, Expert.status, domain, org, state, since)
    with registry.session() as session:
        return list(session.scalars(query.offset(offset).limit(limit)))


def find_submissions(
    registry: Registry,
    *,
    domain: str | None = None,
    org: str | None = None,
    state: str | None = None,
    since: dt.datetime | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[Submission]:
    """Submissions matching every filter given, oldest first (kept when rejected, never deleted)."""
    query = select(Submission).order_by(Submission.created_at, Submission.id)
    query = _filtered(query, Submission, Submission.state, domain, org, state, since)
    with registry.session() as session:
        return list(session.scalars(query.offset(offset).limit(limit)))


def get_expert(registry: Registry, domain: str, version: int) -> Expert:
    with registry.session() as session:
        expert = session.scalar(select(Expert).where(Expert.domain == domain, Expert.version == version))
    if expert is None:
        raise BarFedError("UNKNOWN_EXPERT", f"there is no accepted {domain} v{version}; list the experts to see them.")
    return expert


def get_submission(registry: Registry, submission_id: str) -> Submission:
    with registry.session() as session:
        row = session.get(Submission, submission_id)
    if row is None:
        raise BarFedError("UNKNOWN_SUBMISSION", f"there is no submission {submission_id}.")
    return row
