"""The REST API keeps its own OpenAPI document and the gRPC side's rules: what an outside hostile run and
schemathesis found the API answering otherwise (issue 25, items 7 and 8, and `orgs invite` domains)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator.cli import app as cli
from coordinator.grpc import bounds
from coordinator.release import signed_files
from coordinator.state import orgs as org_state
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb

from .api_matrix import DOMAIN, ORG, signed

pytestmark = pytest.mark.integration

# NEL, line separator, right-to-left override, zero-width space, byte order mark
HIDDEN = ("\u0085", "\u2028", "\u202e", "\u200b", "\ufeff")


def _admin(world) -> TestClient:
    return TestClient(world.app, headers=world.headers["admin"])


def _schema(world) -> dict:
    return _admin(world).get("/openapi.json").json()


def _component(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def test_reasons_refuse_line_and_format_characters_as_grpc_does(world):
    admin = _admin(world)
    for char in HIDDEN:
        reason = f"looks{char}harmless"
        with pytest.raises(BarFedError) as grpc_refusal:  # what gRPC's bounds do with the same text
            bounds.check(pb.EnrollRequest(contact=reason))
        assert grpc_refusal.value.code == "BAD_CONTACT"
        domain, version = world.accepted_expert()
        for path in (
            f"/v1/experts/{domain}/{version}/quarantine",
            f"/v1/orgs/{world.invited_org()}/revoke",
            f"/v1/enrollments/{world.pending_enrollment()}/reject",
        ):
            refused = admin.post(path, json={"reason": reason})
            assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST"), (path, repr(char))
            assert "reason" in refused.json()["message"]
    domain, version = world.accepted_expert()
    kept = admin.post(f"/v1/experts/{domain}/{version}/quarantine", json={"reason": "café — Prüfung nicht bestanden"})
    assert kept.status_code == 200 and kept.json()["reason"] == "café — Prüfung nicht bestanden"


@pytest.mark.parametrize("path", ["/v1/experts", "/v1/submissions", "/v1/audit"])
def test_since_is_a_time_not_a_number(world, path):
    admin = _admin(world)
    for since in ("0.5", "0", "1700000000"):
        refused = admin.get(path, params={"since": since})
        assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST"), since
    assert admin.get(path, params={"since": "2020-01-01T00:00:00Z"}).status_code == 200
    assert admin.get(path, params={"since": "2020-01-01"}).status_code == 200


def test_a_build_refuses_a_boolean_that_is_not_one(world):
    admin = _admin(world)
    queued = len(admin.get("/v1/jobs").json())
    # (a version of 1.0 is the integer JSON Schema's `integer` allows; 1.5 is not)
    for body in (
        {"force": 0},
        {"force": 1},
        {"force": "true"},
        {"cold": 1},
        {"cold": "true"},
        {"pins": {DOMAIN: "1"}},
        {"pins": {DOMAIN: 1.5}},
    ):
        refused = admin.post("/v1/releases/builds", json=body)
        assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST"), body
    assert len(admin.get("/v1/jobs").json()) == queued  # nothing was queued


def test_the_schema_states_what_build_and_promote_refuse(world):
    document = _schema(world)
    pins = _component(document, "BuildBody")["properties"]["pins"]
    assert pins["propertyNames"]["pattern"] == org_state.DOMAIN_NAME
    admin = _admin(world)
    refused = admin.post("/v1/releases/builds", json={"pins": {"Not A Domain": 1}})
    assert (refused.status_code, refused.json()["code"]) == (422, "BAD_REQUEST")

    channel = _component(document, "PromoteBody")["properties"]["channel"]
    assert channel["not"] == {"const": "latest"}
    latest = admin.post("/v1/releases/r1/promote", json={"channel": "latest"})
    assert latest.status_code in (400, 422) and latest.json()["code"] in ("BAD_CHANNEL", "BAD_REQUEST")


def _documented(document: dict, path: str, status: int) -> set[str]:
    return set(document["paths"][path]["get"]["responses"][str(status)].get("content", {}))


def test_downloads_answer_the_content_types_their_schema_lists(world):
    signed("/")(world)  # r1 and r2 carry model.sig, as published releases do
    document = _schema(world)
    client = _admin(world)
    for url, path in (
        ("/v1/releases/r1/signature", "/v1/releases/{name}/signature"),
        ("/v1/releases/r1/files/release.json", "/v1/releases/{name}/files/{path}"),
        ("/barfed/federation/resolve/r1/model.sig", "/{repo_id}/resolve/{revision}/{filename}"),
    ):
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.text)
        media = answer.headers["content-type"].split(";")[0]
        assert media in _documented(document, path, 200), (url, media)
        part = client.get(url, headers={"Range": "bytes=0-3"})
        assert part.status_code == 206 and part.headers["content-type"].split(";")[0] in _documented(
            document, path, 206
        )


def test_range_errors_are_the_documented_json(world):
    signed("/")(world)
    client = _admin(world)
    size = len(client.get("/v1/releases/r1/files/release.json").content)
    outside = client.get("/v1/releases/r1/files/release.json", headers={"Range": f"bytes={size}-"})
    assert outside.status_code == 416 and outside.headers["content-type"] == "application/json"
    assert outside.json()["code"] == "RANGE_NOT_SATISFIABLE" and outside.headers["content-range"] == f"bytes */{size}"
    malformed = client.get("/v1/releases/r1/files/release.json", headers={"Range": "lines=1-2"})
    assert malformed.status_code == 400 and malformed.json()["code"] == "BAD_RANGE"
    stale = client.get("/v1/releases/r1/files/release.json", headers={"Range": "lines=1-2", "If-Range": '"0000"'})
    assert stale.status_code == 200  # a stale If-Range: the whole file, as before
    document = _schema(world)
    for status in ("400", "416"):
        content = document["paths"]["/v1/releases/{name}/files/{path}"]["get"]["responses"][status]["content"]
        assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_a_release_that_no_longer_matches_its_signature_is_a_documented_409(world):
    signed("/")(world)
    client = _admin(world)
    assert client.get("/v1/releases/r1/files/release.json").status_code == 200  # its file list is now cached
    path = signed_files.release_dir(world.runtime, 1) / "release.json"
    path.write_bytes(path.read_bytes() + b" ")
    refused = client.get("/v1/releases/r1/files/release.json")
    assert (refused.status_code, refused.json()["code"]) == (409, "RELEASE_UNVERIFIED")
    assert "restore" in refused.json()["message"]
    described = _schema(world)["paths"]["/v1/releases/{name}/files/{path}"]["get"]["responses"]["409"]
    assert "RELEASE_UNVERIFIED" in described["description"]


def test_a_method_not_allowed_lists_every_method_of_the_path(world):
    client = _admin(world)
    for method in ("OPTIONS", "DELETE", "PUT"):
        answer = client.request(method, "/v1/orgs")
        assert answer.status_code == 405 and answer.json()["code"] == "METHOD_NOT_ALLOWED"
        assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"GET", "POST"}, answer.headers["allow"]
    one = client.request("DELETE", f"/v1/orgs/{ORG}")
    assert one.status_code == 405 and one.headers["allow"] == "GET"


def test_invite_refuses_unknown_and_empty_domains(world):
    admin = _admin(world)
    for domains in (["no-such-domain"], ["math", "nope"], ["general"]):
        refused = admin.post("/v1/orgs", json={"org": world.fresh("org-typo"), "domains": domains})
        assert (refused.status_code, refused.json()["code"]) == (400, "UNKNOWN_DOMAIN"), domains
        assert "barfed model domains" in refused.json()["message"]
    empty = admin.post("/v1/orgs", json={"org": world.fresh("org-empty"), "domains": []})
    assert empty.status_code == 422 and empty.json()["code"] == "BAD_REQUEST"
    unknown = admin.post(f"/v1/orgs/{world.invited_org()}/domains", json={"domains": ["no-such-domain"]})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "UNKNOWN_DOMAIN")
    assert not [org for org in admin.get("/v1/orgs").json() if org["id"].startswith(("org-typo", "org-empty"))]
    listed = _component(_schema(world), "InviteBody")["properties"]["domains"]["items"]["enum"]
    assert "math" in listed and "p-reverse" in listed and "general" not in listed  # the document names them
    invited = admin.post("/v1/orgs", json={"org": world.fresh("org-good"), "domains": ["p-reverse", "code"]})
    assert invited.status_code == 201 and invited.json()["domains"] == ["code", "p-reverse"]


def test_cli_invite_refuses_unknown_and_empty_domains(world, monkeypatch):
    monkeypatch.setenv("BARFED_COORD_DATABASE_URL", world.runtime.settings.db_url)
    home = str(world.runtime.settings.home)
    runner = CliRunner()
    for domains, code in (("mathh", "UNKNOWN_DOMAIN"), ("", "NO_DOMAINS"), (" , ", "NO_DOMAINS")):
        result = runner.invoke(cli, ["orgs", "invite", "org-cli", "--domains", domains, "--home", home])
        assert getattr(result.exception, "code", None) == code, (domains, result.output)
        assert "barfed model domains" in result.exception.message
    listed = runner.invoke(cli, ["enrollments", "list", "--json", "--home", home])
    assert "org-cli" not in {row["org"] for row in json.loads(listed.stdout)}
    made = runner.invoke(cli, ["orgs", "invite", "org-cli", "--domains", "tool_use", "--home", home])
    assert made.exit_code == 0 and len(made.stdout.strip()) >= 32, made.output
