"""At scale without a shared filesystem: a coordinator (`serve --no-worker`) and two `celery worker` processes, each
with a home of its own (no directory in common), the registry on PostgreSQL, the broker on Redis and every artifact
on SeaweedFS. Three organizations enroll and submit their experts over gRPC; the first worker verifies them (fetching
the anchor and each blob from the store), starts the build, and is killed with SIGKILL once a router checkpoint is on
the store; the second takes the job over, resumes from that checkpoint and publishes r1 once. r1 then comes to users
from the store through the API's redirect: `barfed pull` (signature checked) and stock huggingface_hub +
transformers.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from coordinator.embedded import Addresses
from coordinator.release import actions
from coordinator.release.signed_files import local_copy
from coordinator.serve import PORT_FILES
from coordinator.setup import initialize
from coordinator.state import jobs, tokens
from coordinator.state import releases as state
from coordinator.tasks.scratch import CHECKPOINTS, COMPLETE
from coordinator.tasks.worker import worker_command
from protocol.release import read_manifest
from protocol.signing import verify_directory
from protocol.v1 import barfed_pb2 as pb
from tests.e2e.test_pull import barfed_pull
from tests.integration.conftest import Federation, fresh_database
from tests.integration.release_helpers import coordinator_for, package, release_settings
from tests.integration.test_hub_api import LOAD, REPO, run_client
from tests.integration.test_release_tasks import (
    SLOW_ROUTER,
    finished,
    settings_env,
    slow_recipe,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
RELEASE_KEY_FILES = ("release.key", "release.pub")  # what a worker is given: it signs releases and checks them


def worker_home(settings, name: str, tmp_path):
    """A worker's own home: nothing but the release key pair, provisioned like any secret."""
    home = tmp_path / name
    (home / "pki").mkdir(parents=True)
    for key in RELEASE_KEY_FILES:
        shutil.copy2(settings.pki_dir / key, home / "pki" / key)
    return home


def stored_checkpoint(store, job_id: int) -> bool:
    listing = store.sizes(f"jobs/{job_id}/{CHECKPOINTS}")
    return any(name.endswith(f"/{COMPLETE}") for name in listing)


def test_two_workers_with_separate_homes_finish_a_killed_build_from_the_stored_checkpoint(
    micro, say_experts, s3_settings, tmp_path
):
    with fresh_database("postgresql", tmp_path) as db_url:
        settings = release_settings(
            tmp_path,
            db_url,
            broker_url="redis://127.0.0.1:6379/0",
            task_queue=f"test-{uuid.uuid4().hex[:8]}",
            job_lease_s=3.0,
            sweep_interval_s=1.0,
            **s3_settings,
        )
        settings = settings.model_copy(update={"router_recipe": str(slow_recipe(tmp_path))})
        initialize(settings, micro["branch"])  # the anchor goes onto the store too
        coordinator = coordinator_for(settings)
        store = coordinator.store

        env = settings_env(settings)
        env.update({f"BARFED_COORD_{k.upper()}": str(v) for k, v in s3_settings.items()})
        homes = {name: worker_home(settings, name, tmp_path) for name in ("worker-1", "worker-2")}
        log = open(tmp_path / "processes.log", "ab")  # noqa: SIM115 - every process appends to it
        processes = []

        def start(command, home):
            process = subprocess.Popen(
                command, env={**env, "BARFED_COORD_HOME": str(home)}, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            processes.append(process)
            return process

        serve = start([sys.executable, "-m", "barfed.cli", "coordinator", "serve", "--no-worker"], settings.home)
        first = start(worker_command(1, "WARNING"), homes["worker-1"])
        try:
            address = wait_for(lambda: addresses(settings), 120, "the coordinator's ports")
            submit_three(settings, coordinator, address, say_experts, tmp_path)  # verified by the first worker
            job = actions.request_build(coordinator.registry, {}, False, "operator")
            wait_for(lambda: stored_checkpoint(store, job.id), 240, "a router checkpoint on the store", poll=0.2)
            assert jobs.get(coordinator.registry, job.id).step == "route"
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            start(worker_command(1, "WARNING"), homes["worker-2"])
            done = wait_for(lambda: finished(coordinator.registry, job.id), 300, "the build to finish", poll=0.5)
            assert done.state == "done", (done.state, done.error_code, done.error_message, _tail(tmp_path))
            assert done.attempts >= 2
            assert [r.number for r in state.list_releases(coordinator.registry)] == [1]

            # Each worker fetched what it needed into its own home; the coordinator's holds no release.
            for home in homes.values():
                assert (home / "anchor" / "config.json").is_file()
                assert any((home / "blobs" / "sha256").glob("??/*"))
            assert not (settings.releases_dir / "r1").exists()
            r1 = local_copy(coordinator, 1)  # from the store, each file checked against the signature
            verify_directory(r1, coordinator.keys.release_public_path.read_bytes())
            manifest = read_manifest(r1)
            assert manifest.job_id == job.id and manifest.router.steps == SLOW_ROUTER["steps"]
            assert manifest.router.resumed_from and manifest.router.resumed_from.startswith("checkpoint-")
            assert store.sizes(f"jobs/{job.id}") == {}  # the job's scratch went with it

            api = address.api
            token, _ = tokens.create(coordinator.registry, "org", "test", org_id="org-yes")
            pulled = barfed_pull("r1", tmp_path / "pulled", api, settings, token, tmp_path / "config")
            assert pulled.returncode == 0, pulled.stderr[-3000:]
            assert {p.name: p.read_bytes() for p in (tmp_path / "pulled").iterdir()} == {
                p.name: p.read_bytes() for p in r1.iterdir()
            }
            client_env = {
                "HF_ENDPOINT": api,
                "SSL_CERT_FILE": str(settings.pki_dir / "ca.pem"),
                "HF_HOME": str(tmp_path / "hf"),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_TOKEN": token,
                "PATH": env.get("PATH", ""),
            }
            loaded = run_client(LOAD, client_env, REPO, str(tmp_path / "hub"), "r1")["r1"]
            assert loaded["class"] == "FlexOlmoForCausalLM" and loaded["new_tokens"] > 0
            assert serve.poll() is None  # the coordinator ran no worker of its own and stayed up
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 60
            for process in processes:
                try:
                    process.wait(max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
            log.close()
            coordinator.registry.dispose()


def addresses(settings) -> Addresses | None:
    files = [settings.home / name for name in PORT_FILES]
    if not all(f.is_file() and f.read_text().strip() for f in files):
        return None
    grpc, enroll, api = (f"127.0.0.1:{f.read_text().strip()}" for f in files)
    return Addresses(grpc, enroll, f"https://{api}")


def submit_three(settings, coordinator, address, say_experts, tmp_path) -> None:
    """Enroll three organizations and submit their packages over gRPC (mTLS); each must come back ACCEPTED."""
    federation = Federation(settings, coordinator.registry, coordinator.keys, address, tmp_path)
    for word in ("yes", "no", "ok"):
        org = f"org-{word}"
        identity = federation.enroll(org, [f"test-say-{word}"])
        shutil.copy2(identity.key_path, tmp_path / f"{org}.key")  # the helper signs with the org's own key
        built = package(coordinator, say_experts[word], org, 1, tmp_path / f"pkg-{word}")
        with identity.client(address.service) as client:
            status = client.wait(client.submit(built), timeout=300)
        assert status.state == pb.ACCEPTED, (status.error_code, status.message)


def _tail(tmp_path) -> str:
    return (tmp_path / "processes.log").read_text(errors="replace")[-4000:]
