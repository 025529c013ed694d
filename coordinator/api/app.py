"""The FastAPI application: one router per resource under /v1, the same service functions as the CLI."""

from __future__ import annotations

from fastapi import FastAPI

from coordinator.api import audit, downloads, errors, experts, health, hub, jobs, keys, metrics, orgs, releases
from coordinator.runtime import Runtime

API_VERSION = "1"


def create_app(runtime: Runtime, dispatcher=None) -> FastAPI:
    """The app for one coordinator: ``runtime`` is what routes act on, ``dispatcher`` sends queued jobs at once
    (without one the sweeper sends them within ``sweep_interval_s``)."""
    app = FastAPI(
        title="BAR Federation coordinator",
        version=API_VERSION,
        description="Operate a federation: organizations, experts, releases, jobs and the audit log. "
        "Authenticate with `Authorization: Bearer <token>` (`barfed coordinator tokens create`).",
        responses=errors.ERROR_RESPONSES,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.dispatcher = dispatcher
    errors.install(app)
    app.include_router(health.router)
    metrics.install(app)  # /metrics, and the middleware counting every request
    for resource in (orgs, experts, releases, jobs, audit):
        app.include_router(resource.router, prefix="/v1")
    app.include_router(downloads.router)
    app.include_router(keys.router)
    app.include_router(hub.router)  # keep last: its /{repo}/resolve/… paths start at the root
    return app


def dispatch(app: FastAPI, job_id: int) -> None:
    """Send a queued job to the workers now when a dispatcher is at hand; the sweeper covers a failure."""
    if app.state.dispatcher is not None:
        app.state.dispatcher.dispatch(job_id)
