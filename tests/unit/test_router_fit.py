"""The router fit: rows fitted to the mixtures the experts trained with, and only the rows it may move."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bar_model.calibration import slot_sample
from bar_model.domains import get_domain
from bar_model.freezing import part_of
from bar_model.merge import merge_experts
from bar_model.recipe import load_router_recipe
from bar_model.router import mean_hidden_states, train_router
from bar_model.tokenizer import render_prompt
from protocol.layout import ANCHOR_SLOT

pytestmark = pytest.mark.slow

SLOTS = [ANCHOR_SLOT, "test-vowels", "math"]


@pytest.fixture(scope="module")
def merged(micro, micro_expert, micro_math, tmp_path_factory):
    return merge_experts(micro["branch"], [micro_expert, micro_math], tmp_path_factory.mktemp("m") / "merged")


def _recipe(fit_steps: int):
    # One LM step at a vanishing rate: what the rows hold afterwards is the fit's work alone.
    return load_router_recipe("micro").model_copy(update={"fit_steps": fit_steps, "steps": 1, "learning_rate": 1e-9})


def _rows(path) -> list[torch.Tensor]:
    state = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
    return [state[name] for name in sorted(state) if part_of(name) == "router"]


@torch.no_grad()
def _share_on_target(path, recipe) -> float:
    """Mean over layers and slots of the mixture share that lands on a calibration token's own slot(s)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    shares = []
    hooks = [
        block.mlp.gate.register_forward_hook(lambda _m, _a, out: shares[-1].append(out[0].softmax(-1)))
        for block in model.model.layers
    ]
    per_slot = []
    for index, slot in enumerate(SLOTS):
        for example in slot_sample(slot, recipe):
            shares.append([])
            text = render_prompt(tokenizer, example.prompt) + example.response + tokenizer.eos_token
            model(**tokenizer(text, return_tensors="pt", add_special_tokens=False))
            on_target = [m[:, 0] if index == 0 else m[:, 0] + m[:, index] for m in shares[-1]]
            per_slot.append(torch.stack([v.mean() for v in on_target]).mean().item())
    for hook in hooks:
        hook.remove()
    return sum(per_slot) / len(per_slot)


def test_fitted_rows_give_calibration_tokens_the_mixture_their_expert_trained_with(merged, tmp_path):
    recipe = _recipe(100)
    plain = train_router(merged, tmp_path / "plain", _recipe(0), progress=False)
    fitted = train_router(merged, tmp_path / "fitted", recipe, progress=False)
    before, after = _share_on_target(plain, recipe), _share_on_target(fitted, recipe)
    assert after > before + 0.1, (before, after)
    card = json.loads((fitted / "bar_router.json").read_text())
    assert card["fit"]["steps"] == 100 and len(card["fit"]["layers"]) == len(_rows(fitted))
    assert json.loads((plain / "bar_router.json").read_text())["fit"] is None


def test_the_fit_leaves_frozen_and_domain_informed_rows_as_they_were(micro, micro_expert, merged, tmp_path):
    recipe = _recipe(100)
    alone = train_router(
        merge_experts(micro["branch"], [micro_expert], tmp_path / "alone-merged"), tmp_path / "alone", recipe
    )
    grown = train_router(merged, tmp_path / "grown", recipe, previous=alone, progress=False)
    for before, after in zip(_rows(alone), _rows(grown), strict=True):
        assert torch.equal(after[:2], before)  # anchor and test-vowels unchanged since the last release
    assert json.loads((grown / "bar_router.json").read_text())["fit"]["steps"] == 100  # math is new: fitted

    anchor = AutoModelForCausalLM.from_pretrained(micro["anchor"], dtype=torch.float32)
    rows = mean_hidden_states(anchor, AutoTokenizer.from_pretrained(micro["anchor"]), get_domain("math").sft(8))
    informed = train_router(merged, tmp_path / "informed", recipe, init_rows={"math": rows}, progress=False)
    for layer, weight in enumerate(_rows(informed)):
        assert torch.nn.functional.cosine_similarity(weight[2], rows[layer], dim=0) > 0.99
