"""Upload sessions, their files and the submissions they become: the registry's SQL for the upload side.

Limits are checked and acted on in one transaction that first takes a lock, so concurrent calls can never
all see room for one more: the organization's row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serialises writers) for per-organization counts, and a transaction-scoped
advisory lock for the disk, which every organization's uploads share. Lock order is always organization,
then disk, then the audit chain, so two of these transactions can wait for each other but never deadlock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from coordinator.state import audit, jobs
from coordinator.state.db import Registry
from coordinator.state.models import (
    Domain,
    Expert,
    Organization,
    Submission,
    UploadFile,
    UploadSession,
    utcnow,
)

PENDING_STATES = ("RECEIVED", "VERIFYING")
DISK_LOCK_KEY = 0x6261726665640002  # pg_advisory_xact_lock key: reservations of staging disk


def lock_org(session: Session, org_id: str) -> Organization | None:
    """Hold the organization's row until the transaction ends: its limits are ours to check and change."""
    return session.scalars(select(Organization).where(Organization.id == org_id).with_for_update()).first()


def lock_disk(session: Session) -> None:
    """Serialise disk reservations across all organizations (SQLite: the write lock already does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DISK_LOCK_KEY - 2**63})


@dataclass
class Creating:
    """The transaction that opens an upload, under the organization's and the disk's locks."""

    session: Session
    org_id: str
    now: dt.datetime

    def domain_owner(self, domain: str) -> str | None:
        owner = self.session.get(Domain, domain)
        return owner.org_id if owner is not None else None

    def latest_version(self, domain: str) -> int:
        return self.session.scalar(select(func.max(Expert.version)).where(Expert.domain == domain)) or 0

    def pending_submissions(self) -> int:
        return pending_submissions(self.session, self.org_id)

    def open_sessions(self) -> list[tuple[UploadSession, dict[str, tuple[int, str]]]]:
        """The organization's unexpired open sessions, each with its declaration (path -> size, sha256)."""
        rows = self.session.scalars(
            select(UploadSession).where(UploadSession.org_id == self.org_id, UploadSession.state == "open")
        )
        found = []
        for row in rows:
            if row.expires_at > self.now:
                files = self.session.scalars(select(UploadFile).where(UploadFile.session_id == row.id))
                found.append((row, {f.path: (f.size, f.sha256) for f in files}))
        return found

    def reserved_bytes(self) -> int:
        """Bytes that every unexpired open session may still write (declared minus durably written)."""
        rows = self.session.execute(
            select(UploadSession.expires_at, func.sum(UploadFile.size - UploadFile.committed))
            .join(UploadFile, UploadFile.session_id == UploadSession.id)
            .where(UploadSession.state == "open")
            .group_by(UploadSession.id, UploadSession.expires_at)
        )
        return sum(int(outstanding) for expires_at, outstanding in rows if expires_at > self.now)

    def org_reserved_bytes(self) -> int:
        """Bytes this organization's unexpired open sessions may still write."""
        rows = self.session.execute(
            select(UploadSession.expires_at, func.sum(UploadFile.size - UploadFile.committed))
            .join(UploadFile, UploadFile.session_id == UploadSession.id)
            .where(UploadSession.state == "open", UploadSession.org_id == self.org_id)
            .group_by(UploadSession.id, UploadSession.expires_at)
        )
        return sum(int(outstanding) for expires_at, outstanding in rows if expires_at > self.now)

    def org_stored_bytes(self) -> int:
        """Bytes of this organization's committed uploads whose submission was not rejected (their blobs stay)."""
        return int(
            self.session.scalar(
                select(func.coalesce(func.sum(UploadFile.size), 0))
                .join(UploadSession, UploadFile.session_id == UploadSession.id)
                .join(Submission, Submission.id == UploadSession.submission_id)
                .where(
                    UploadSession.org_id == self.org_id,
                    UploadSession.state == "committed",
                    Submission.state != "REJECTED",
                )
            )
        )

    def insert(self, session_id: str, domain: str, version: int, expires_at, files: list[tuple[str, int, str]]):
        self.session.add(
            UploadSession(id=session_id, org_id=self.org_id, domain=domain, version=version, expires_at=expires_at)
        )
        self.session.flush()
        for path, size, sha256 in files:
            self.session.add(UploadFile(session_id=session_id, path=path, size=size, sha256=sha256))
        audit.record(
            self.session,
            self.org_id,
            "upload.create",
            session_id,
            domain=domain,
            version=version,
            files=len(files),
            bytes=sum(size for _path, size, _sha in files),
        )


@contextmanager
def creating(registry: Registry, org_id: str, now: dt.datetime) -> Iterator[Creating]:
    with registry.session() as session:
        lock_org(session, org_id)
        lock_disk(session)
        yield Creating(session, org_id, now)


def pending_submissions(session: Session, org_id: str) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Submission)
        .where(Submission.org_id == org_id, Submission.state.in_(PENDING_STATES))
    )


def count_pending(registry: Registry, org_id: str) -> int:
    with registry.session() as session:
        return pending_submissions(session, org_id)


def load(registry: Registry, session_id: str) -> tuple[UploadSession | None, list[UploadFile]]:
    with registry.session() as session:
        upload = session.get(UploadSession, session_id)
        if upload is None:
            return None, []
        files = session.scalars(
            select(UploadFile).where(UploadFile.session_id == session_id).order_by(UploadFile.path)
        ).all()
        return upload, list(files)


def record_durable(
    registry: Registry, session_id: str, lengths: dict[str, int], idle_s: int | None = None, ttl_s: int | None = None
) -> None:
    """Bytes of each file now fsynced to staging (what a resuming client may rely on); progress keeps the session
    alive for ``idle_s`` more seconds, never past ``ttl_s`` after its creation."""
    with registry.session() as session:
        for path, length in lengths.items():
            session.get(UploadFile, (session_id, path)).committed = length
        if idle_s is not None and ttl_s is not None:
            upload = session.get(UploadSession, session_id)
            now = utcnow()
            upload.expires_at = min(upload.created_at + dt.timedelta(seconds=ttl_s), now + dt.timedelta(seconds=idle_s))


@dataclass
class Committing:
    """The transaction that turns an upload into a submission, under the organization's lock."""

    session: Session
    org_id: str

    def pending_submissions(self) -> int:
        return pending_submissions(self.session, self.org_id)

    def insert(self, upload: UploadSession, submission_id: str, files: dict[str, str], package_digest: str) -> bool:
        """The submission, its verify job and the session's move to committed; False if it was closed meanwhile
        (the caller raises, which rolls the whole transaction back)."""
        self.session.add(
            Submission(
                id=submission_id,
                org_id=self.org_id,
                domain=upload.domain,
                version=upload.version,
                files=files,
                package_digest=package_digest,
            )
        )
        self.session.flush()
        changed = self.session.execute(
            update(UploadSession)
            .where(UploadSession.id == upload.id, UploadSession.state == "open")
            .values(state="committed", submission_id=submission_id)
        ).rowcount
        if changed != 1:
            return False
        jobs.ensure(self.session, "verify", submission_id)
        audit.record(
            self.session,
            self.org_id,
            "upload.commit",
            upload.id,
            submission=submission_id,
            domain=upload.domain,
            version=upload.version,
        )
        return True


@contextmanager
def committing(registry: Registry, org_id: str) -> Iterator[Committing]:
    with registry.session() as session:
        lock_org(session, org_id)
        yield Committing(session, org_id)


def close(registry: Registry, session_id: str, state: str, actor: str, action: str, **details) -> bool:
    """Move an open session to ``state`` and audit it; False when it was no longer open."""
    with registry.session() as session:
        changed = session.execute(
            update(UploadSession)
            .where(UploadSession.id == session_id, UploadSession.state == "open")
            .values(state=state)
        ).rowcount
        if changed:
            audit.record(session, actor, action, session_id, **details)
    return bool(changed)


def expired_open(registry: Registry, now: dt.datetime) -> list[str]:
    """Ids of open sessions past their expiry."""
    with registry.session() as session:
        return [
            s.id
            for s in session.scalars(select(UploadSession).where(UploadSession.state == "open"))
            if s.expires_at < now
        ]


def referenced_digests(registry: Registry) -> set[str]:
    """Blob digests something still needs: an expert, a submission not rejected, or an open upload's declaration."""
    with registry.session() as session:
        needed: set[str] = set()
        for files in session.scalars(select(Expert.files)):
            needed.update(files.values())
        for files in session.scalars(select(Submission.files).where(Submission.state != "REJECTED")):
            needed.update(files.values())
        needed.update(
            session.scalars(
                select(UploadFile.sha256)
                .join(UploadSession, UploadFile.session_id == UploadSession.id)
                .where(UploadSession.state == "open")
            )
        )
        return needed
