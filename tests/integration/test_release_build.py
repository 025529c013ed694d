"""The release build as plain functions (no task engine), on SQLite and PostgreSQL: plan, merge, route on the
packages' calibration samples, evaluate, gate, sign, publish; channels, diff, rebuild; what users load.

Experts enter the registry here as verification would leave them (blobs in the store, an ACCEPTED row); the
whole path through gRPC and a Celery worker is tested in test_release_tasks.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from coordinator.release.actions import show
from coordinator.release.diff import diff_releases
from coordinator.release.gate import GateRefused
from coordinator.release.rebuild import rebuild
from coordinator.setup import initialize
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.state.models import AuditEntry, Expert
from protocol.release import read_manifest

from ..conftest import SAY_WORDS
from .release_helpers import accept, build, coordinator_for, new_job, package, publish_r1, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def coordinator(micro, db_url, tmp_path):
    """On SQLite and PostgreSQL: for what the registry decides (rows, channels, pins, idempotence)."""
    settings = release_settings(tmp_path, db_url)
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    yield coordinator
    coordinator.registry.dispose()


@pytest.fixture
def sqlite_coordinator(micro, tmp_path):
    """On SQLite only: for what the model files decide (signature, gate verdict, routing), not the database."""
    settings = release_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    yield coordinator
    coordinator.registry.dispose()


def model_signing_verify(release: Path, public_key: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).parent / "model_signing"
    return subprocess.run(
        [
            str(tool),
            "verify",
            "key",
            str(release),
            "--signature",
            str(release / "model.sig"),
            "--public_key",
            str(public_key),
            "--no-ignore-git-paths",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_r1_is_a_signed_complete_release_that_stock_transformers_loads(coordinator, say_experts, tmp_path):
    result = publish_r1(coordinator, say_experts, tmp_path)
    assert result["name"] == "r1" and sorted(result["channels"]) == ["latest", "stable"]
    release_dir = coordinator.settings.releases_dir / "r1"
    names = {p.name for p in release_dir.iterdir()}
    assert {"config.json", "release.json", "model.sig", "tokenizer.json", "bar_merge.json"} <= names
    assert any(n.endswith(".safetensors") for n in names) and "bar_router.json" not in names
    assert not list(coordinator.settings.releases_dir.glob(".r1.staging*"))

    manifest = read_manifest(release_dir)
    assert manifest.name == "r1" and manifest.parent is None and manifest.router.threads == 1
    assert [e.domain for e in manifest.experts] == ["test-say-no", "test-say-ok", "test-say-yes"]
    assert set(manifest.wall_s) >= {"plan", "merge", "route", "evaluate"}
    assert manifest.router.kept_rows == [] and manifest.router.examples > 0
    with coordinator.registry.session() as session:
        row = session.scalars(select(Expert).where(Expert.domain == "test-say-yes")).one()
    assert next(e for e in manifest.experts if e.domain == "test-say-yes").package_digest == row.package_digest
    assert state.channels(coordinator.registry) == {"latest": 1, "stable": 1}
    assert json.loads((release_dir / "bar_merge.json").read_text())["experts"][0] == {"domain": "test-say-no"}

    # A user's view: stock transformers, no trust_remote_code, and a pipeline that generates.
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    model = AutoModelForCausalLM.from_pretrained(release_dir)
    assert type(model).__name__ == "FlexOlmoForCausalLM" and model.config.num_experts == 4
    tokenizer = AutoTokenizer.from_pretrained(release_dir)
    out = pipeline("text-generation", model=model, tokenizer=tokenizer)("Say yes to 3", max_new_tokens=3)
    assert out[0]["generated_text"].startswith("Say yes to 3")
    assert result["eval"]["test-say-yes"]["score"] == manifest.eval["test-say-yes"].score


def test_model_signing_cli_checks_every_file(sqlite_coordinator, say_experts, tmp_path):
    coordinator = sqlite_coordinator
    publish_r1(coordinator, say_experts, tmp_path)
    public_key = coordinator.keys.release_public_path
    published = coordinator.settings.releases_dir / "r1"
    assert model_signing_verify(published, public_key).returncode == 0

    def tampered(change) -> subprocess.CompletedProcess:
        copy = tmp_path / f"copy-{uuid.uuid4().hex[:6]}"
        shutil.copytree(published, copy)
        for path in copy.iterdir():
            path.chmod(0o644)
        change(copy)
        return model_signing_verify(copy, public_key)

    def flip_a_byte(d: Path) -> None:
        path = d / "config.json"
        data = bytearray(path.read_bytes())
        data[10] ^= 1
        path.write_bytes(bytes(data))

    assert tampered(flip_a_byte).returncode != 0
    assert tampered(lambda d: (d / "extra.txt").write_text("hello")).returncode != 0
    assert tampered(lambda d: (d / "tokenizer.json").unlink()).returncode != 0
    assert tampered(lambda d: (d / ".git").mkdir() or (d / ".git" / "x").write_text("y")).returncode != 0


def test_gate_refuses_a_damaged_expert_and_force_publishes_it_with_an_audit_entry(
    sqlite_coordinator, say_experts, tmp_path
):
    coordinator = sqlite_coordinator
    publish_r1(coordinator, say_experts, tmp_path, no="no")
    r1 = state.get_release(coordinator.registry, 1)
    word = max(SAY_WORDS, key=lambda w: r1.eval[f"test-say-{w}"])
    domain = f"test-say-{word}"
    assert r1.eval[domain] >= 50, r1.eval  # the signal the gate needs: the best-routed domain of r1

    # Its v2 passes every check verification makes (names, shapes, dtypes, finite) but its FFN is negated.
    damaged_source = tmp_path / "damaged"
    shutil.copytree(say_experts[word], damaged_source)
    for shard in damaged_source.glob("*.safetensors"):
        tensors = load_file(shard)
        tensors = {k: (-v if ".mlp.experts.1.down_proj" in k else v) for k, v in tensors.items()}
        save_file(tensors, shard, metadata={"format": "pt"})
    org = f"org-{word}"
    accept(coordinator, package(coordinator, damaged_source, org, 2, tmp_path / "pkg-damaged-2"), org)

    job = new_job(coordinator)
    with pytest.raises(GateRefused) as refused:
        build(coordinator, tmp_path, job_id=job)
    assert refused.value.code == "GATED" and domain in refused.value.regressions
    assert "--force" in refused.value.message
    assert [r.number for r in state.list_releases(coordinator.registry)] == [1]
    assert not (coordinator.settings.releases_dir / "r2").exists()

    forced = build(coordinator, tmp_path, force=True, actor="alice", job_id=job)
    assert forced["name"] == "r2" and forced["gate"]["forced_by"] == "alice"
    assert state.channels(coordinator.registry) == {"latest": 2, "stable": 1}  # stable moves only by promote
    with coordinator.registry.session() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "release.publish")).all()[-1]
    assert entry.actor == "alice" and entry.details["forced_by"] == "alice"


def test_swap_builds_incrementally_promote_rollback_diff_and_rebuild(coordinator, say_experts, tmp_path):
    for org, source in {"org-yes": "yes", "org-no": "no-weak"}.items():
        accept(coordinator, package(coordinator, say_experts[source], org, 1, tmp_path / f"pkg-{source}-1"), org)
    build(coordinator, tmp_path)  # no v1 is the weak one
    accept(coordinator, package(coordinator, say_experts["no"], "org-no", 2, tmp_path / "pkg-no-2"), "org-no")
    r2 = build(coordinator, tmp_path)
    manifest = read_manifest(coordinator.settings.releases_dir / "r2")
    assert manifest.parent == 1 and manifest.router.incremental
    assert manifest.router.trained_rows == ["test-say-no"]  # anchor and unchanged experts keep r1's rows
    # Micro models cannot route between domains (their hidden states at the answer do not carry the prompt's
    # domain), so the upgrade's gain shows in the one-expert test below and, routed, in bench/release_cost.py.
    assert r2["eval"]["test-say-no"]["delta"] >= 0, r2["eval"]
    for domain in ("test-say-yes", "general"):
        assert abs(r2["eval"][domain]["delta"]) <= coordinator.settings.gate_tolerance, r2["eval"]

    # Only the swapped slot and its router rows differ between r1 and r2.
    r1_tensors = _tensors(coordinator.settings.releases_dir / "r1")
    r2_tensors = _tensors(coordinator.settings.releases_dir / "r2")
    slot = json.loads((coordinator.settings.releases_dir / "r2" / "bar_merge.json").read_text())["slots"].index(
        "test-say-no"
    )
    for name, tensor in r2_tensors.items():
        if f".mlp.experts.{slot}." in name:
            continue
        if name.endswith("mlp.gate.weight"):
            rows = [i for i in range(tensor.shape[0]) if i != slot]
            assert torch.equal(tensor[rows], r1_tensors[name][rows]), name
        else:
            assert torch.equal(tensor, r1_tensors[name]), name

    diff = diff_releases(state.get_release(coordinator.registry, 1), state.get_release(coordinator.registry, 2))
    assert diff["changed"] == {"test-say-no": {"from": 1, "to": 2}} and not diff["added"] and not diff["removed"]
    assert diff["eval"]["test-say-no"]["delta"] == r2["eval"]["test-say-no"]["delta"]

    state.move_channel(coordinator.registry, "stable", 2, "operator")
    assert state.channels(coordinator.registry)["stable"] == 2
    assert state.rollback_channel(coordinator.registry, "stable", "operator") == (2, 1)
    assert state.resolve(coordinator.registry, "stable").number == 1
    with pytest.raises(Exception) as nothing:
        state.rollback_channel(coordinator.registry, "stable", "operator")
    assert getattr(nothing.value, "code", "") == "NOTHING_TO_ROLL_BACK"

    # Rebuilding from release.json reproduces every file bit for bit, r2 (incremental on r1) included.
    for number in (1, 2):
        report = rebuild(coordinator, number, tmp_path / f"rebuild-{number}")
        assert report and set(report.values()) == {"match"}, report


def test_a_cold_build_trains_every_row_of_unchanged_experts_and_reports_its_whole_cost(
    sqlite_coordinator, say_experts, tmp_path
):
    coordinator = sqlite_coordinator
    for org, word in {"org-yes": "yes", "org-ok": "ok"}.items():
        accept(coordinator, package(coordinator, say_experts[word], org, 1, tmp_path / f"pkg-{word}"), org)
    build(coordinator, tmp_path)
    assert build(coordinator, tmp_path)["code"] == "NOTHING_CHANGED"  # a plain build of the same experts
    job = new_job(coordinator)
    r2 = build(coordinator, tmp_path, cold=True, job_id=job)
    release_dir = coordinator.settings.releases_dir / "r2"
    manifest = read_manifest(release_dir)
    slots = json.loads((release_dir / "bar_merge.json").read_text())["slots"]
    # r1 stays the parent (eval delta, gate) but none of its rows is carried: every row trained from scratch.
    assert manifest.parent == 1 and not manifest.router.incremental
    assert manifest.router.trained_rows == slots and manifest.router.frozen_rows == []
    assert r2["eval"]["test-say-yes"]["parent"] is not None

    # release.json holds the steps before it; the job's result adds sign and publish, and `releases show` reads them.
    assert {"plan", "route", "evaluate"} <= set(manifest.wall_s) and not {"sign", "publish"} & set(manifest.wall_s)
    assert {"sign", "publish"} <= set(r2["wall_s"]) and r2["wall_s"]["route"] == manifest.wall_s["route"]
    jobs.finish(coordinator.registry, job, "test", "done", r2)  # as the worker that ran it would
    _, shown = show(coordinator.settings, coordinator.registry, "r2")
    assert shown.wall_s == {**manifest.wall_s, "sign": r2["wall_s"]["sign"], "publish": r2["wall_s"]["publish"]}

    report = rebuild(coordinator, 2, tmp_path / "rebuild-2")  # cold, so rebuilt without r1's rows too
    assert report and set(report.values()) == {"match"}, report


def test_an_upgraded_expert_raises_its_domain(sqlite_coordinator, say_experts, tmp_path):
    coordinator = sqlite_coordinator
    accept(coordinator, package(coordinator, say_experts["no-weak"], "org-no", 1, tmp_path / "p1"), "org-no")
    r1 = build(coordinator, tmp_path)
    accept(coordinator, package(coordinator, say_experts["no"], "org-no", 2, tmp_path / "p2"), "org-no")
    r2 = build(coordinator, tmp_path)
    assert r2["eval"]["test-say-no"]["score"] > r1["eval"]["test-say-no"]["score"], (r1["eval"], r2["eval"])
    assert abs(r2["eval"]["general"]["delta"]) <= coordinator.settings.gate_tolerance


def test_a_retried_build_resumes_and_publishes_once(coordinator, say_experts, tmp_path):
    for org, word in {"org-yes": "yes", "org-ok": "ok"}.items():
        accept(coordinator, package(coordinator, say_experts[word], org, 1, tmp_path / f"pkg-{word}"), org)
    job = new_job(coordinator)
    first = build(coordinator, tmp_path, job_id=job)
    # A redelivered job (its worker died after the rename, or after the row) publishes nothing new.
    again = build(coordinator, tmp_path, job_id=job)
    assert first["name"] == again["name"] == "r1"
    assert [r.number for r in state.list_releases(coordinator.registry)] == [1]


def test_an_expert_without_calibration_keeps_its_nodes_row(sqlite_coordinator, say_experts, tmp_path):
    coordinator = sqlite_coordinator
    accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 1, tmp_path / "p1"), "org-yes")
    private = package(coordinator, say_experts["ok"], "org-ok", 1, tmp_path / "p2", calibration=False)
    accept(coordinator, private, "org-ok")
    build(coordinator, tmp_path)
    manifest = read_manifest(coordinator.settings.releases_dir / "r1")
    assert manifest.router.kept_rows == ["test-say-ok"] and "test-say-ok" in manifest.router.frozen_rows
    merged_row = _tensors(private)["model.layers.0.mlp.gate.weight"][1]
    slot = json.loads((coordinator.settings.releases_dir / "r1" / "bar_merge.json").read_text())["slots"].index(
        "test-say-ok"
    )
    released = _tensors(coordinator.settings.releases_dir / "r1")["model.layers.0.mlp.gate.weight"][slot]
    assert torch.equal(released, merged_row)


def test_plan_takes_newest_accepted_or_pins_and_never_a_withdrawn_one(coordinator, say_experts, tmp_path):
    from coordinator.release.plan import plan_experts
    from coordinator.state.experts import set_expert_state
    from protocol.errors import BarFedError

    accept(coordinator, package(coordinator, say_experts["no-weak"], "org-no", 1, tmp_path / "a"), "org-no")
    accept(coordinator, package(coordinator, say_experts["no"], "org-no", 2, tmp_path / "b"), "org-no")
    accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 1, tmp_path / "c"), "org-yes")
    assert [(e.domain, e.version) for e in plan_experts(coordinator.registry)] == [
        ("test-say-no", 2),
        ("test-say-yes", 1),
    ]
    assert next((e.domain, e.version) for e in plan_experts(coordinator.registry, {"test-say-no": 1})) == (
        "test-say-no",
        1,
    )
    set_expert_state(coordinator.registry, "test-say-no", 2, "QUARANTINED", "regression", "operator")
    assert next((e.domain, e.version) for e in plan_experts(coordinator.registry)) == ("test-say-no", 1)
    with pytest.raises(BarFedError) as pinned:
        plan_experts(coordinator.registry, {"test-say-no": 2})
    assert pinned.value.code == "PIN_NOT_ACCEPTED"
    set_expert_state(coordinator.registry, "test-say-yes", 1, "OPTED_OUT", "org left", "operator")
    assert [e.domain for e in plan_experts(coordinator.registry)] == ["test-say-no"]


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(Path(directory).glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_an_opted_out_expert_leaves_the_next_release_which_needs_no_router_training(
    sqlite_coordinator, say_experts, tmp_path
):
    from transformers import AutoModelForCausalLM

    from coordinator.state.experts import set_expert_state

    coordinator = sqlite_coordinator
    for org, word in {"org-yes": "yes", "org-ok": "ok"}.items():
        accept(coordinator, package(coordinator, say_experts[word], org, 1, tmp_path / f"pkg-{word}"), org)
    build(coordinator, tmp_path)
    set_expert_state(coordinator.registry, "test-say-ok", 1, "OPTED_OUT", "the org left", "operator")
    r2 = build(coordinator, tmp_path)
    manifest = read_manifest(coordinator.settings.releases_dir / "r2")
    assert r2["domains"] == ["test-say-yes"] and manifest.parent == 1
    assert manifest.router.trained_rows == [] and manifest.router.steps == 0  # every row is r1's, as it was
    model = AutoModelForCausalLM.from_pretrained(coordinator.settings.releases_dir / "r2")
    assert model.config.num_experts == 2
    r1_router = _tensors(coordinator.settings.releases_dir / "r1")["model.layers.0.mlp.gate.weight"]
    r2_router = _tensors(coordinator.settings.releases_dir / "r2")["model.layers.0.mlp.gate.weight"]
    slots = json.loads((coordinator.settings.releases_dir / "r1" / "bar_merge.json").read_text())["slots"]
    keep = [slots.index("anchor"), slots.index("test-say-yes")]
    assert torch.equal(r2_router, r1_router[keep])
