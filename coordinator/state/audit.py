"""The append-only, hash-chained audit log: every state change, who made it, and proof nothing was removed.

Each entry's hash covers its content and the previous entry's hash. Appends are serialised (an advisory
lock on PostgreSQL, an immediate write transaction on SQLite), ``prev_hash`` is unique so the chain could
not fork even if they were not, and the database refuses UPDATE and DELETE on the table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from coordinator.state.models import AuditEntry, as_utc, utcnow

GENESIS = "0" * 64


def _timestamp(value: dt.datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, at: dt.datetime, actor: str, action: str, subject: str, details: dict) -> str:
    body = json.dumps(
        {"at": _timestamp(at), "actor": actor, "action": action, "subject": subject, "details": details},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


AUDIT_LOCK_KEY = 0x6261726665640001  # pg_advisory_xact_lock key that serialises appends


def record(session: Session, actor: str, action: str, subject: str, **details) -> AuditEntry:
    """Append one entry in the caller's transaction (so the change and its record commit together)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY - 2**63})
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).first()
    prev_hash = last.hash if last else GENESIS
    at = utcnow()
    entry = AuditEntry(
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, at, actor, action, subject, details),
    )
    session.add(entry)
    session.flush()
    return entry


def verify_chain(session: Session) -> int:
    """Recompute every hash; return the number of entries, or raise ValueError at the first broken link."""
    prev_hash, count = GENESIS, 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        expected = entry_hash(prev_hash, entry.at, entry.actor, entry.action, entry.subject, entry.details)
        if entry.prev_hash != prev_hash or entry.hash != expected:
            raise ValueError(f"audit log entry {entry.id} does not follow from the one before it")
        prev_hash, count = entry.hash, count + 1
    return count


def verify(registry) -> int:
    """``verify_chain`` over the whole log in one read transaction."""
    with registry.session() as session:
        return verify_chain(session)


def entries(
    registry,
    *,
    actor: str | None = None,
    action: str | None = None,
    subject_prefix: str | None = None,
    since: dt.datetime | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries matching every filter given, oldest first (the log only grows, so an offset stays put)."""
    query = select(AuditEntry).order_by(AuditEntry.id).offset(offset).limit(limit)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if subject_prefix:
        query = query.where(AuditEntry.subject.startswith(subject_prefix, autoescape=True))
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    with registry.session() as session:
        return list(session.scalars(query))


def count(registry) -> int:
    with registry.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry))
