"""Bearer tokens of the REST API: 256 random bits shown once, kept only as a SHA-256, bound to a role (and to one
organization for the ``org`` role), with an optional expiry; revocable; their last use is recorded."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select, update

from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import ApiToken, Organization, as_utc, utcnow
from protocol.errors import BarFedError

ROLES = ("admin", "operator", "auditor", "org")
PREFIX = "bft_"
LAST_USE_RESOLUTION = dt.timedelta(minutes=1)  # a busy token writes its last use at most once a minute


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    registry: Registry,
    role: str,
    actor: str,
    *,
    org_id: str | None = None,
    expires_at: dt.datetime | None = None,
    label: str = "",
) -> tuple[str, ApiToken]:
    """A new token and its row; the token is returned here and never again."""
    if role not in ROLES:
        raise BarFedError("BAD_ROLE", f"role must be one of {', '.join(ROLES)}, not {role!r}.")
    if (role == "org") != (org_id is not None):
        raise BarFedError("BAD_ROLE", "an org token needs --org, and only an org token has one.")
    if expires_at is not None and as_utc(expires_at) <= utcnow():
        raise BarFedError("BAD_EXPIRY", "the expiry is in the past; give a time in the future.")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=secrets.token_hex(6),
        token_sha256=token_hash(token),
        role=role,
        org_id=org_id,
        label=label[:128],
        created_by=actor,
        expires_at=expires_at,
    )
    with registry.session() as session:
        org = session.get(Organization, org_id) if org_id is not None else None
        if org_id is not None and org is None:
            raise BarFedError("UNKNOWN_ORG", f"there is no organization {org_id!r}; invite it first.")
        if org is not None and org.status == "revoked":
            raise BarFedError("ORG_REVOKED", f"organization {org_id} was revoked; it gets no new tokens.")
        session.add(row)
        audit.record(session, actor, "token.create", f"token/{row.id}", role=role, org=org_id, label=row.label)
    return token, row


def authenticate(registry: Registry, token: str) -> ApiToken:
    """The live token row for ``token``, or UNAUTHENTICATED; records its last use."""
    if not token.startswith(PREFIX) or len(token) > 128:
        raise BarFedError("BAD_TOKEN", "that is not a BAR Federation API token; create one with `tokens create`.")
    now = utcnow()
    with registry.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == token_hash(token)))
        if row is None:
            raise BarFedError("UNKNOWN_TOKEN", "this token is not known to the coordinator; ask for a new one.")
        if row.revoked_at is not None:
            raise BarFedError("TOKEN_REVOKED", "this token was revoked; ask the coordinator's admin for a new one.")
        if row.expires_at is not None and row.expires_at <= now:
            raise BarFedError("TOKEN_EXPIRED", "this token has expired; ask the coordinator's admin for a new one.")
        if row.org_id is not None:
            org = session.get(Organization, row.org_id)
            if org is None or org.status == "revoked":
                raise BarFedError("ORG_REVOKED", f"organization {row.org_id} was revoked; its tokens stop working.")
        if row.last_used_at is None or now - row.last_used_at >= LAST_USE_RESOLUTION:
            session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        return row


def list_tokens(registry: Registry) -> list[ApiToken]:
    with registry.session() as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke(registry: Registry, token_id: str, actor: str) -> ApiToken:
    with registry.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise BarFedError("UNKNOWN_TOKEN", f"there is no token {token_id!r}; `tokens list` shows them.")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            audit.record(session, actor, "token.revoke", f"token/{row.id}", role=row.role, org=row.org_id)
        return row
