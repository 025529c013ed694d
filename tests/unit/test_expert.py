"""BAR expert training: progressive unfreezing is exact, SFT masks prompts, errors are clear."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bar_model.domains import get_domain
from bar_model.expert import expert_card, train_expert
from bar_model.freezing import SCHEDULE, StageFreeze, part_of
from bar_model.recipe import load_expert_recipe
from bar_model.stages import chat_trainer, latest_checkpoint, run_trainer
from bar_model.zloss import RouterZLoss
from protocol.errors import BarFedError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def expert_run(micro, tmp_path_factory):
    """The test-vowels expert, and what ``on_step`` heard while it trained."""
    out = tmp_path_factory.mktemp("expert") / "vowels"
    heard = []
    recipe = load_expert_recipe("micro")
    train_expert(
        micro["branch"], "test-vowels", "mid,sft,rl", out, recipe, progress=False, on_step=lambda *a: heard.append(a)
    )
    return out, heard


@pytest.fixture(scope="module")
def expert(expert_run):
    return expert_run[0]


def _state(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


def test_expert_directory_is_a_complete_checkpoint(expert):
    card = expert_card(expert)
    assert card["domain"] == "test-vowels" and card["stages"] == ["mid", "sft", "rl"]
    assert set(card["stage_summaries"]) == {"mid", "sft", "rl"}
    assert card["anchor_fingerprint"].startswith("sha256:")
    for stage in ("mid", "sft", "rl"):
        assert (expert / "stages" / stage / "model.safetensors").is_file()
    assert not list(expert.parent.glob(".vowels*")), "no staging or partial directory is left behind"
    model = AutoModelForCausalLM.from_pretrained(expert)
    assert model.config.model_type == "flex_olmo"


@pytest.mark.parametrize("stage,previous", [("mid", None), ("sft", "mid"), ("rl", "sft")])
def test_each_stage_trains_exactly_what_the_schedule_allows(micro, expert, stage, previous):
    anchor = _state(micro["branch"])
    before = _state(expert / "stages" / previous) if previous else anchor
    after = _state(expert / "stages" / stage)
    assert before.keys() == after.keys()
    for name, tensor in after.items():
        part = part_of(name)
        if part in ("expert_ffn", "router"):
            assert torch.equal(tensor[0], anchor[name][0]), f"{stage}: slot/row 0 of {name} moved"
            assert not torch.equal(tensor[1:], before[name][1:]), f"{stage}: domain slot of {name} did not train"
        elif part in SCHEDULE[stage]:
            assert not torch.equal(tensor, before[name]), f"{stage}: {name} should train but did not change"
        else:
            assert torch.equal(tensor, before[name]), f"{stage}: frozen {name} changed"
            assert torch.equal(tensor, anchor[name]), f"{stage}: {name} differs from the anchor"


def test_anchor_layers_keep_the_anchors_ffn_in_the_domain_slot(micro, tmp_path):
    """With ``anchor_layers = 1`` layer 0's domain slot is the anchor's FFN, bit for bit, after every stage;
    its router stays as branched, and the layers above train as usual."""
    recipe = load_expert_recipe("micro").model_copy(update={"anchor_layers": 1})
    out = tmp_path / "pinned"
    train_expert(micro["branch"], "test-vowels", "mid,sft", out, recipe, progress=False)
    branch = _state(micro["branch"])
    for stage in ("mid", "sft"):
        state = _state(out / "stages" / stage)
        for projection in ("gate_up_proj", "down_proj"):
            fused = state[f"model.layers.0.mlp.experts.{projection}"]
            assert torch.equal(fused[1], fused[0]) and torch.equal(
                fused[0], branch[f"model.layers.0.mlp.experts.{projection}"][0]
            )
            above = state[f"model.layers.1.mlp.experts.{projection}"]
            assert not torch.equal(above[1], branch[f"model.layers.1.mlp.experts.{projection}"][1])
        assert torch.equal(state["model.layers.0.mlp.gate.weight"], branch["model.layers.0.mlp.gate.weight"])


def test_anchor_layers_that_leave_no_layer_to_train_are_refused(micro, tmp_path):
    recipe = load_expert_recipe("micro").model_copy(update={"anchor_layers": 2})  # the micro anchor has 2 layers
    with pytest.raises(BarFedError) as err:
        train_expert(micro["branch"], "test-vowels", "mid", tmp_path / "x", recipe, progress=False)
    assert err.value.code == "BAD_RECIPE" and "anchor_layers" in str(err.value)
    assert not list(tmp_path.iterdir()), "a refused run leaves nothing behind"


def test_sft_loss_covers_only_assistant_tokens(micro, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(micro["branch"])
    recipe = load_expert_recipe("micro").sft
    examples = get_domain("math").sft(8)
    freeze = StageFreeze(model, "sft")
    trainer = chat_trainer(model, tokenizer, examples, recipe, tmp_path, seed=0, freeze=freeze, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        start = (ids == assistant).nonzero()[0].item() + 2  # after "<|assistant|>" and its newline
        assert (labels[:start] == -100).all(), "a prompt token carries a label"
        real = mask.bool()
        real[:start] = False
        assert torch.equal(labels[real], ids[real]), "an assistant token lost its label"
    # The trainer's loss is the cross-entropy over exactly those labels.
    model.train()
    loss = trainer.compute_loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    assert loss.item() == pytest.approx(manual.item(), rel=1e-4)
    freeze.remove()


def test_resuming_restores_the_expert_ffn_from_the_checkpoint(micro, tmp_path):
    """Trainer's own resume skipped transformers 5's key conversion and kept the stage's starting FFN."""
    recipe = load_expert_recipe("micro").sft.model_copy(update={"steps": 2, "save_steps": 2})
    examples = get_domain("math").sft(32)
    tokenizer = AutoTokenizer.from_pretrained(micro["branch"])

    def trainer_from_branch():
        model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
        freeze = StageFreeze(model, "sft")
        return chat_trainer(model, tokenizer, examples, recipe, tmp_path, seed=0, freeze=freeze, progress=False)

    run_trainer(trainer_from_branch())
    checkpoint = latest_checkpoint(tmp_path)
    saved = _state(checkpoint)
    resumed = trainer_from_branch()
    resumed._load_from_checkpoint(checkpoint)
    branch, state = _state(micro["branch"]), resumed.model.state_dict()
    assert not torch.equal(
        saved["model.layers.0.mlp.experts.gate_up_proj"], branch["model.layers.0.mlp.experts.gate_up_proj"]
    )
    assert all(torch.equal(state[name], saved[name]) for name in saved)


def test_on_step_hears_each_stage_start_then_each_of_its_steps(expert_run):
    recipe = load_expert_recipe("micro")
    totals = {stage: getattr(recipe, stage).steps for stage in ("mid", "sft", "rl")}
    _, heard = expert_run
    assert heard == [(stage, step, total) for stage, total in totals.items() for step in range(total + 1)]


def test_a_step_listener_only_observes(micro, tmp_path):
    """Two SFT steps heard step by step end in the same weights, bit for bit, as two steps nobody listens to."""
    recipe = load_expert_recipe("micro").sft.model_copy(update={"steps": 2})
    examples = get_domain("math").sft(16)
    tokenizer = AutoTokenizer.from_pretrained(micro["branch"])

    def weights_after(work, on_step):
        model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
        freeze = StageFreeze(model, "sft")
        trainer = chat_trainer(
            model, tokenizer, examples, recipe, work, seed=0, freeze=freeze, progress=False, on_step=on_step
        )
        run_trainer(trainer)
        freeze.remove()
        return model.state_dict()

    heard = []
    alone, listened = weights_after(tmp_path / "a", None), weights_after(tmp_path / "b", lambda *a: heard.append(a))
    assert heard == [(1, 2), (2, 2)]
    assert alone.keys() == listened.keys() and all(torch.equal(alone[k], listened[k]) for k in alone)


def test_router_z_loss_is_recorded_only_with_gradients(micro):
    model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
    collector = RouterZLoss(model)
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        model(ids)
    assert collector.pop() is None
    model(ids)
    z = collector.pop()
    assert z is not None and z.item() >= 0 and z.requires_grad
    collector.remove()


def test_unknown_domain_and_bad_stages_fail_before_any_work(micro, tmp_path):
    recipe = load_expert_recipe("micro")
    with pytest.raises(BarFedError) as err:
        train_expert(micro["branch"], "astrology", "mid", tmp_path / "x", recipe)
    assert err.value.code == "UNKNOWN_DOMAIN"
    with pytest.raises(BarFedError) as err:
        train_expert(micro["branch"], "math", "rl,sft", tmp_path / "x", recipe)
    assert err.value.code == "STAGES_OUT_OF_ORDER"
    assert list(tmp_path.iterdir()) == []


def test_refuses_wrong_architecture_and_existing_output(micro, tmp_path):
    recipe = load_expert_recipe("micro")
    merged = tmp_path / "merged"
    merged.mkdir()
    config = json.loads((micro["branch"] / "config.json").read_text())
    (merged / "config.json").write_text(json.dumps({**config, "num_experts": 5}))
    with pytest.raises(BarFedError) as err:
        train_expert(merged, "math", "mid", tmp_path / "x", recipe)
    assert err.value.code == "WRONG_ARCHITECTURE"
    (tmp_path / "taken").mkdir()
    with pytest.raises(BarFedError) as err:
        train_expert(micro["branch"], "math", "mid", tmp_path / "taken", recipe)
    assert err.value.code == "OUTPUT_EXISTS"


def test_dense_anchor_is_branched_on_the_fly(micro, tmp_path):
    out = train_expert(
        micro["anchor"],
        "math",
        "mid",
        tmp_path / "e",
        load_expert_recipe("micro"),
        base_dir=micro["base"],
        progress=False,
    )
    assert expert_card(out)["stages"] == ["mid"]
    anchor = _state(micro["branch"])
    trained = _state(out)
    for name in anchor:
        if part_of(name) in ("expert_ffn", "router"):
            assert torch.equal(trained[name][0], anchor[name][0])


def test_shared_tensors_learn_at_the_scaled_rate(micro):
    """The merge averages shared tensors over every expert, so a recipe can make them learn slower."""
    model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
    freeze = StageFreeze(model, "rl", shared_lr_scale=0.05)
    try:
        groups = freeze.param_groups(weight_decay=0.01, learning_rate=1e-3)
    finally:
        freeze.remove()
    sliced = {id(p) for _, p in freeze.sliced}
    assert sum(len(g["params"]) for g in groups) == len(freeze.sliced) + len(freeze.full)
    for group in groups:
        is_domain_slot = all(id(p) in sliced for p in group["params"])
        assert group["lr"] == pytest.approx(1e-3 if is_domain_slot else 5e-5)
        assert is_domain_slot or not any(id(p) in sliced for p in group["params"])
    assert any(g["weight_decay"] == 0.01 for g in groups), "2-D shared tensors keep their weight decay"


def test_shared_tensors_at_scale_zero_get_no_gradient(micro):
    """A zero rate would leave them unchanged too, but their gradients would still cost time."""
    model = AutoModelForCausalLM.from_pretrained(micro["branch"], dtype=torch.float32)
    freeze = StageFreeze(model, "rl", shared_lr_scale=0.0)
    freeze.remove()
    assert freeze.full == []
    trainable = {part_of(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"expert_ffn", "router"}
