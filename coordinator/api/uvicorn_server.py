"""Serve the REST API with uvicorn inside the coordinator's event loop, beside gRPC: HTTPS with the server
certificate the federation CA issued, or plain HTTP on loopback when `api_insecure_http` asks for it by name.

Connections are held to what uvicorn alone does not bound: at most `api_max_connections` open (closed as they are
accepted, before TLS), `api_read_timeout_s` for the TLS handshake and for each request head, and
`api_keep_alive_s` idle between requests, longer than clients' pools keep a connection (so none reuses one the
server is closing) and announced in `Keep-Alive`. Accepted sockets are TCP sockets asyncio sets TCP_NODELAY on:
without it Nagle held every keep-alive response ~40 ms for the client's delayed ACK."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from coordinator.runtime import Runtime
from protocol.errors import BarFedError

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, read_timeout: float) -> None:
        super().__init__(config)
        self.read_timeout = read_timeout

    @contextlib.contextmanager
    def capture_signals(self):
        """The coordinator's serve loop owns SIGINT and SIGTERM and stops this server itself."""
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup on the sockets bound here, serving _Protocol, with a bound on the TLS handshake (uvicorn
        leaves asyncio's 60 s, which a client that never sends its hello holds a connection for)."""
        config, loop = self.config, asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return _Protocol(config, self.server_state, app_state={}, head_timeout=self.read_timeout)

        tls = {"ssl": config.ssl, "ssl_handshake_timeout": self.read_timeout} if config.ssl else {}
        self.servers = [
            await loop.create_server(protocol, sock=sock, backlog=config.backlog, **tls) for sock in sockets or ()
        ]
        self.started = True


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 with a deadline for each request head, counted from its first byte (or from the
    connection's start): a client that stalls inside a head, or never sends one, is dropped. uvicorn itself times
    out only connections idle after a response."""

    def __init__(self, *args, head_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # no request yet, or part of a head
            self._await_head()
        else:
            self._head_received()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # part of a pipelined head
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_received()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self.head_deadline is None and not self.transport.is_closing():
            self.head_deadline = self.loop.call_later(self.head_timeout, self.transport.close)

    def _head_received(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None


class _ListeningSocket(socket.socket):
    """A listening TCP socket that closes each connection accepted beyond ``cap`` open ones at once: a flood of
    connections costs a file descriptor each for an instant, not memory for a TLS handshake."""

    def __init__(self, family: int, cap: int) -> None:
        super().__init__(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # IPPROTO_TCP: asyncio sets TCP_NODELAY
        self.cap = cap
        self.accepted: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.full = False

    def accept(self) -> tuple[socket.socket, object]:
        while True:
            conn, address = super().accept()  # BlockingIOError once the backlog is empty, as asyncio expects
            for closed in [sock for sock in self.accepted if sock.fileno() == -1]:
                self.accepted.discard(closed)
            if len(self.accepted) < self.cap:
                self.full = False
                self.accepted.add(conn)
                return conn, address
            conn.close()
            if not self.full:
                self.full = True
                log.warning("the REST API holds api_max_connections=%d connections; closing new ones", self.cap)


def bind(listen: str, cap: int) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = _ListeningSocket(family, cap)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise BarFedError(
            "API_LISTEN_FAILED", f"the REST API cannot listen on {listen} ({exc.strerror}); choose another api_listen."
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """uvicorn on a socket bound here, so a busy port is a clear error and port 0 tells which port it got."""

    def __init__(self, runtime: Runtime, app: FastAPI) -> None:
        settings, keys, tls = runtime.settings, runtime.keys, {}
        if not settings.api_insecure_http:
            tls = {"ssl_certfile": str(keys.server_cert_path), "ssl_keyfile": str(keys.server_key_path)}
        else:
            log.warning("serving the REST API as PLAIN HTTP on %s (loopback development mode)", settings.api_listen)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=settings.api_keep_alive_s,
            headers=[("keep-alive", f"timeout={settings.api_keep_alive_s}")],
            **tls,
        )
        self.scheme = "http" if settings.api_insecure_http else "https"
        self.server = _Server(config, read_timeout=settings.api_read_timeout_s)
        self.socket = bind(settings.api_listen, settings.api_max_connections)
        self.port = self.socket.getsockname()[1]
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise BarFedError("API_START_FAILED", "the REST API did not start; the log says why.")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self.socket.close()
