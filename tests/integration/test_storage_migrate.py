"""`barfed coordinator storage migrate --to s3://…` on a real S3 server: a dry run copies nothing; a run that stops
halfway resumes; every release is verified on the store before the setting is written; a release that no longer
verifies under home stops it with nothing switched; afterwards the API serves the releases from the store."""

from __future__ import annotations

import tomllib

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from coordinator import storage
from coordinator.api.app import create_app
from coordinator.cli import app
from coordinator.release import signed_files
from coordinator.runtime import Runtime
from coordinator.settings import load_settings
from coordinator.setup import initialize
from coordinator.state import tokens
from protocol.package import file_sha256

from .conftest import make_settings
from .fake_release import publish_fake_release
from .test_object_store import stop_puts_after

pytestmark = pytest.mark.integration


@pytest.fixture
def federation(tmp_path, s3_settings, monkeypatch):
    """A coordinator home with r1 and r2 under home, and a coordinator.toml naming the S3 server (not yet used)."""
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'# the operator\'s own settings stay\ns3_endpoint_url = "{s3_settings["s3_endpoint_url"]}"\n'
        f's3_credentials_file = "{s3_settings["s3_credentials_file"]}"\n'
    )
    monkeypatch.setenv("BARFED_COORDINATOR_CONFIG", str(config))
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", api_insecure_http=True)
    monkeypatch.setenv("BARFED_COORD_DATABASE_URL", settings.db_url)
    initialize(settings)
    runtime = Runtime.from_settings(settings)
    publish_fake_release(runtime, 1, {"model.safetensors": b"one" * 1000, "config.json": b"{}"})
    publish_fake_release(runtime, 2, {"model.safetensors": b"two" * 1000, "config.json": b"{}"})
    signed_files._cache.clear()
    yield runtime, config, s3_settings["artifact_store"]
    signed_files._cache.clear()
    runtime.registry.dispose()


def migrate(runtime: Runtime, *args: str):
    return CliRunner().invoke(app, ["--home", str(runtime.settings.home), "storage", "migrate", *args])


def test_a_dry_run_lists_and_copies_nothing(federation):
    runtime, config, to = federation
    result = migrate(runtime, "--to", to, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "r1: 4 of 4 files to copy" in result.output and "r2: 4 of 4 files to copy" in result.output
    assert "artifact_store" not in tomllib.loads(config.read_text())
    store = storage.ObjectStore(load_settings(artifact_store=to))
    assert store.sizes("releases/r1") == {}


def test_a_stopped_migration_resumes_then_switches_and_the_api_serves_from_the_store(federation, monkeypatch):
    runtime, config, to = federation
    put = storage.ObjectStore.put_file
    stop_puts_after(3, monkeypatch)  # the operator's terminal closes
    assert migrate(runtime, "--to", to).exit_code != 0
    assert "artifact_store" not in tomllib.loads(config.read_text())  # nothing switched

    monkeypatch.setattr(storage.ObjectStore, "put_file", put)
    resumed = migrate(runtime, "--to", to)
    assert resumed.exit_code == 0, resumed.output
    assert "r1: 1 of 4 files to copy" in resumed.output  # the three already there are not sent again
    assert "2 releases on" in resumed.output and "each verified" in resumed.output
    written = tomllib.loads(config.read_text())
    assert written["artifact_store"] == to and "s3_endpoint_url" in written
    assert config.read_text().count("the operator's own settings stay") == 1

    again = migrate(runtime, "--to", to)  # nothing left to copy: a no-op that verifies again
    assert again.exit_code == 0 and "r2: 0 of 4 files to copy" in again.output

    settings = load_settings(home=runtime.settings.home, api_insecure_http=True)  # what a restart reads
    served = Runtime.from_settings(settings)
    signed_files._cache.clear()
    token, _ = tokens.create(served.registry, "auditor", "test")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(served), headers=headers, follow_redirects=False) as client:
        answer = client.get("/v1/releases/r2/files/model.safetensors")
    served.registry.dispose()
    assert answer.status_code == 302 and httpx.get(answer.headers["location"]).content == b"two" * 1000


def test_a_release_that_does_not_verify_under_home_stops_the_migration(federation):
    runtime, config, to = federation
    (runtime.settings.releases_dir / "r2" / "model.safetensors").write_bytes(b"tampered")
    result = migrate(runtime, "--to", to)
    assert getattr(result.exception, "code", None) == "RELEASE_UNVERIFIED", result.output
    assert "artifact_store" not in tomllib.loads(config.read_text())


def test_a_store_url_that_is_not_s3_is_refused(federation):
    runtime, _, _ = federation
    result = migrate(runtime, "--to", "/mnt/bucket")
    assert getattr(result.exception, "code", None) == "BAD_SETTINGS" and "artifact_store" in str(result.exception)


def test_the_anchor_and_every_blob_are_copied_and_a_corrupt_blob_stops_it(federation, micro, tmp_path):
    runtime, config, to = federation
    initialize(runtime.settings, micro["branch"])  # the anchor, under home only
    digests = []
    for content in (b"first blob", b"second blob"):
        source = tmp_path / "blob"
        source.write_bytes(content)
        digests.append(file_sha256(source))
        runtime.blobs.put(source, digests[-1])
    anchor_files = sorted(p.name for p in runtime.settings.anchor_dir.iterdir())

    dry = migrate(runtime, "--to", to, "--dry-run")
    assert f"anchor: {len(anchor_files)} files to copy" in dry.output and "blobs: 2 to copy" in dry.output

    bad = runtime.blobs.path(digests[1])
    bad.chmod(0o644)
    bad.write_bytes(b"rotted on disk")
    refused = migrate(runtime, "--to", to)
    assert getattr(refused.exception, "code", None) == "BLOB_CORRUPT", refused.output
    assert "artifact_store" not in tomllib.loads(config.read_text())

    bad.unlink()  # the operator restores it from a backup
    source.write_bytes(b"second blob")
    runtime.blobs.put(source, digests[1])
    done = migrate(runtime, "--to", to)
    assert done.exit_code == 0, done.output
    store = storage.ObjectStore(load_settings(artifact_store=to))
    assert sorted(store.sizes(storage.ANCHOR_PREFIX)) == anchor_files
    assert [store.sha256(storage.blob_key(d)) for d in digests] == digests
