"""Route: train only the merged model's router on a small stratified sample of every domain's SFT data.

DESIGN §2: masked cross-entropy (assistant tokens) + router z-loss 0.001, AdamW without weight decay,
3% warm-up then linear decay; dense routing (top-k = all experts) by default, any smaller k works.
A domain whose organization shares no sample can have its router row initialised from the mean hidden
state of its own data under the anchor (FlexOlmo's domain-informed router), computed on its own node.

With the recipe's ``fit_steps``, the rows are first fitted to the mixtures the experts trained with
(``router_fit``), which the LM loss alone does not find once a release holds many experts; a rebuild fits
only rows its previous release did not have.

A rebuild can start from the previous release: every slot whose FFN is bit-identical there keeps its
router rows, frozen, and only new or changed experts' rows train, so one expert's update leaves the
routing of every other domain as it was.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer, FlexOlmoForCausalLM

from bar_model.calibration import slot_sample
from bar_model.checkpoint import SafetensorsCheckpoint, write_json
from bar_model.domains import Example
from bar_model.durable import atomic_directory
from bar_model.freezing import part_of
from bar_model.merge import MERGE_CARD, merge_card
from bar_model.recipe import RouterRecipe
from bar_model.router_fit import fit_rows
from bar_model.stages import CheckpointSaved, chat_trainer, run_trainer
from bar_model.tokenizer import render_prompt
from protocol.errors import BarFedError
from protocol.layout import disk_part, expert_address, expert_key, router_key

ROUTER_CARD = "bar_router.json"


class RouterOnly:
    """Trainable set for router training: every router row except ``frozen_rows``, nothing else.

    Frozen rows sit in the same [E, H] tensor as trained ones; a gradient hook zeroes them and AdamW
    without weight decay then moves them by exactly zero.
    """

    def __init__(self, model: nn.Module, frozen_rows: list[int] = ()) -> None:
        self.params, self._hooks = [], []
        frozen = torch.tensor(sorted(frozen_rows), dtype=torch.long)
        for name, param in model.named_parameters():
            param.requires_grad_(part_of(name) == "router")
            if param.requires_grad:
                self.params.append(param)
                if len(frozen):
                    self._hooks.append(
                        param.register_hook(lambda grad: grad.index_fill(0, frozen.to(grad.device), 0.0))
                    )
        if not self.params:
            raise BarFedError("WRONG_ARCHITECTURE", "the model has no FlexOlmo router to train.")

    def param_groups(self, weight_decay: float, learning_rate: float) -> list[dict]:
        return [{"params": self.params, "weight_decay": 0.0, "lr": learning_rate}]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


@torch.no_grad()
def mean_hidden_states(model, tokenizer, examples: list[Example], batch_size: int = 32) -> torch.Tensor:
    """[layers, hidden]: the mean hidden state entering each layer's FFN block over ``examples``' tokens.

    Run by an organization on its own node, with the anchor, to initialise its router row without
    sharing any data (FlexOlmo's domain-informed router).
    """
    model.eval()
    layers = model.model.layers
    sums = torch.zeros(len(layers), model.config.hidden_size, dtype=torch.float64)
    count = 0
    mask_holder: dict[str, torch.Tensor] = {}

    def hook(index):
        def record(_module, args):
            hidden = args[0].double()
            mask = mask_holder["mask"].unsqueeze(-1).double()
            sums[index] += (hidden * mask).sum(dim=(0, 1))

        return record

    handles = [layer.mlp.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        tokenizer.padding_side = "right"
        for start in range(0, len(examples), batch_size):
            chats = [
                render_prompt(tokenizer, e.prompt) + e.response + tokenizer.eos_token
                for e in examples[start : start + batch_size]
            ]
            batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            mask_holder["mask"] = batch["attention_mask"]
            model(**batch)
            count += int(batch["attention_mask"].sum())
    finally:
        for handle in handles:
            handle.remove()
    return (sums / max(count, 1)).float()


def _init_rows(model, slots: list[str], init_rows: dict[str, torch.Tensor]) -> None:
    """Put each domain-informed row in place, scaled to the typical norm of that layer's other rows."""
    for slot, rows in init_rows.items():
        index = slots.index(slot)
        for layer, block in enumerate(model.model.layers):
            weight = block.mlp.gate.weight
            others = torch.cat([weight[:index], weight[index + 1 :]]).norm(dim=-1)
            scale = others.median().item() if others.numel() and others.median() > 0 else 1.0
            direction = rows[layer] / rows[layer].norm().clamp_min(1e-12)
            weight.data[index] = (direction * scale).to(weight.dtype)


def carry_rows(model, merged_dir: Path, slots: list[str], previous_dir: Path) -> list[str]:
    """Copy router rows from the previous release into ``model``; return the slots whose rows stay frozen.

    Every slot the previous release also has starts from its row there. A slot keeps that row frozen when
    its FFN is bit-identical in every layer (the same expert); a changed expert's row trains from it.
    """
    previous_card = merge_card(previous_dir)
    if previous_card.get("anchor_fingerprint") != merge_card(merged_dir).get("anchor_fingerprint"):
        raise BarFedError(
            "ANCHOR_MISMATCH",
            f"the previous release at {previous_dir} was built on another anchor; rebuild the router without it.",
        )
    previous, current = SafetensorsCheckpoint(previous_dir), SafetensorsCheckpoint(merged_dir)
    previous_slots = previous_card["slots"]
    routers = [key for key in current if disk_part(key)[0] == "router"]
    ffn_keys = {expert_address(key)[::2] for key in current if disk_part(key)[0] == "expert_ffn"}
    if any(key not in previous or previous.shape(key)[1:] != current.shape(key)[1:] for key in routers) or any(
        expert_key(layer, 0, projection) not in previous for layer, projection in ffn_keys
    ):
        raise BarFedError(
            "PREVIOUS_MISMATCH",
            f"the previous release at {previous_dir} has another shape than this model; rebuild the router without it.",
        )
    frozen = []
    for slot in slots:
        if slot not in previous_slots:
            continue  # a new expert: its row starts from the expert's own, as merged
        old, new = previous_slots.index(slot), slots.index(slot)
        for layer, block in enumerate(model.model.layers):
            block.mlp.gate.weight.data[new] = previous.tensor(router_key(layer))[old]
        if all(
            torch.equal(current.tensor(expert_key(layer, new, p)), previous.tensor(expert_key(layer, old, p)))
            for layer, p in ffn_keys
        ):
            frozen.append(slot)
    return frozen


def set_routing(model, top_k: int, norm_topk_prob: bool) -> None:
    """Route each token to ``top_k`` experts, in the live model and in the config it will be saved with.

    With ``norm_topk_prob`` the chosen weights are renormalised to sum to 1: a token routed to the anchor
    and its domain's expert then gets exactly the two-way mixture that expert was trained with.
    """
    for block in model.model.layers:
        block.mlp.gate.top_k = top_k
        block.mlp.gate.norm_topk_prob = norm_topk_prob
    model.config.num_experts_per_tok = top_k
    model.config.norm_topk_prob = norm_topk_prob


def train_router(
    merged_dir: str | Path,
    out_dir: str | Path,
    recipe: RouterRecipe,
    *,
    init_rows: dict[str, torch.Tensor] | None = None,
    previous: str | Path | None = None,
    samples: dict[str, list[Example]] | None = None,
    keep_rows: frozenset[str] = frozenset(),
    untrained_ok: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[], None] | None = None,
) -> Path:
    """Train the router of the merged model at ``merged_dir``; write the routed model to ``out_dir``.

    With ``previous`` (an earlier routed release of the same anchor), unchanged experts keep their rows
    from it (see ``carry_rows``) and the recipe's ``incremental_steps`` budget applies; a domain-informed
    row in ``init_rows`` always trains. ``samples`` (slot -> examples, the anchor slot standing for general
    data) replaces the recipe's stratified sample: the coordinator trains on what packages carry.
    ``keep_rows`` are slots whose merged row stays as its node computed it (an organization that shared no
    sample), frozen. Checkpoints go next to ``out_dir``, so an interrupted run resumes from the last one.
    When every row is fixed, ``untrained_ok`` saves the model with those rows instead of refusing (a release
    that only lost an expert needs no training). ``on_checkpoint()`` runs after each checkpoint is saved.
    """
    merged_dir, out_dir = Path(merged_dir), Path(out_dir)
    card = merge_card(merged_dir)
    slots = card["slots"]
    init_rows = init_rows or {}
    unknown = sorted((set(init_rows) | set(samples or {}) | set(keep_rows)) - set(slots))
    if unknown:
        raise BarFedError("UNKNOWN_EXPERT", f"no slot for {unknown}; the merged model has {slots}.")
    torch.manual_seed(recipe.seed)
    model = FlexOlmoForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    if recipe.top_k and not 1 <= recipe.top_k <= len(slots):
        raise BarFedError("BAD_TOP_K", f"top-k must be between 1 and {len(slots)}, not {recipe.top_k}.")
    set_routing(model, recipe.top_k or model.config.num_experts_per_tok, recipe.norm_topk_prob)
    expert_gates = [block.mlp.gate.weight.detach().clone() for block in model.model.layers]
    frozen = carry_rows(model, merged_dir, slots, Path(previous)) if previous is not None else []
    _init_rows(model, slots, init_rows)
    frozen = [slot for slot in frozen if slot not in init_rows]
    frozen += [slot for slot in slots if slot in keep_rows and slot not in frozen]
    if previous is not None and recipe.incremental_steps and frozen:
        recipe = recipe.model_copy(update={"steps": recipe.incremental_steps})
    if len(frozen) == len(slots) and not untrained_ok:
        raise BarFedError(
            "NOTHING_TO_ROUTE",
            f"every expert in {merged_dir} is unchanged since {previous}; its router already fits, publish it as is.",
        )
    # An organization that initialises its row from its own hidden states shares no sample.
    if samples is None:
        samples = {slot: slot_sample(slot, recipe) for slot in slots if slot not in init_rows}
    examples = [e for slot in slots for e in samples.get(slot, [])]
    random.Random(recipe.seed).shuffle(examples)
    dtype = model.dtype
    work = out_dir.parent / f".{out_dir.name}.router-run"
    started = time.perf_counter()
    fit = None
    if len(frozen) == len(slots):
        summary = {"steps": 0, "wall_s": 0.0, "resumed_from": None, "trainable_params": 0}
    else:
        if not examples:
            raise BarFedError("NO_ROUTER_DATA", "no sample to train the router on; give calibration data or a recipe.")
        frozen_slots = [slots.index(slot) for slot in frozen]
        # A row carried from the previous release was fitted (and trained) for its domain there already.
        carried = set(merge_card(previous)["slots"]) if previous is not None else set()
        unfitted = [i for i, slot in enumerate(slots) if samples.get(slot) and slot not in carried | set(frozen)]
        if recipe.fit_steps and unfitted:
            fixed = [i for i in range(len(slots)) if i not in unfitted]
            fit = fit_rows(model, tokenizer, samples, slots, expert_gates, fixed, recipe.fit_steps)
        summary = _train(model, tokenizer, examples, recipe, work, frozen_slots, progress, on_checkpoint)
    with atomic_directory(out_dir) as staging:
        model.to(dtype).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(
            staging / MERGE_CARD,
            {**card, "top_k": model.config.num_experts_per_tok, "norm_topk_prob": model.config.norm_topk_prob},
        )
        write_json(
            staging / ROUTER_CARD,
            {
                "recipe": recipe.model_dump(),
                "examples": len(examples),
                "domain_informed_rows": sorted(init_rows),
                "kept_rows": sorted(keep_rows),
                "previous": str(Path(previous).resolve()) if previous is not None else None,
                "frozen_rows": frozen,
                "summary": summary,
                "fit": fit,
                "wall_s": round(time.perf_counter() - started, 1),
            },
        )
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _train(
    model,
    tokenizer,
    examples: list[Example],
    recipe: RouterRecipe,
    work: Path,
    frozen: list[int],
    progress: bool,
    on_checkpoint: Callable[[], None] | None = None,
):
    trainable = RouterOnly(model, frozen)
    trainer = chat_trainer(
        model,
        tokenizer,
        examples,
        recipe,
        work,
        seed=recipe.seed,
        freeze=trainable,
        z_loss_coef=recipe.router_z_loss,
        progress=progress,
    )
    if on_checkpoint is not None:
        trainer.add_callback(CheckpointSaved(on_checkpoint))
    deterministic = torch.are_deterministic_algorithms_enabled()
    # MoE's index_add_ otherwise sums in varying order. On CUDA some kernels the MoE and attention use have no
    # deterministic version (transformers' grouped_mm experts count tokens with histc): there they only warn.
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    try:
        return run_trainer(trainer)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        trainable.remove()


def router_card(directory: str | Path) -> dict:
    return json.loads((Path(directory) / ROUTER_CARD).read_text())
