"""The pull's body reader: the bytes http.client buffered with the headers, then records straight from the socket,
a block as soon as the server pauses, and a connection that ends inside the body told apart from a finished one."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
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

    def answer(connection: socket.socket) -> None:
        # the first bytes travel with the headers, so http.client's buffer holds them before the body is read
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + payload[:1000])
        time.sleep(0.3)
        connection.sendall(payload[1000:100_000])
        time.sleep(0.3)  # a server that pauses mid-file: what arrived is handed over, not held back
        connection.sendall(payload[100_000:])

    with raw_server(answer) as api:
        blocks = blocks_of(api)
    assert b"".join(blocks) == payload
    assert len(blocks) >= 3 and len(b"".join(blocks[:-1])) >= 100_000


def test_a_connection_closed_inside_the_body_is_a_transport_error_not_a_short_file():
    payload = os.urandom(1000)

    def answer(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE + payload)
        time.sleep(0.2)

    with raw_server(answer) as api, pytest.raises(httpx.RemoteProtocolError, match=f"{SIZE - 1000} bytes"):
        blocks_of(api)
