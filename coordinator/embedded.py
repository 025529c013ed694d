"""An in-process coordinator on a background thread: the same server, for the demo and for tests, with a real
Celery worker on a thread of this process (the embedded broker needs no server)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from coordinator.serve import PORT_FILES, serve, with_port
from coordinator.settings import CoordinatorSettings


@dataclass(frozen=True)
class Addresses:
    service: str  # mutual TLS
    enroll: str  # TLS without a client certificate
    api: str  # base URL of the REST API


@contextlib.contextmanager
def running_coordinator(settings: CoordinatorSettings, timeout: float = 30.0) -> Iterator[Addresses]:
    """Serve (port 0 picks free ports) and yield the service and enrollment addresses until the block ends."""
    port_file, enroll_file, api_file = (settings.home / name for name in PORT_FILES)
    for path in (port_file, enroll_file, api_file):
        path.unlink(missing_ok=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(settings, stop, worker="thread"))
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="coordinator", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not (port_file.is_file() and enroll_file.is_file() and api_file.is_file()):
        if failure:
            raise failure[0]
        if time.monotonic() > deadline:
            raise TimeoutError("the coordinator did not start")
        time.sleep(0.02)
    try:
        yield Addresses(
            with_port(settings.listen, int(port_file.read_text())),
            with_port(settings.enroll_listen, int(enroll_file.read_text())),
            f"{'http' if settings.api_insecure_http else 'https'}://"
            + with_port(settings.api_listen, int(api_file.read_text())),
        )
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
