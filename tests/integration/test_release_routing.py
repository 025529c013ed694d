"""Routing health in every release (each expert's share of its own domain's tokens, its load), the gate that refuses
a collapsed router, and sparse releases: the ``top_k`` policy, served by stock transformers as the config says."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select
from transformers import AutoModelForCausalLM, AutoTokenizer

from bar_model.routing_report import routing_report
from coordinator.release.gate import GateRefused
from coordinator.release.routing import ROUTING_EXAMPLES
from coordinator.setup import initialize
from coordinator.state import releases as state
from coordinator.state.models import AuditEntry
from protocol.release import read_manifest

from .release_helpers import accept, build, coordinator_for, new_job, package, release_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORDS = ("yes", "ok", "no")


def coordinator_with(micro, tmp_path, **overrides):
    """A coordinator whose collapse gate is on at its default (release_settings turns it off for micro experts)."""
    overrides = {"min_own_share": 0.05, **overrides}
    settings = release_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", **overrides)
    initialize(settings, micro["branch"])
    return coordinator_for(settings)


def accept_all(coordinator, sources: dict, tmp_path, calibration: bool = True) -> None:
    for word, source in sources.items():
        org = f"org-{word}"
        accept(coordinator, package(coordinator, source, org, 1, tmp_path / f"pkg-{word}", calibration), org)


def sabotage(expert, out, factor: float):
    """The expert's router row scaled by ``factor``: it passes every verification check; -50 sends the expert
    nothing of its own domain's tokens, 50 draws other domains' tokens to it."""
    shutil.copytree(expert, out)
    for shard in out.glob("*.safetensors"):
        tensors = load_file(shard)
        for key, value in tensors.items():
            if key.endswith("mlp.gate.weight"):
                value[1] = factor * value[1]
        save_file(tensors, shard, metadata={"format": "pt"})
    return out


def test_every_release_carries_each_experts_share_of_its_tokens_and_its_load(micro, say_experts, tmp_path):
    coordinator = coordinator_with(micro, tmp_path)
    try:
        accept_all(coordinator, {w: say_experts[w] for w in WORDS}, tmp_path)
        build(coordinator, tmp_path)
        manifest = read_manifest(coordinator.settings.releases_dir / "r1")
        row = state.get_release(coordinator.registry, 1)
    finally:
        coordinator.registry.dispose()
    report = routing_report(coordinator.settings.releases_dir / "r1", ROUTING_EXAMPLES)  # the published model
    for domain, entry in manifest.eval.items():
        measured = report["domains"][domain]["mean"]
        assert entry.own_share == measured["own"] and entry.anchor_share == measured["anchor"], domain
        assert entry.own_share >= coordinator.settings.min_own_share
        assert row.routing[domain] == {
            "own_share": entry.own_share,
            "anchor_share": entry.anchor_share,
            "load": entry.load,
        }
    assert sum(entry.load for entry in manifest.eval.values()) == pytest.approx(1.0, abs=1e-4)  # every slot
    assert manifest.gate["starved"] == {} and manifest.gate["min_own_share"]["test-say-ok"] == 0.05
    assert "routing" in manifest.wall_s


def test_gate_refuses_a_collapsed_router_and_force_publishes_it(micro, say_experts, tmp_path):
    # The ok expert's own row (kept as its node computed it: no calibration sample) turned against its own tokens.
    # The retention gate is off: an expert left idle is refused by the routing share alone.
    coordinator = coordinator_with(micro, tmp_path, min_retention=0.0)
    try:
        accept_all(coordinator, {"ok": sabotage(say_experts["ok"], tmp_path / "sabotaged", -50.0)}, tmp_path, False)
        accept_all(coordinator, {"yes": say_experts["yes"]}, tmp_path)
        job = new_job(coordinator)
        with pytest.raises(GateRefused) as refused:
            build(coordinator, tmp_path, job_id=job)
        gated = refused.value
        assert gated.code == "GATED" and list(gated.starved) == ["test-say-ok"], gated.table
        idle = gated.starved["test-say-ok"]
        assert idle["own_share"] < 0.05 and idle["min_own_share"] == 0.05
        assert gated.table["test-say-ok"]["load"] < gated.table["test-say-yes"]["load"] / 4
        assert gated.table["test-say-yes"]["own_share"] >= 0.05
        assert "routes" in gated.message and "test-say-ok" in gated.message and "--force" in gated.message
        assert state.list_releases(coordinator.registry) == []

        forced = build(coordinator, tmp_path, force=True, actor="alice", job_id=job)
        assert forced["gate"]["forced_by"] == "alice" and "test-say-ok" in forced["gate"]["starved"]
        with coordinator.registry.session() as session:
            entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "release.publish")).all()[-1]
        assert entry.actor == "alice" and entry.details["forced_by"] == "alice"
    finally:
        coordinator.registry.dispose()


def test_a_top_k_release_loads_in_stock_transformers_and_computes_k_experts_per_token(micro, say_experts, tmp_path):
    coordinator = coordinator_with(micro, tmp_path, top_k=3)  # the policy overrides the test recipe's top-2
    try:
        accept_all(coordinator, {w: say_experts[w] for w in WORDS}, tmp_path)
        build(coordinator, tmp_path)
    finally:
        coordinator.registry.dispose()
    release = coordinator.settings.releases_dir / "r1"
    model = AutoModelForCausalLM.from_pretrained(release)  # no remote code
    tokenizer = AutoTokenizer.from_pretrained(release)
    assert model.config.num_experts == 4 and model.config.num_experts_per_tok == 3
    assert read_manifest(release).router.recipe["top_k"] == 3

    computed: list[torch.Tensor] = []  # per layer and call: the experts each token's FFN runs

    def record(_module, args):
        computed.append(args[1])

    handles = [layer.mlp.experts.register_forward_pre_hook(record) for layer in model.model.layers]
    inputs = tokenizer("say the word", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    for handle in handles:
        handle.remove()
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert computed and all(chosen.shape[-1] == 3 for chosen in computed)
    assert all(len(set(row.tolist())) == 3 for chosen in computed for row in chosen)  # three distinct FFNs
