"""Releases, channels and the experts a release build may take: the registry's SQL for the release side.

A release row is written only after its directory is complete, signed and renamed into place, in the same
transaction that moves ``latest`` (and ``stable`` the first time) and records the audit entry, so whoever
lists releases never sees one that is not all there. That transaction also re-reads the state of every expert the
release holds (its plan was made long before) and refuses it unless all are still ACCEPTED.
"""

from __future__ import annotations

import re

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import AuditEntry, Channel, ChannelMove, Expert, Job, Release, ReleaseClaim, utcnow
from protocol.errors import BarFedError

CHANNEL_NAME = r"^[a-z][a-z0-9-]{0,31}$"
COMMIT_ID = r"[0-9a-f]{40}"
AUTO_CHANNELS = ("latest",)  # moved by every publish
FIRST_CHANNELS = ("stable",)  # set by the first publish, afterwards only by promote


def expert_rows(registry: Registry) -> list[Expert]:
    with registry.session() as session:
        return list(session.scalars(select(Expert).order_by(Expert.domain, Expert.version)))


def latest_release(registry: Registry) -> Release | None:
    with registry.session() as session:
        return session.scalars(select(Release).order_by(Release.number.desc()).limit(1)).first()


def get_release(registry: Registry, number: int) -> Release:
    with registry.session() as session:
        release = session.get(Release, number)
    if release is None:
        raise BarFedError("UNKNOWN_RELEASE", f"there is no release r{number}; `barfed coordinator releases list`.")
    return release


def newest_holding(registry: Registry, domain: str, version: int, look_back: int = 100) -> Release | None:
    """The newest of the last ``look_back`` releases that holds this expert version; None when none does."""
    with registry.session() as session:
        for release in session.scalars(select(Release).order_by(Release.number.desc()).limit(look_back)):
            if any(e["domain"] == domain and e["version"] == version for e in release.experts):
                return release
    return None


def list_releases(registry: Registry, after: int = 0) -> list[Release]:
    with registry.session() as session:
        return list(session.scalars(select(Release).where(Release.number > after).order_by(Release.number)))


def announcements(registry: Registry, after: int, channel: str = "") -> tuple[list[Release], dict[str, int]]:
    """Releases newer than ``after`` (or, with ``channel``, the one it points at) and every channel's position,
    read in one transaction so a release and the channels its publish moved are seen together."""
    with registry.session() as session:
        positions = {row.name: row.release for row in session.scalars(select(Channel))}
        if channel:
            number = positions.get(channel)
            found = [session.get(Release, number)] if number is not None else []
        else:
            found = list(session.scalars(select(Release).where(Release.number > after).order_by(Release.number)))
        return found, positions


def channels(registry: Registry) -> dict[str, int]:
    with registry.session() as session:
        return {row.name: row.release for row in session.scalars(select(Channel).order_by(Channel.name))}


def commit_id(release: Release) -> str:
    """The release's stable 40-hex id (what Hub clients take for a commit): the start of release.json's sha256,
    which differs between any two releases since release.json names the release."""
    return release.manifest_sha256[:40]


def resolve(registry: Registry, name: str) -> Release:
    """``rN``, ``N``, a channel name or a release's commit id → the release it names."""
    text = name.strip()
    digits = text[1:] if text[:1] == "r" else text
    if digits.isdigit() and len(digits) <= 9:
        return get_release(registry, int(digits))
    if re.fullmatch(COMMIT_ID, text):  # 40 characters: never a channel name (at most 32)
        with registry.session() as session:
            release = session.scalars(select(Release).where(Release.manifest_sha256.startswith(text))).first()
        if release is None:
            raise BarFedError("UNKNOWN_RELEASE", f"no release has the commit id {text}.")
        return release
    with registry.session() as session:
        channel = session.get(Channel, text)
    if channel is None:
        raise BarFedError("UNKNOWN_RELEASE", f"{name[:64]!r} is neither a release (rN), a channel nor a commit id.")
    return get_release(registry, channel.release)


def next_number(registry: Registry) -> int:
    with registry.session() as session:
        return (session.scalar(select(func.max(Release.number))) or 0) + 1


def claim_number(registry: Registry, number: int, job_id: int) -> bool:
    """Whether build job ``job_id`` holds release number ``number`` now: claimed by it before, claimed now, or taken
    over from a job that ended without publishing it (failed, cancelled); False when another holds it or it is
    published."""
    try:
        with registry.session() as session:
            if session.get(Release, number) is not None:
                return False
            claim = session.get(ReleaseClaim, number)
            if claim is None:
                session.add(ReleaseClaim(number=number, job_id=job_id))
                return True
            if claim.job_id == job_id:
                return True
            holder = session.get(Job, claim.job_id)
            if holder is not None and holder.state not in ("failed", "cancelled"):
                return False
            taken = session.execute(  # only if the claim is still the one read: two takers, one wins
                update(ReleaseClaim)
                .where(ReleaseClaim.number == number, ReleaseClaim.job_id == claim.job_id)
                .values(job_id=job_id, claimed_at=utcnow())
            )
            return taken.rowcount == 1
    except IntegrityError:  # another job inserted the same number first
        return False


def insert_release(registry: Registry, release: Release, actor: str) -> list[str]:
    """Record a published release and move its channels; returns the channels now pointing at it. Refused with
    EXPERT_NO_LONGER_ACCEPTED, and nothing written, when one of its experts is no longer ACCEPTED."""
    with registry.session() as session:
        if session.get(Release, release.number) is not None:
            raise BarFedError("RELEASE_EXISTS", f"r{release.number} is already published.")
        _still_accepted(session, release)
        session.add(release)
        session.flush()
        moved = list(AUTO_CHANNELS)
        for name in FIRST_CHANNELS:
            if session.get(Channel, name) is None:
                moved.append(name)
        for name in moved:
            _move(session, name, release.number, actor)
        audit.record(
            session,
            actor,
            "release.publish",
            f"r{release.number}",
            manifest_sha256=release.manifest_sha256,
            experts=[f"{e['domain']}/v{e['version']}" for e in release.experts],
            parent=release.parent,
            forced_by=release.forced_by,
            channels=moved,
        )
        return moved


def _still_accepted(session: Session, release: Release) -> None:
    """Every expert of ``release`` is ACCEPTED now, read FOR SHARE (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
    writers already): a quarantine either committed before and is seen here, or waits for this transaction."""
    for ref in release.experts:
        status = session.scalar(
            select(Expert.status)
            .where(Expert.domain == ref["domain"], Expert.version == ref["version"])
            .with_for_update(read=True)
        )
        if status != "ACCEPTED":
            raise BarFedError(
                "EXPERT_NO_LONGER_ACCEPTED",
                f"{ref['domain']} v{ref['version']} is {status or 'no longer in the registry'} now, so "
                f"r{release.number}, planned with it, was not published.",
            )


def _move(session: Session, name: str, number: int, actor: str, kind: str = "move") -> None:
    channel = session.get(Channel, name)
    if channel is None:
        session.add(Channel(name=name, release=number))
    else:
        channel.release = number
    session.add(ChannelMove(channel=name, release=number, actor=actor, kind=kind))


def _positions(session: Session, name: str) -> list[int]:
    """The channel's history as a stack: a move pushes, a rollback pops; the top is where it points."""
    stack: list[int] = []
    for move in session.scalars(select(ChannelMove).where(ChannelMove.channel == name).order_by(ChannelMove.id)):
        if move.kind == "rollback":
            stack.pop()
        else:
            stack.append(move.release)
    return stack


def move_channel(registry: Registry, name: str, number: int, actor: str, action: str = "channel.promote") -> int | None:
    """Point ``name`` at r``number``; returns the release it pointed at before. A channel already there is left
    alone (no move, no audit entry), so the next rollback still goes back to where it was before."""
    with registry.session() as session:
        if session.get(Release, number) is None:
            raise BarFedError("UNKNOWN_RELEASE", f"there is no release r{number}.")
        channel = session.get(Channel, name)
        previous = channel.release if channel else None
        if previous == number:
            return previous
        _move(session, name, number, actor)
        audit.record(session, actor, action, name, release=number, previous=previous)
        return previous


def rollback_channel(registry: Registry, name: str, actor: str) -> tuple[int, int]:
    """Move ``name`` back to where it pointed before its current position; returns (from, to)."""
    with registry.session() as session:
        channel = session.get(Channel, name)
        if channel is None:
            raise BarFedError("UNKNOWN_CHANNEL", f"there is no channel {name!r}.")
        stack = _positions(session, name)
        if len(stack) < 2:
            raise BarFedError("NOTHING_TO_ROLL_BACK", f"{name} has no earlier position to go back to.")
        current, target = stack[-1], stack[-2]
        _move(session, name, target, actor, kind="rollback")
        audit.record(session, actor, "channel.rollback", name, release=target, previous=current)
        return current, target


def channels_of(registry: Registry, number: int) -> list[str]:
    with registry.session() as session:
        return sorted(session.scalars(select(Channel.name).where(Channel.release == number)))


TRIGGER_ACTIONS = ("submission.accepted", "expert.state")


def last_trigger(registry: Registry) -> tuple[int, object] | None:
    """(audit id, time) of the newest change that calls for a new release: an expert accepted or withdrawn."""
    with registry.session() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action.in_(TRIGGER_ACTIONS)).order_by(AuditEntry.id.desc()).limit(1)
        ).first()
        return (entry.id, entry.at) if entry else None
