"""``/metrics``: the Prometheus text exposition, for a token that may read everything (admin, operator, auditor).

A token rather than "open on loopback": the API may listen beyond loopback, and the figures (org activity,
routes, job states) are an operator's business; Prometheus sends one with ``authorization: credentials_file``.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from coordinator import metrics
from coordinator.api.deps import READ_ALL, allow, runtime

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: uploads, HTTP requests, jobs and submissions by state, step durations",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    **allow(*READ_ALL),
)
def scrape(request: Request) -> Response:
    return Response(metrics.scrape(runtime(request).registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """The route, and the middleware that counts every request by route template and status."""
    app.add_middleware(metrics.HttpMetrics)
    app.include_router(router)
