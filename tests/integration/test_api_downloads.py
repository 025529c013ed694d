"""Release downloads as HTTP users expect them: file lists from the signature, Range resumes to the same bytes,
ETag/If-None-Match/If-Range, HEAD, refused traversal, tokens unless releases are public; and a 1 GiB file served
by `barfed coordinator serve` without the server's memory following it."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from coordinator.api.app import create_app
from coordinator.enrollment import invite
from coordinator.release import signed_files as release_files_module
from coordinator.release.signed_files import FileEntry, release_files
from coordinator.runtime import Runtime
from coordinator.setup import initialize
from coordinator.state import releases, tokens
from protocol.errors import BarFedError

from .conftest import make_settings
from .fake_release import publish_fake_release

pytestmark = pytest.mark.integration

WEIGHTS = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several ranges and a remainder
MB = MiB = 1024**2
GiB = 1024**3
FILES = {"model.safetensors": WEIGHTS, "config.json": b'{"model_type": "flex_olmo"}', "sub/notes.txt": b"nested"}


def _runtime(tmp_path, db_url, **overrides) -> Runtime:
    settings = make_settings(tmp_path, db_url, api_insecure_http=True, **overrides)
    initialize(settings)
    return Runtime.from_settings(settings)


@pytest.fixture
def runtime(tmp_path, db_url):
    runtime = _runtime(tmp_path, db_url)
    publish_fake_release(runtime, 1, FILES)
    yield runtime
    runtime.registry.dispose()


@pytest.fixture
def client(runtime):
    token, _ = tokens.create(runtime.registry, "auditor", "test")
    with TestClient(create_app(runtime), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def test_release_files_come_from_the_verified_signature(runtime):
    entries = release_files(runtime, 1)
    assert set(entries) == {*FILES, "release.json", "model.sig"}
    for name, content in FILES.items():
        assert entries[name] == FileEntry(len(content), hashlib.sha256(content).hexdigest())
    assert release_files(runtime, 1) is entries  # cached: the release is immutable


def test_a_release_that_no_longer_verifies_is_refused(runtime):
    directory = runtime.settings.releases_dir / "r1"
    (directory / "extra.bin").write_bytes(b"not signed")
    release_files_module._cache.clear()
    with pytest.raises(BarFedError) as refused:
        release_files(runtime, 1)
    assert refused.value.code == "RELEASE_UNVERIFIED"
    (directory / "extra.bin").unlink()
    assert "model.safetensors" in release_files(runtime, 1)  # the repair is seen: failures are not cached


def test_a_commit_id_resolves_to_its_release(runtime):
    publish_fake_release(runtime, 2, {"a.bin": b"two"})
    for number in (1, 2):
        release = releases.get_release(runtime.registry, number)
        commit = releases.commit_id(release)
        assert len(commit) == 40 and int(commit, 16) >= 0
        assert releases.resolve(runtime.registry, commit).number == number
    assert releases.resolve(runtime.registry, "latest").number == 2
    with pytest.raises(BarFedError) as unknown:
        releases.resolve(runtime.registry, "0" * 40)
    assert unknown.value.code == "UNKNOWN_RELEASE"


def _url(name: str = "r1", path: str = "model.safetensors") -> str:
    return f"/v1/releases/{name}/files/{path}"


def test_the_file_list_names_every_file_with_its_digest(runtime, client):
    listing = client.get("/v1/releases/stable/files")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    commit = releases.commit_id(releases.get_release(runtime.registry, 1))
    assert (body["release"], body["number"], body["commit"]) == ("r1", 1, commit)
    by_path = {f["path"]: f for f in body["files"]}
    assert set(by_path) == {*FILES, "release.json", "model.sig"}
    assert by_path["model.safetensors"] == {
        "path": "model.safetensors",
        "size": len(WEIGHTS),
        "sha256": hashlib.sha256(WEIGHTS).hexdigest(),
    }
    for name in ("r1", "1", "latest", commit):  # every way to name the release
        assert client.get(f"/v1/releases/{name}/files").json() == body
    assert client.get(_url(commit, "sub/notes.txt")).content == b"nested"
    assert client.get("/v1/releases/r9/files").json()["code"] == "UNKNOWN_RELEASE"


def test_range_requests_resume_to_the_same_bytes(client):
    whole = client.get(_url())
    assert whole.status_code == 200
    assert whole.headers["content-length"] == str(len(WEIGHTS)) and whole.headers["accept-ranges"] == "bytes"
    sha256 = whole.headers["x-barfed-sha256"]
    assert whole.headers["etag"] == f'"{sha256}"' and sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    received = b""
    for start, end in ((0, 99), (100, 65_635), (65_636, 700_000)):  # as a client resumes after each break
        part = client.get(_url(), headers={"Range": f"bytes={start}-{end}", "If-Range": whole.headers["etag"]})
        assert part.status_code == 206, part.text
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(WEIGHTS)}"
        assert part.headers["content-length"] == str(end - start + 1)
        received += part.content
    rest = client.get(_url(), headers={"Range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    received += rest.content
    assert received == WEIGHTS and hashlib.sha256(received).hexdigest() == sha256
    suffix = client.get(_url(), headers={"Range": "bytes=-4"})
    assert (suffix.status_code, suffix.content) == (206, b"tail")


def test_conditional_requests(client):
    etag = client.head(_url()).headers["etag"]
    for if_none_match in (etag, "*", f'"other", W/{etag}'):
        unchanged = client.get(_url(), headers={"If-None-Match": if_none_match})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == etag
    assert client.get(_url(), headers={"If-None-Match": '"stale"'}).status_code == 200
    # If-Range with a stale ETag: the client's partial copy is of something else, so the whole file comes back.
    stale = client.get(_url(), headers={"Range": "bytes=0-9", "If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == WEIGHTS
    fresh = client.get(_url(), headers={"Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.content == WEIGHTS[:10]


def test_a_range_outside_the_file_is_416(client):
    refused = client.get(_url(), headers={"Range": f"bytes={len(WEIGHTS)}-"})
    assert refused.status_code == 416
    assert refused.headers["content-range"] == f"bytes */{len(WEIGHTS)}"


def test_head_has_the_headers_and_no_body(client):
    head = client.head(_url())
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(WEIGHTS))
    assert head.headers["x-barfed-sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert head.headers["x-barfed-release"] == "r1"
    assert client.head(_url(path="missing.bin")).status_code == 404


def test_the_signature_is_the_release_model_sig(runtime, client):
    signature = client.get("/v1/releases/r1/signature")
    on_disk = (runtime.settings.releases_dir / "r1" / "model.sig").read_bytes()
    assert signature.status_code == 200 and signature.content == on_disk
    assert signature.headers["x-barfed-sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert client.head("/v1/releases/latest/signature").headers["content-length"] == str(len(on_disk))


@pytest.mark.parametrize(
    "path",
    [
        "%2E%2E/%2E%2E/pki/release.key",
        "..%2F..%2Fpki%2Frelease.key",
        "%2Fetc%2Fpasswd",
        "sub/%2E%2E/config.json",
        "%2E/config.json",
        "sub",
        "model.safetensors%00.json",
    ],
)
def test_paths_outside_the_file_list_are_refused(client, path):
    refused = client.get(f"/v1/releases/r1/files/{path}")
    assert refused.status_code == 404, refused.text
    assert refused.json()["code"] in ("UNKNOWN_FILE", "NOT_FOUND")
    assert b"PRIVATE KEY" not in refused.content


@pytest.mark.parametrize("public", [False, True])
def test_downloads_need_a_token_unless_releases_are_public(tmp_path, db_url, public):
    runtime = _runtime(tmp_path, db_url, public_releases=public)
    publish_fake_release(runtime, 1, FILES)
    invite(runtime.registry, "acme-labs", ["math"])
    allowed = [tokens.create(runtime.registry, role, "test")[0] for role in ("admin", "operator", "auditor")]
    allowed.append(tokens.create(runtime.registry, "org", "test", org_id="acme-labs")[0])
    revoked, revoked_row = tokens.create(runtime.registry, "admin", "test")
    tokens.revoke(runtime.registry, revoked_row.id, "test")
    with TestClient(create_app(runtime)) as client:
        anonymous = client.get(_url())
        assert anonymous.status_code == (200 if public else 401), anonymous.text
        if not public:
            assert anonymous.json()["code"] == "NO_TOKEN"
            assert client.get("/v1/releases/r1/files").status_code == 401
            assert client.head(_url()).status_code == 401
        for bad, code in ((revoked, "TOKEN_REVOKED"), ("not-a-token", "BAD_TOKEN")):
            refused = client.get(_url(), headers={"Authorization": f"Bearer {bad}"})
            assert (refused.status_code, refused.json()["code"]) == (401, code)
        assert client.get(_url(), headers={"Authorization": "Basic abc"}).status_code == 401
        for token in allowed:  # every role, org tokens included
            assert client.get(_url(), headers={"Authorization": f"Bearer {token}"}).content == WEIGHTS
    runtime.registry.dispose()


@pytest.mark.slow
def test_a_1gib_download_keeps_the_server_rss_flat(tmp_path, db_url):
    """`barfed coordinator serve` in its own process streams a 1 GiB release file from disk (bench/download_memory.py
    reports the same figure beside a 1 MiB file's)."""
    from bench.download_memory import BIG, measure

    result = measure(tmp_path, GiB, database_url=db_url)[BIG]
    print(f"server RSS growth {result['rss_growth'] / MiB:.1f} MiB over a {result['bytes'] / MiB:.0f} MiB download")
    assert result["bytes"] == GiB and result["sha256_ok"]
    assert result["rss_growth"] < 100 * MB, f"the server's RSS grew {result['rss_growth'] / MB:.0f} MB"
