"""The pull's body reader: the bytes http.client buffered with the headers, then records straight from the socket,
a block as soon as the server pauses, and a connection that ends inside the body told apart from a finished one."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from barfed.pull_body import get

SIZE = 300_000


@contextlib.contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A one-request HTTP server on loopback whose reply ``answer`` writes byte by byte as the test wants."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            answer(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(timeout=30)
        listener.close()


def blocks_of(api: str) -> list[bytes]:
    with httpx.Client(timeout=30) as client, get(client, True, api, "/file", {}) as body:
        assert body.status_code == 200
        return [bytes(block) for block in body.blocks()]


def test_buffered_bytes_then_the_socket_and_a_pause_ends_a_block():
    payload = os.urandom(SIZE)
    handed_over = threading.Event()

    def answer(connection: socket.socket) -> None:
        # the first bytes travel with the headers, so http.client's buffer holds them before the body is read
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + payload[:1000])
        connection.sendall(payload[1000:100_000])
        # a server that pauses mid-file: the rest comes only once the client has handed over what it has (a
        # reader that held it back for more would wait here, and get everything in one block after 30 s)
        handed_over.wait(timeout=30)
        connection.sendall(payload[100_000:])

    received, totals = bytearray(), []
    with raw_server(answer) as api, httpx.Client(timeout=60) as client, get(client, True, api, "/file", {}) as body:
        for block in body.blocks():
            received += block
            totals.append(len(received))
            if len(received) >= 100_000:
                handed_over.set()
    assert received == payload
    assert 100_000 in totals, totals


def test_a_connection_closed_inside_the_body_is_a_transport_error_not_a_short_file():
    payload = os.urandom(1000)

    def answer(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + payload)

    with raw_server(answer) as api, pytest.raises(httpx.RemoteProtocolError, match=f"{SIZE - 1000} bytes"):
        blocks_of(api)
