"""Upload storage under hostile organizations (issue 25): quotas, idle reservations, honest messages."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from coordinator.blobs import BlobStore
from coordinator.enrollment import invite
from coordinator.state.models import utcnow
from coordinator.uploads.sessions import Declared
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, SIGNATURE_FILE
from tests.integration.conftest import make_settings

pytestmark = [pytest.mark.integration]
GiB = 1024**3


def _declare(tag: str, weights: int) -> list[Declared]:
    files = [
        Declared(MANIFEST_FILE, 16, hashlib.sha256(tag.encode()).hexdigest()),
        Declared(SIGNATURE_FILE, 16, hashlib.sha256(tag.encode() + b"s").hexdigest()),
    ]
    return [*files, Declared("model.safetensors", weights, hashlib.sha256(tag.encode() + b"w").hexdigest())]


def test_one_organization_cannot_reserve_past_its_quota_and_others_still_upload(uploads):
    registry, up = uploads(min_free_bytes=0, org_quota_bytes=1 * GiB, max_file_bytes=2 * GiB)
    invite(registry, "hog", ["d-hog"])
    invite(registry, "other", ["d-other"])
    with pytest.raises(BarFedError) as err:
        up.create("hog", "d-hog", 1, _declare("hog", 2 * GiB))
    assert err.value.code == "ORG_QUOTA_EXCEEDED"
    assert "org_quota_bytes" in str(err.value)
    up.create("hog", "d-hog", 1, _declare("hog", GiB // 2))
    with pytest.raises(BarFedError) as err:  # reserved counts: a second half-quota-plus upload is refused
        up.create("hog", "d-hog", 2, _declare("hog2", GiB // 2 + 1))
    assert err.value.code == "ORG_QUOTA_EXCEEDED"
    assert up.create("other", "d-other", 1, _declare("other", GiB // 2))


def test_an_idle_reservation_expires_long_before_the_session_ttl(uploads):
    registry, up = uploads(min_free_bytes=0, upload_idle_s=60, session_ttl_s=24 * 3600)
    invite(registry, "acme-labs", ["test-vowels"])
    session_id = up.create("acme-labs", "test-vowels", 1, _declare("a", 1024))
    upload, _ = up.progress("acme-labs", session_id)
    assert upload.expires_at <= utcnow() + dt.timedelta(seconds=61)
    assert up.expire(utcnow() + dt.timedelta(seconds=120)) == 1
    assert up.progress("acme-labs", session_id)[0].state == "expired"


def test_insufficient_storage_names_the_figures_and_min_free_bytes(uploads, tmp_path):
    registry, up = uploads(min_free_bytes=2**62)
    invite(registry, "acme-labs", ["test-vowels"])
    with pytest.raises(BarFedError) as err:
        up.create("acme-labs", "test-vowels", 1, _declare("a", 1024))
    assert err.value.code == "INSUFFICIENT_STORAGE"
    message = str(err.value)
    assert "min_free_bytes" in message and "free" in message
    assert "under way" not in message  # no upload is open: do not tell the client to wait for one


class _FullDisk:
    """A staged file whose disk is full: every write fails with ENOSPC."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def write(self, data):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_enospc_during_a_write_is_insufficient_storage_and_the_upload_resumes(uploads):
    registry, up = uploads(min_free_bytes=0)
    invite(registry, "acme-labs", ["test-vowels"])
    data = b"x" * 1024
    declared = _declare("a", 1024)
    declared[-1] = Declared("model.safetensors", 1024, hashlib.sha256(data).hexdigest())
    session_id = up.create("acme-labs", "test-vowels", 1, declared)
    writer = up.writer("acme-labs", session_id)
    writer.write("model.safetensors", 0, data[:512])
    writer._handles["model.safetensors"] = _FullDisk(writer._handles["model.safetensors"])
    with pytest.raises(BarFedError) as err:
        writer.write("model.safetensors", 512, data[512:])
    assert err.value.code == "INSUFFICIENT_STORAGE"
    durable = writer.close()
    assert durable["model.safetensors"] == 0  # nothing unsynced is trusted
    assert up.staged(session_id, "model.safetensors").stat().st_size == 0  # the partial chunk is gone
    writer = up.writer("acme-labs", session_id)  # still open: the node resumes from the durable offset
    writer.write("model.safetensors", 0, data)
    assert writer.close()["model.safetensors"] == 1024


def test_staging_lives_in_the_blob_store_so_a_commit_never_renames_across_filesystems(tmp_path, db_url):
    settings = make_settings(tmp_path, db_url)
    assert settings.staging_dir.resolve().is_relative_to(settings.blob_dir.resolve())
    BlobStore(settings.blob_dir).probe_rename(settings.staging_dir)  # works, leaves nothing behind
    assert not [p for p in settings.blob_dir.iterdir() if p.name.startswith(".probe")]


def test_the_rename_probe_catches_a_staging_area_on_another_filesystem(tmp_path, monkeypatch):
    import errno
    import os
    from pathlib import Path

    store = BlobStore(tmp_path / "blobs")
    shm = Path("/dev/shm")
    if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:  # a real second filesystem
        other = shm / f"barfed-staging-{os.getpid()}"
        try:
            with pytest.raises(BarFedError) as err:
                store.probe_rename(other)
            assert err.value.code == "BLOB_STORE_UNUSABLE"
        finally:
            import shutil

            shutil.rmtree(other, ignore_errors=True)

    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("coordinator.blobs.os.replace", cross_device)
    with pytest.raises(BarFedError) as err:
        store.probe_rename(tmp_path / "blobs" / ".staging")
    assert err.value.code == "BLOB_STORE_UNUSABLE"
    assert "Invalid cross-device link" in str(err.value)


def test_a_blob_left_by_a_rejected_commit_and_a_failed_twin_session_is_collected(uploads):
    from sqlalchemy import update

    from coordinator.state.models import Submission

    registry, up = uploads(min_free_bytes=0)
    invite(registry, "acme-labs", ["test-vowels"])
    files = {MANIFEST_FILE: b'{"m": 1}', SIGNATURE_FILE: b'{"s": 1}', "model.safetensors": b"w" * 256}
    declared = [Declared(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()]
    first = up.create("acme-labs", "test-vowels", 1, declared)
    twin = up.create("acme-labs", "test-vowels", 2, declared)  # the same digests, still open
    writer = up.writer("acme-labs", first)
    for path, data in files.items():
        writer.write(path, 0, data)
    writer.close()
    submission = up.commit("acme-labs", first)
    blobs = BlobStore(up.settings.blob_dir)
    assert up.collect_orphans() == 0  # referenced by a pending submission and an open session
    with registry.session() as session:  # verification rejects it; the twin keeps the blobs alive
        session.execute(update(Submission).where(Submission.id == submission).values(state="REJECTED"))
    assert up.collect_orphans() == 0
    up._fail(twin, "acme-labs", "DIGEST_MISMATCH", "model.safetensors")
    assert len(blobs.digests()) == 3
    assert up.collect_orphans() == 3
    assert blobs.digests() == set()


def test_a_clock_far_ahead_is_named_with_both_times_not_only_ask_for_an_invitation(tmp_path):
    from contributor_node.identity import NodeIdentity
    from protocol import pki

    ca_key, ca_cert = pki.create_ca()
    key = pki.generate_private_key()
    cert = pki.issue_client_certificate(ca_key, ca_cert, pki.make_csr(key, "acme-labs"), "acme-labs", days=30)
    identity = NodeIdentity(tmp_path, "acme-labs")
    identity.cert_path.write_bytes(pki.certificate_pem(cert))
    ahead = cert.not_valid_after_utc + dt.timedelta(days=400)
    with pytest.raises(BarFedError) as err:
        identity.check_certificate(now=ahead)
    message = str(err.value)
    assert f"{ahead:%Y-%m-%d %H:%M}" in message and f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}" in message
    assert "clock" in message
