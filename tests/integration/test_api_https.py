"""The REST API as `coordinator serve` runs it: HTTPS with the federation CA's server certificate, beside gRPC
and a real task worker. A build asked for over the API is dispatched to that worker, which runs it (here to the
refusal a registry without experts gets), and its job shows how it ended. On SQLite and PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest

from coordinator.embedded import running_coordinator
from coordinator.setup import initialize
from coordinator.state import jobs, tokens
from coordinator.state.db import Registry

from .conftest import make_settings

pytestmark = pytest.mark.integration


def test_build_over_https_runs_on_the_worker(db_url, tmp_path):
    settings = make_settings(tmp_path, db_url)
    initialize(settings)
    registry = Registry(settings.db_url)
    token, row = tokens.create(registry, "operator", "test", label="https test")
    ca = str(settings.pki_dir / "ca.pem")
    with (
        running_coordinator(settings) as address,
        httpx.Client(base_url=address.api, verify=ca, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        assert address.api.startswith("https://")
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the federation CA gets nowhere
            httpx.get(f"{address.api}/healthz")
        queued = client.post("/v1/releases/builds", json={"force": False})
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        deadline = time.monotonic() + 120  # a bound on the wait, not a measurement
        while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in jobs.FINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert (job["state"], job["error_code"]) == ("failed", "NO_EXPERTS")
        assert job["attempts"] == 1 and job["params"]["actor"].endswith(row.id)
        refused = httpx.get(f"{address.api}/v1/jobs", verify=ca)
        assert (refused.status_code, refused.json()["code"]) == (401, "NO_TOKEN")
    registry.dispose()
