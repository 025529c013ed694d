"""`barfed model routing-report`: per layer, where each domain's held-out tokens are routed in a merged model."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from bar_model.cli import app
from bar_model.domains import get_domain
from bar_model.evaluate import load_model
from bar_model.merge import merge_experts
from bar_model.recipe import load_router_recipe
from bar_model.router import mean_hidden_states, train_router
from bar_model.routing_report import routing_report
from protocol.errors import BarFedError
from protocol.layout import router_key

EXAMPLES = 4


@pytest.fixture(scope="module")
def routed(micro, micro_expert, micro_math, tmp_path_factory):
    """slots anchor, test-vowels, math; router trained."""
    merged = merge_experts(micro["branch"], [micro_expert, micro_math], tmp_path_factory.mktemp("m") / "merged")
    return train_router(merged, tmp_path_factory.mktemp("r") / "routed", load_router_recipe("micro"), progress=False)


def test_every_layer_splits_each_served_domains_tokens_whole(routed):
    report = routing_report(routed, EXAMPLES)
    assert report["layers"] == 2 and report["slots"] == ["anchor", "test-vowels", "math"]
    assert list(report["domains"]) == ["test-vowels", "math", "general"]
    for domain, entry in report["domains"].items():
        assert len(entry["layers"]) == 2
        assert sum(entry["slots"].values()) == pytest.approx(1.0, abs=1e-5)  # every slot's share, layer mean
        own = "anchor" if domain == "general" else domain
        assert entry["slots"][own] == pytest.approx(entry["mean"]["own"], abs=1e-5)
        for row in entry["layers"]:
            anchor = 0.0 if domain == "general" else row["anchor"]  # general's own slot is the anchor
            assert anchor + row["own"] + row["foreign"] == pytest.approx(1.0, abs=1e-5)
            assert 0 < row["top_foreign_mass"] <= row["foreign"] + 1e-9
            assert 0 <= row["top_own"] <= 1 and 0 <= row["top_anchor"] <= 1
            assert 0 <= row["entropy"] <= math.log(len(report["slots"])) + 1e-9  # nats, at most uniform's
        assert entry["mean"]["foreign"] == pytest.approx(sum(r["foreign"] for r in entry["layers"]) / 2, abs=1e-5)
    for load in report["load"]:  # per layer: every slot's share of all tokens, domains weighted equally
        assert sum(load.values()) == pytest.approx(1.0, abs=1e-5)
    for slot in report["slots"]:
        over_layers = sum(load[slot] for load in report["load"]) / report["layers"]
        over_domains = sum(e["slots"][slot] for e in report["domains"].values()) / len(report["domains"])
        assert over_layers == pytest.approx(over_domains, abs=1e-5)
    assert report["domains"]["math"]["layers"][0]["top_foreign"] == "test-vowels"  # the only foreign slot
    assert routing_report(routed, EXAMPLES) == report


def test_a_router_that_sends_math_to_another_expert_shows_it_foreign(routed, tmp_path):
    """Every router row zero but test-vowels', which points along math's mean hidden state: math's tokens all go
    to the vowels expert (the row a domain-informed init would give math, in the wrong slot)."""
    model, tokenizer = load_model(routed)
    means = mean_hidden_states(model, tokenizer, get_domain("math").eval_set(EXAMPLES))
    broken = tmp_path / "broken"
    shutil.copytree(routed, broken)
    tensors = load_file(broken / "model.safetensors")
    for layer, mean in enumerate(means):
        tensors[router_key(layer)].zero_()
        tensors[router_key(layer)][1] = mean * (50 / mean.norm())
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})

    math = routing_report(broken, EXAMPLES)["domains"]["math"]
    for row in math["layers"]:
        assert row["foreign"] > 0.99 and row["top_foreign"] == "test-vowels"
        assert row["own"] < 0.01 and row["anchor"] < 0.01
    assert math["worst"]["top_foreign"] == "test-vowels" and math["mean"]["foreign"] > 0.99


def test_the_command_prints_the_table_and_writes_json(routed, tmp_path):
    out = tmp_path / "routing.json"
    result = CliRunner().invoke(app, ["routing-report", str(routed), "--examples", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "top foreign" in result.output and "general" in result.output
    for domain in ("test-vowels", "math", "general"):
        assert f"\n{domain}: anchor " in result.output
    assert json.loads(out.read_text()) == routing_report(routed, 2)


def test_a_model_without_a_merge_card_is_refused(micro):
    with pytest.raises(BarFedError) as error:
        routing_report(micro["branch"])
    assert error.value.code == "NOT_A_MERGE"
