"""The served REST API at the HTTP level, with raw TLS sockets so the exact bytes are ours: a body is neither read
nor parsed before its caller is authenticated and is bounded in size; ambiguous framing is refused and the
connection closed; redirects do not repeat the Host header; a stalled client is dropped and connections are
capped; responses are not held back by Nagle; idle keep-alive connections outlast the clients' pools."""

from __future__ import annotations

import json
import socket
import ssl
import statistics
import time
from urllib.parse import urlsplit

import pytest

from coordinator.embedded import running_coordinator
from coordinator.setup import initialize
from coordinator.state import tokens
from coordinator.state.db import Registry

from .conftest import make_settings

pytestmark = pytest.mark.integration

HTTPX_POOL_EXPIRY_S = 5.0  # httpx's default keepalive_expiry, the shortest idle pool among common clients


class Served:
    def __init__(self, settings, address: str, token: str) -> None:
        self.settings, self.token = settings, token
        parts = urlsplit(address)
        self.host, self.port = parts.hostname, parts.port
        self.context = ssl.create_default_context(cafile=str(settings.pki_dir / "ca.pem"))

    def tcp(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    def connect(self) -> ssl.SSLSocket:
        return self.context.wrap_socket(self.tcp(), server_hostname="localhost")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One coordinator for the module, with a short read timeout so a stalled client is dropped within seconds."""
    yield from _serve(tmp_path_factory.mktemp("hygiene"), api_read_timeout_s=2)


def _serve(root, **overrides):
    settings = make_settings(root, f"sqlite:///{root / 'registry.db'}", **overrides)
    initialize(settings)
    registry = Registry(settings.db_url)
    token, _ = tokens.create(registry, "admin", "test", label="hygiene")
    with running_coordinator(settings) as address:
        yield Served(settings, address.api, token)
    registry.dispose()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names; repeated ones joined) and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = ", ".join(filter(None, (headers.get(name.strip().lower()), value.strip())))
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection inside a response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def request(path: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_an_anonymous_body_is_refused_before_it_is_read(served):
    # Only the head is sent: the answer comes without a byte of the announced body. (Sending part of the body too
    # raced the server's close: a close with unread bytes resets the connection, and the reset can discard the
    # answer before the client reads it, so the test failed under load although the server did right.)
    for framing in ({"Content-Length": str(100 * 1024**2)}, {"Transfer-Encoding": "chunked"}):
        with served.connect() as sock:
            sock.sendall(request("/v1/orgs", method="POST", headers={"Content-Type": "application/json", **framing}))
            sock.settimeout(5)  # a server that waits for the 100 MiB answers nothing
            status, headers, body = read_response(sock)
            assert (status, json.loads(body)["code"]) == (401, "NO_TOKEN"), body
            assert headers["connection"] == "close" and closed_by_server(sock, 5)
    with served.connect() as sock:  # a malformed or unknown token is refused the same way, before the body
        headers = {"Authorization": "Bearer bf_nope", "Content-Length": "1000"}  # and no body sent
        sock.sendall(request("/v1/orgs", method="POST", headers=headers))
        sock.settimeout(5)
        status, _, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (401, "BAD_TOKEN"), body


def test_every_body_is_bounded(served):
    limit = served.settings.api_max_body_bytes
    auth = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
    with served.connect() as sock:  # declared too large: refused before a byte of it is read
        sock.sendall(request("/v1/orgs", method="POST", headers={**auth, "Content-Length": str(limit + 1)}))
        sock.settimeout(5)
        status, headers, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (413, "BODY_TOO_LARGE"), body
        assert headers["connection"] == "close"
    with served.connect() as sock:  # streamed past the limit: cut off one byte past it
        sock.sendall(request("/v1/orgs", method="POST", headers={**auth, "Transfer-Encoding": "chunked"}))
        chunk = b"[" * 65536
        for _ in range(limit // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"%x\r\n%s\r\n" % (limit % len(chunk) + 1, b"[" * (limit % len(chunk) + 1)))
        sock.settimeout(5)
        status, _, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (413, "BODY_TOO_LARGE"), body
    with served.connect() as sock:  # an authenticated body within the limit still works, streamed or not
        build = json.dumps({"force": False}).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(build), build)
        sock.sendall(
            request(
                "/v1/releases/builds", method="POST", headers={**auth, "Transfer-Encoding": "chunked"}, body=chunked
            )
        )
        sock.settimeout(10)
        status, _, body = read_response(sock)
        assert status == 202, body
        reason = json.dumps({"reason": "gone"}).encode()
        headers = {**auth, "Content-Length": str(len(reason))}
        sock.sendall(request("/v1/orgs/nosuch/revoke", method="POST", headers=headers, body=reason))
        status, _, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (404, "UNKNOWN_ORG"), body


def test_content_length_with_transfer_encoding_is_refused_and_closed(served):
    with served.connect() as sock:  # RFC 9112 §6.1: a request smuggling vector; refuse it and close
        both = {"Content-Length": "5", "Transfer-Encoding": "chunked"}
        sock.sendall(request("/healthz", method="GET", headers=both, body=b"0\r\n\r\n"))
        sock.settimeout(5)
        status, headers, body = read_response(sock)
        assert (status, json.loads(body)["code"]) == (400, "AMBIGUOUS_FRAMING"), body
        assert headers["connection"] == "close" and closed_by_server(sock, 5)


def test_redirects_do_not_repeat_the_host_header(served):
    with served.connect() as sock:
        sock.sendall(request("/v1/orgs/?since=1").replace(b"Host: localhost", b"Host: evil.example"))
        sock.settimeout(5)
        status, headers, _ = read_response(sock)
        assert status == 307 and headers["location"] == "/v1/orgs?since=1"


def test_a_stalled_client_is_dropped_within_the_read_timeout(served):
    timeout = served.settings.api_read_timeout_s
    with served.tcp() as idle, served.connect() as half_head, served.connect() as half_body:
        half_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: local")  # and idle sends nothing at all, not even TLS
        headers = {"Authorization": f"Bearer {served.token}", "Content-Length": "100"}
        half_body.sendall(request("/v1/releases/builds", method="POST", headers=headers, body=b'{"force": '))
        started = time.monotonic()
        assert closed_by_server(half_head, timeout + 5) and closed_by_server(idle, timeout + 5)
        half_body.settimeout(timeout + 5)
        status, _, body = read_response(half_body)
        assert (status, json.loads(body)["code"]) == (408, "BODY_TIMEOUT"), body
        assert time.monotonic() - started < timeout + 5
    with served.connect() as sock:  # between requests a connection is idle, not stalled: still served
        sock.sendall(request("/healthz"))
        sock.settimeout(5)
        assert read_response(sock)[0] == 200
        time.sleep(timeout + 0.5)
        sock.sendall(request("/healthz"))
        assert read_response(sock)[0] == 200


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path):
    for served in _serve(tmp_path, api_max_connections=4):
        held = [served.tcp() for _ in range(4)]  # not even a TLS hello: they count from their accept
        try:
            with served.tcp() as refused:
                assert closed_by_server(refused, 5)
            held.pop().close()
            deadline = time.monotonic() + 10  # the server notices the close, then a new connection is served
            while True:
                try:
                    with served.connect() as sock:
                        sock.sendall(request("/healthz"))
                        sock.settimeout(5)
                        assert read_response(sock)[0] == 200
                        break
                except (ConnectionError, ssl.SSLError, AssertionError):
                    assert time.monotonic() < deadline, "a place freed under the cap was not taken again"
                    time.sleep(0.1)
        finally:
            for sock in held:
                sock.close()


def test_keep_alive_responses_are_not_held_back_by_nagle(served):
    """Before TCP_NODELAY every response on a reused connection waited ~40 ms for the client's delayed ACK."""
    with served.connect() as sock:
        sock.settimeout(5)
        took = []
        for _ in range(50):
            started = time.perf_counter()
            sock.sendall(request("/healthz"))
            assert read_response(sock)[0] == 200
            took.append(time.perf_counter() - started)
    assert statistics.median(took) < 0.03, f"median {statistics.median(took) * 1000:.1f} ms per request"


def test_idle_keep_alive_connections_outlast_client_pools(served):
    """A pooled connection reused just before the client's own expiry must still be open at the server."""
    with served.connect() as sock:
        sock.sendall(request("/healthz"))
        sock.settimeout(5)
        _, headers, _ = read_response(sock)
        announced = int(headers["keep-alive"].removeprefix("timeout="))
        assert announced == served.settings.api_keep_alive_s > HTTPX_POOL_EXPIRY_S + 10
        time.sleep(HTTPX_POOL_EXPIRY_S + 1)
        sock.sendall(request("/healthz"))
        assert read_response(sock)[0] == 200
