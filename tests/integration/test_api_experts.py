"""Experts and submissions over the REST API: filters, pages, the verification report, the lifecycle after
acceptance, and an org seeing only its own."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from .api_matrix import DOMAIN, ORG, OTHER, OTHER_DOMAIN, add_expert

pytestmark = pytest.mark.integration


def test_filters_and_pages(world):
    for version in range(2, 8):
        add_expert(world.registry, ORG, DOMAIN, version)
    admin = TestClient(world.app, headers=world.headers["admin"])
    seen, offset = [], 0
    while offset is not None:
        page = admin.get("/v1/experts", params={"domain": DOMAIN, "limit": 3, "offset": offset}).json()
        assert len(page["items"]) <= 3
        seen += [e["version"] for e in page["items"]]
        offset = page["next_offset"]
    assert seen == list(range(1, 8))  # oldest first, each once

    assert {e["org"] for e in admin.get("/v1/experts", params={"org": OTHER}).json()["items"]} == {OTHER}
    assert admin.get("/v1/experts", params={"state": "QUARANTINED"}).json()["items"] == []
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert admin.get("/v1/submissions", params={"since": future}).json() == {"items": [], "next_offset": None}
    rejected = admin.get("/v1/submissions", params={"state": "REJECTED"}).json()["items"]
    assert [s["id"] for s in rejected] == [world.rejected]
    for params in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"state": "BOGUS"}, {"domain": "A B"}):
        refused = admin.get("/v1/submissions", params=params)
        assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST"), params


def test_verification_report(world):
    admin = TestClient(world.app, headers=world.headers["admin"])
    shown = admin.get(f"/v1/submissions/{world.rejected}").json()
    assert shown["state"] == "REJECTED" and shown["org"] == OTHER and shown["domain"] == OTHER_DOMAIN
    report = shown["report"]
    assert report["state"] == "REJECTED" and report["error_code"] == "BAD_SIGNATURE"
    assert "sign" in report["message"] and set(report["files"]) == {"expert.json", "model.safetensors"}


def test_an_org_sees_only_its_own(world):
    org = TestClient(world.app, headers=world.headers["org"])
    assert {s["org"] for s in org.get("/v1/submissions").json()["items"]} == {ORG}
    assert {e["org"] for e in org.get("/v1/experts").json()["items"]} == {ORG}
    assert org.get("/v1/experts", params={"org": OTHER}).json()["items"] == []
    assert org.get(f"/v1/submissions/{world.submission}").json()["report"]["state"] == "ACCEPTED"
    other = org.get(f"/v1/submissions/{world.rejected}")
    assert (other.status_code, other.json()["code"]) == (404, "UNKNOWN_SUBMISSION")
    assert org.get(f"/v1/experts/{OTHER_DOMAIN}/1").json()["code"] == "UNKNOWN_EXPERT"


def test_lifecycle(world):
    operator = TestClient(world.app, headers=world.headers["operator"])
    path = f"/v1/experts/{DOMAIN}/1"
    quarantined = operator.post(f"{path}/quarantine", json={"reason": "drifted shared tensors"})
    assert quarantined.json()["status"] == "QUARANTINED" and quarantined.json()["reason"] == "drifted shared tensors"
    assert operator.post(f"{path}/deprecate", json={"reason": "superseded"}).json()["status"] == "DEPRECATED"
    refused = operator.post(f"{path}/quarantine", json={"reason": "again"})
    assert (refused.status_code, refused.json()["code"]) == (409, "BAD_TRANSITION")
    assert operator.post(f"{path}/opt-out", json={"reason": "the org withdrew it"}).json()["status"] == "OPTED_OUT"
    assert operator.get(path).json()["status"] == "OPTED_OUT"
    for body in ({}, {"reason": ""}, {"reason": "x" * 513}, {"reason": "two\nlines"}):
        assert operator.post(f"/v1/experts/{DOMAIN}/1/quarantine", json=body).status_code == 422, body
    assert operator.post(f"/v1/experts/{DOMAIN}/99/quarantine", json={"reason": "r"}).status_code == 404
    entries = TestClient(world.app, headers=world.headers["auditor"]).get(
        "/v1/audit", params={"action": "expert.state", "subject": f"{DOMAIN}/v1"}
    )
    assert [(e["actor"], e["details"]["state"]) for e in entries.json()["items"]] == [
        (world.actors["operator"], state) for state in ("QUARANTINED", "DEPRECATED", "OPTED_OUT")
    ]
