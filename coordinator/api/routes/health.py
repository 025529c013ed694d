"""Liveness and readiness for orchestrators; neither needs a token (they reveal only ok / not ok per check).

``/readyz`` checks what a request or a job needs: the database answers ``SELECT 1``, the blob store's directory
takes a file, the broker accepts a connection, and a worker is there: with a real broker (Redis) one answers
Celery's ping within a second; with the embedded broker, whose transport cannot broadcast a ping, one has a fresh
heartbeat file (coordinator/tasks/heartbeat.py). The checks run at once, each bounded in time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from coordinator.api.deps import runtime
from coordinator.runtime import Runtime
from coordinator.tasks.broker import is_embedded
from coordinator.tasks.celery_app import make_app
from coordinator.tasks.heartbeat import live_workers

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0
PING_TIMEOUT_S = 1.0
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")
_lock = threading.Lock()


class NotReady(Exception):
    """A check's own explanation, safe to show to an anonymous caller."""


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: str  # ready | not ready
    checks: dict[str, Check]


@router.get("/healthz", summary="The coordinator's process is alive (no token needed)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def celery_app(request: Request):
    """The dispatcher's Celery app, or one made (once) for these settings when the API runs without one."""
    dispatcher = runtime(request).dispatcher
    if dispatcher is not None:
        return dispatcher.app
    with _lock:
        if getattr(request.app.state, "celery", None) is None:
            request.app.state.celery = make_app(runtime(request).settings)
        return request.app.state.celery


def _database(rt: Runtime) -> str:
    rt.registry.ping()
    return "SELECT 1 answered"


def _blobs(rt: Runtime) -> str:
    rt.blobs.probe_rename(rt.settings.staging_dir)  # what a commit does, not merely "writable"
    return "rename from staging works"


def _broker(app) -> str:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_S)
    return "connected"


def _worker(rt: Runtime, app) -> str:
    if is_embedded(rt.settings):
        alive = live_workers(rt.settings)
        if not alive:
            raise NotReady("no worker heartbeat in the last few seconds; is a worker running?")
        return f"{len(alive)} worker(s) with a fresh heartbeat"
    replies = app.control.ping(timeout=PING_TIMEOUT_S)
    if not replies:
        raise NotReady(f"no worker answered a ping within {PING_TIMEOUT_S:g} s; start `celery … worker`.")
    return f"{len(replies)} worker(s) answered a ping"


def _run(checks: dict[str, Callable[[], str]]) -> dict[str, Check]:
    futures = {name: _pool.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=CHECK_TIMEOUT_S + PING_TIMEOUT_S)
    results = {}
    for name, future in futures.items():
        if not future.done():
            results[name] = Check(ok=False, detail=f"no answer within {CHECK_TIMEOUT_S + PING_TIMEOUT_S:g} s")
        elif future.exception() is not None:
            exc = future.exception()
            log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            # Anyone may call this: our own sentences are shown, a library's (hosts, paths, users) only logged.
            shown = str(exc)[:300] if isinstance(exc, NotReady) else f"{type(exc).__name__}; see the coordinator's log"
            results[name] = Check(ok=False, detail=shown)
        else:
            results[name] = Check(ok=True, detail=future.result())
    return results


@router.get(
    "/readyz",
    summary="Database, blob store, broker and a worker all answer (no token needed); 503 when one does not",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a check failed; its detail says which and why"}},
)
def readyz(request: Request) -> JSONResponse:
    rt = runtime(request)
    app = celery_app(request)
    checks = _run(
        {
            "database": lambda: _database(rt),
            "blob_store": lambda: _blobs(rt),
            "broker": lambda: _broker(app),
            "worker": lambda: _worker(rt, app),
        }
    )
    ready = all(check.ok for check in checks.values())
    body = Readiness(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
