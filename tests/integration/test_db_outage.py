"""A database outage while clients are working: the coordinator answers UNAVAILABLE (gRPC) and 503 with Retry-After
(REST) with the retryable code DATABASE_UNAVAILABLE, and a node retries through it instead of giving up.

The outage is real but private to the test: the coordinator reaches PostgreSQL through a TCP proxy on loopback,
which the test stops (new connections refused, open ones cut, as a database restart does) and starts again, while
the machine's PostgreSQL keeps serving everyone else."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

import grpc
import httpx
import pytest

from contributor_node import upload
from contributor_node.client import CoordinatorClient
from contributor_node.home import NodeHome
from contributor_node.package import build_package
from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings
from coordinator.embedded import running_coordinator
from coordinator.keys import CoordinatorKeys
from coordinator.setup import initialize
from coordinator.state import tokens
from coordinator.state.db import Registry
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb
from tests.integration.conftest import Federation, fresh_database, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Proxy:
    """Loopback TCP proxy in front of PostgreSQL; `stop` refuses new connections and cuts the open ones."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream, self.port = upstream, 0
        self.listener: socket.socket | None = None
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port, self.listener = listener.getsockname()[1], listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
            listener.close()
        with self.lock:
            cut, self.open = self.open, set()
        for sock in cut:
            _quietly(sock.shutdown, socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                if self.listener is not listener:
                    return
                continue
            server.settimeout(None)
            with self.lock:
                self.open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                source.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _quietly(sock.shutdown, socket.SHUT_RDWR)


def _quietly(call, *args) -> None:
    with contextlib.suppress(OSError):
        call(*args)


@pytest.fixture
def behind_proxy(micro, tmp_path):
    """A coordinator on PostgreSQL reached through `Proxy`; the test's own registry goes direct."""
    proxy = Proxy()
    proxy.start()
    with fresh_database("postgresql", tmp_path) as url:
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        settings = make_settings(tmp_path, proxied, api_insecure_http=True, chunk_bytes=64 * 1024)
        initialize(settings, micro["branch"])
        registry = Registry(url)
        try:
            with running_coordinator(settings) as address:
                yield Federation(settings, registry, CoordinatorKeys(settings.pki_dir), address, tmp_path), proxy
        finally:
            proxy.stop()
            registry.dispose()


def _status(call) -> tuple[grpc.StatusCode, str | None, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    exc = refused.value
    return exc.code(), dict(exc.trailing_metadata() or ()).get("barfed-error-code"), exc.details()


def test_rest_and_grpc_answer_a_database_outage_as_unavailable_with_a_retryable_code(behind_proxy):
    federation, proxy = behind_proxy
    acme = federation.enroll("acme-labs", ["test-vowels"])
    token, _ = tokens.create(federation.registry, "operator", "test")
    headers = {"Authorization": f"Bearer {token}"}
    unknown = str(uuid.uuid4())
    with (
        httpx.Client(base_url=federation.address.api, headers=headers, timeout=30) as api,
        CoordinatorClient(federation.address.enroll, ca_pem=federation.ca_pem, retries=False) as anonymous,
        acme.client(federation.address.service, retries=False) as member,
    ):
        assert api.get("/v1/orgs").status_code == 200
        proxy.stop()

        for away in (api.get("/v1/orgs"), api.post("/v1/releases/builds", json={})):
            assert away.status_code == 503, away.text
            assert away.json()["code"] == "DATABASE_UNAVAILABLE" and "retry shortly" in away.json()["message"]
            assert int(away.headers["Retry-After"]) > 0
        assert api.get("/readyz").status_code == 503

        for call in (
            lambda: anonymous.stub.GetEnrollment(pb.GetEnrollmentRequest(enrollment_id=unknown), timeout=30),
            lambda: member.stub.GetSubmission(pb.GetSubmissionRequest(submission_id=unknown), timeout=30),
        ):
            status, code, details = _status(call)
            assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"), details
            assert "retry shortly" in details and "Traceback" not in details

        proxy.start()
        deadline = time.monotonic() + 30  # a bound on the wait, not a measurement
        while (back := api.get("/v1/orgs")).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)
        with pytest.raises(BarFedError) as refused:
            anonymous.enrollment(unknown)
        assert refused.value.code == "UNKNOWN_ENROLLMENT"


def test_a_node_submission_retries_through_a_short_outage_and_is_accepted(behind_proxy, packages):
    federation, proxy = behind_proxy
    acme = federation.enroll("acme-labs", ["test-vowels"])
    address = federation.address
    settings = NodeSettings(
        home=acme.home, org_id="acme-labs", service_address=address.service, enroll_address=address.enroll
    )
    build_package(
        packages["test-vowels"],
        NodeHome(acme.home).package("test-vowels", 1),
        org="acme-labs",
        version=1,
        private_key=acme.key_path,
    )
    waits: list[float] = []
    retry = Retrying(settings, address.service, on_wait=waits.append)
    with acme.client(address.service, **retry.client_options()) as client:
        proxy.stop()
        restart = threading.Timer(2.0, proxy.start)
        restart.start()
        try:
            submission_id = upload.upload(settings, client, retry, "test-vowels", 1)
        finally:
            restart.join()
        assert waits, "the first calls met the outage and were retried"
        assert upload.verdict(client, retry, "test-vowels-v1", submission_id, timeout=120) == "ACCEPTED"
