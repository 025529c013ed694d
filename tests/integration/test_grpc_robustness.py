"""The gRPC servers under hostile bytes, concurrent first callers and clients that go away (issue 25: 5, 12, 14).

Real servers on loopback (the `federation` fixture, or one started here with other settings): corrupt protobuf
bytes are refused with a code and count against the enrollment port's rate limit; the anchor manifest is hashed
once however many callers ask first; an upload stream whose client stalls, freezes or is replaced by its own
organization's rerun gives its session up within seconds, and the rerun resumes from the durable offsets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest

from contributor_node.package import build_package
from protocol.package import file_sha256
from protocol.v1 import barfed_pb2 as pb
from tests.integration.conftest import Federation, make_settings

pytestmark = [pytest.mark.integration]
ERROR_KEY = "barfed-error-code"
SERVICE = "/barfed.v1.Federation/"
CORRUPT = b"\x0a\xff"  # field 1, length-delimited, with a length that runs past the end of the message


def _code(exc: grpc.RpcError) -> str | None:
    return dict(exc.trailing_metadata() or ()).get(ERROR_KEY)


@pytest.fixture
def serve_with(micro, db_url, tmp_path):
    """``with serve_with(**settings) as federation``: the `federation` fixture's coordinator, other settings."""
    from coordinator.embedded import running_coordinator
    from coordinator.keys import CoordinatorKeys
    from coordinator.setup import initialize
    from coordinator.state.db import Registry

    @contextlib.contextmanager
    def start(**overrides):
        settings = make_settings(tmp_path, db_url, sync_every_bytes=64 * 1024, chunk_bytes=64 * 1024, **overrides)
        initialize(settings, micro["branch"])
        registry = Registry(settings.db_url)
        try:
            with running_coordinator(settings) as address:
                yield Federation(settings, registry, CoordinatorKeys(settings.pki_dir), address, tmp_path)
        finally:
            registry.dispose()

    return start


# -- 5: corrupt protobuf bytes ------------------------------------------------------------------------------------


def _raw(channel: grpc.Channel, method: str, shape: str, payload: bytes = CORRUPT) -> grpc.RpcError:
    """Send ``payload`` as the request bytes of ``method`` (no serializer: the bytes go as they are)."""
    path = SERVICE + method
    with pytest.raises(grpc.RpcError) as err:
        if shape == "unary_unary":
            channel.unary_unary(path, request_serializer=None, response_deserializer=None)(payload, timeout=30)
        elif shape == "unary_stream":
            for _ in channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
                payload, timeout=30
            ):
                pass
        else:
            channel.stream_unary(path, request_serializer=None, response_deserializer=None)(iter([payload]), timeout=30)
    return err.value


def test_corrupt_request_bytes_are_refused_with_a_code_logged_in_one_line_and_rate_limited(federation, caplog):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    caplog.set_level(logging.INFO)
    with acme.client(federation.address.service) as client:
        for method, shape in (
            ("GetUpload", "unary_unary"),
            ("CreateUpload", "unary_unary"),
            ("FetchAnchor", "unary_stream"),
            ("WriteChunks", "stream_unary"),
        ):
            exc = _raw(client.channel, method, shape)
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, exc.code(), exc.details())
            assert _code(exc) == "BAD_MESSAGE", (method, exc.details())
            assert "Error parsing" not in exc.details() and "DecodeError" not in exc.details()
        # The service port still works for well-formed calls on the same channel.
        with pytest.raises(grpc.RpcError) as err:
            client.stub.GetUpload(pb.GetUploadRequest(session_id="00000000-0000-0000-0000-000000000000"), timeout=30)
        assert _code(err.value) == "UNKNOWN_SESSION"
    # The anonymous port: every corrupt call is a call, so the per-peer rate limit ends the flood.
    codes: list[str | None] = []
    with grpc.secure_channel(federation.address.enroll, grpc.ssl_channel_credentials(federation.ca_pem)) as channel:
        for _ in range(3 * federation.settings.enroll_burst):
            exc = _raw(channel, "Enroll", "unary_unary")
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), exc.details()
            codes.append(_code(exc))
    assert set(codes) == {"BAD_MESSAGE", "ENROLL_RATE_LIMITED"}, set(codes)
    assert codes.count("BAD_MESSAGE") <= federation.settings.enroll_burst  # the two enroll calls took tokens too
    assert not [r for r in caplog.records if r.exc_info], "a corrupt request was logged with a traceback"
    lines = [r.getMessage() for r in caplog.records if "BAD_MESSAGE" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)


# -- 12: the anchor manifest, hashed once -------------------------------------------------------------------------


def test_concurrent_first_anchor_callers_hash_the_anchor_once(federation, monkeypatch):
    from coordinator.grpc import servicer

    callers = 8
    arrived, hashed = [0], [0]
    changed = threading.Condition()
    release = threading.Event()
    real_org, real_fingerprint = servicer.FederationService._org, servicer.anchor_fingerprint

    async def org_then_count(self, context):
        org = await real_org(self, context)
        with changed:
            arrived[0] += 1
            changed.notify_all()
        return org

    def counted_fingerprint(anchor):
        with changed:
            hashed[0] += 1
        release.wait(timeout=60)  # every caller asks while the first hash is under way
        return real_fingerprint(anchor)

    monkeypatch.setattr(servicer.FederationService, "_org", org_then_count)
    monkeypatch.setattr(servicer, "anchor_fingerprint", counted_fingerprint)
    acme = federation.enroll("acme-labs", ["test-vowels"])
    manifests: list = []
    with acme.client(federation.address.service) as client:

        def ask():
            manifests.append(client.anchor_manifest())

        threads = [threading.Thread(target=ask) for _ in range(callers)]
        for thread in threads:
            thread.start()
        try:
            with changed:
                assert changed.wait_for(lambda: arrived[0] == callers, timeout=60), arrived
        finally:
            release.set()
            for thread in threads:
                thread.join(timeout=60)
        assert len(manifests) == callers and len({m.fingerprint for m in manifests}) == 1
        assert hashed[0] == 1, f"{hashed[0]} callers each hashed the whole anchor"
        client.anchor_manifest()  # later callers get the computed manifest
    assert hashed[0] == 1


# -- 14: a client that goes away gives its session up -------------------------------------------------------------


def _package(identity, source, out):
    build_package(source, out, org=identity.org_id, version=1, private_key=identity.key_path)
    return out


def _declare(client, package) -> pb.UploadSession:
    files = sorted(p for p in package.iterdir() if p.is_file())
    return client.stub.CreateUpload(
        pb.CreateUploadRequest(
            domain="test-vowels",
            version=1,
            files=[pb.FileDeclaration(path=p.name, size=p.stat().st_size, sha256=file_sha256(p)) for p in files],
        ),
        timeout=30,
    )


def _largest(package):
    return max((p for p in package.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)


def _chunks(session_id: str, path, count: int, size: int = 64 * 1024):
    data = path.read_bytes()
    assert len(data) > count * size, "the test needs a file of more chunks than it sends"
    for i in range(count):
        yield pb.Chunk(session_id=session_id, path=path.name, offset=i * size, data=data[i * size : (i + 1) * size])


def _wait_until_durable(client, session_id: str, timeout: float = 60) -> int:
    """Until the coordinator has made some of the stream durable, i.e. the stream holds the session."""
    deadline = time.monotonic() + timeout
    while True:
        progress = client.stub.GetUpload(pb.GetUploadRequest(session_id=session_id), timeout=30)
        durable = sum(f.committed for f in progress.files)
        if durable:
            return durable
        assert time.monotonic() < deadline, "the stream never made anything durable"
        time.sleep(0.05)


def _commit_code(client, session_id: str) -> str | None:
    with pytest.raises(grpc.RpcError) as err:
        client.stub.CommitUpload(pb.CommitUploadRequest(session_id=session_id), timeout=30)
    return _code(err.value)


def _until_released(client, session_id: str, timeout: float) -> tuple[str | None, float]:
    """Probe with commits until the session is no longer SESSION_BUSY; the code then and the seconds it took."""
    start = time.monotonic()
    while (code := _commit_code(client, session_id)) == "SESSION_BUSY" and time.monotonic() - start < timeout:
        time.sleep(0.1)
    return code, time.monotonic() - start


def _received() -> float:
    """Package bytes the in-process coordinator has received so far (its own metric)."""
    from coordinator import metrics

    return metrics.PROCESS.get_sample_value("barfed_upload_bytes_total") or 0.0


def _until_received(at_least: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _received() < at_least:
        assert time.monotonic() < deadline, "the coordinator received no chunk of the stream"
        time.sleep(0.02)


def test_a_rerun_takes_over_a_stalled_stream_of_its_own_org_and_resumes(federation, packages, tmp_path):
    acme = federation.enroll("acme-labs", ["test-vowels"])
    package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
    hold = threading.Event()
    outcome: dict = {}
    with acme.client(federation.address.service) as first, acme.client(federation.address.service) as rerun:
        session = _declare(first, package)
        big = _largest(package)

        def stalled():  # a node that sent some chunks and then stopped (Ctrl-C'd, frozen, on a dead link)
            yield from _chunks(session.session_id, big, 3)
            hold.wait(timeout=120)

        def old_stream():
            try:
                first.stub.WriteChunks(stalled(), timeout=120)
                outcome["code"] = "OK"
            except grpc.RpcError as exc:
                outcome["code"] = _code(exc) or exc.code().name

        holder = threading.Thread(target=old_stream)
        holder.start()
        try:
            _wait_until_durable(first, session.session_id)
            offsets: list[tuple[str, int]] = []
            started = time.monotonic()
            # the same node's rerun, with its recorded session; before, every attempt got SESSION_BUSY
            submission_id = rerun.submit(
                package,
                max_attempts=3,
                session=(session.session_id, session.max_chunk_bytes),
                on_chunk=lambda path, offset, size: offsets.append((path, offset)),
            )
            took = time.monotonic() - started
            holder.join(timeout=60)
        finally:
            hold.set()
            holder.join(timeout=120)
        assert outcome["code"] == "SESSION_TAKEN_OVER", outcome
        assert min(offset for path, offset in offsets if path == big.name) > 0, "the rerun started over"
        assert rerun.submission(submission_id).package_digest == file_sha256(package / "expert.json")
    print(f"rerun over a stalled stream: committed in {took:.2f}s")


def test_a_stream_that_stops_sending_is_ended_and_releases_its_session(serve_with, packages, tmp_path):
    with serve_with(upload_read_timeout_s=1.0) as federation:
        acme = federation.enroll("acme-labs", ["test-vowels"])
        package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
        hold = threading.Event()
        with acme.client(federation.address.service) as client:
            session = _declare(client, package)

            def stalled():
                yield from _chunks(session.session_id, _largest(package), 3)
                hold.wait(timeout=120)

            try:
                with pytest.raises(grpc.RpcError) as err:
                    client.stub.WriteChunks(stalled(), timeout=120)
            finally:
                hold.set()
            assert _code(err.value) == "UPLOAD_STALLED", err.value.details()
            assert _commit_code(client, session.session_id) == "UPLOAD_INCOMPLETE"  # released, not SESSION_BUSY


FROZEN_CLIENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from contributor_node.identity import NodeIdentity
    from protocol.v1 import barfed_pb2 as pb

    home, org, address, session_id, path = sys.argv[1:6]
    data = Path(path).read_bytes()

    def chunks():
        for i in range(3):
            yield pb.Chunk(session_id=session_id, path=Path(path).name, offset=i * 65536,
                           data=data[i * 65536:(i + 1) * 65536])
        print("sent", flush=True)
        time.sleep(3600)

    with NodeIdentity(Path(home), org).client(address) as client:
        client.stub.WriteChunks(chunks(), timeout=3600)
    """
)


def test_a_frozen_client_releases_its_session_within_seconds(serve_with, packages, tmp_path):
    """A client process that stops answering (SIGSTOP: its connection stays open, nothing answers a ping) is found
    by the server's keepalive, and its stream ends. It freezes right after sending, when the server's flow-control
    ping to it is likely still unanswered (that ping once held the keepalive ping back); the read timeout is far
    longer than the test waits, so only keepalive can free the session."""
    with serve_with(grpc_keepalive_s=1.0, grpc_keepalive_timeout_s=1.0, upload_read_timeout_s=600) as federation:
        acme = federation.enroll("acme-labs", ["test-vowels"])
        package = _package(acme, packages["test-vowels"], tmp_path / "pkg")
        with acme.client(federation.address.service) as client:
            session = _declare(client, package)
            identity_home = tmp_path / "nodes" / "acme-labs"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            args = [identity_home, "acme-labs", federation.address.service, session.session_id, _largest(package)]
            received = _received()
            process = subprocess.Popen(
                [sys.executable, "-c", FROZEN_CLIENT, *map(str, args)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
            )
            try:
                assert process.stdout.readline().strip() == "sent"
                # "sent" means gRPC took the chunks, not that they left the process: on a loaded machine the
                # client could freeze with them still queued, and no stream would ever hold the session.
                _until_received(received + 1)
                process.send_signal(signal.SIGSTOP)
                _wait_until_durable(client, session.session_id)
                code, took = _until_released(client, session.session_id, timeout=60)
            finally:
                process.kill()
                process.wait()
            assert code == "UPLOAD_INCOMPLETE", f"the commit probe answered {code} after {took:.1f} s"
            print(f"frozen client: session released after {took:.2f}s (keepalive 1 s + 1 s)")
