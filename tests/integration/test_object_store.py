"""Releases on a real S3 server (SeaweedFS on loopback): objects are created, never overwritten, and checked when
fetched; a release is visible only once every object and then its row are written; downloads answer with a
presigned redirect, handed out only to a caller whose token is allowed, and the URL works only as signed."""

from __future__ import annotations

import hashlib
import shutil
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from coordinator import storage
from coordinator.api.app import create_app
from coordinator.release import signed_files
from coordinator.release.build import BuildRequest, _record
from coordinator.runtime import Runtime
from coordinator.setup import initialize
from coordinator.state import releases, tokens
from coordinator.state.models import Release
from protocol.errors import BarFedError
from protocol.package import SIGNATURE_FILE, file_sha256
from protocol.release import RELEASE_FILE, write_manifest
from protocol.signing import sign_directory

from .conftest import make_settings
from .fake_release import stub_manifest

pytestmark = pytest.mark.integration

WEIGHTS = bytes(range(256)) * 4096 + b"tail"
FILES = {"model.safetensors": WEIGHTS, "config.json": b'{"model_type": "flex_olmo"}', "sub/notes.txt": b"nested"}


@pytest.fixture
def runtime(tmp_path, s3_settings):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", api_insecure_http=True, **s3_settings)
    initialize(settings)
    runtime = Runtime.from_settings(settings)
    signed_files._cache.clear()
    yield runtime
    runtime.registry.dispose()


def signed_release(runtime: Runtime, number: int = 1):
    """``releases/r<number>`` built and signed on this machine (as a worker does), not yet uploaded or recorded."""
    directory = runtime.settings.releases_dir / f"r{number}"
    for name, content in FILES.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    write_manifest(directory, stub_manifest(number, []))
    sign_directory(directory, runtime.keys.release_key_path)
    return directory


def record_row(runtime: Runtime, directory, number: int = 1) -> None:
    row = Release(number=number, manifest_sha256=file_sha256(directory / RELEASE_FILE), domains=[], experts=[])
    releases.insert_release(runtime.registry, row, "test")


@pytest.fixture
def published(runtime):
    """r1 uploaded and recorded, its directory under home gone: the API serves it from the store alone."""
    directory = signed_release(runtime)
    storage.upload_release(runtime.store, directory, 1)
    record_row(runtime, directory)
    shutil.rmtree(directory)
    return runtime


def stop_puts_after(count: int, monkeypatch) -> list[str]:
    """Every put after the first ``count`` raises KeyboardInterrupt, as if the process died there; returns the keys
    that were put."""
    put, calls = storage.ObjectStore.put_file, []

    def stops(self, key, path, sha256):
        if len(calls) == count:
            raise KeyboardInterrupt("the process dies here")
        calls.append(key)
        return put(self, key, path, sha256)

    monkeypatch.setattr(storage.ObjectStore, "put_file", stops)
    return calls


def client_for(runtime: Runtime, role: str | None = "auditor") -> TestClient:
    headers = {}
    if role is not None:
        headers["Authorization"] = f"Bearer {tokens.create(runtime.registry, role, 'test')[0]}"
    return TestClient(create_app(runtime), headers=headers, follow_redirects=False)


def test_a_file_is_a_redirect_to_a_presigned_url_that_returns_its_bytes(published):
    with client_for(published) as client:
        listing = client.get("/v1/releases/r1/files").json()
        assert {f["path"] for f in listing["files"]} == {*FILES, RELEASE_FILE, SIGNATURE_FILE}
        answer = client.get("/v1/releases/r1/files/model.safetensors")
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    assert answer.status_code == 302, answer.text
    assert answer.headers["etag"] == answer.headers["x-linked-etag"] == f'"{sha256}"'
    assert answer.headers["x-linked-size"] == str(len(WEIGHTS)) and answer.headers["cache-control"] == "no-store"
    url = answer.headers["location"]
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(published.settings.presign_expires_s)]
    assert httpx.get(url).content == WEIGHTS
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == WEIGHTS[100:200]
    # the URL is good for that object only: unsigned, or signed for one path and used for another, is refused
    assert httpx.get(url.split("?")[0]).status_code == 403
    other = url.replace("model.safetensors", "config.json")
    assert httpx.get(other).status_code == 403


def test_the_token_is_checked_before_any_url_is_handed_out(published):
    with client_for(published, role=None) as anonymous:
        refused = anonymous.get("/v1/releases/r1/files/model.safetensors")
        assert refused.status_code == 401 and "location" not in refused.headers
        hub = anonymous.get("/barfed/federation/resolve/r1/model.safetensors")
        assert hub.status_code == 401 and "location" not in hub.headers
    with client_for(published, role="auditor") as allowed:
        hub = allowed.get("/barfed/federation/resolve/r1/model.safetensors")
        assert hub.status_code == 302 and hub.headers["x-repo-commit"] and hub.headers["location"]
        assert allowed.get("/v1/releases/r1/files/absent.bin").json()["code"] == "UNKNOWN_FILE"


def test_a_release_whose_worker_died_between_objects_is_never_visible_and_the_next_attempt_completes(
    runtime, monkeypatch
):
    directory = signed_release(runtime)
    put = storage.ObjectStore.put_file
    calls = stop_puts_after(2, monkeypatch)
    request = BuildRequest({}, False, "operator", job_id=None)
    with pytest.raises(KeyboardInterrupt):
        _record(runtime, request, directory)
    assert not any(key.endswith((RELEASE_FILE, SIGNATURE_FILE)) for key in calls)  # the manifest comes last
    assert releases.latest_release(runtime.registry) is None
    with client_for(runtime) as client:
        assert client.get("/v1/releases").json() == []
        assert client.get("/v1/releases/r1/files/model.safetensors").json()["code"] == "UNKNOWN_RELEASE"

    monkeypatch.setattr(storage.ObjectStore, "put_file", put)
    result = _record(runtime, request, directory)  # the same job again: what is there is kept, the rest uploaded
    assert result["release"] == 1
    shutil.rmtree(directory)
    with client_for(runtime) as client:
        url = client.get("/v1/releases/r1/files/sub/notes.txt").headers["location"]
    assert httpx.get(url).content == b"nested"


def test_objects_are_never_overwritten_and_are_checked_when_fetched(runtime, s3_server, tmp_path):
    store = runtime.store
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(b"first")
    second.write_bytes(b"other")
    store.put_file("x/a.bin", first, file_sha256(first))
    store.put_file("x/a.bin", first, file_sha256(first))  # the same object again: nothing to do
    with pytest.raises(BarFedError) as conflict:
        store.put_file("x/a.bin", second, file_sha256(second))
    assert conflict.value.code == "STORE_OBJECT_CONFLICT"
    assert store.get_file("x/a.bin", tmp_path / "got.bin", file_sha256(first)).read_bytes() == b"first"

    # someone with the bucket's keys replaces the bytes: a verified fetch refuses them and leaves no file
    bucket_key = f"{store.location.prefix}/x/a.bin"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=bucket_key, Body=b"tampered")
    with pytest.raises(BarFedError) as corrupt:
        store.get_file("x/a.bin", tmp_path / "again.bin", file_sha256(first))
    assert corrupt.value.code == "STORE_OBJECT_CORRUPT" and not (tmp_path / "again.bin").exists()
    assert list(tmp_path.glob(".again.bin*")) == []
    with pytest.raises(BarFedError) as missing:
        store.get_file("x/none.bin", tmp_path / "none.bin")
    assert missing.value.code == "STORE_OBJECT_MISSING"


def test_a_release_whose_objects_no_longer_match_its_signature_is_refused(published, s3_server):
    prefix = published.store.location.prefix
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=f"{prefix}/releases/r1/extra.bin", Body=b"unsigned")
    with client_for(published) as client:
        refused = client.get("/v1/releases/r1/files/model.safetensors")
    assert refused.status_code == 409 and refused.json()["code"] == "RELEASE_UNVERIFIED"


def test_a_store_that_refuses_or_is_down_is_a_clear_refusal_and_publishes_nothing(tmp_path, s3_server, s3_settings):
    def runtime_with(**changes) -> Runtime:
        settings = make_settings(
            tmp_path / str(len(changes)), f"sqlite:///{tmp_path / f'r{len(changes)}.db'}", **{**s3_settings, **changes}
        )
        initialize(settings)
        return Runtime.from_settings(settings)

    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"access_key_id": "nobody", "secret_access_key": "nothing"}')
    denied = runtime_with(s3_credentials_file=wrong)
    file = tmp_path / "f.bin"
    file.write_bytes(b"x")
    for attempt in (lambda: denied.store.put_file("a/f.bin", file, file_sha256(file)), lambda: denied.store.sizes("a")):
        with pytest.raises(BarFedError) as refused:
            attempt()
        assert refused.value.code == "STORE_ACCESS_DENIED" and "s3_credentials_file" in refused.value.message

    down = runtime_with(s3_endpoint_url="http://127.0.0.1:9", s3_retry_timeout_s=1, artifact_store="s3://barfed/x")
    directory = signed_release(down)
    with pytest.raises(BarFedError) as unreachable:
        _record(down, BuildRequest({}, False, "operator", job_id=None), directory)
    assert unreachable.value.code == "STORE_UNREACHABLE" and "s3_endpoint_url" in unreachable.value.message
    assert releases.latest_release(down.registry) is None  # no row: nothing visible
    for runtime in (denied, down):
        runtime.registry.dispose()


def test_a_key_that_names_no_file_inside_the_release_is_refused(published, monkeypatch):
    """SeaweedFS refuses such keys itself; another store may list them: they never become a path here."""
    listing = published.store.sizes("releases/r1")
    for stray in ("sub/../../escape", "/etc/passwd", "sub//x"):
        monkeypatch.setattr(published.store, "sizes", lambda prefix, stray=stray: {**listing, stray: 1})
        signed_files._cache.clear()
        with client_for(published) as client:
            refused = client.get("/v1/releases/r1/files/model.safetensors")
        assert refused.status_code == 409 and refused.json()["code"] == "RELEASE_UNVERIFIED", stray
