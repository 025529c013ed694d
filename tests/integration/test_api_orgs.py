"""Organizations over the REST API as an admin runs them: invite (the token enrolls a node), list, show, assign
domains, approve and reject enrollments, revoke (certificate, signing key and API tokens stop at once)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from coordinator import enrollment
from coordinator.state import tokens
from protocol import pki
from protocol.errors import BarFedError

from .api_matrix import ORG

pytestmark = pytest.mark.integration


def test_invite_enroll_approve(world):
    admin = TestClient(world.app, headers=world.headers["admin"])
    invited = admin.post("/v1/orgs", json={"org": "acme-labs", "domains": ["math", "code"]})
    assert invited.status_code == 201, invited.text
    assert invited.json()["domains"] == ["code", "math"]
    token = invited.json()["token"]

    csr = pki.make_csr(pki.generate_private_key(), "acme-labs").decode()
    pending = enrollment.enroll(world.registry, "acme-labs", csr, token)  # what the node's Enroll call does
    listed = {row["id"]: row for row in admin.get("/v1/enrollments").json()}
    assert listed[pending.id]["state"] == "pending" and listed[pending.id]["org"] == "acme-labs"

    approved = admin.post(f"/v1/enrollments/{pending.id}/approve")
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    assert admin.get("/v1/orgs/acme-labs").json()["status"] == "active"
    assert len(enrollment.pinned_keys(world.registry, "acme-labs")) == 1
    again = admin.post(f"/v1/enrollments/{pending.id}/approve")
    assert (again.status_code, again.json()["code"]) == (409, "NOT_PENDING")
    unknown = admin.post("/v1/enrollments/00000000-0000-0000-0000-000000000000/approve")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "UNKNOWN_ENROLLMENT")


def test_reject_with_reason(world):
    admin = TestClient(world.app, headers=world.headers["admin"])
    token = admin.post("/v1/orgs", json={"org": "shady-labs", "domains": ["safety"]}).json()["token"]
    csr = pki.make_csr(pki.generate_private_key(), "shady-labs").decode()
    pending = enrollment.enroll(world.registry, "shady-labs", csr, token)
    rejected = admin.post(f"/v1/enrollments/{pending.id}/reject", json={"reason": "unknown contact"})
    assert rejected.json()["state"] == "rejected" and rejected.json()["reason"] == "unknown contact"


def test_list_show_and_domains(world):
    admin = TestClient(world.app, headers=world.headers["admin"])
    orgs = {row["id"]: row for row in admin.get("/v1/orgs").json()}
    assert orgs[ORG]["status"] == "active" and orgs[ORG]["domains"] == ["alpha-math"]

    added = admin.post(f"/v1/orgs/{ORG}/domains", json={"domains": ["tool_use"]})
    assert added.json()["domains"] == ["alpha-math", "tool_use"]
    admin.post("/v1/orgs", json={"org": "taken-labs", "domains": ["code"]})
    taken = admin.post(f"/v1/orgs/{ORG}/domains", json={"domains": ["math", "code"]})
    assert (taken.status_code, taken.json()["code"]) == (409, "DOMAIN_TAKEN")
    assert admin.get(f"/v1/orgs/{ORG}").json()["domains"] == ["alpha-math", "tool_use"]  # nothing assigned

    for body in ({"domains": ["Not A Domain"]}, {"domains": []}, {"domains": ["x"] * 65}, {"domain": ["x"]}):
        refused = admin.post(f"/v1/orgs/{ORG}/domains", json=body)
        assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST"), body
    assert admin.post("/v1/orgs", json={"org": "-bad", "domains": ["safety"]}).status_code == 422
    twice = admin.post("/v1/orgs", json={"org": "twice-labs", "domains": ["safety", "safety"]})
    assert twice.status_code == 201 and twice.json()["domains"] == ["safety"]
    again = admin.post(f"/v1/orgs/{ORG}/domains", json={"domains": ["p-reverse", "p-reverse"]})
    assert again.json()["domains"] == ["alpha-math", "p-reverse", "tool_use"]
    missing = admin.get("/v1/orgs/no-such-org")
    assert (missing.status_code, missing.json()["code"]) == (404, "UNKNOWN_ORG")


def test_revoke_stops_certificate_key_and_tokens(world):
    admin = TestClient(world.app, headers=world.headers["admin"])
    org_client = TestClient(world.app, headers=world.headers["org"])
    assert org_client.get("/v1/submissions").status_code == 200
    assert enrollment.pinned_keys(world.registry, ORG)

    revoked = admin.post(f"/v1/orgs/{ORG}/revoke", json={"reason": "left the federation"})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert enrollment.pinned_keys(world.registry, ORG) == []  # its signatures stop verifying
    refused = org_client.get("/v1/submissions")
    assert (refused.status_code, refused.json()["code"]) == (401, "TOKEN_REVOKED")
    assert all(row.revoked_at for row in tokens.list_tokens(world.registry) if row.org_id == ORG)
    with pytest.raises(BarFedError) as err:
        tokens.create(world.registry, "org", "test", org_id=ORG)
    assert err.value.code == "ORG_REVOKED"
    again = admin.post("/v1/orgs", json={"org": ORG, "domains": ["p-reverse"]})
    assert (again.status_code, again.json()["code"]) == (403, "ORG_REVOKED")
