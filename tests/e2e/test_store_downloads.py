"""A real r1 built with ``artifact_store`` on SeaweedFS, its directory under the coordinator's home then removed, so
every byte a user gets comes from the store through a presigned redirect: `barfed pull` (signature checked, Range
resume) and stock huggingface_hub + transformers both follow it; a presigned URL is only handed to a token the
coordinator allows."""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import uuid

import httpx
import pytest

from barfed.pull_body import get
from coordinator.embedded import running_coordinator
from coordinator.release.rebuild import rebuild
from coordinator.setup import initialize
from coordinator.state import releases as state
from coordinator.state import tokens
from tests.e2e.test_pull import barfed_pull
from tests.integration.release_helpers import accept, build, coordinator_for, package, release_settings
from tests.integration.test_hub_api import LOAD, REPO, run_client

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def on_store(micro, say_experts, s3_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    store = {
        "artifact_store": f"s3://{s3_server.bucket}/e2e-{uuid.uuid4().hex[:12]}",
        "s3_endpoint_url": s3_server.endpoint,
        "s3_credentials_file": s3_server.credentials_file(root / "s3.json"),
    }
    settings = release_settings(root, f"sqlite:///{root / 'registry.db'}", **store)
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 1, root / "pkg-yes"), "org-yes")
    build(coordinator, root)
    assert not (settings.releases_dir / "r1").exists()  # published: the store holds it, this machine a cached copy
    cached = settings.home / "cache" / "releases" / "r1"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cached.iterdir()}
    shutil.rmtree(cached)  # the API's machine holds no release: the store does
    token, _ = tokens.create(coordinator.registry, "org", "test", org_id="org-yes")
    commit = state.commit_id(state.resolve(coordinator.registry, "r1"))
    with running_coordinator(settings) as address:
        yield settings, address.api, token, files, commit, root
    coordinator.registry.dispose()


def test_barfed_pull_follows_the_redirect_and_verifies_the_release(on_store, tmp_path):
    settings, api, token, files, _, _ = on_store
    pulled = barfed_pull("stable", tmp_path / "model", api, settings, token, tmp_path / "config")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "model").iterdir()}
    assert got == files


def test_a_resumed_file_asks_the_store_for_the_missing_range_only(on_store, tmp_path):
    """What `barfed pull` sends when it resumes (Range and If-Range): the coordinator's redirect is followed to the
    store without the token and without If-Range (the store's ETag is no sha256), and the store answers 206."""
    settings, api, token, files, _, _ = on_store
    ca = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))
    headers = {"Range": "bytes=10-", "If-Range": f'"{files["model.safetensors"]}"'}
    with httpx.Client(verify=ca, headers={"Authorization": f"Bearer {token}"}) as client:
        whole = b"".join(bytes(b) for b in _body(client, ca, api, {}))
        with get(client, ca, api, "/v1/releases/r1/files/model.safetensors", headers) as response:
            assert response.status_code == 206
            tail = b"".join(bytes(block) for block in response.blocks())
    assert hashlib.sha256(whole).hexdigest() == files["model.safetensors"] and tail == whole[10:]


def _body(client, ca, api, headers):
    with get(client, ca, api, "/v1/releases/r1/files/model.safetensors", headers) as response:
        assert response.status_code == 200
        return [bytes(block) for block in response.blocks()]


def test_stock_hub_client_and_transformers_load_r1_through_the_redirect(on_store, tmp_path):
    settings, api, token, files, commit, _ = on_store
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=api, SSL_CERT_FILE=str(settings.pki_dir / "ca.pem"), HF_HOME=str(tmp_path / "hf"))
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_TOKEN=token)
    result = run_client(LOAD, env, REPO, str(tmp_path / "c"), "r1")["r1"]
    assert result["class"] == "FlexOlmoForCausalLM" and result["new_tokens"] > 0
    assert result["commit"] == commit
    assert set(result["files"]) == set(files)


def test_no_url_without_an_allowed_token(on_store):
    settings, api, token, _, _, _ = on_store
    ca = str(settings.pki_dir / "ca.pem")
    with httpx.Client(verify=ca, follow_redirects=False) as client:
        anonymous = client.get(f"{api}/v1/releases/r1/files/model.safetensors")
        assert anonymous.status_code == 401 and "location" not in anonymous.headers
        bad = client.get(f"{api}/v1/releases/r1/files/model.safetensors", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "location" not in bad.headers
        allowed = client.get(
            f"{api}/v1/releases/r1/files/model.safetensors", headers={"Authorization": f"Bearer {token}"}
        )
        assert allowed.status_code == 302 and allowed.headers["location"].startswith(settings.s3_endpoint_url)


def test_rebuild_compares_with_the_objects_on_the_store(on_store, tmp_path):
    """`releases rebuild` on a machine without the release: it fetches the stored objects (each checked against
    its signed sha256) and finds every file the same."""
    settings, _, _, _, _, _ = on_store
    coordinator = coordinator_for(settings)
    try:
        report = rebuild(coordinator, 1, tmp_path / "scratch")
    finally:
        coordinator.registry.dispose()
    assert report and set(report.values()) == {"match"}, report


def test_the_release_resource_reads_release_json_from_the_store(on_store):
    settings, api, token, _, _, _ = on_store
    with httpx.Client(verify=str(settings.pki_dir / "ca.pem")) as client:
        shown = client.get(f"{api}/v1/releases/r1", headers={"Authorization": f"Bearer {token}"})
    assert shown.status_code == 200, shown.text
    assert shown.json()["name"] == "r1" and shown.json()["eval"]
