"""Fit a merged model's router rows to the mixtures its experts trained with, before the router's LM-loss training.

Each expert learned its FFN under its own two-way gate: a token of its domain goes to the expert with
sigmoid(row · h) and to the anchor with the rest. A merged router that gives every calibration token that mixture
(and every general token the anchor alone) serves each expert as it was trained. Trained from zero with the LM
loss alone, the router of 16 or 32 experts does not find it (bench/many_domains.py); fitted first, layer by layer,
as a soft-label linear classifier on the tokens' hidden states, the LM loss then starts from it.

Rows without a sample (a domain-informed row, a frozen one) keep their values; only the others move.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from bar_model.domains import Example
from bar_model.tokenizer import render_prompt
from protocol.layout import ANCHOR_SLOT

BATCH = 32
L2 = 1e-4  # keeps the anchor's row finite where general tokens want it alone


class _Captured(Exception):
    """Raised by the hook once a layer's input is in hand: the layers above it need not run."""


@torch.no_grad()
def layer_inputs(model, tokenizer, texts: list[str], layer: int) -> list[torch.Tensor]:
    """Per text, the hidden states [tokens, hidden] entering ``layer``'s FFN under the model as it routes now."""
    captured: dict[str, torch.Tensor] = {}

    def capture(_module, args):
        captured["x"] = args[0]
        raise _Captured

    handle = model.model.layers[layer].mlp.register_forward_pre_hook(capture)
    tokenizer.padding_side = "right"
    states = []
    try:
        for start in range(0, len(texts), BATCH):
            batch = tokenizer(texts[start : start + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
            with contextlib.suppress(_Captured):
                model(**batch)
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            states += [captured["x"][i, :n].float() for i, n in enumerate(lengths)]
    finally:
        handle.remove()
    return states


def fit_rows(
    model,
    tokenizer,
    samples: dict[str, list[Example]],
    slots: list[str],
    expert_gates: list[torch.Tensor],
    fixed_rows: list[int],
    steps: int,
) -> dict:
    """Fit every layer's trainable rows in place; ``expert_gates`` are the merged rows (each expert's own gate).

    ``samples`` maps a slot to its calibration examples (the anchor's slot: general data). Returns each layer's
    final loss and the share of its tokens' mixture that lands where the target puts it, for the router card.
    """
    started = time.perf_counter()
    model.eval()
    anchor = slots.index(ANCHOR_SLOT) if ANCHOR_SLOT in slots else None
    labelled = [
        (slots.index(slot), render_prompt(tokenizer, e.prompt) + e.response + tokenizer.eos_token)
        for slot in slots
        for e in samples.get(slot, [])
    ]
    fixed = torch.zeros(len(slots), 1)
    fixed[fixed_rows] = 1.0
    layers = []
    for layer, block in enumerate(model.model.layers):
        states = layer_inputs(model, tokenizer, [text for _, text in labelled], layer)
        gate = expert_gates[layer].float()
        targets, weights = [], []
        for (slot, _), hidden in zip(labelled, states, strict=True):
            target = torch.zeros(len(hidden), len(slots))
            if anchor is None:
                target[:, slot] = 1.0
            elif slot == anchor:
                target[:, anchor] = 1.0
            else:
                own = torch.sigmoid(hidden @ (gate[slot] - gate[anchor]))
                target[:, slot], target[:, anchor] = own, 1.0 - own
            targets.append(target)
            weights.append(torch.full((len(hidden),), 1.0 / (len(hidden) * len(labelled))))
        target, weight = torch.cat(targets), torch.cat(weights)
        layers.append(_fit_layer(block.mlp.gate.weight, torch.cat(states), target, weight, fixed, steps))
    return {"steps": steps, "layers": layers, "wall_s": round(time.perf_counter() - started, 1)}


def _fit_layer(rows, features, target, weight, fixed, steps: int) -> dict:
    """Minimise the weighted soft cross-entropy of softmax(features @ rows.T) against ``target``; rows in place."""
    fitted = rows.detach().float().clone().requires_grad_(True)
    # A convex problem, full batch: L-BFGS gets there in a fraction of the steps a first-order method needs.
    optimizer = torch.optim.LBFGS([fitted], max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        log_mixture = F.log_softmax(features @ fitted.T, dim=-1)
        loss = -(weight * (target * log_mixture).sum(-1)).sum() + L2 * fitted.pow(2).sum()
        loss.backward()
        fitted.grad.mul_(1.0 - fixed)
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        rows.copy_(fitted.to(rows.dtype))
        log_mixture = F.log_softmax(features @ fitted.T, dim=-1)
        loss = -(weight * (target * log_mixture).sum(-1)).sum().item()
        on_target = (weight * (log_mixture.exp() * (target > 0)).sum(-1)).sum().item()
    return {"loss": round(loss, 4), "on_target": round(on_target, 3)}
