"""Merge: N domain experts (2-expert FlexOlmo, one anchor) → one (N+1)-expert FlexOlmo model (DESIGN §2).

Slot 0 is the anchor's FFN, slot i expert i's domain FFN (its slot 1); router rows are concatenated the
same way; every parameter that is not per-expert is the uniform average over the experts. An expert is
either a full checkpoint from `train-expert` or a package holding only the tensors it changed, the rest
filled from the anchor. Tensors stream one at a time (read, average in float32, write), so memory stays
near one layer's tensors plus one output shard, not N models.

``drop_expert`` is the opt-out: the same model without one slot and its router row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import FlexOlmoConfig

from bar_model.checkpoint import (
    SafetensorsCheckpoint,
    ShardedSafetensorsWriter,
    copy_tokenizer_files,
    read_config,
    write_json,
)
from bar_model.durable import atomic_directory
from bar_model.expert import EXPERT_CARD
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint
from protocol.layout import ANCHOR_SLOT, disk_part, expert_address, expert_key
from protocol.package import MANIFEST_FILE, parse_manifest

MERGE_CARD = "bar_merge.json"
MERGE_SHARD_BYTES = 512 * 1024**2
_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass
class ExpertInput:
    """One expert to merge: where its tensors are, which domain it serves, which anchor it grew from."""

    directory: Path
    domain: str
    anchor_fingerprint: str
    is_package: bool
    tensors: SafetensorsCheckpoint

    def tensor(self, key: str, anchor: SafetensorsCheckpoint) -> torch.Tensor:
        if key in self.tensors:
            return self.tensors.tensor(key)
        if self.is_package:
            return anchor.tensor(key)  # a package ships only what its stages changed
        raise BarFedError("SHAPE_MISMATCH", f"expert {self.directory} lacks tensor {key}; is it complete?")


def open_expert(directory: str | Path) -> ExpertInput:
    """A train-expert checkpoint (``bar_expert.json``) or an expert package (``expert.json``)."""
    directory = Path(directory)
    if (directory / EXPERT_CARD).is_file():
        card = json.loads((directory / EXPERT_CARD).read_text())
        return ExpertInput(
            directory, card["domain"], card["anchor_fingerprint"], False, SafetensorsCheckpoint(directory)
        )
    if (directory / MANIFEST_FILE).is_file():
        manifest = parse_manifest((directory / MANIFEST_FILE).read_bytes())
        return ExpertInput(
            directory, manifest.domain, manifest.anchor_fingerprint, True, SafetensorsCheckpoint(directory)
        )
    raise BarFedError(
        "NOT_AN_EXPERT", f"{directory} is neither an expert checkpoint ({EXPERT_CARD}) nor a package ({MANIFEST_FILE})."
    )


def _check_anchor(anchor_dir: Path) -> FlexOlmoConfig:
    config = read_config(anchor_dir)
    if config.get("model_type") != "flex_olmo" or config.get("num_experts") != 2:
        raise BarFedError(
            "WRONG_ARCHITECTURE",
            f"{anchor_dir} is not the 2-expert anchor experts branch from; pass the init-anchor output.",
        )
    return FlexOlmoConfig.from_pretrained(anchor_dir)


def merge_experts(
    anchor_dir: str | Path,
    expert_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    top_k: int | None = None,
    anchor_slot: bool = True,
    max_shard_bytes: int = MERGE_SHARD_BYTES,
) -> Path:
    """Write the merged model; ``anchor_slot=False`` builds the BTX-style baseline without slot 0."""
    anchor_dir, out_dir = Path(anchor_dir), Path(out_dir)
    config = _check_anchor(anchor_dir)
    anchor = SafetensorsCheckpoint(anchor_dir)
    fingerprint = anchor_fingerprint(anchor_dir)
    experts = [open_expert(d) for d in expert_dirs]
    if not experts:
        raise BarFedError("NO_EXPERTS", "give at least one expert to merge.")
    domains = [e.domain for e in experts]
    if len(set(domains)) != len(domains):
        raise BarFedError("DUPLICATE_DOMAIN", f"two experts serve the same domain ({domains}); merge one per domain.")
    for expert in experts:
        if expert.anchor_fingerprint != fingerprint:
            raise BarFedError(
                "ANCHOR_MISMATCH",
                f"the {expert.domain} expert at {expert.directory} was trained from another anchor "
                f"({expert.anchor_fingerprint}, not {fingerprint}); retrain it from this anchor.",
            )
    num_experts = len(experts) + int(anchor_slot)
    top_k = top_k or num_experts
    if not 1 <= top_k <= num_experts:
        raise BarFedError("BAD_TOP_K", f"top-k must be between 1 and {num_experts}, not {top_k}.")
    dtype = anchor.tensor(next(iter(anchor))).dtype

    with atomic_directory(out_dir) as staging:
        writer = ShardedSafetensorsWriter(staging, max_shard_bytes)
        for key in anchor:
            part, slot = disk_part(key)
            if part == "expert_ffn":
                if slot == 1:
                    continue  # written with slot 0, below
                layer, _slot, projection = expert_address(key)
                anchor_ffn = anchor.tensor(key)
                for expert in experts:
                    if key in expert.tensors and not torch.equal(expert.tensors.tensor(key), anchor_ffn):
                        raise _slot0_error(expert, key)
                outputs = ([anchor_ffn] if anchor_slot else []) + [
                    e.tensor(expert_key(layer, 1, projection), anchor) for e in experts
                ]
                for new_slot, tensor in enumerate(outputs):
                    writer.add(expert_key(layer, new_slot, projection), tensor)
            elif part == "router":
                anchor_row0 = anchor.tensor(key)[0]
                rows = [anchor_row0] if anchor_slot else []
                for expert in experts:
                    router = expert.tensor(key, anchor)
                    if not torch.equal(router[0], anchor_row0):
                        raise _slot0_error(expert, key)
                    rows.append(router[1])
                writer.add(key, torch.stack(rows))
            else:
                total = torch.zeros(anchor.shape(key), dtype=torch.float32)
                for expert in experts:
                    total += expert.tensor(key, anchor).float()
                writer.add(key, (total / len(experts)).to(dtype))
        writer.close()
        config.num_experts = num_experts
        config.num_experts_per_tok = top_k
        config.save_pretrained(staging)
        copy_tokenizer_files(anchor_dir, staging)
        write_json(
            staging / MERGE_CARD,
            {
                "slots": ([ANCHOR_SLOT] if anchor_slot else []) + domains,
                "top_k": top_k,
                "anchor_fingerprint": fingerprint,
                "experts": [{"domain": e.domain, "source": str(e.directory.resolve())} for e in experts],
            },
        )
    return out_dir


def _slot0_error(expert: ExpertInput, key: str) -> BarFedError:
    return BarFedError(
        "SLOT0_MODIFIED",
        f"the {expert.domain} expert changed the anchor's slot 0 ({key}); BAR keeps slot 0 and router row 0 frozen, "
        "so this expert cannot be merged. Retrain it with `barfed model train-expert`.",
    )


def merge_card(directory: str | Path) -> dict:
    path = Path(directory) / MERGE_CARD
    if not path.is_file():
        raise BarFedError("NOT_A_MERGE", f"{directory} has no {MERGE_CARD}; is it a merged model?")
    return json.loads(path.read_text())


def drop_expert(merged_dir: str | Path, domain: str, out_dir: str | Path) -> Path:
    """Opt-out: the merged model without ``domain``'s FFN slot and router row; everything else unchanged."""
    merged_dir, out_dir = Path(merged_dir), Path(out_dir)
    card = merge_card(merged_dir)
    slots: list[str] = card["slots"]
    if domain == ANCHOR_SLOT or domain not in slots:
        raise BarFedError(
            "UNKNOWN_EXPERT", f"{merged_dir} has no {domain!r} expert to remove; its experts are {slots[1:]}."
        )
    if len(slots) <= 2:
        raise BarFedError("LAST_EXPERT", "this would leave no expert besides the anchor; publish the anchor instead.")
    drop = slots.index(domain)
    config = FlexOlmoConfig.from_pretrained(merged_dir)
    source = SafetensorsCheckpoint(merged_dir)
    with atomic_directory(out_dir) as staging:
        writer = ShardedSafetensorsWriter(staging, MERGE_SHARD_BYTES)
        for key in source:
            part, slot = disk_part(key)
            if part == "expert_ffn":
                if slot != drop:
                    new_slot = slot - int(slot > drop)
                    layer, _slot, projection = expert_address(key)
                    writer.add(expert_key(layer, new_slot, projection), source.tensor(key))
            elif part == "router":
                router = source.tensor(key)
                writer.add(key, torch.cat([router[:drop], router[drop + 1 :]]))
            else:
                writer.add(key, source.tensor(key))
        writer.close()
        config.num_experts = len(slots) - 1
        config.num_experts_per_tok = min(config.num_experts_per_tok, config.num_experts)
        config.save_pretrained(staging)
        copy_tokenizer_files(merged_dir, staging)
        for extra in (merged_dir / "bar_router.json",):
            if extra.is_file():
                (staging / extra.name).write_text(extra.read_text())
        write_json(
            staging / MERGE_CARD,
            {
                **card,
                "slots": slots[:drop] + slots[drop + 1 :],
                "top_k": config.num_experts_per_tok,
                "experts": [e for e in card["experts"] if e["domain"] != domain],
                "opted_out": [*card.get("opted_out", []), domain],
            },
        )
    return out_dir
