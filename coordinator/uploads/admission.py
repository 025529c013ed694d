"""Who may open which upload: domain ownership, newer versions only, per-organization quotas, disk reservation.

Every check here reads the registry inside the locked transaction that then inserts the session
(`coordinator.state.uploads.creating`), so no number of concurrent calls gets past a limit together.
Disk is reserved, not merely looked at: the bytes that open sessions have declared but not yet written count
as used, so two uploads can never both be promised the same free space, and the coordinator keeps
``min_free_bytes`` for itself (the registry and the blob store must never be what runs out of disk).
"""

from __future__ import annotations

from coordinator.settings import CoordinatorSettings
from coordinator.state.uploads import Creating
from coordinator.uploads.declaration import Declared
from protocol.errors import BarFedError

MAX_VERSION = 2**31 - 1  # the manifest's bound, and the registry's integer column


def check_version(version: int) -> None:
    if not 1 <= version <= MAX_VERSION:
        raise BarFedError("BAD_VERSION", f"versions run from 1 to {MAX_VERSION}; {version} is not one.")


def check_domain(tx: Creating, domain: str, version: int) -> None:
    if tx.domain_owner(domain) != tx.org_id:
        raise BarFedError(
            "DOMAIN_NOT_OWNED",
            f"organization {tx.org_id} may not publish domain {domain[:64]!r}; ask the operator.",
        )
    latest = tx.latest_version(domain)
    if version <= latest:
        raise BarFedError(
            "VERSION_NOT_NEWER",
            f"{domain} is already at version {latest}; submit version {latest + 1} or later.",
        )


def check_pending(pending: int, org_id: str, limits: CoordinatorSettings) -> None:
    if pending >= limits.max_pending_submissions_per_org:
        raise BarFedError(
            "TOO_MANY_PENDING",
            f"organization {org_id} has {pending} submissions awaiting verification; wait for their outcome.",
        )


def same_declaration(tx: Creating, domain: str, version: int, files: list[Declared]) -> str | None:
    """The open session with exactly this declaration, if any (a node that lost its session id gets it back)."""
    declared = {f.path: (f.size, f.sha256) for f in files}
    for upload, existing in tx.open_sessions():
        if (upload.domain, upload.version) == (domain, version) and existing == declared:
            return upload.id
    return None


def check_sessions(tx: Creating, limits: CoordinatorSettings) -> None:
    count = len(tx.open_sessions())
    if count >= limits.max_open_sessions_per_org:
        raise BarFedError(
            "TOO_MANY_SESSIONS",
            f"organization {tx.org_id} already has {count} open uploads; finish them or wait for them to expire.",
        )


def check_quota(tx: Creating, declared_bytes: int, limits: CoordinatorSettings) -> None:
    """One organization may hold at most ``org_quota_bytes`` (open reservations plus what it stores), so no
    organization can reserve the disk away from the others."""
    reserved, stored = tx.org_reserved_bytes(), tx.org_stored_bytes()
    if reserved + stored + declared_bytes > limits.org_quota_bytes:
        raise BarFedError(
            "ORG_QUOTA_EXCEEDED",
            f"organization {tx.org_id} would hold {reserved + stored + declared_bytes} bytes ({stored} stored, "
            f"{reserved} reserved by open uploads, {declared_bytes} declared now) against its quota of "
            f"{limits.org_quota_bytes} (org_quota_bytes); finish or abandon open uploads, or ask the operator.",
        )


def check_disk(tx: Creating, declared_bytes: int, free_bytes: int, limits: CoordinatorSettings) -> None:
    """Free space minus what open sessions may still write must cover this upload and ``min_free_bytes``."""
    reserved = tx.reserved_bytes()
    if free_bytes - reserved - declared_bytes < limits.min_free_bytes:
        pending = "wait for open uploads to finish or expire, or " if reserved else ""
        raise BarFedError(
            "INSUFFICIENT_STORAGE",
            f"the coordinator cannot reserve {declared_bytes} bytes now: {free_bytes} bytes free, {reserved} "
            f"reserved by open uploads, and min_free_bytes={limits.min_free_bytes} kept free; {pending}"
            "ask the operator to free disk space or lower min_free_bytes.",
        )
