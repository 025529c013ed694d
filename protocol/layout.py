"""Which tensors of the 2-expert FlexOlmo layout each BAR stage may change (DESIGN §2), by on-disk name.

This is part of the contract: a node packages exactly these tensors, the coordinator accepts exactly
these, and `bar_model.freezing` trains exactly these. Slot 0 (``mlp.experts.0.*``) is never among them;
the router (``mlp.gate.weight``, rows = slots) is always packaged whole, and its row 0 must stay the
anchor's bit for bit.
"""

from __future__ import annotations

import re

STAGES = ("mid", "sft", "rl")
ANCHOR_SLOT = "anchor"  # the merged model's slot 0, as release cards and calibration samples name it
# Parts trained besides the domain slot (slot-1 FFN and router row 1, which every stage trains).
STAGE_PARTS: dict[str, frozenset[str]] = {
    "mid": frozenset(),
    "sft": frozenset({"embeddings"}),
    "rl": frozenset({"embeddings", "shared"}),
}
EMBEDDINGS = frozenset({"model.embed_tokens.weight", "lm_head.weight"})
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_ROUTER = re.compile(r"^model\.layers\.\d+\.mlp\.gate\.weight$")


FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def expert_key(layer: int, slot: int, projection: str) -> str:
    """On-disk name of one expert's FFN matrix, as `save_pretrained` writes FlexOlmo."""
    return f"model.layers.{layer}.mlp.experts.{slot}.{projection}.weight"


def router_key(layer: int) -> str:
    """On-disk name of one layer's router ([experts, hidden])."""
    return f"model.layers.{layer}.mlp.gate.weight"


def expert_address(name: str) -> tuple[int, int, str]:
    """(layer, slot, projection) of an on-disk expert FFN name; ValueError for any other tensor."""
    match = _EXPERT.match(name)
    if not match:
        raise ValueError(f"{name} is not an expert FFN tensor")
    return int(match.group(1)), int(match.group(2)), match.group(3)


def disk_part(name: str) -> tuple[str, int | None]:
    """(part, slot) of an on-disk FlexOlmo tensor name: expert_ffn (with slot), router, embeddings, shared."""
    match = _EXPERT.match(name)
    if match:
        return "expert_ffn", int(match.group(2))
    if _ROUTER.match(name):
        return "router", None
    if name in EMBEDDINGS:
        return "embeddings", None
    return "shared", None


def trainable_parts(stages: list[str] | tuple[str, ...]) -> frozenset[str]:
    parts: set[str] = set()
    for stage in stages:
        parts |= STAGE_PARTS[stage]
    return frozenset(parts)


def package_tensor_names(anchor_names: list[str] | set[str], stages: list[str] | tuple[str, ...]) -> set[str]:
    """The tensors an expert trained through ``stages`` ships: slot-1 FFN, routers, unfrozen shared ones."""
    parts = trainable_parts(stages)
    names = set()
    for name in anchor_names:
        part, slot = disk_part(name)
        if (part == "expert_ffn" and slot == 1) or part == "router" or part in parts:
            names.add(name)
    return names
