"""Helpers for release tests: a coordinator's collaborators on a fresh database, packages, accepted experts."""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import uuid
from pathlib import Path

from contributor_node.package import build_package
from coordinator.blobs import BlobStore
from coordinator.keys import CoordinatorKeys
from coordinator.release.build import BuildRequest, build_release
from coordinator.runtime import Runtime
from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Domain, Expert, Job, Organization, Submission
from protocol import pki
from protocol.package import file_sha256

from .conftest import make_settings

ROUTER_RECIPE = """
name = "release-test"
seed = 0
examples_per_domain = 16
domain_pool = 64
general_pool = 200
steps = 120
incremental_steps = 80
batch_size = 8
max_length = 64
learning_rate = 5e-2
save_steps = 10
top_k = 2
norm_topk_prob = true
"""


def release_settings(tmp_path: Path, db_url: str, **overrides):
    """Coordinator settings for release tests: a router recipe micro experts can show a signal with."""
    recipe = tmp_path / "router-test.toml"
    recipe.write_text(ROUTER_RECIPE)
    # Micro experts cannot be told apart by a router (their hidden states at the answer do not carry the prompt's
    # domain), so their releases keep little of each expert and may route one almost nothing: the retention and
    # collapse gates are tested on their own, in test_release_retention.py and test_release_routing.py, and off here.
    overrides = {
        "router_recipe": str(recipe),
        "eval_examples": 8,
        "auto_build": False,
        "min_retention": 0.0,
        "min_own_share": 0.0,
        **overrides,
    }
    return make_settings(tmp_path, db_url, **overrides)


def coordinator_for(settings) -> Runtime:
    return Runtime(settings, Registry(settings.db_url), BlobStore(settings.blob_dir), CoordinatorKeys(settings.pki_dir))


def package(coordinator: Runtime, source: Path, org: str, version: int, out: Path, calibration: bool = True):
    from bar_model.domains import get_domain
    from bar_model.expert import expert_card

    key = out.parent / f"{org}.key"
    if not key.exists():
        pki.write_private_key(key, pki.generate_private_key())
    domain = get_domain(expert_card(source)["domain"])
    build_package(
        source,
        out,
        org=org,
        version=version,
        private_key=key,
        calibration=domain.sft(16) if calibration else None,
        eval_set=domain.eval_set(8, seed=1),
    )
    return out


def accept(coordinator: Runtime, package_dir: Path, org: str) -> Expert:
    """Put a package where verification leaves an accepted one: its files in the blob store, ACCEPTED rows."""
    manifest = json.loads((package_dir / "expert.json").read_text())
    files = {}
    for path in sorted(p for p in package_dir.iterdir() if p.is_file()):
        digest = file_sha256(path)
        copy = coordinator.settings.staging_dir / f"test-{uuid.uuid4().hex}"
        shutil.copyfile(path, copy)
        coordinator.blobs.put(copy, digest)
        copy.unlink(missing_ok=True)
        files[path.name] = digest
    with coordinator.registry.session() as session:
        if session.get(Organization, org) is None:
            session.add(Organization(id=org, status="active"))
            session.flush()
        if session.get(Domain, manifest["domain"]) is None:
            session.add(Domain(name=manifest["domain"], org_id=org))
        submission = Submission(
            id=str(uuid.uuid4()),
            org_id=org,
            domain=manifest["domain"],
            version=manifest["version"],
            state="ACCEPTED",
            files=files,
            package_digest=hashlib.sha256((package_dir / "expert.json").read_bytes()).hexdigest(),
        )
        session.add(submission)
        session.flush()
        expert = Expert(
            submission_id=submission.id,
            org_id=org,
            domain=submission.domain,
            version=submission.version,
            package_digest=submission.package_digest,
            files=files,
        )
        session.add(expert)
        audit.record(session, "test", "submission.accepted", submission.id)
    return expert


def new_job(coordinator: Runtime) -> int:
    """A build job this test runs itself: held under a long lease, so no coordinator's sweeper sends it out."""
    held_until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    with coordinator.registry.session() as session:
        job = Job(kind="build", key=uuid.uuid4().hex, state="running", lease_owner="test", lease_expires_at=held_until)
        session.add(job)
        session.flush()
        return job.id


def build(coordinator: Runtime, tmp_path: Path, *, force=False, actor="operator", job_id=None, cold=False) -> dict:
    job_id = job_id or new_job(coordinator)
    request = BuildRequest({}, force, actor, job_id=job_id, cold=cold)
    return build_release(coordinator, request, tmp_path / f"job{job_id}")


def publish_r1(coordinator, say_experts, tmp_path, no="no-weak"):
    for org, (word, source) in {"org-yes": ("yes", "yes"), "org-no": ("no", no), "org-ok": ("ok", "ok")}.items():
        accept(coordinator, package(coordinator, say_experts[source], org, 1, tmp_path / f"pkg-{word}-1"), org)
    return build(coordinator, tmp_path)
