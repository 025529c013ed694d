"""The authorization matrix: every route of the REST API × every role (admin, operator, auditor, an org, another
org) and no, a malformed, an expired and a revoked token gets exactly its status from api_matrix.MATRIX; a refused
call changes no row of any table; an allowed change writes an audit entry naming the caller. On SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordinator.state.models import AuditEntry

from .api_matrix import CALLERS, MATRIX, routes_of, snapshot

pytestmark = pytest.mark.integration


def test_every_route_is_in_the_matrix(world):
    served = routes_of(world.app)
    missing = [route for route in served if route not in MATRIX]
    assert not missing, f"routes without an entry in tests/integration/api_matrix.py MATRIX: {missing}"
    stale = [route for route in MATRIX if route not in served]
    assert not stale, f"MATRIX entries for routes the app does not serve: {stale}"
    for route, entry in MATRIX.items():
        assert set(entry.expect) == set(CALLERS), f"{route}: expected statuses for {set(CALLERS) - set(entry.expect)}"


def _last_audit_id(registry) -> int:
    with registry.session() as session:
        return session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1)) or 0


def test_matrix(world):
    client = TestClient(world.app, raise_server_exceptions=False)
    wrong = []
    for route in routes_of(world.app):
        if route not in MATRIX:
            continue  # test_every_route_is_in_the_matrix names it
        method, _ = route.split(" ", 1)
        entry = MATRIX[route]
        for caller in CALLERS:
            call = entry.prepare(world)
            before, last_audit = snapshot(world.registry), _last_audit_id(world.registry)
            response = client.request(
                method, call.path, json=call.json, params=call.params, headers=world.headers[caller]
            )
            expected = entry.expect[caller]
            if response.status_code != expected:
                wrong.append(f"{route} as {caller}: {response.status_code} (expected {expected}) {response.text[:200]}")
                continue
            if response.status_code >= 400:
                if method != "HEAD":  # a HEAD answer has no body to carry the code
                    body = response.json()
                    assert set(body) == {"code", "message"} and body["code"] and body["message"], (route, caller, body)
                assert snapshot(world.registry) == before, f"{route} as {caller} was refused but changed the registry"
            elif entry.changes:
                with world.registry.session() as session:
                    actors = set(session.scalars(select(AuditEntry.actor).where(AuditEntry.id > last_audit)))
                assert world.actors[caller] in actors, f"{route} as {caller}: no audit entry names it ({actors})"
            else:
                assert snapshot(world.registry) == before, f"{route} as {caller} only reads but changed the registry"
    assert not wrong, "\n".join(wrong)


def test_refusals_say_what_to_do(world):
    """The codes of the bad tokens, distinct and stable."""
    client = TestClient(world.app)
    codes = {
        caller: client.get("/v1/jobs", headers=world.headers[caller]).json()["code"]
        for caller in ("anonymous", "malformed", "expired", "revoked", "org")
    }
    assert codes == {
        "anonymous": "NO_TOKEN",
        "malformed": "BAD_TOKEN",
        "expired": "TOKEN_EXPIRED",
        "revoked": "TOKEN_REVOKED",
        "org": "FORBIDDEN",
    }
    other = client.get(f"/v1/submissions/{world.submission}", headers=world.headers["other_org"])
    unknown = client.get("/v1/submissions/00000000-0000-0000-0000-000000000000", headers=world.headers["other_org"])
    assert other.json()["code"] == unknown.json()["code"] == "UNKNOWN_SUBMISSION"  # never its existence
    assert other.status_code == unknown.status_code == 404
