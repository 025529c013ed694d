"""Limits hold under concurrency, on SQLite and PostgreSQL: N simultaneous calls never get past a limit together.

The race was a count and an insert in separate statements under READ COMMITTED (20 concurrent creates opened 8
sessions against a limit of 4 on PostgreSQL); now the check and the insert share a transaction that first locks
the organization's row, and the disk check also takes the disk's own lock and counts what open sessions have
already declared. The enrollment port's gate refuses calls past a peer's burst with a code.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from coordinator.blobs import BlobStore
from coordinator.enrollment import EnrollmentGate, invite
from coordinator.uploads.sessions import Declared
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, SIGNATURE_FILE
from tests.integration.conftest import make_settings

pytestmark = [pytest.mark.integration]
GiB = 1024**3
THREADS = 20


def _package(tag: str, weights: int = 64) -> dict[str, bytes]:
    return {
        MANIFEST_FILE: f'{{"tag": "{tag}"}}'.encode(),
        SIGNATURE_FILE: f'{{"sig": "{tag}"}}'.encode(),
        "model.safetensors": hashlib.sha256(tag.encode()).digest() * (weights // 32),
    }


def _declare(files: dict[str, bytes]) -> list[Declared]:
    return [Declared(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()]


def _all_at_once(calls) -> list:
    """Run every call at the same instant (a barrier), each on its own thread; results or BarFedErrors."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except BarFedError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_concurrent_creates_never_exceed_the_session_limit(uploads):
    registry, up = uploads(max_open_sessions_per_org=4)
    invite(registry, "acme-labs", ["test-vowels"])
    calls = [
        (lambda i=i: up.create("acme-labs", "test-vowels", 1, _declare(_package(f"p{i}")))) for i in range(THREADS)
    ]
    results = _all_at_once(calls)
    opened = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, BarFedError)]
    assert len(opened) == 4, f"{len(opened)} sessions opened against a limit of 4"
    assert {e.code for e in refused} == {"TOO_MANY_SESSIONS"}


def test_concurrent_commits_never_exceed_the_pending_limit(uploads):
    registry, up = uploads(max_open_sessions_per_org=THREADS, max_pending_submissions_per_org=3)
    invite(registry, "acme-labs", ["test-vowels"])
    sessions = []
    for i in range(8):
        files = _package(f"c{i}")
        session_id = up.create("acme-labs", "test-vowels", 1, _declare(files))
        writer = up.writer("acme-labs", session_id)
        for path, data in files.items():
            writer.write(path, 0, data)
        writer.close()
        sessions.append(session_id)
    results = _all_at_once([(lambda s=s: up.commit("acme-labs", s)) for s in sessions])
    committed = [r for r in results if isinstance(r, str)]
    assert len(committed) == 3, f"{len(committed)} submissions pending against a limit of 3"
    assert {e.code for e in results if isinstance(e, BarFedError)} == {"TOO_MANY_PENDING"}
    assert len(BlobStore(up.settings.blob_dir).digests()) == 3 * 3, "a refused commit moved bytes into the store"


def test_two_sessions_never_reserve_more_disk_than_there_is(uploads, tmp_path):
    """Each of several organizations declares S bytes at once, with room for one S (and a margin of S/2 for
    whatever else this machine writes meanwhile): exactly one is accepted, the others INSUFFICIENT_STORAGE."""
    free = shutil.disk_usage(tmp_path).free
    size = min(8 * GiB, free // 4)  # only declared, never written: any disk can run it
    registry, up = uploads(min_free_bytes=free - size - size // 2, max_file_bytes=size)
    orgs = [f"org-{i}" for i in range(6)]
    for org in orgs:
        invite(registry, org, [f"d-{org}"])

    def declare(org):
        files = _declare(_package(org))
        files[-1] = Declared("model.safetensors", size - 64, files[-1].sha256)
        return lambda: up.create(org, f"d-{org}", 1, files)

    results = _all_at_once([declare(org) for org in orgs])
    assert sum(isinstance(r, str) for r in results) == 1, results
    assert {e.code for e in results if isinstance(e, BarFedError)} == {"INSUFFICIENT_STORAGE"}
    accepted = next(r for r in results if isinstance(r, str))
    winner = orgs[results.index(accepted)]
    assert declare(winner)() == accepted  # its own declaration again: the same session, reserved once
    with pytest.raises(BarFedError) as err:
        declare(next(o for o in orgs if o != winner))()
    assert err.value.code == "INSUFFICIENT_STORAGE"


def test_the_reserved_bytes_shrink_as_the_session_writes(uploads, tmp_path):
    registry, up = uploads(min_free_bytes=0)
    invite(registry, "acme-labs", ["test-vowels"])
    files = _package("w", weights=4096)
    session_id = up.create("acme-labs", "test-vowels", 1, _declare(files))
    from coordinator.state import uploads as records
    from coordinator.state.models import utcnow

    def reserved():
        with records.creating(registry, "acme-labs", utcnow()) as tx:
            return tx.reserved_bytes()

    assert reserved() == sum(len(d) for d in files.values())
    writer = up.writer("acme-labs", session_id)
    writer.write("model.safetensors", 0, files["model.safetensors"])
    writer.close()
    assert reserved() == len(files[MANIFEST_FILE]) + len(files[SIGNATURE_FILE])  # weights written


def test_the_enrollment_gate_bounds_calls_per_peer_and_in_flight():
    gate = EnrollmentGate(calls_per_minute=60, burst=3, in_flight=2)
    for _ in range(3):
        with gate.admit("ipv4:10.0.0.1:1000"):
            pass
    with pytest.raises(BarFedError) as err, gate.admit("ipv4:10.0.0.1:2000"):  # another port, the same peer
        pass
    assert err.value.code == "ENROLL_RATE_LIMITED"
    with gate.admit("ipv4:10.0.0.2:1"), gate.admit("ipv4:10.0.0.3:1"):
        with pytest.raises(BarFedError) as err, gate.admit("ipv4:10.0.0.4:1"):
            pass
        assert err.value.code == "ENROLL_BUSY"
    with gate.admit("ipv4:10.0.0.4:1"):  # in flight again below the bound
        pass


def test_the_enrollment_port_refuses_big_messages_and_a_burst_with_codes(micro, tmp_path):
    from coordinator.embedded import running_coordinator
    from coordinator.setup import initialize
    from protocol.v1 import barfed_pb2 as pb
    from protocol.v1 import barfed_pb2_grpc

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", enroll_burst=5)
    initialize(settings, micro["branch"])
    with running_coordinator(settings) as address:
        channel = grpc.secure_channel(
            address.enroll, grpc.ssl_channel_credentials((settings.pki_dir / "ca.pem").read_bytes())
        )
        stub = barfed_pb2_grpc.FederationStub(channel)
        with pytest.raises(grpc.RpcError) as err:  # the service port's 8 MiB is not the enrollment port's
            stub.Enroll(pb.EnrollRequest(org_id="acme-labs", csr_pem="x" * (1024**2)), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        codes = []
        for _ in range(8):
            try:
                stub.Enroll(pb.EnrollRequest(org_id="acme-labs", csr_pem="x" * 9000, enrollment_token="t"), timeout=10)
            except grpc.RpcError as exc:
                codes.append(dict(exc.trailing_metadata() or ()).get("barfed-error-code"))
        channel.close()
    assert codes[:4] == ["CSR_INVALID"] * 4, codes  # bounded before parsing (the big message used one call)
    assert codes[-1] == "ENROLL_RATE_LIMITED", codes
