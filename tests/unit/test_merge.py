"""Merge, router training and opt-out: exact where the method says exact, stock-loadable, refusing bad inputs."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from bar_model import planned_shards
from bar_model.baselines import weight_average
from bar_model.domains import get_domain
from bar_model.evaluate import load_model
from bar_model.freezing import part_of
from bar_model.merge import drop_expert, merge_card, merge_experts
from bar_model.recipe import load_router_recipe
from bar_model.router import mean_hidden_states, set_routing, train_router
from contributor_node.package import build_package
from protocol import pki
from protocol.errors import BarFedError

pytestmark = pytest.mark.slow


def _state(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


@pytest.fixture(scope="module")
def merged(micro, micro_expert, micro_math, tmp_path_factory):
    return merge_experts(micro["branch"], [micro_expert, micro_math], tmp_path_factory.mktemp("m") / "merged")


@pytest.fixture(scope="module")
def routed(merged, tmp_path_factory):
    return train_router(merged, tmp_path_factory.mktemp("r") / "routed", load_router_recipe("micro"), progress=False)


def test_merged_checkpoint_loads_in_stock_transformers_and_generates(routed):
    config = json.loads((routed / "config.json").read_text())
    assert config["model_type"] == "flex_olmo" and config["num_experts"] == 3 and config["num_experts_per_tok"] == 3
    assert "auto_map" not in config
    model = AutoModelForCausalLM.from_pretrained(routed)  # no trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(routed)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    out = generator("Compute 1+2.", max_new_tokens=5, do_sample=False)
    assert isinstance(out[0]["generated_text"], str) and out[0]["generated_text"].startswith("Compute 1+2.")
    assert merge_card(routed)["slots"] == ["anchor", "test-vowels", "math"]


def test_one_expert_merge_computes_exactly_the_expert(micro, micro_expert, tmp_path):
    merged = merge_experts(micro["branch"], [micro_expert], tmp_path / "one")
    expert = AutoModelForCausalLM.from_pretrained(micro_expert, dtype=torch.float32)
    moe = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    ids = torch.randint(0, expert.config.vocab_size, (2, 13))
    with torch.no_grad():
        assert torch.equal(moe(ids).logits, expert(ids).logits)


def test_slots_rows_and_averages(micro, micro_expert, micro_math, merged):
    anchor, a, b, out = _state(micro["branch"]), _state(micro_expert), _state(micro_math), _state(merged)
    for name, tensor in out.items():
        part = part_of(name)
        if part == "expert_ffn":
            assert torch.equal(tensor[0], anchor[name][0]) and torch.equal(tensor[1], a[name][1])
            assert torch.equal(tensor[2], b[name][1])
        elif part == "router":
            assert torch.equal(tensor, torch.stack([anchor[name][0], a[name][1], b[name][1]]))
        else:
            torch.testing.assert_close(tensor, (a[name] + b[name]) / 2, rtol=0, atol=1e-7)


def test_package_with_only_changed_tensors_merges_identically(micro, micro_expert, micro_math, merged, tmp_path):
    key = pki.write_private_key(tmp_path / "k.key", pki.generate_private_key())
    package = tmp_path / "pkg"
    build_package(micro_math, package, org="acme-labs", version=1, private_key=key)
    from_package = merge_experts(micro["branch"], [micro_expert, package], tmp_path / "from-package")
    reference = load_file(merged / "model.safetensors")
    produced = load_file(from_package / "model.safetensors")
    assert reference.keys() == produced.keys()
    assert all(torch.equal(reference[k], produced[k]) for k in reference)


def test_refuses_other_anchor_and_modified_slot0(micro, micro_expert, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(micro_expert, other)
    card = json.loads((other / "bar_expert.json").read_text())
    (other / "bar_expert.json").write_text(json.dumps({**card, "anchor_fingerprint": "sha256:" + "0" * 64}))
    with pytest.raises(BarFedError) as err:
        merge_experts(micro["branch"], [other], tmp_path / "x")
    assert err.value.code == "ANCHOR_MISMATCH"
    shutil.copy(micro_expert / "bar_expert.json", other / "bar_expert.json")
    tensors = load_file(other / "model.safetensors")
    tensors["model.layers.0.mlp.experts.0.up_proj.weight"][0, 0] += 1
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BarFedError) as err:
        merge_experts(micro["branch"], [other], tmp_path / "y")
    assert err.value.code == "SLOT0_MODIFIED"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _same_tensors(left, right):
    a, b = (
        AutoModelForCausalLM.from_pretrained(left).state_dict(),
        AutoModelForCausalLM.from_pretrained(right).state_dict(),
    )
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_output_and_copies_through_a_buffer_give_the_same_model(
    micro, micro_expert, micro_math, merged, tmp_path, monkeypatch
):
    sharded = merge_experts(micro["branch"], [micro_expert, micro_math], tmp_path / "sharded", max_shard_bytes=4096)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (sharded / "model.safetensors").exists()
    for shard in shards:  # stock safetensors reads every shard, and each holds what the index says
        assert set(load_file(sharded / shard)) == {k for k, v in index["weight_map"].items() if v == shard}
    assert _same_tensors(sharded, merged)

    def no_kernel_copy(*_args):  # another filesystem, or a kernel without copy_file_range
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
    buffered = merge_experts(micro["branch"], [micro_expert, micro_math], tmp_path / "buffered")
    assert (buffered / "model.safetensors").read_bytes() == (merged / "model.safetensors").read_bytes()


def test_refuses_an_expert_of_another_shape_and_a_file_cut_short_during_the_merge(
    micro, micro_expert, tmp_path, monkeypatch
):
    other = tmp_path / "other"
    shutil.copytree(micro_expert, other)
    tensors = load_file(other / "model.safetensors")
    key = "model.layers.0.mlp.experts.1.up_proj.weight"
    tensors[key] = torch.cat([tensors[key], tensors[key][:1]])
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BarFedError) as err:
        merge_experts(micro["branch"], [other], tmp_path / "x")
    assert err.value.code == "SHAPE_MISMATCH" and key in err.value.message

    shutil.rmtree(other)
    shutil.copytree(micro_expert, other)
    original_copy = planned_shards._copy_range

    def truncate_then_copy(source, out_fd, nbytes, name):
        if source.path.parent == other:  # the expert's file shrinks after the merge checked it
            os.truncate(source.path, source.start + 1)
        return original_copy(source, out_fd, nbytes, name)

    monkeypatch.setattr(planned_shards, "_copy_range", truncate_then_copy)
    with pytest.raises(BarFedError) as err:
        merge_experts(micro["branch"], [other], tmp_path / "y")
    assert err.value.code == "BAD_SAFETENSORS" and "truncated" in err.value.message
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not list(tmp_path.glob(".y.staging-*"))


def test_duplicate_domain_and_empty_merge(micro, micro_expert, tmp_path):
    with pytest.raises(BarFedError) as err:
        merge_experts(micro["branch"], [micro_expert, micro_expert], tmp_path / "x")
    assert err.value.code == "DUPLICATE_DOMAIN"
    with pytest.raises(BarFedError) as err:
        merge_experts(micro["branch"], [], tmp_path / "x")
    assert err.value.code == "NO_EXPERTS"


def test_router_training_changes_only_router_weights_and_is_deterministic(merged, routed, tmp_path):
    before, after = _state(merged), _state(routed)
    for name in before:
        if part_of(name) == "router":
            assert not torch.equal(before[name], after[name]), name
        else:
            assert torch.equal(before[name], after[name]), f"router training changed {name}"
    again = train_router(merged, tmp_path / "again", load_router_recipe("micro"), progress=False)
    second = _state(again)
    assert all(torch.equal(second[n], after[n]) for n in after), "router training is not deterministic"


def test_sparse_top_k_works(merged, tmp_path):
    recipe = load_router_recipe("micro").model_copy(update={"top_k": 1})
    routed = train_router(merged, tmp_path / "top1", recipe, progress=False)
    model, tokenizer = load_model(routed)
    assert model.config.num_experts_per_tok == 1
    ids = tokenizer("Compute 1+2.", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3
    with pytest.raises(BarFedError) as err:
        train_router(merged, tmp_path / "bad", recipe.model_copy(update={"top_k": 9}), progress=False)
    assert err.value.code == "BAD_TOP_K"


def test_top2_normalised_routing_to_anchor_and_expert_is_exactly_the_experts_mixture(micro_expert, merged):
    """With top-2 and renormalised weights, a token sent to {anchor, expert} gets that expert's own FFN output."""
    expert = AutoModelForCausalLM.from_pretrained(micro_expert, dtype=torch.float32)
    moe = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    set_routing(moe, 2, norm_topk_prob=True)
    torch.manual_seed(0)
    hidden = torch.randn(1, 256, moe.config.hidden_size) * 4
    checked = 0
    with torch.no_grad():
        for own, merged_layer in zip(expert.model.layers, moe.model.layers, strict=True):
            chosen = merged_layer.mlp.gate(hidden)[2]
            to_anchor_and_expert = (chosen == 0).any(-1) & (chosen == 1).any(-1)
            got, want = merged_layer.mlp(hidden)[0], own.mlp(hidden)[0]
            torch.testing.assert_close(got[to_anchor_and_expert], want[to_anchor_and_expert], rtol=1e-5, atol=1e-6)
            checked += int(to_anchor_and_expert.sum())
    assert checked > 0


def test_renormalised_top_k_routing_is_saved_and_loads_in_stock_transformers(merged, tmp_path):
    recipe = load_router_recipe("micro").model_copy(update={"top_k": 2, "norm_topk_prob": True, "steps": 2})
    routed = train_router(merged, tmp_path / "top2", recipe, progress=False)
    model = AutoModelForCausalLM.from_pretrained(routed)
    assert (model.config.num_experts_per_tok, model.config.norm_topk_prob) == (2, True)
    assert all(layer.mlp.gate.norm_topk_prob and layer.mlp.gate.top_k == 2 for layer in model.model.layers)
    assert merge_card(routed)["norm_topk_prob"] is True


def test_domain_informed_row_for_an_org_that_shares_no_data(micro, merged, tmp_path):
    anchor = AutoModelForCausalLM.from_pretrained(micro["anchor"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(micro["anchor"])
    rows = mean_hidden_states(anchor, tokenizer, get_domain("math").sft(8))
    assert rows.shape == (anchor.config.num_hidden_layers, anchor.config.hidden_size)
    recipe = load_router_recipe("micro").model_copy(update={"steps": 1, "learning_rate": 1e-9})
    routed = train_router(merged, tmp_path / "informed", recipe, init_rows={"math": rows}, progress=False)
    weight = _state(routed)["model.layers.0.mlp.gate.weight"][2]
    cosine = torch.nn.functional.cosine_similarity(weight, rows[0], dim=0)
    assert cosine > 0.99


def test_opt_out_removes_exactly_one_slot_and_one_row(routed, tmp_path):
    dropped = drop_expert(routed, "test-vowels", tmp_path / "dropped")
    before, after = _state(routed), _state(dropped)
    assert merge_card(dropped)["slots"] == ["anchor", "math"]
    for name, tensor in after.items():
        part = part_of(name)
        if part in ("expert_ffn", "router"):
            assert tensor.shape[0] == before[name].shape[0] - 1
            assert torch.equal(tensor, torch.cat([before[name][:1], before[name][2:]]))
        else:
            assert torch.equal(tensor, before[name])
    assert AutoModelForCausalLM.from_pretrained(dropped).config.num_experts == 2
    with pytest.raises(BarFedError) as err:
        drop_expert(dropped, "anchor", tmp_path / "x")
    assert err.value.code == "UNKNOWN_EXPERT"
    with pytest.raises(BarFedError) as err:
        drop_expert(dropped, "math", tmp_path / "y")
    assert err.value.code == "LAST_EXPERT"


def test_weight_average_is_the_mean_of_every_tensor(micro, micro_expert, micro_math, tmp_path):
    averaged = _state(weight_average(micro["branch"], [micro_expert, micro_math], tmp_path / "avg"))
    a, b = _state(micro_expert), _state(micro_math)
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) / 2, rtol=0, atol=1e-7)


def _router_rows(path) -> list[torch.Tensor]:
    state = _state(path)
    return [state[name] for name in sorted(state) if part_of(name) == "router"]


def test_a_rebuild_keeps_unchanged_experts_rows_and_trains_only_new_or_changed_ones(
    micro, micro_expert, micro_math, merged, routed, tmp_path
):
    """Adding an expert or updating one leaves every other slot's routing exactly as the last release had it."""
    recipe = load_router_recipe("micro")
    first_release = merge_experts(micro["branch"], [micro_expert], tmp_path / "alone-merged")
    alone = train_router(first_release, tmp_path / "alone", recipe, progress=False)
    grown = train_router(merged, tmp_path / "grown", recipe, previous=alone, progress=False)
    for before, after, merged_rows in zip(_router_rows(alone), _router_rows(grown), _router_rows(merged), strict=True):
        assert torch.equal(after[:2], before)  # anchor and test-vowels: carried, frozen
        assert not torch.equal(after[2], merged_rows[2])  # math is new: it trains
    assert json.loads((grown / "bar_router.json").read_text())["frozen_rows"] == ["anchor", "test-vowels"]

    math_v2 = tmp_path / "math-v2"
    shutil.copytree(micro_math, math_v2)
    weights = load_file(math_v2 / "model.safetensors")
    weights["model.layers.0.mlp.experts.1.gate_proj.weight"] += 0.01
    save_file(weights, math_v2 / "model.safetensors", metadata={"format": "pt"})
    remerged = merge_experts(micro["branch"], [micro_expert, math_v2], tmp_path / "remerged")
    swapped = train_router(remerged, tmp_path / "swapped", recipe, previous=routed, progress=False)
    for before, after in zip(_router_rows(routed), _router_rows(swapped), strict=True):
        assert torch.equal(after[:2], before[:2]) and not torch.equal(after[2], before[2])
    assert AutoModelForCausalLM.from_pretrained(swapped).config.num_experts == 3


def test_a_rebuild_refuses_a_previous_release_it_cannot_build_on(micro, merged, routed, tmp_path):
    recipe = load_router_recipe("micro")
    with pytest.raises(BarFedError) as err:
        train_router(merged, tmp_path / "same", recipe, previous=routed, progress=False)
    assert err.value.code == "NOTHING_TO_ROUTE"
    other = tmp_path / "other-anchor"
    shutil.copytree(routed, other)
    card = json.loads((other / "bar_merge.json").read_text())
    (other / "bar_merge.json").write_text(json.dumps({**card, "anchor_fingerprint": "sha256:" + "0" * 64}))
    with pytest.raises(BarFedError) as err:
        train_router(merged, tmp_path / "x", recipe, previous=other, progress=False)
    assert err.value.code == "ANCHOR_MISMATCH"
    with pytest.raises(BarFedError) as err:
        train_router(merged, tmp_path / "y", recipe, previous=micro["anchor"], progress=False)
    assert err.value.code == "NOT_A_MERGE"
    shaped = tmp_path / "other-shape"
    shutil.copytree(routed, shaped)
    weights = load_file(shaped / "model.safetensors")
    weights["model.layers.0.mlp.gate.weight"] = weights["model.layers.0.mlp.gate.weight"][:, :-1].contiguous()
    save_file(weights, shaped / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BarFedError) as err:
        train_router(merged, tmp_path / "z", recipe, previous=shaped, progress=False)
    assert err.value.code == "PREVIOUS_MISMATCH"
    assert not any((tmp_path / name).exists() for name in ("same", "x", "y", "z"))
