"""Over real gRPC with mTLS on loopback, on SQLite and PostgreSQL: enroll → upload → verify → ACCEPTED."""

from __future__ import annotations

import hashlib
import os
import shutil

import grpc
import pytest
from sqlalchemy import select

from contributor_node.client import CoordinatorClient
from contributor_node.package import build_package
from coordinator.enrollment import revoke
from coordinator.state.audit import verify_chain
from coordinator.state.experts import set_expert_state
from coordinator.state.models import AuditEntry, Expert, Submission
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _package(identity, source, out, version=1):
    build_package(source, out, org=identity.org_id, version=version, private_key=identity.key_path)
    return out


def test_enroll_upload_accept(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    with acme.client(federation.address.service) as client:
        anchor_fp = client.fetch_anchor(tmp_path / "anchor", (federation.settings.pki_dir / "release.pub").read_bytes())
        package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
        submission_id = client.submit(package)
        status = client.wait(submission_id)
        assert status.state == pb.ACCEPTED, (status.error_code, status.message)
        assert status.package_digest == hashlib.sha256((package / "expert.json").read_bytes()).hexdigest()
        # Committing again is idempotent: same submission, no second expert.
        again = client.stub.CommitUpload(pb.CommitUploadRequest(session_id=_session_of(federation, submission_id)))
        assert again.submission_id == submission_id
    with federation.registry.session() as session:
        experts = session.scalars(select(Expert)).all()
        assert [(e.domain, e.version, e.org_id, e.status) for e in experts] == [
            ("test-vowels", 1, "acme-labs", "ACCEPTED")
        ]
        assert anchor_fp.startswith("sha256:")
        assert verify_chain(session) > 0
        actions = [a.action for a in session.scalars(select(AuditEntry))]
        assert {"org.invite", "enrollment.approve", "upload.commit", "submission.accepted"} <= set(actions)
    for digest in experts[0].files.values():
        assert federation.settings.blob_dir.joinpath("sha256", digest[:2], digest[2:]).is_file()


def _session_of(federation, submission_id):
    from coordinator.state.models import UploadSession

    with federation.registry.session() as session:
        return session.scalar(select(UploadSession.id).where(UploadSession.submission_id == submission_id))


def test_domain_not_owned_is_refused(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["math"])
    with acme.client(federation.address.service) as client:
        package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
        with pytest.raises(BarFedError) as err:
            client.submit(package)
        assert err.value.code == "DOMAIN_NOT_OWNED"


def test_revoked_org_is_refused_at_the_transport(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    revoke(federation.registry, "acme-labs", "key compromised")
    with acme.client(federation.address.service) as client, pytest.raises(BarFedError) as err:
        client.submit(package)
    assert err.value.code == "CERT_REVOKED"


def test_revoked_org_is_refused_at_the_signature_check(federation, packages, tmp_path):
    """A package committed before revocation is verified after it: the pinned key no longer counts."""
    from coordinator.blobs import BlobStore
    from coordinator.uploads.sessions import Declared, Uploads
    from coordinator.verification.job import Verifier
    from protocol.package import file_sha256

    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    blobs = BlobStore(federation.settings.blob_dir)
    uploads = Uploads(federation.registry, federation.settings, blobs)
    files = sorted(p for p in package.iterdir())
    session_id = uploads.create(
        "acme-labs", "test-vowels", 1, [Declared(p.name, p.stat().st_size, file_sha256(p)) for p in files]
    )
    _write_all(uploads, session_id, files, federation.settings.chunk_bytes)
    submission_id = uploads.commit("acme-labs", session_id)
    revoke(federation.registry, "acme-labs", "left the federation")
    # Committed outside the server, so only this verifier runs it.
    assert Verifier(federation.registry, federation.settings, blobs).run(submission_id) == "REJECTED"
    with federation.registry.session() as session:
        submission = session.get(Submission, submission_id)
        assert (submission.state, submission.error_code) == ("REJECTED", "ORG_REVOKED")
        assert session.scalars(select(Expert)).all() == []
    assert blobs.digests() == set()


def _write_all(uploads, session_id, files, chunk_bytes):
    """Stream every file into the session, in order, without the gRPC layer."""
    writer = uploads.writer("acme-labs", session_id)
    for path in files:
        data = path.read_bytes()
        for start in range(0, len(data), chunk_bytes):
            writer.write(path.name, start, data[start : start + chunk_bytes])
    writer.close()


def test_unenrolled_caller_and_enrollment_port_limits(federation, tmp_path):
    # No client certificate: the mutual-TLS port refuses the handshake itself.
    anonymous = CoordinatorClient(federation.address.service, ca_pem=federation.ca_pem, timeout=5)
    with anonymous, pytest.raises(BarFedError):
        anonymous.submission("whatever")
    # On the enrollment port, everything but enrollment needs an identity.
    channel = grpc.secure_channel(federation.address.enroll, grpc.ssl_channel_credentials(federation.ca_pem))
    stub = pb_stub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetSubmission(pb.GetSubmissionRequest(submission_id="x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert dict(err.value.trailing_metadata())["barfed-error-code"] == "CLIENT_CERT_REQUIRED"
    with pytest.raises(grpc.RpcError) as err:
        stub.Enroll(pb.EnrollRequest(org_id="acme-labs", csr_pem="junk", enrollment_token="t"), timeout=5)
    assert dict(err.value.trailing_metadata())["barfed-error-code"] == "CSR_INVALID"
    channel.close()


def pb_stub(channel):
    from protocol.v1 import barfed_pb2_grpc

    return barfed_pb2_grpc.FederationStub(channel)


def test_versions_increase_and_lifecycle(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    with acme.client(federation.address.service) as client:
        for version in (1, 2):
            package = _package(acme, packages["test-vowels"], tmp_path / f"pkg{version}", version=version)
            assert client.wait(client.submit(package)).state == pb.ACCEPTED
        with pytest.raises(BarFedError) as err:
            client.submit(_package(acme, packages["test-vowels"], tmp_path / "old", version=2))
        assert err.value.code == "VERSION_NOT_NEWER"
    set_expert_state(federation.registry, "test-vowels", 1, "QUARANTINED", "eval regression", "admin")
    set_expert_state(federation.registry, "test-vowels", 1, "OPTED_OUT", "org asked", "admin")
    with pytest.raises(BarFedError) as err:
        set_expert_state(federation.registry, "test-vowels", 1, "ACCEPTED", "undo", "admin")
    assert err.value.code == "BAD_TRANSITION"


def test_approving_after_revocation_is_refused(federation):
    from coordinator.enrollment import approve, enroll, invite
    from protocol import pki

    token = invite(federation.registry, "globex", ["code"])
    key = pki.generate_private_key()
    pending = enroll(federation.registry, "globex", pki.make_csr(key, "globex").decode(), token)
    revoke(federation.registry, "globex", "changed their mind")
    with pytest.raises(BarFedError) as err:
        approve(federation.registry, federation.keys, pending.id)
    assert err.value.code == "NOT_PENDING"  # revocation rejected the pending enrollment
    assert pinned_keys_of(federation, "globex") == []


def pinned_keys_of(federation, org):
    from coordinator.enrollment import pinned_keys

    return pinned_keys(federation.registry, org)


def test_rejecting_one_package_keeps_blobs_another_still_needs(federation, packages, tmp_path):
    """Two submissions share a tensor file; the first is rejected, the second must still verify."""
    from coordinator.blobs import BlobStore
    from coordinator.uploads.sessions import Declared, Uploads
    from coordinator.verification.job import Verifier
    from protocol.package import file_sha256
    from protocol.signing import sign_directory

    acme = federation.enroll("acme-labs", ["test-vowels"])
    good = _package(acme, packages["test-vowels"], tmp_path / "good")
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "model.sig").unlink()
    sign_directory(bad, federation.root / "nodes" / "acme-labs" / "org.key")  # same files, fresh signature...
    manifest = (bad / "expert.json").read_text().replace('"org":"acme-labs"', '"org":"nobody"')
    (bad / "expert.json").write_text(manifest)  # ...then a tampered manifest: this one will be rejected
    blobs = BlobStore(federation.settings.blob_dir)
    uploads = Uploads(federation.registry, federation.settings, blobs)
    submissions = []
    for package in (bad, good):
        files = sorted(package.iterdir())
        session_id = uploads.create(
            "acme-labs", "test-vowels", 1, [Declared(p.name, p.stat().st_size, file_sha256(p)) for p in files]
        )
        _write_all(uploads, session_id, files, federation.settings.chunk_bytes)
        submissions.append(uploads.commit("acme-labs", session_id))
    verifier = Verifier(federation.registry, federation.settings, blobs)
    assert verifier.run(submissions[0]) == "REJECTED"
    assert verifier.run(submissions[1]) == "ACCEPTED"
    with federation.registry.session() as session:
        kept = set(session.get(Submission, submissions[1]).files.values())
    assert kept <= blobs.digests()


def test_committed_bytes_leave_staging_at_once_even_when_the_store_has_them(federation, packages, tmp_path):
    """The second commit finds its bytes in the blob store; its staged copy is discarded off the commit path,
    and a discard cut short by a stop is finished at the next start."""
    from coordinator.blobs import BlobStore
    from coordinator.uploads.sessions import DISCARDED, Declared, Uploads
    from protocol.package import file_sha256

    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    files = sorted(package.iterdir())
    staging = federation.settings.staging_dir
    blobs = BlobStore(federation.settings.blob_dir)
    uploads = Uploads(federation.registry, federation.settings, blobs)
    for _ in range(2):
        session_id = uploads.create(
            "acme-labs", "test-vowels", 1, [Declared(p.name, p.stat().st_size, file_sha256(p)) for p in files]
        )
        _write_all(uploads, session_id, files, federation.settings.chunk_bytes)
        uploads.commit("acme-labs", session_id)
        assert not (staging / session_id).exists()
    uploads.close()
    assert [p for p in staging.rglob("*") if p.is_file()] == []
    assert {file_sha256(p) for p in files} <= blobs.digests()

    cut_short = staging / DISCARDED / session_id
    cut_short.mkdir()
    (cut_short / "model.safetensors").write_bytes(b"left by a stop")
    Uploads(federation.registry, federation.settings, blobs).close()
    assert not cut_short.exists()


def test_durable_progress_never_runs_ahead_of_fsync(federation, packages, tmp_path, monkeypatch):
    """Checkpoints fsync beside the stream; the registry still only records lengths fsync has covered."""
    import os
    import time

    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from coordinator.blobs import BlobStore
    from coordinator.state.models import UploadFile
    from coordinator.uploads import writer as uploads_module
    from coordinator.uploads.sessions import Declared, Uploads
    from protocol.package import file_sha256

    synced: dict[str, int] = {}  # staged file -> bytes on disk when an fsync of it last returned
    recorded: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        size = os.fstat(fd).st_size
        time.sleep(0.005)  # so the stream runs ahead of the checkpoint
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced[path] = max(synced.get(path, 0), size)

    def check_before_flush(session, _context, _instances):
        for row in session.dirty:
            if isinstance(row, UploadFile):
                staged = str(uploads.staged(row.session_id, row.path).resolve())
                assert row.committed <= synced.get(staged, 0), "durable progress ran ahead of fsync"
                recorded.append((row.path, row.committed))

    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    uploads = Uploads(federation.registry, federation.settings, BlobStore(federation.settings.blob_dir))
    files = sorted(p for p in package.iterdir())
    session_id = uploads.create(
        "acme-labs", "test-vowels", 1, [Declared(p.name, p.stat().st_size, file_sha256(p)) for p in files]
    )
    monkeypatch.setattr(uploads_module.os, "fsync", slow_fsync)
    event.listen(Session, "before_flush", check_before_flush)
    try:
        _write_all(uploads, session_id, files, 16 * 1024)
    finally:
        event.remove(Session, "before_flush", check_before_flush)
    weights = [n for path, n in recorded if path == "model.safetensors"]
    size = (package / "model.safetensors").stat().st_size
    assert len(weights) > 2 and weights == sorted(weights) and weights[-1] == size, "progress was recorded midway"
    _upload, rows = uploads.progress("acme-labs", session_id)
    assert all(row.committed == row.size for row in rows)
    assert uploads.commit("acme-labs", session_id)


def test_node_refuses_to_commit_a_package_changed_after_building(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    data = bytearray((package / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the digest tells
    (package / "model.safetensors").write_bytes(bytes(data))
    with acme.client(federation.address.service) as client, pytest.raises(BarFedError) as err:
        client.submit(package)
    assert err.value.code == "PACKAGE_FILE_DIGEST"
    with federation.registry.session() as session:
        assert session.scalars(select(Submission)).all() == []


def test_node_refuses_to_commit_a_package_rewritten_while_it_is_sent(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    weights = package / "model.safetensors"
    original = weights.read_bytes()

    def rewrite_once(path, offset, size):
        if path == weights.name and offset > 0 and weights.read_bytes() == original:
            weights.write_bytes(original)  # the same bytes, written again: only the file's state tells
            os.utime(weights, ns=(0, 0))

    with acme.client(federation.address.service) as client, pytest.raises(BarFedError) as err:
        client.submit(package, chunk_bytes=64 * 1024, on_chunk=rewrite_once)
    assert err.value.code == "PACKAGE_CHANGED"
    with federation.registry.session() as session:
        assert session.scalars(select(Submission)).all() == []
