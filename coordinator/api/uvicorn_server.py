"""Serve the REST API with uvicorn inside the coordinator's event loop, beside gRPC: HTTPS with the server
certificate the federation CA issued, or plain HTTP on loopback when `api_insecure_http` asks for it by name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from fastapi import FastAPI

from coordinator.runtime import Runtime
from protocol.errors import BarFedError

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        """The coordinator's serve loop owns SIGINT and SIGTERM and stops this server itself."""
        yield


def bind(listen: str) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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
            **tls,
        )
        self.scheme = "http" if settings.api_insecure_http else "https"
        self.server = _Server(config)
        self.socket = bind(settings.api_listen)
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
