"""Run the coordinator: its gRPC service (TLS with optional client certificates: enrollment needs none, every
other call checks one, or plaintext on loopback when asked for by name), its REST API, the job sweeper, and a
task worker (a supervised `celery worker` subprocess, one in this process, or none when workers run elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Literal

import grpc

from coordinator.api.app import create_app
from coordinator.api.server import ApiServer
from coordinator.enrollment import EnrollmentGate
from coordinator.grpc.bounds import RequestBounds
from coordinator.grpc.servicer import FederationService
from coordinator.keys import CoordinatorKeys
from coordinator.release import policy
from coordinator.settings import CoordinatorSettings
from coordinator.state.db import Registry
from coordinator.tasks.app import make_app
from coordinator.tasks.dispatch import Dispatcher, Sweeper
from coordinator.tasks.runner import Runtime
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2_grpc

log = logging.getLogger(__name__)
MESSAGE_BYTES = 8 * 1024**2
EXPIRY_INTERVAL_S = 600


def server_credentials(settings: CoordinatorSettings, *, client_auth: bool) -> grpc.ServerCredentials:
    """Mutual TLS for the service port; server-only TLS for the enrollment port (the node has no cert yet)."""
    keys = CoordinatorKeys(settings.pki_dir)
    if not keys.exists():
        raise BarFedError("NOT_INITIALIZED", f"{settings.home} has no keys; run `barfed coordinator init` first.")
    return grpc.ssl_server_credentials(
        [(keys.server_key_path.read_bytes(), keys.server_cert_path.read_bytes())],
        root_certificates=keys.ca_cert_path.read_bytes() if client_auth else None,
        require_client_auth=client_auth,
    )


WorkerMode = Literal["process", "thread", "none"]


def _start_worker(settings: CoordinatorSettings, registry: Registry, service: FederationService, mode: WorkerMode):
    from coordinator.tasks.worker import InProcessWorker, WorkerProcess

    if mode == "process":
        return WorkerProcess(settings).start()
    if mode == "thread":
        runtime = Runtime(settings, registry, service.blobs, service.keys)
        return InProcessWorker(make_app(settings, runtime)).start()
    return None


async def serve(
    settings: CoordinatorSettings, stop: asyncio.Event | None = None, worker: WorkerMode = "process"
) -> None:
    """Serve until SIGINT/SIGTERM (or until ``stop`` is set, for an embedded coordinator)."""
    registry = Registry(settings.db_url)
    dispatcher = Dispatcher(make_app(settings))
    service = FederationService(settings, registry, dispatcher)
    server = grpc.aio.server(
        interceptors=[RequestBounds()],
        options=[("grpc.max_receive_message_length", MESSAGE_BYTES), ("grpc.max_send_message_length", MESSAGE_BYTES)],
    )
    enroll_server = enrollment_server(settings)
    barfed_pb2_grpc.add_FederationServicer_to_server(service, server)
    barfed_pb2_grpc.add_FederationServicer_to_server(service, enroll_server)
    if settings.insecure_plaintext:
        log.warning("serving PLAINTEXT on %s (loopback development mode)", settings.listen)
        port = server.add_insecure_port(settings.listen)
        enroll_port = enroll_server.add_insecure_port(settings.enroll_listen)
    else:
        port = server.add_secure_port(settings.listen, server_credentials(settings, client_auth=True))
        enroll_port = enroll_server.add_secure_port(
            settings.enroll_listen, server_credentials(settings, client_auth=False)
        )
    api = ApiServer(settings, create_app(Runtime(settings, registry, service.blobs, service.keys), dispatcher))
    await server.start()
    await enroll_server.start()
    await api.start()
    _write_port_file(settings, "grpc.port", port)
    _write_port_file(settings, "enroll.port", enroll_port)
    _write_port_file(settings, "api.port", api.port)
    log.info(
        "coordinator listening on %s (mTLS), %s (enrollment) and %s://%s (REST API)",
        _with_port(settings.listen, port),
        _with_port(settings.enroll_listen, enroll_port),
        api.scheme,
        _with_port(settings.api_listen, api.port),
    )
    await service.resume_pending()
    workers = await asyncio.to_thread(_start_worker, settings, registry, service, worker)
    sweeper = Sweeper(dispatcher, registry, settings.sweep_interval_s).start()

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    async def expire_sessions() -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            await asyncio.to_thread(service.uploads.expire)

    async def release_policy() -> None:
        """Queue the build that accepted or withdrawn experts call for (debounced), and send it at once."""
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                job_id = await asyncio.to_thread(policy.tick, registry, settings)
            except Exception:  # the database may be back at the next tick
                log.exception("release policy failed")
                continue
            if job_id is not None:
                log.info("queued release build job %s", job_id)
                await asyncio.to_thread(dispatcher.dispatch, job_id)

    expiry = asyncio.create_task(expire_sessions())
    builds = asyncio.create_task(release_policy())
    await stop.wait()
    log.info("shutting down")
    expiry.cancel()
    builds.cancel()
    await asyncio.gather(server.stop(grace=5), enroll_server.stop(grace=5), api.stop())
    await asyncio.to_thread(sweeper.stop)
    if workers is not None:
        await asyncio.to_thread(workers.stop)
    await service.drain()
    dispatcher.close()
    registry.dispose()


def enrollment_server(settings: CoordinatorSettings) -> grpc.aio.Server:
    """The anonymous port's own server: its own small message limit, few streams and little metadata per
    connection, and a gate on calls per peer and in flight, so callers without a certificate cannot make
    the coordinator hold much memory (the service port's 8 MiB messages are for authenticated uploads)."""
    limit = settings.enroll_message_bytes
    gate = EnrollmentGate(settings.enroll_calls_per_minute, settings.enroll_burst, settings.enroll_in_flight)
    return grpc.aio.server(
        interceptors=[RequestBounds(gate)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", MESSAGE_BYTES),
            ("grpc.max_concurrent_streams", 16),
            ("grpc.max_metadata_size", 16 * 1024),
        ],
    )


def _with_port(listen: str, port: int) -> str:
    return f"{listen.rsplit(':', 1)[0]}:{port}"


def _write_port_file(settings: CoordinatorSettings, name: str, port: int) -> None:
    """``home/<name>``: where a coordinator started on port 0 actually listens (written atomically)."""
    path = settings.home / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def run(settings: CoordinatorSettings, worker: WorkerMode = "process") -> None:
    asyncio.run(serve(settings, worker=worker))
