"""Faults: the coordinator killed with SIGKILL mid-upload and restarted; a client that vanishes mid-stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from sqlalchemy import create_engine, select, text

from contributor_node.package import build_package
from coordinator.state.models import Expert, Submission
from protocol.package import file_sha256
from protocol.v1 import barfed_pb2 as pb
from tests.integration.conftest import Federation, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CoordinatorProcess:
    """`barfed coordinator serve` in its own process, on fixed ports so clients can reconnect after a restart."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.env = {
            **os.environ,
            "BARFED_COORD_HOME": str(settings.home),
            "BARFED_COORD_DATABASE_URL": settings.db_url,
            "BARFED_COORD_LISTEN": settings.listen,
            "BARFED_COORD_ENROLL_LISTEN": settings.enroll_listen,
            "BARFED_COORD_API_LISTEN": settings.api_listen,
            "BARFED_COORD_SYNC_EVERY_BYTES": str(settings.sync_every_bytes),
        }
        self.process = None

    def start(self) -> None:
        (self.settings.home / "grpc.port").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "barfed.cli", "coordinator", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.settings.home / "serve.log", "ab"),  # noqa: SIM115
        )
        deadline = time.time() + 60
        while not (self.settings.home / "grpc.port").is_file():
            assert self.process.poll() is None, (self.settings.home / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "coordinator did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def served(micro, db_url, tmp_path):
    from coordinator.keys import CoordinatorKeys
    from coordinator.setup import initialize
    from coordinator.state.db import Registry

    settings = make_settings(tmp_path, db_url, sync_every_bytes=64 * 1024)
    settings = settings.model_copy(
        update={"listen": f"127.0.0.1:{_free_port()}", "enroll_listen": f"127.0.0.1:{_free_port()}"}
    )
    initialize(settings, micro["branch"])
    process = CoordinatorProcess(settings)
    process.start()
    registry = Registry(settings.db_url, migrate_schema=False)

    class Addresses:
        service, enroll = settings.listen, settings.enroll_listen

    federation = Federation(settings, registry, CoordinatorKeys(settings.pki_dir), Addresses, tmp_path)
    yield federation, process
    process.stop()
    registry.dispose()


def _big_package(identity, source, out):
    """The micro expert's package plus an 8 MB router-calibration sample, so an upload takes a while."""
    from bar_model.domains import get_domain

    sample = get_domain("test-vowels").sft(90_000)
    build_package(source, out, org=identity.org_id, version=1, private_key=identity.key_path, calibration=sample)
    assert (out / "calibration.jsonl").stat().st_size > 4 * 1024**2
    return out


def _durable_bytes(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COALESCE(SUM(committed), 0) FROM upload_files")).scalar())
    finally:
        engine.dispose()


def test_kill_9_mid_upload_then_resume_and_accept(served, packages, tmp_path):
    federation, process = served
    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _big_package(acme, packages["test-vowels"], tmp_path / "pkg")
    offsets: list[tuple[str, int]] = []
    killed = threading.Event()
    result: dict = {}

    def on_chunk(path, offset, size):
        offsets.append((path, offset))
        if not killed.is_set():
            time.sleep(0.002)  # slow enough that the kill lands mid-upload

    def upload():
        with acme.client(federation.address.service) as client:
            try:
                submission_id = client.submit(package, chunk_bytes=64 * 1024, on_chunk=on_chunk)
                result["status"] = client.wait(submission_id, timeout=120)
            except Exception as exc:  # surfaced by the assertion below
                result["error"] = exc

    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.time() + 120
    while _durable_bytes(federation.settings.db_url) < 1024 * 1024:
        assert time.time() < deadline and thread.is_alive(), result
        time.sleep(0.05)
    process.kill()
    killed.set()
    sent_before_kill = len(offsets)
    durable = _durable_bytes(federation.settings.db_url)
    assert not (federation.settings.home / "blobs" / "sha256").exists() or not any(
        (federation.settings.home / "blobs" / "sha256").rglob("*")
    ), "nothing reaches the blob store before commit"
    time.sleep(0.5)
    process.start()
    thread.join(timeout=300)
    assert "error" not in result, result.get("error")
    status = result["status"]
    assert status.state == pb.ACCEPTED, (status.error_code, status.message)
    assert status.package_digest == file_sha256(package / "expert.json")
    after_kill = [offset for path, offset in offsets[sent_before_kill:] if path == "calibration.jsonl"]
    # The dead stream may still hand a few chunks to its broken connection; they continue past everything the
    # coordinator received, so the resumed stream's start is the smallest offset sent after the kill.
    assert after_kill and min(after_kill) > 0, "the upload restarted from scratch instead of the durable offset"
    assert min(after_kill) <= durable
    with federation.registry.session() as session:
        expert = session.scalars(select(Expert)).one()
        for path, digest in expert.files.items():
            assert file_sha256(federation.settings.blob_dir / "sha256" / digest[:2] / digest[2:]) == digest
            assert digest == file_sha256(package / path)


def test_client_vanishing_mid_stream_leaves_no_visible_expert(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _big_package(acme, packages["test-vowels"], tmp_path / "pkg")
    with acme.client(federation.address.service) as client:
        files = sorted(p for p in package.iterdir())
        session = client.stub.CreateUpload(
            pb.CreateUploadRequest(
                domain="test-vowels",
                version=1,
                files=[pb.FileDeclaration(path=p.name, size=p.stat().st_size, sha256=file_sha256(p)) for p in files],
            )
        )
        data = (package / "calibration.jsonl").read_bytes()

        def vanishing():
            for i in range(3):
                yield pb.Chunk(
                    session_id=session.session_id,
                    path="calibration.jsonl",
                    offset=i * 65536,
                    data=data[i * 65536 : (i + 1) * 65536],
                )
            raise ConnectionResetError("the node's process died")

        with pytest.raises((grpc.RpcError, ConnectionResetError)):
            client.stub.WriteChunks(vanishing(), timeout=30)
        deadline = time.time() + 10
        while True:  # the coordinator may still be closing the dead stream (SESSION_BUSY) for a moment
            with pytest.raises(grpc.RpcError) as err:
                client.stub.CommitUpload(pb.CommitUploadRequest(session_id=session.session_id), timeout=30)
            code = dict(err.value.trailing_metadata())["barfed-error-code"]
            if code != "SESSION_BUSY" or time.time() > deadline:
                break
            time.sleep(0.1)
        assert code == "UPLOAD_INCOMPLETE"
    with federation.registry.session() as session_:
        assert session_.scalars(select(Submission)).all() == []
        assert session_.scalars(select(Expert)).all() == []
    stored = federation.settings.blob_dir / "sha256"  # the store itself; the open session's bytes stay staged
    assert not [p for p in stored.rglob("*") if p.is_file()]


def test_abandoned_sessions_are_cleaned_up(federation, packages, tmp_path):
    import datetime as dt

    from coordinator.blobs import BlobStore
    from coordinator.uploads.sessions import Uploads

    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _big_package(acme, packages["test-vowels"], tmp_path / "pkg")
    with acme.client(federation.address.service) as client:
        files = sorted(package.iterdir())
        session = client.stub.CreateUpload(
            pb.CreateUploadRequest(
                domain="test-vowels",
                version=1,
                files=[pb.FileDeclaration(path=p.name, size=p.stat().st_size, sha256=file_sha256(p)) for p in files],
            )
        )
        chunk = (package / "expert.json").read_bytes()[:1000]
        client.stub.WriteChunks(
            iter([pb.Chunk(session_id=session.session_id, path="expert.json", offset=0, data=chunk)]), timeout=30
        )
    staged = federation.settings.staging_dir / session.session_id
    assert staged.is_dir()
    uploads = Uploads(federation.registry, federation.settings, BlobStore(federation.settings.blob_dir))
    assert uploads.expire(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == 1
    assert not staged.exists()
