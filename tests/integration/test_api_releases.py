"""Releases, channels, jobs and the audit log over the REST API: list, show (release.json), promote, roll back,
diff, build (a queued job naming its caller), jobs retry and cancel, audit filters and the chain check."""

from __future__ import annotations

import itertools

import pytest
from fastapi.testclient import TestClient

from coordinator.state import audit

from .api_matrix import DOMAIN, ORG, OTHER, OTHER_DOMAIN, add_release, make_world

pytestmark = pytest.mark.integration


def test_releases_and_channels(world):
    org = TestClient(world.app, headers=world.headers["org"])  # every role reads releases
    listed = org.get("/v1/releases").json()
    assert [r["name"] for r in listed] == ["r1", "r2"] and listed[1]["parent"] == "r1"
    assert listed[1]["channels"] == ["latest"] and listed[0]["channels"] == ["stable"]
    assert org.get("/v1/releases/latest").json()["name"] == "r2"
    assert org.get("/v1/releases/stable").json()["number"] == 1
    assert org.get("/v1/releases/2").json()["name"] == "r2"
    missing = org.get("/v1/releases/r9")
    assert (missing.status_code, missing.json()["code"]) == (404, "UNKNOWN_RELEASE")
    diff = org.get("/v1/releases/r1/diff/r2").json()
    assert diff["from"] == "r1" and diff["to"] == "r2" and diff["added"] == {OTHER_DOMAIN: 1}
    assert diff["eval"][DOMAIN] == {"from": 51.0, "to": 52.0, "delta": 1.0}
    assert diff["retention"][DOMAIN] == {"from": 0.85, "to": 0.867}
    kept = listed[1]["retention"][DOMAIN]  # beside the score: its expert's own, alone
    assert kept == {"expert": 60.0, "release": 52.0, "retention": 0.867, "difference": -8.0}
    shown = org.get("/v1/releases/r2").json()["eval"][DOMAIN]  # release.json
    assert (shown["expert_score"], shown["retention"], shown["difference"]) == (60.0, 0.867, -8.0)
    assert listed[1]["routing"][DOMAIN] == {"own_share": 0.6, "anchor_share": 0.3, "load": 0.4}  # a collapse shows

    operator = TestClient(world.app, headers=world.headers["operator"])
    promoted = operator.post("/v1/releases/latest/promote", json={"channel": "stable"}).json()
    assert promoted == {"channel": "stable", "release": "r2", "previous": "r1", "moved": True}
    assert {c["name"]: c["release"] for c in org.get("/v1/channels").json()} == {"latest": "r2", "stable": "r2"}
    trail = audit.count(world.registry)
    again = operator.post("/v1/releases/r2/promote", json={"channel": "stable"}).json()  # already there: a no-op
    assert again == {"channel": "stable", "release": "r2", "previous": "r2", "moved": False}
    assert audit.count(world.registry) == trail  # no move recorded, so rollback undoes the real one
    rolled = operator.post("/v1/channels/stable/rollback").json()
    assert rolled == {"channel": "stable", "release": "r1", "previous": "r2", "moved": True}
    operator.post("/v1/releases/r1/promote", json={"channel": "beta"})
    nothing = operator.post("/v1/channels/beta/rollback")
    assert (nothing.status_code, nothing.json()["code"]) == (409, "NOTHING_TO_ROLL_BACK")
    latest = operator.post("/v1/releases/r1/promote", json={"channel": "latest"})
    assert (latest.status_code, latest.json()["code"]) == (400, "BAD_CHANNEL")


def test_public_releases_need_no_token(db_url, tmp_path):
    world = make_world(tmp_path, db_url, public_releases=True)
    anonymous = TestClient(world.app)
    assert [r["name"] for r in anonymous.get("/v1/releases").json()] == ["r1", "r2"]
    assert anonymous.get("/v1/jobs").status_code == 401  # only releases are public
    assert anonymous.get("/v1/releases", headers=world.headers["revoked"]).status_code == 401  # a bad token still is
    world.registry.dispose()


def test_build_retry_cancel(world):
    operator = TestClient(world.app, headers=world.headers["operator"])
    queued = operator.post("/v1/releases/builds", json={"pins": {DOMAIN: 1}, "force": True})
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert job["kind"] == "build" and job["state"] == "queued"
    assert job["params"] == {"pins": {DOMAIN: 1}, "force": True, "cold": False, "actor": world.actors["operator"]}
    for body in ({"pins": {DOMAIN: 0}}, {"pins": {"Bad Domain": 1}}, {"force": "yes please"}, {"pin": {}}):
        assert operator.post("/v1/releases/builds", json=body).status_code == 422, body
    # r3 holds exactly the experts a build would take: refused at once, no job queued; force builds anyway.
    refs = [{"domain": DOMAIN, "version": 1, "org": ORG}, {"domain": OTHER_DOMAIN, "version": 1, "org": OTHER}]
    add_release(world.runtime, 3, [{**ref, "package_digest": "0" * 64} for ref in refs])
    before = operator.get("/v1/jobs", params={"kind": "build"}).json()
    unchanged = operator.post("/v1/releases/builds", json={})
    assert (unchanged.status_code, unchanged.json()["code"]) == (409, "NOTHING_CHANGED"), unchanged.text
    assert "r3" in unchanged.json()["message"]
    assert operator.get("/v1/jobs", params={"kind": "build"}).json() == before
    assert operator.post("/v1/releases/builds", json={"force": True}).status_code == 202
    cold = operator.post("/v1/releases/builds", json={"cold": True})  # a deliberate cold rebuild of the same experts
    assert cold.status_code == 202 and cold.json()["params"]["cold"] is True, cold.text

    cancelled = operator.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    again = operator.post(f"/v1/jobs/{job['id']}/cancel")
    assert (again.status_code, again.json()["code"]) == (409, "JOB_NOT_ACTIVE")
    retried = operator.post(f"/v1/jobs/{job['id']}/retry").json()
    assert retried["state"] == "queued" and retried["attempts"] == 0
    assert operator.post(f"/v1/jobs/{job['id']}/retry").json()["code"] == "JOB_NOT_RETRYABLE"
    assert operator.get(f"/v1/jobs/{job['id']}").json()["state"] == "queued"
    assert job["id"] in [j["id"] for j in operator.get("/v1/jobs", params={"kind": "build", "state": "queued"}).json()]
    newest_first = [j["id"] for j in operator.get("/v1/jobs").json()]
    paged = [j["id"] for j in operator.get("/v1/jobs", params={"limit": 1}).json()]
    while len(paged) < len(newest_first):
        page = operator.get("/v1/jobs", params={"limit": 1, "before": paged[-1]}).json()
        assert len(page) == 1, page
        paged.append(page[0]["id"])
    assert paged == newest_first == sorted(newest_first, reverse=True) and len(paged) > 1
    assert operator.get("/v1/jobs", params={"before": min(paged)}).json() == []
    refused = operator.get("/v1/jobs", params={"before": 0})
    assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST")
    assert operator.get("/v1/jobs/999999").json()["code"] == "UNKNOWN_JOB"

    auditor = TestClient(world.app, headers=world.headers["auditor"])
    trail = auditor.get("/v1/audit", params={"subject": str(job["id"]), "actor": world.actors["operator"]}).json()
    assert [e["action"] for e in trail["items"]] == ["job.queued", "job.cancelled", "job.retry"]


def test_audit_pages_and_chain(world):
    auditor = TestClient(world.app, headers=world.headers["auditor"])
    everything, offset = [], 0
    while offset is not None:
        page = auditor.get("/v1/audit", params={"limit": 7, "offset": offset}).json()
        everything += page["items"]
        offset = page["next_offset"]
    assert [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in itertools.pairwise(everything))
    report = auditor.post("/v1/audit/verify").json()
    assert report["intact"] is True and report["entries"] == len(everything)
    assert auditor.get("/v1/audit", params={"subject": "org-%"}).json()["items"] == []  # a prefix, not a pattern
