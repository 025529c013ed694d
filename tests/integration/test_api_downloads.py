"""Release downloads as HTTP users expect them: file lists from the signature, Range resumes to the same bytes,
ETag/If-None-Match/If-Range, HEAD, refused traversal, tokens unless releases are public; and a 1 GiB file served
by `barfed coordinator serve` without the server's memory following it."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from coordinator.api.app import create_app
from coordinator.release import files as release_files_module
from coordinator.release.files import FileEntry, release_files
from coordinator.runtime import Runtime
from coordinator.setup import initialize
from coordinator.state import releases, tokens
from protocol.errors import BarFedError

from .conftest import make_settings
from .fake_release import publish_fake_release

pytestmark = pytest.mark.integration

WEIGHTS = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several ranges and a remainder
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
    entries = release_files(runtime.settings, 1)
    assert set(entries) == {*FILES, "release.json", "model.sig"}
    for name, content in FILES.items():
        assert entries[name] == FileEntry(len(content), hashlib.sha256(content).hexdigest())
    assert release_files(runtime.settings, 1) is entries  # cached: the release is immutable


def test_a_release_that_no_longer_verifies_is_refused(runtime):
    directory = runtime.settings.releases_dir / "r1"
    (directory / "extra.bin").write_bytes(b"not signed")
    release_files_module._cache.clear()
    with pytest.raises(BarFedError) as refused:
        release_files(runtime.settings, 1)
    assert refused.value.code == "RELEASE_UNVERIFIED"
    (directory / "extra.bin").unlink()
    assert "model.safetensors" in release_files(runtime.settings, 1)  # the repair is seen: failures are not cached


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
