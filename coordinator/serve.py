"""Run the coordinator as one process, assembled here and nowhere else: one `Runtime` for everything; the gRPC
ports (service and enrollment), the REST API, the job sweeper, a task worker (a supervised `celery worker`
subprocess, one on a thread of this process, or none when workers run elsewhere), the auto-build loop and the
port files that say where a coordinator started on port 0 listens."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Literal

from coordinator.api.app import create_app
from coordinator.api.uvicorn_server import ApiServer
from coordinator.grpc.ports import GrpcPorts
from coordinator.grpc.servicer import FederationService
from coordinator.release import autobuild
from coordinator.runtime import Runtime
from coordinator.settings import CoordinatorSettings
from coordinator.tasks.celery_app import make_app
from coordinator.tasks.dispatch import Dispatcher, Sweeper
from coordinator.tasks.worker import InProcessWorker, WorkerProcess
from coordinator.uploads.sessions import Uploads

log = logging.getLogger(__name__)
EXPIRY_INTERVAL_S = 600
GRACE_S = 5.0
PORT_FILES = ("grpc.port", "enroll.port", "api.port")  # under home: the service's, enrollment's and the API's

WorkerMode = Literal["process", "thread", "none"]


def _start_worker(runtime: Runtime, mode: WorkerMode) -> InProcessWorker | WorkerProcess | None:
    if mode == "process":
        return WorkerProcess(runtime.settings).start()
    if mode == "thread":  # the in-process worker shares this process's runtime
        return InProcessWorker(make_app(runtime.settings, runtime)).start()
    return None


async def serve(
    settings: CoordinatorSettings, stop: asyncio.Event | None = None, worker: WorkerMode = "process"
) -> None:
    """Serve until SIGINT/SIGTERM (or until ``stop`` is set, for an embedded coordinator)."""
    runtime = Runtime.from_settings(settings, dispatcher=Dispatcher(make_app(settings), settings))
    runtime.blobs.probe_rename(settings.staging_dir)  # refuse to start where no commit could succeed
    uploads = Uploads(runtime.registry, settings, runtime.blobs)
    ports = GrpcPorts(FederationService(runtime, uploads), settings, runtime.keys)
    api = ApiServer(runtime, create_app(runtime))
    await ports.start()
    await api.start()
    for name, port in zip(PORT_FILES, (ports.port, ports.enroll_port, api.port), strict=True):
        _write_port_file(settings, name, port)
    log.info(
        "coordinator listening on %s (mTLS), %s (enrollment) and %s://%s (REST API)",
        with_port(settings.listen, ports.port),
        with_port(settings.enroll_listen, ports.enroll_port),
        api.scheme,
        with_port(settings.api_listen, api.port),
    )
    await asyncio.to_thread(uploads.expire)  # drop abandoned uploads; unfinished jobs are the sweeper's
    workers = await asyncio.to_thread(_start_worker, runtime, worker)
    sweeper = Sweeper(runtime.dispatcher, runtime.registry, settings.sweep_interval_s).start()

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    async def expire_sessions() -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL_S)
            try:
                await asyncio.to_thread(uploads.expire)
                await asyncio.to_thread(uploads.collect_orphans)
            except Exception:  # the database or the artifact store may be back at the next round
                log.exception("expiring uploads or collecting orphan blobs failed")

    async def auto_build() -> None:
        """Queue the build that accepted or withdrawn experts call for (debounced), and send it at once."""
        while True:
            await asyncio.sleep(settings.sweep_interval_s)
            try:
                job_id = await asyncio.to_thread(autobuild.tick, runtime.registry, settings)
            except Exception:  # the database may be back at the next tick
                log.exception("auto-build failed")
                continue
            if job_id is not None:
                log.info("queued release build job %s", job_id)
                await asyncio.to_thread(runtime.dispatch, job_id)

    loops = [asyncio.create_task(expire_sessions()), asyncio.create_task(auto_build())]
    await stop.wait()
    log.info("shutting down")
    for task in loops:
        task.cancel()
    await asyncio.gather(ports.stop(GRACE_S), api.stop())
    await asyncio.to_thread(sweeper.stop)
    if workers is not None:
        await asyncio.to_thread(workers.stop)
    await asyncio.to_thread(uploads.close)
    runtime.close()


def with_port(listen: str, port: int) -> str:
    """``host:0`` with the port a server actually got."""
    return f"{listen.rsplit(':', 1)[0]}:{port}"


def _write_port_file(settings: CoordinatorSettings, name: str, port: int) -> None:
    """``home/<name>``: where a coordinator started on port 0 actually listens (written atomically)."""
    path = settings.home / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def run(settings: CoordinatorSettings, worker: WorkerMode = "process") -> None:
    asyncio.run(serve(settings, worker=worker))
