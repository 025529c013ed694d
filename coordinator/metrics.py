"""Every Prometheus metric of the coordinator, in one place.

Two sources, chosen by where the event happens:
- counters of this process (the coordinator that serves gRPC and the REST API): uploads, bytes received, HTTP
  requests by route template and status, incremented where the event happens;
- figures of the workers (jobs by state, submissions by state, verification and build wall time per step), read
  from the database at scrape time by `DatabaseCollector`. A worker may run on another machine, and the database
  is what every worker shares with the coordinator, so counters kept in a worker's memory or in prometheus-client's
  multiprocess files (one machine's directory) would miss them; the jobs' own rows and results do not.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from coordinator.state import jobs, submissions
from coordinator.state.db import Registry
from coordinator.state.models import JOB_STATES

SUBMISSION_STATES = ("RECEIVED", "VERIFYING", "ACCEPTED", "REJECTED")
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))  # any other is "other"

# This process's counters. One registry per process: several embedded coordinators in one (tests) share them.
PROCESS = CollectorRegistry(auto_describe=True)
UPLOAD_SESSIONS = Counter("barfed_upload_sessions", "upload sessions created (CreateUpload)", registry=PROCESS)
UPLOADS_COMMITTED = Counter(
    "barfed_uploads_committed", "uploads committed into submissions (CommitUpload)", registry=PROCESS
)
UPLOAD_BYTES = Counter("barfed_upload_bytes", "bytes of package files received (WriteChunks)", registry=PROCESS)
HTTP_REQUESTS = Counter(
    "barfed_http_requests",
    "REST API requests by route template (`unmatched` when no route matched) and status",
    ("method", "route", "status"),
    registry=PROCESS,
)
HTTP_SECONDS = Histogram(
    "barfed_http_request_duration_seconds",
    "REST API time to the end of the response, by route template",
    ("method", "route"),
    registry=PROCESS,
)


class DatabaseCollector(Collector):
    """Gauges computed from the registry at each scrape: what the workers did, wherever they ran."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self):
        counts = jobs.counts(self.registry)
        submission_counts = submissions.counts(self.registry)
        # A done job's result records its wall time per step (a build's release.json has the same figures).
        results = jobs.done_results(self.registry)
        by_state = GaugeMetricFamily("barfed_jobs", "jobs by kind and state", labels=("kind", "state"))
        for kind in sorted({kind for kind, _ in counts} | {"verify", "build"}):
            for state in JOB_STATES:
                by_state.add_metric((kind, state), counts.get((kind, state), 0))
        yield by_state
        states = GaugeMetricFamily("barfed_submissions", "submissions by state", labels=("state",))
        for state in sorted(set(SUBMISSION_STATES) | set(submission_counts)):
            states.add_metric((state,), submission_counts.get(state, 0))
        yield states
        steps: dict[tuple[str, str], list[float]] = {}
        for kind, result in results:
            wall_s = (result or {}).get("wall_s") if isinstance(result, dict) else None
            if not isinstance(wall_s, dict):
                continue
            for step, seconds in wall_s.items():
                if isinstance(seconds, int | float):
                    steps.setdefault((kind, str(step)), []).append(float(seconds))
        durations = SummaryMetricFamily(
            "barfed_job_step_seconds", "wall time per step of finished jobs (verify, build)", labels=("kind", "step")
        )
        for (kind, step), values in sorted(steps.items()):
            durations.add_metric((kind, step), count_value=len(values), sum_value=sum(values))
        yield durations


def scrape(registry: Registry) -> bytes:
    """The text exposition: this process's counters, then the database's figures."""
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector(registry))
    return generate_latest(PROCESS) + generate_latest(database)


class HttpMetrics:
    """ASGI middleware: count each request under its route's template (``/v1/releases/{name}``, never the raw
    path, so label values stay bounded), once the route is known."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "") if scope.get("method") in METHODS else "other"
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
