"""Progressive unfreezing (DESIGN §2): which parameters, and which slices of them, each stage trains.

Slot 0 (the anchor's FFN) and router row 0 live inside the same fused tensors as slot 1 and row 1
(``mlp.experts.gate_up_proj`` [E, 2I, H], ``mlp.experts.down_proj`` [E, H, I], ``mlp.gate.weight`` [E, H]),
so they cannot be frozen with ``requires_grad``. Instead a gradient hook zeroes their slice, and those
tensors get no weight decay: AdamW then moves them by exactly zero, bit for bit. ``fingerprint_frozen``
lets a stage prove it afterwards.

A recipe may also keep the first ``anchor_layers`` layers' domain FFN equal to the anchor's and frozen
(``pin_anchor_layers``): a merged model then computes exactly the anchor there, whatever its router does.
"""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn

from protocol.errors import BarFedError
from protocol.layout import STAGE_PARTS

PART_PATTERNS = {
    "expert_ffn": re.compile(r"\.mlp\.experts\.(gate_up_proj|down_proj)$"),
    "router": re.compile(r"\.mlp\.gate\.weight$"),
    "embeddings": re.compile(r"^(model\.embed_tokens\.weight|lm_head\.weight)$"),
}
# What each stage trains besides the domain slot (slot >= 1 FFN and router rows >= 1, always trained);
# the same contract the coordinator checks packages against.
SCHEDULE: dict[str, frozenset[str]] = STAGE_PARTS
LAYER = re.compile(r"\.layers\.(\d+)\.")


def part_of(name: str) -> str:
    """Which part of a FlexOlmo model a parameter belongs to: expert_ffn, router, embeddings or shared."""
    for part, pattern in PART_PATTERNS.items():
        if pattern.search(name):
            return part
    return "shared"


def in_anchor_layers(name: str, anchor_layers: int) -> bool:
    """Whether a parameter is an expert FFN or router tensor of one of the first ``anchor_layers`` layers."""
    layer = LAYER.search(name)
    return part_of(name) in ("expert_ffn", "router") and layer is not None and int(layer.group(1)) < anchor_layers


def pin_anchor_layers(model: nn.Module, anchor_layers: int) -> None:
    """Copy the anchor's FFN (slot 0) into every other slot of the first ``anchor_layers`` layers."""
    with torch.no_grad():
        for layer in model.model.layers[:anchor_layers]:
            for fused in (layer.mlp.experts.gate_up_proj, layer.mlp.experts.down_proj):
                fused[1:] = fused[0]


def _zero_slot0(grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    grad[0] = 0
    return grad


class StageFreeze:
    """Applies one stage's schedule to a model; ``remove()`` takes the gradient hooks off again."""

    def __init__(self, model: nn.Module, stage: str, shared_lr_scale: float = 1.0, anchor_layers: int = 0) -> None:
        if stage not in SCHEDULE:
            raise BarFedError("BAD_STAGES", f"unknown stage {stage!r}; use one of {', '.join(SCHEDULE)}.")
        self.stage, self.shared_lr_scale = stage, shared_lr_scale
        self.sliced: list[tuple[str, nn.Parameter]] = []  # trainable except slot/row 0
        self.full: list[tuple[str, nn.Parameter]] = []  # entirely trainable
        self._hooks = []
        for name, param in model.named_parameters():
            part = part_of(name)
            if in_anchor_layers(name, anchor_layers):
                param.requires_grad_(False)
            elif part in ("expert_ffn", "router"):
                param.requires_grad_(True)
                self._hooks.append(param.register_hook(_zero_slot0))
                self.sliced.append((name, param))
            elif part in SCHEDULE[stage] and shared_lr_scale > 0:  # at scale 0, no gradient is computed at all
                param.requires_grad_(True)
                self.full.append((name, param))
            else:
                param.requires_grad_(False)
        if not self.sliced:
            raise BarFedError(
                "WRONG_ARCHITECTURE",
                "the model has no FlexOlmo expert or router tensors; train experts from a 2-expert "
                "checkpoint made by `barfed model init-anchor`.",
            )

    def param_groups(self, weight_decay: float, learning_rate: float) -> list[dict]:
        """AdamW groups: sliced tensors never decay (decay would move slot 0); tensors every expert shares
        (embeddings, attention, norms) learn ``shared_lr_scale`` times slower, because the merge averages
        them over all experts and each expert's domain slot must survive that average."""
        shared_lr = learning_rate * self.shared_lr_scale
        decayed = [p for n, p in self.full if p.ndim >= 2 and weight_decay > 0]
        plain = [p for n, p in self.full if not (p.ndim >= 2 and weight_decay > 0)]
        groups = [{"params": [p for _, p in self.sliced], "weight_decay": 0.0, "lr": learning_rate}]
        if plain:
            groups.append({"params": plain, "weight_decay": 0.0, "lr": shared_lr})
        if decayed:
            groups.append({"params": decayed, "weight_decay": weight_decay, "lr": shared_lr})
        return groups

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


def _digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous()
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def fingerprint_frozen(model: nn.Module, stage: str, anchor_layers: int = 0) -> dict[str, str]:
    """Digests of everything ``stage`` must not change: slot 0, router row 0, every frozen part and the
    expert tensors of the anchor layers."""
    digests = {}
    for name, param in model.named_parameters():
        part = part_of(name)
        if in_anchor_layers(name, anchor_layers):
            digests[name] = _digest(param)
        elif part in ("expert_ffn", "router"):
            digests[f"{name}[0]"] = _digest(param[0])
        elif part not in SCHEDULE[stage]:
            digests[name] = _digest(param)
    return digests


def check_unchanged(before: dict[str, str], after: dict[str, str], stage: str) -> None:
    moved = sorted(k for k in before if before[k] != after.get(k))
    if moved:
        raise BarFedError(
            "FROZEN_TENSOR_MOVED",
            f"stage {stage} changed tensors it must keep frozen ({', '.join(moved[:4])}); "
            "this is a bug in the training setup, please report it with the recipe you used.",
        )
