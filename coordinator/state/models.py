"""The registry's tables (SQLAlchemy 2). The database is the single source of truth; schema changes go
through Alembic migrations in ``coordinator/state/migrations``.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A time as UTC: a naive one is taken to be UTC already, as the registry stores every time."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class UtcDateTime(TypeDecorator):
    """Every time column: stored as UTC, handed back aware. SQLite drops the zone of what it stores, PostgreSQL
    keeps it; with this type no caller has to know which database it reads, nor fix a naive time."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dt.datetime: UtcDateTime()}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="invited")  # invited, active, revoked
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Domain(Base):
    """Which organization may publish which domain."""

    __tablename__ = "domains"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)


class Enrollment(Base):
    __tablename__ = "enrollments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="invited")  # invited, pending, approved, rejected
    csr_pem: Mapped[str | None] = mapped_column(Text, default=None)
    contact: Mapped[str] = mapped_column(String(256), default="")
    certificate_pem: Mapped[str | None] = mapped_column(Text, default=None)
    reason: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Certificate(Base):
    """An issued client certificate; its public key is the org's pinned signing key."""

    __tablename__ = "certificates"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # decimal string: X.509 serials are 159-bit
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(80), unique=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    key_fingerprint: Mapped[str] = mapped_column(String(80), index=True)
    not_after: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class UploadSession(Base):
    __tablename__ = "upload_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    domain: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open, committed, expired
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    submission_id: Mapped[str | None] = mapped_column(String(36), default=None)


class UploadFile(Base):
    __tablename__ = "upload_files"

    session_id: Mapped[str] = mapped_column(ForeignKey("upload_sessions.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(200), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    committed: Mapped[int] = mapped_column(BigInteger, default=0)


class Submission(Base):
    """One committed package and what verification made of it (kept when rejected, without its bytes)."""

    __tablename__ = "submissions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    domain: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="RECEIVED")
    files: Mapped[dict] = mapped_column(JSON)  # path -> sha256 (blob digests)
    package_digest: Mapped[str] = mapped_column(String(64))  # sha256 of expert.json
    error_code: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Expert(Base):
    """An accepted expert version. Versions are immutable and increase per domain."""

    __tablename__ = "experts"
    __table_args__ = (UniqueConstraint("domain", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    domain: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    package_digest: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="ACCEPTED")  # + QUARANTINED, DEPRECATED, OPTED_OUT
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(Base):
    """A unit of work keyed by what it acts on; the row, not the broker, is the truth about it.

    A worker runs a job only while it holds the lease (``lease_owner`` until ``lease_expires_at``, renewed by
    heartbeats); a job whose lease ran out is taken over by the next worker, and ``attempts`` bounds how often.
    """

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # verify, build
    key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)  # JOB_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    step: Mapped[str] = mapped_column(String(32), default="")
    lease_owner: Mapped[str] = mapped_column(String(128), default="")
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    error_code: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# queued → running → done | failed | gated (a build the gate refused) | cancelled
JOB_STATES = ("queued", "running", "done", "failed", "gated", "cancelled")


class Release(Base):
    """A published release ``r<number>``; the row exists only once its directory is complete and signed."""

    __tablename__ = "releases"

    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    manifest_sha256: Mapped[str] = mapped_column(String(64))  # of release.json
    domains: Mapped[list] = mapped_column(JSON)
    experts: Mapped[list] = mapped_column(JSON, default=list)  # [{domain, version, org, package_digest}]
    eval: Mapped[dict] = mapped_column(JSON, default=dict)  # domain -> score
    retention: Mapped[dict] = mapped_column(JSON, default=dict)  # domain -> {expert, release, retention, difference}
    routing: Mapped[dict] = mapped_column(JSON, default=dict)  # domain -> {own_share, anchor_share, load}
    parent: Mapped[int | None] = mapped_column(Integer, default=None)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    forced_by: Mapped[str] = mapped_column(String(128), default="")  # who published past the gate
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReleaseClaim(Base):
    """The build job that holds release number ``number`` while it signs and publishes it: the lock on a number
    that workers on different machines (no shared directory to rename into) agree on. A claim whose job failed or
    was cancelled is taken over by the next build, so a failed build leaves no gap in the numbers."""

    __tablename__ = "release_claims"

    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    claimed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExpertScore(Base):
    """An expert's own score, evaluated alone (its package merged with the anchor only), kept so an unchanged expert
    is never scored again. The key holds everything the score depends on, so a cached score is the one a fresh
    evaluation would give, bit for bit: the package (its digest binds the anchor too), the problems, the threads
    and the evaluating code."""

    __tablename__ = "expert_scores"

    package_digest: Mapped[str] = mapped_column(String(80), primary_key=True)  # "anchor:<fingerprint>" for the anchor
    examples: Mapped[int] = mapped_column(Integer, primary_key=True)
    threads: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluator: Mapped[str] = mapped_column(String(64), primary_key=True)  # the project version that scored it
    domain: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float, default=None)  # the coordinator's held-out problems
    package_score: Mapped[float | None] = mapped_column(Float, default=None)  # the package's eval.jsonl
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Channel(Base):
    __tablename__ = "channels"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    release: Mapped[int] = mapped_column(ForeignKey("releases.number"))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ChannelMove(Base):
    """Every position a channel took, so a rollback knows where it was before."""

    __tablename__ = "channel_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32), index=True)
    release: Mapped[int] = mapped_column(ForeignKey("releases.number"))
    kind: Mapped[str] = mapped_column(String(16), default="move")  # move, rollback (pops the one before)
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Append-only, hash-chained log of every state change (triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)  # unique: the chain cannot fork
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class ApiToken(Base):
    """A bearer token of the REST API: only its hash is kept; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public handle, e.g. for `tokens revoke`
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin, operator, auditor, org
    org_id: Mapped[str | None] = mapped_column(ForeignKey("organizations.id"), default=None)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
