"""Branch: turn a dense OLMo-2 base/anchor pair into the 2-expert FlexOlmo training checkpoint.

DESIGN §2: slot 0 is the anchor's FFN (frozen for the expert's whole life), slot 1 the base's FFN (the
anchor's when no base is given); attention, norms, embeddings and LM head come from the anchor. Both
router rows start at zero, so the two slots are mixed half and half and, when slot 1 starts as the
anchor's FFN, the branch computes exactly what the anchor computes.

Tensors are streamed through safetensors memory-mapping, so this works on OLMo-2 7B as on the tiny base.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import FlexOlmoConfig, Olmo2Config

from bar_model.checkpoint import (
    SafetensorsCheckpoint,
    ShardedSafetensorsWriter,
    copy_tokenizer_files,
    read_config,
    write_json,
)
from bar_model.durable import atomic_directory
from protocol.errors import BarFedError
from protocol.fingerprint import ARCHITECTURE_FIELDS
from protocol.layout import FFN_PROJECTIONS, expert_key, router_key

# The fingerprint's architecture, less what branching changes: a dense base and its anchor must agree on these.
ARCH_FIELDS = tuple(f for f in ARCHITECTURE_FIELDS if f not in ("model_type", "num_experts"))
SHARED_CONFIG_FIELDS = (
    *ARCH_FIELDS,
    "initializer_range",
    "attention_dropout",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)
DENSE_FFN = re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight$")


def require_model_type(config: dict, expected: str, directory: Path, role: str) -> None:
    model_type = config.get("model_type")
    if model_type != expected:
        raise BarFedError(
            "WRONG_ARCHITECTURE",
            f"the {role} at {directory} is a {model_type or 'unknown'} model, not {expected}; "
            f"BAR branches from an OLMo-2 ({expected}) checkpoint such as allenai/OLMo-2-1124-7B.",
        )


def _dense_config(directory: Path, role: str) -> dict:
    config = read_config(directory)
    require_model_type(config, "olmo2", directory, role)
    # Fill defaults the file may omit, so that two files that mean the same thing compare equal.
    return Olmo2Config(**{k: v for k, v in config.items() if k != "model_type"}).to_dict()


def flex_config_from_dense(dense: dict, num_experts: int, top_k: int) -> FlexOlmoConfig:
    """A FlexOlmo config with the dense model's shape and ``num_experts`` FFN slots."""
    shared = {k: dense[k] for k in SHARED_CONFIG_FIELDS if k in dense}
    return FlexOlmoConfig(
        **shared,
        num_experts=num_experts,
        num_experts_per_tok=top_k,
        norm_topk_prob=False,
        router_aux_loss_coef=0.0,  # BAR trains without a load-balancing loss
        output_router_logits=False,
        architectures=["FlexOlmoForCausalLM"],
        dtype=dense.get("dtype") or "float32",
    )


def init_anchor(anchor_dir: str | Path, out_dir: str | Path, base_dir: str | Path | None = None) -> Path:
    """Write the 2-expert FlexOlmo training checkpoint for the BAR recipe and return its path."""
    anchor_dir, out_dir = Path(anchor_dir), Path(out_dir)
    base_dir = Path(base_dir) if base_dir is not None else anchor_dir
    anchor_config = _dense_config(anchor_dir, "anchor")
    base_config = _dense_config(base_dir, "base")
    mismatched = [f for f in ARCH_FIELDS if anchor_config.get(f) != base_config.get(f)]
    if mismatched:
        detail = ", ".join(f"{f}: base {base_config.get(f)} vs anchor {anchor_config.get(f)}" for f in mismatched)
        raise BarFedError(
            "SHAPE_MISMATCH",
            f"base and anchor are not the same architecture ({detail}); the anchor must be the base after "
            "post-training, with identical shapes.",
        )
    anchor, base = SafetensorsCheckpoint(anchor_dir), SafetensorsCheckpoint(base_dir)
    for key in anchor:
        if key not in base or base.shape(key) != anchor.shape(key):
            found = base.shape(key) if key in base else "missing"
            raise BarFedError(
                "SHAPE_MISMATCH",
                f"tensor {key} is {anchor.shape(key)} in the anchor but {found} in the base; "
                "the anchor must be the base after post-training, with identical tensors.",
            )

    config = flex_config_from_dense(anchor_config, num_experts=2, top_k=2)
    layers = config.num_hidden_layers
    ffn_seen = set()
    with atomic_directory(out_dir) as staging:
        writer = ShardedSafetensorsWriter(staging)
        for key in anchor:
            if key.endswith("rotary_emb.inv_freq"):
                continue  # a buffer some old checkpoints saved; recomputed at load
            match = DENSE_FFN.match(key)
            if match is None:
                writer.add(key, anchor.tensor(key))
                continue
            layer, projection = int(match.group(1)), match.group(2)
            ffn_seen.add((layer, projection))
            writer.add(expert_key(layer, 0, projection), anchor.tensor(key))
            writer.add(expert_key(layer, 1, projection), base.tensor(key))
        expected = {(layer, p) for layer in range(layers) for p in FFN_PROJECTIONS}
        if ffn_seen != expected:
            missing = sorted(expected - ffn_seen)[:3]
            raise BarFedError("SHAPE_MISMATCH", f"the anchor lacks FFN tensors such as {missing}; is it complete?")
        dtype = anchor.tensor(anchor.keys()[0]).dtype
        for layer in range(layers):
            writer.add(router_key(layer), torch.zeros(2, config.hidden_size, dtype=dtype))
        writer.close()
        config.save_pretrained(staging)
        copy_tokenizer_files(anchor_dir, staging)
        write_json(
            staging / "bar_anchor.json",
            {"anchor": str(anchor_dir.resolve()), "base": str(base_dir.resolve()), "router_init": "zeros"},
        )
    return out_dir
