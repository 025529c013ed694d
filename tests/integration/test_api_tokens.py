"""API tokens: 256 random bits shown once, kept only as their SHA-256; expired and revoked ones are refused."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from sqlalchemy import text

from coordinator.state import tokens
from protocol.errors import BarFedError

pytestmark = pytest.mark.integration


def test_a_token_is_stored_only_as_its_hash(world):
    token, row = tokens.create(world.registry, "auditor", "test-admin", label="dashboard")
    assert token.startswith(tokens.PREFIX) and len(token) - len(tokens.PREFIX) >= 43  # 32 bytes, base64url
    with world.registry.session() as session:
        stored = session.execute(text("SELECT * FROM api_tokens WHERE id = :id"), {"id": row.id}).mappings().one()
    assert stored["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in str(value) for value in stored.values()), "the token itself must never be stored"
    assert tokens.authenticate(world.registry, token).role == "auditor"


def test_expired_and_revoked_tokens_are_refused(world):
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    expiring, _row = tokens.create(world.registry, "operator", "test-admin", expires_at=soon)
    with pytest.raises(BarFedError) as err:
        tokens.create(world.registry, "operator", "test-admin", expires_at=soon - dt.timedelta(hours=1))
    assert err.value.code == "BAD_EXPIRY"
    revoked, row = tokens.create(world.registry, "admin", "test-admin")
    tokens.revoke(world.registry, row.id, "test-admin")
    with pytest.raises(BarFedError) as err:
        tokens.authenticate(world.registry, revoked)
    assert err.value.code == "TOKEN_REVOKED"
    with world.registry.session() as session:
        session.execute(
            text("UPDATE api_tokens SET expires_at = :past WHERE token_sha256 = :digest"),
            {"past": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1), "digest": tokens.token_hash(expiring)},
        )
    with pytest.raises(BarFedError) as err:
        tokens.authenticate(world.registry, expiring)
    assert err.value.code == "TOKEN_EXPIRED"
    with pytest.raises(BarFedError) as err:
        tokens.authenticate(world.registry, "bft_" + "x" * 43)
    assert err.value.code == "UNKNOWN_TOKEN"
