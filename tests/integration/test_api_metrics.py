"""/metrics after a real submission and a real build (both run by the coordinator's worker), and /readyz: ready with
a worker, 503 naming the failed check without one or with a broken blob store; on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from coordinator.api.app import create_app
from coordinator.embedded import running_coordinator
from coordinator.keys import CoordinatorKeys
from coordinator.release import actions
from coordinator.runtime import Runtime
from coordinator.setup import initialize
from coordinator.state import jobs, tokens
from coordinator.state.db import Registry
from protocol.v1 import barfed_pb2 as pb

from .conftest import Federation, make_settings
from .release_helpers import release_settings

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) → value, from the Prometheus text format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_scrape_after_a_submission_and_a_build_shows_the_counters_moved(micro, micro_expert, db_url, tmp_path):
    from contributor_node.package import build_package

    settings = release_settings(tmp_path, db_url, sweep_interval_s=0.5, chunk_bytes=64 * 1024)
    initialize(settings, micro["branch"])
    registry = Registry(settings.db_url)
    token, _ = tokens.create(registry, "auditor", "test")
    with running_coordinator(settings) as address:
        federation = Federation(settings, registry, CoordinatorKeys(settings.pki_dir), address, tmp_path)
        api = httpx.Client(
            base_url=address.api, verify=str(settings.pki_dir / "ca.pem"), headers={"Authorization": f"Bearer {token}"}
        )
        ready = wait_for(lambda: (r := api.get("/readyz")).status_code == 200 and r, 30, "the coordinator to be ready")
        assert all(check["ok"] for check in ready.json()["checks"].values()), ready.json()
        before = samples(api.get("/metrics").text)

        acme = federation.enroll("acme-labs", ["test-vowels"])
        package = tmp_path / "pkg"
        build_package(micro_expert, package, org="acme-labs", version=1, private_key=acme.key_path)
        size = sum(p.stat().st_size for p in package.iterdir())
        with acme.client(address.service) as client:
            status = client.wait(client.submit(package))
            assert status.state == pb.ACCEPTED, (status.error_code, status.message)
        job = actions.request_build(registry, {}, False, "operator")
        done = wait_for(lambda: (j := jobs.get(registry, job.id)).state in jobs.FINAL and j, 600, "the build")
        assert done.state == "done", (done.state, done.error_code, done.error_message)
        assert api.get("/v1/releases/r1/files").status_code == 200
        after = samples(api.get("/metrics").text)
        api.close()
    registry.dispose()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # This process's counters (the embedded coordinator serves gRPC here): the upload and its bytes.
    assert moved("barfed_upload_sessions_total") >= 1
    assert moved("barfed_uploads_committed_total") >= 1
    assert moved("barfed_upload_bytes_total") >= size
    # The worker's figures, read from the database: states and per-step wall times.
    assert value(after, "barfed_submissions", state="ACCEPTED") == 1
    assert value(before, "barfed_submissions", state="ACCEPTED") == 0
    assert value(after, "barfed_jobs", kind="verify", state="done") == 1
    assert value(after, "barfed_jobs", kind="build", state="done") == 1
    assert value(before, "barfed_jobs", kind="build", state="done") == 0
    for step in ("plan", "merge", "route", "evaluate"):  # release.json records them (sign writes it)
        assert value(after, "barfed_job_step_seconds_count", kind="build", step=step) == 1, step
    assert value(after, "barfed_job_step_seconds_sum", kind="build", step="route") > 0
    for step in ("materialize", "manifest", "signature", "tensors", "sidecars"):
        assert value(after, "barfed_job_step_seconds_count", kind="verify", step=step) == 1, step
    # HTTP requests by route template, never the raw path.
    assert moved("barfed_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert moved("barfed_http_requests_total", method="GET", route="/v1/releases/{name}/files", status="200") == 1
    assert not any("r1" in dict(labels).get("route", "") for _, labels in after)


@pytest.fixture
def runtime(tmp_path, db_url):
    settings = make_settings(tmp_path, db_url, api_insecure_http=True, sweep_interval_s=0.5)
    initialize(settings)
    runtime = Runtime.from_settings(settings)
    yield runtime
    runtime.registry.dispose()


def test_metrics_need_a_token_that_may_read_everything(runtime):
    from coordinator.enrollment import invite

    invite(runtime.registry, "acme-labs", ["math"])
    with TestClient(create_app(runtime)) as client:
        assert client.get("/metrics").status_code == 401
        for role, status in (("admin", 200), ("operator", 200), ("auditor", 200), ("org", 403)):
            token, _ = tokens.create(runtime.registry, role, "test", org_id="acme-labs" if role == "org" else None)
            scrape = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert scrape.status_code == status, (role, scrape.text)
        assert scrape.json()["code"] == "FORBIDDEN"


def test_readyz_is_ready_with_a_worker(runtime):
    with running_coordinator(runtime.settings) as address, httpx.Client(base_url=address.api) as client:
        ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, 30, "readiness")
        checks = ready.json()["checks"]
        assert set(checks) == {"database", "blob_store", "broker", "worker"}
        assert all(check["ok"] for check in checks.values()) and ready.json()["status"] == "ready"
        assert "heartbeat" in checks["worker"]["detail"]
        assert client.get("/healthz").json() == {"status": "ok"}
    # The worker stopped with its coordinator: its heartbeat file went with it.
    assert not any((runtime.settings.home / "workers").iterdir())


def test_readyz_names_what_is_not_ready(runtime):
    with TestClient(create_app(runtime)) as client:  # no worker runs for this app
        unready = client.get("/readyz")
        assert unready.status_code == 503
        checks = unready.json()["checks"]
        assert [name for name, check in checks.items() if not check["ok"]] == ["worker"], checks
        assert "no worker heartbeat" in checks["worker"]["detail"]
        shutil.rmtree(runtime.settings.blob_dir)
        runtime.settings.blob_dir.write_text("not a directory")
        broken = client.get("/readyz").json()["checks"]
        assert not broken["blob_store"]["ok"] and broken["database"]["ok"] and broken["broker"]["ok"]
        assert str(runtime.settings.home) not in broken["blob_store"]["detail"]  # anonymous callers see no paths


def test_readyz_pings_workers_on_redis(tmp_path, db_url):
    """With a real broker the check is Celery's own ping, answered by the coordinator's worker."""
    settings = make_settings(
        tmp_path, db_url, api_insecure_http=True, broker_url="redis://127.0.0.1:6379/11", task_queue="readyz-test"
    )
    initialize(settings)
    with running_coordinator(settings) as address, httpx.Client(base_url=address.api) as client:
        ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, 30, "readiness on Redis")
        assert "answered a ping" in ready.json()["checks"]["worker"]["detail"]
