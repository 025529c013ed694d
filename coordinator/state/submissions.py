"""Verification's side of the registry: what a submission must be checked against, and its outcome.

The outcome commits in one transaction with the expert version it creates (or the rejection and the deletion
of the blobs only it used), so a crash leaves either nothing recorded, and the job runs again, or all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Domain, Expert, Submission, UploadFile, UploadSession
from protocol.errors import BarFedError

PENDING = ("RECEIVED", "VERIFYING")


def counts(registry: Registry) -> dict[str, int]:
    """How many submissions are in each state."""
    with registry.session() as session:
        return dict(session.execute(select(Submission.state, func.count()).group_by(Submission.state)).all())


@dataclass(frozen=True)
class Facts:
    """What the registry knows about a submission independently of its package."""

    org_id: str
    domain: str
    version: int
    owned_domains: set[str]
    latest_version: int  # highest accepted version of the domain (0 when none)
    files: dict[str, str]


def start(registry: Registry, submission_id: str) -> Facts | str:
    """Mark it VERIFYING and return its facts, or the state of a submission that is already decided."""
    with registry.session() as session:
        submission = session.get(Submission, submission_id)
        if submission is None:
            raise BarFedError("UNKNOWN_SUBMISSION", f"there is no submission {submission_id}.")
        if submission.state not in PENDING:
            return submission.state
        submission.state = "VERIFYING"
        audit.record(session, "coordinator", "submission.verify", submission_id)
        latest = session.scalar(select(func.max(Expert.version)).where(Expert.domain == submission.domain))
        return Facts(
            org_id=submission.org_id,
            domain=submission.domain,
            version=submission.version,
            owned_domains=set(session.scalars(select(Domain.name).where(Domain.org_id == submission.org_id))),
            latest_version=latest or 0,
            files=dict(submission.files),
        )


def finish(
    registry: Registry, submission_id: str, state: str, code: str, message: str, delete: Callable[[str], None]
) -> str:
    """Record the outcome unless another run already did; returns the state that stands. A rejected package's
    blobs that nothing else refers to are passed to ``delete`` inside the transaction (the caller holds the
    blob store's lock), so they are gone before anyone can see REJECTED."""
    with registry.session() as session:
        submission = session.get(Submission, submission_id, with_for_update=True, populate_existing=True)
        if submission is None:
            raise BarFedError("UNKNOWN_SUBMISSION", f"there is no submission {submission_id}.")
        if submission.state not in PENDING:
            return submission.state  # two runs raced (a takeover after a lost lease): the first one counts
        submission.state, submission.error_code, submission.message = state, code, message
        if state == "ACCEPTED":
            session.add(
                Expert(
                    submission_id=submission_id,
                    org_id=submission.org_id,
                    domain=submission.domain,
                    version=submission.version,
                    package_digest=submission.package_digest,
                    files=submission.files,
                )
            )
        audit.record(
            session,
            "coordinator",
            f"submission.{state.lower()}",
            submission_id,
            code=code,
            domain=submission.domain,
            version=submission.version,
        )
        if state == "REJECTED":
            for digest in set(submission.files.values()) - _referenced(session, submission.id):
                delete(digest)
    return state


def _referenced(session, rejected_id: str) -> set[str]:
    """Digests some other submission (accepted or pending) or an open upload still needs."""
    referenced: set[str] = set()
    for other in session.scalars(select(Submission).where(Submission.id != rejected_id)):
        if other.state != "REJECTED":
            referenced |= set(other.files.values())
    open_uploads = select(UploadSession.id).where(UploadSession.state == "open")
    referenced |= set(session.scalars(select(UploadFile.sha256).where(UploadFile.session_id.in_(open_uploads))))
    return referenced
