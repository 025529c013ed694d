"""Retention in every release: each expert scored alone on the release's own problems (once per package digest),
release / expert per domain in release.json, the registry row, the diff, and a gate on it."""

from __future__ import annotations

import shutil

import pytest
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from bar_model.domains import get_domain
from bar_model.evaluate import load_model, score_examples
from bar_model.merge import merge_experts
from coordinator.release.diff import diff_releases
from coordinator.release.evaluate import package_eval_set
from coordinator.release.gate import GateRefused
from coordinator.setup import initialize
from coordinator.state import expert_scores
from coordinator.state import releases as state
from coordinator.state.models import AuditEntry
from protocol.release import read_manifest

from .release_helpers import accept, build, coordinator_for, new_job, package, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORDS = ("yes", "ok", "no")


@pytest.fixture
def coordinator(micro, tmp_path):
    settings = release_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", min_retention=0.0)
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    yield coordinator
    coordinator.registry.dispose()


def accept_words(coordinator, experts: dict, tmp_path, version: int = 1, calibration: bool = True) -> dict:
    packages = {}
    for word, source in experts.items():
        packages[word] = package(
            coordinator, source, f"org-{word}", version, tmp_path / f"pkg-{word}-{version}", calibration
        )
        accept(coordinator, packages[word], f"org-{word}")
    return packages


def test_every_release_carries_each_experts_own_score_and_scores_an_expert_once(coordinator, say_experts, tmp_path):
    packages = accept_words(coordinator, {w: say_experts["no-weak" if w == "no" else w] for w in WORDS}, tmp_path)
    r1 = build(coordinator, tmp_path)
    assert sorted(r1["experts_scored"]) == ["general", "test-say-no", "test-say-ok", "test-say-yes"]
    manifest = read_manifest(coordinator.settings.releases_dir / "r1")
    n = coordinator.settings.eval_examples

    # The figures in release.json are a direct evaluation of each expert alone on the release's own problems.
    for word in WORDS:
        domain = f"test-say-{word}"
        alone = merge_experts(coordinator.settings.anchor_dir, [packages[word]], tmp_path / f"alone-{word}")
        model, tokenizer = load_model(alone)
        entry = manifest.eval[domain]
        assert entry.expert_score == score_examples(model, tokenizer, domain, get_domain(domain).eval_set(n))
        own = package_eval_set(packages[word], domain)
        assert entry.expert_package_score == score_examples(model, tokenizer, domain, own)
        assert entry.difference == round(entry.score - entry.expert_score, 1)
        if entry.expert_score:
            assert entry.retention == round(entry.score / entry.expert_score, 3)
        else:
            assert entry.retention is None
    model, tokenizer = load_model(coordinator.settings.anchor_dir)
    assert manifest.eval["general"].expert_score == score_examples(
        model, tokenizer, "general", get_domain("general").eval_set(n)
    )
    assert manifest.eval["test-say-yes"].expert_score == 100.0  # the say experts know their word

    # The registry row and the REST/CLI diff carry the same figures.
    row = state.get_release(coordinator.registry, 1)
    assert row.retention["test-say-yes"] == {
        "expert": 100.0,
        "release": manifest.eval["test-say-yes"].score,
        "retention": manifest.eval["test-say-yes"].retention,
        "difference": manifest.eval["test-say-yes"].difference,
    }
    assert expert_scores.count(coordinator.registry) == 4

    # r2 changes one expert: exactly that one is scored alone; the others and the anchor come from the cache.
    accept_words(coordinator, {"no": say_experts["no"]}, tmp_path, version=2)
    r2 = build(coordinator, tmp_path)
    assert r2["experts_scored"] == ["test-say-no"]
    assert expert_scores.count(coordinator.registry) == 5
    r2_manifest = read_manifest(coordinator.settings.releases_dir / "r2")
    assert r2_manifest.eval["test-say-yes"].expert_score == manifest.eval["test-say-yes"].expert_score
    assert r2_manifest.eval["test-say-no"].expert_score > manifest.eval["test-say-no"].expert_score  # v2 is strong
    diff = diff_releases(row, state.get_release(coordinator.registry, 2))
    assert diff["retention"]["test-say-no"] == {
        "from": manifest.eval["test-say-no"].retention,
        "to": r2_manifest.eval["test-say-no"].retention,
    }


def test_gate_refuses_a_release_that_loses_an_experts_skill_and_force_publishes_it(
    coordinator, say_experts, tmp_path, monkeypatch
):
    # The yes expert's router row, kept as its node computed it (no calibration sample), is sabotaged: scaled up
    # fifty times. That passes every verification check (names, shapes, dtypes, finite, slot 0 the anchor's), and
    # alone the expert still says its word; merged, its slot draws the other domain's tokens too.
    sabotaged = tmp_path / "sabotaged"
    shutil.copytree(say_experts["yes"], sabotaged)
    for shard in sabotaged.glob("*.safetensors"):
        tensors = load_file(shard)
        for key, value in tensors.items():
            if key.endswith("mlp.gate.weight"):
                value[1] = 50.0 * value[1]
        save_file(tensors, shard, metadata={"format": "pt"})
    accept_words(coordinator, {"yes": sabotaged}, tmp_path, calibration=False)
    accept_words(coordinator, {"ok": say_experts["ok"]}, tmp_path)
    monkeypatch.setattr(coordinator.settings, "min_retention", 0.5)

    job = new_job(coordinator)
    with pytest.raises(GateRefused) as refused:
        build(coordinator, tmp_path, job_id=job)
    gated = refused.value
    assert gated.code == "GATED" and "test-say-ok" in gated.low_retention, gated.table
    kept = gated.low_retention["test-say-ok"]
    assert kept["retention"] < 0.5 and kept["min_retention"] == 0.5
    assert "keeps" in gated.message and "routing-report" in gated.message and "--force" in gated.message
    assert gated.table["test-say-yes"]["expert_score"] == 100.0
    assert state.list_releases(coordinator.registry) == []

    forced = build(coordinator, tmp_path, force=True, actor="alice", job_id=job)
    assert forced["name"] == "r1" and forced["gate"]["forced_by"] == "alice"
    assert "test-say-ok" in forced["gate"]["low_retention"]
    with coordinator.registry.session() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "release.publish")).all()[-1]
    assert entry.actor == "alice" and entry.details["forced_by"] == "alice"
