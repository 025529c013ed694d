"""The FastAPI application: one router per resource under /v1 (coordinator/api/routes), the same service functions
as the CLI, and the runtime every route is given (coordinator/api/deps.py)."""

from __future__ import annotations

from fastapi import FastAPI

from coordinator.api import docs, errors
from coordinator.api.body_guard import BodyGuard
from coordinator.api.redirects import RelativeRedirects, origin
from coordinator.api.routes import audit, downloads, experts, health, hub, jobs, keys, metrics, orgs, releases
from coordinator.runtime import Runtime

API_VERSION = "1"


def create_app(runtime: Runtime) -> FastAPI:
    """The app for one coordinator: routes act on ``runtime``, and send the jobs they queue through its dispatcher
    (without one the coordinator's sweeper sends them within ``sweep_interval_s``)."""
    app = FastAPI(
        title="BAR Federation coordinator",
        version=API_VERSION,
        description="Operate a federation: organizations, experts, releases, jobs and the audit log. "
        "Authenticate with `Authorization: Bearer <token>` (`barfed coordinator tokens create`).",
        responses=errors.ERROR_RESPONSES,
        docs_url=None,  # /docs and /redoc come from coordinator/api/docs.py, with their assets served here
        redoc_url=None,
    )
    app.state.runtime = runtime
    errors.install(app)
    app.add_middleware(BodyGuard, runtime=runtime)  # no body is read before its caller is authenticated
    store = runtime.store if runtime is not None else None  # no runtime: the app only describes itself (OpenAPI)
    store_origin = origin(store.presigned_get("origin")) if store is not None else None
    app.add_middleware(RelativeRedirects, store_origin=store_origin)
    app.include_router(health.router)
    docs.install(app)
    metrics.install(app)  # /metrics, and the middleware counting every request
    for resource in (orgs, experts, releases, jobs, audit):
        app.include_router(resource.router, prefix="/v1")
    app.include_router(downloads.router)
    app.include_router(keys.router)
    app.include_router(hub.router)  # keep last: its /{repo}/resolve/… paths start at the root
    return app
