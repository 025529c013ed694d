"""Hundreds of maximal anonymous Enroll calls leave the coordinator's RSS within 100 MB of where it started.

The coordinator runs as it does in production (`barfed coordinator serve` in its own process, read with
psutil), with the per-peer rate lifted so every call reaches the handler: requests at the enrollment port's
message limit (refused by the CSR bound before parsing), CSRs at that bound (parsed and refused), and
service-port-sized 8 MiB requests (refused by the transport), from several threads at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import psutil
import pytest

from coordinator.enrollment import MAX_CSR_BYTES
from protocol.v1 import barfed_pb2 as pb
from protocol.v1 import barfed_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CALLS = 400
MB = 1024**2


def _pem(size: int) -> str:
    body = "MIIB" + "A" * (size - 80)
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{lines}\n-----END CERTIFICATE REQUEST-----\n"[:size]


REQUESTS = (
    pb.EnrollRequest(org_id="acme-labs", csr_pem="A" * (60 * 1024), enrollment_token="t" * 128, contact="c" * 256),
    pb.EnrollRequest(org_id="acme-labs", csr_pem=_pem(MAX_CSR_BYTES), enrollment_token="t" * 128, contact="c" * 256),
    pb.EnrollRequest(org_id="acme-labs", csr_pem="A" * (8 * MB - 1024), enrollment_token="t"),
)


@pytest.fixture
def coordinator(tmp_path):
    home = tmp_path / "coordinator"
    env = {
        **os.environ,
        "BARFED_COORD_ENROLL_CALLS_PER_MINUTE": str(10**7),
        "BARFED_COORD_ENROLL_BURST": str(10**7),
        "BARFED_COORD_LISTEN": "127.0.0.1:0",
        "BARFED_COORD_ENROLL_LISTEN": "127.0.0.1:0",
        "BARFED_COORD_API_LISTEN": "127.0.0.1:0",
        "BARFED_COORDINATOR_CONFIG": str(tmp_path / "none.toml"),
    }
    cli = [sys.executable, "-m", "barfed.cli", "coordinator"]
    subprocess.run([*cli, "init", "--home", str(home)], env=env, check=True, capture_output=True, timeout=120)
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([*cli, "serve", "--home", str(home)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (home / "enroll.port").is_file():
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the coordinator did not start"
            time.sleep(0.1)
        yield process, f"127.0.0.1:{(home / 'enroll.port').read_text().strip()}", (home / "pki" / "ca.pem").read_bytes()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _call(stub, request) -> str:
    try:
        stub.Enroll(request, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        return dict(exc.trailing_metadata() or ()).get("barfed-error-code") or exc.code().name


def test_many_maximal_anonymous_enrollments_keep_rss_flat(coordinator):
    process, address, ca_pem = coordinator
    rss = psutil.Process(process.pid)
    channel = grpc.secure_channel(
        address, grpc.ssl_channel_credentials(ca_pem), options=[("grpc.max_send_message_length", 16 * MB)]
    )
    stub = barfed_pb2_grpc.FederationStub(channel)
    with ThreadPoolExecutor(max_workers=8) as pool:
        warm = list(pool.map(lambda i: _call(stub, REQUESTS[i % 3]), range(30)))  # allocator and caches settle
        start = rss.memory_info().rss
        outcomes = list(pool.map(lambda i: _call(stub, REQUESTS[i % 3]), range(CALLS)))
    channel.close()
    grown = rss.memory_info().rss - start
    print(f"RSS {start / MB:.0f} MB -> {(start + grown) / MB:.0f} MB over {CALLS} calls")
    assert set(warm) | set(outcomes) <= {"CSR_INVALID", "RESOURCE_EXHAUSTED"}, set(outcomes)
    assert outcomes.count("CSR_INVALID") >= CALLS // 2, "the calls did not reach the handler"
    assert grown < 100 * MB, f"RSS grew {grown / MB:.0f} MB over {CALLS} calls (from {start / MB:.0f} MB)"
