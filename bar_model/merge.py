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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from bar_model.card import EXPERT_CARD
from bar_model.checkpoint import SafetensorsCheckpoint, copy_tokenizer_files, read_config, write_json
from bar_model.durable import atomic_directory
from bar_model.planned_shards import Copy, PlannedTensor, write_planned_shards
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

    def source(self, key: str, anchor: SafetensorsCheckpoint) -> tuple[SafetensorsCheckpoint, str]:
        """Where this expert's ``key`` lies: in its own files, or the anchor's for what a package leaves out."""
        if key in self.tensors:
            return self.tensors, key
        if self.is_package:
            return anchor, key  # a package ships only what its stages changed
        raise BarFedError("SHAPE_MISMATCH", f"expert {self.directory} lacks tensor {key}; is it complete?")

    def tensor(self, key: str, anchor: SafetensorsCheckpoint) -> torch.Tensor:
        checkpoint, key = self.source(key, anchor)
        return checkpoint.tensor(key)


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


def _check_anchor(anchor_dir: Path) -> dict:
    config = read_config(anchor_dir)
    if config.get("model_type") != "flex_olmo" or config.get("num_experts") != 2:
        raise BarFedError(
            "WRONG_ARCHITECTURE",
            f"{anchor_dir} is not the 2-expert anchor experts branch from; pass the init-anchor output.",
        )
    return config


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
        _check_shapes(expert, anchor)
    num_experts = len(experts) + int(anchor_slot)
    top_k = top_k or num_experts
    if not 1 <= top_k <= num_experts:
        raise BarFedError("BAD_TOP_K", f"top-k must be between 1 and {num_experts}, not {top_k}.")

    plan: list[PlannedTensor] = []
    for key in anchor:
        part, slot = disk_part(key)
        dtype, shape = anchor.torch_dtype(key), anchor.shape(key)
        if part == "expert_ffn":
            if slot == 1:
                continue  # written with slot 0, below
            layer, _slot, projection = expert_address(key)
            sources = ([(anchor, key)] if anchor_slot else []) + [
                e.source(expert_key(layer, 1, projection), anchor) for e in experts
            ]
            for new_slot, (checkpoint, source_key) in enumerate(sources):
                plan.append(_carried(expert_key(layer, new_slot, projection), checkpoint, source_key, dtype, shape))
        elif part == "router":
            rows = ([anchor.tensor(key)[0]] if anchor_slot else []) + [e.tensor(key, anchor)[1] for e in experts]
            plan.append(PlannedTensor(key, dtype, (len(rows), *shape[1:]), lambda rows=rows: torch.stack(rows)))
        else:
            plan.append(
                PlannedTensor(key, dtype, shape, lambda key=key, dtype=dtype: _average(experts, anchor, key, dtype))
            )

    # The slot-0 check reads every expert's frozen FFN once; it runs beside the writing (the other core) and
    # must pass before the merged model appears.
    with ThreadPoolExecutor(1, thread_name_prefix="slot0-check") as pool, atomic_directory(out_dir) as staging:
        slot0_unchanged = pool.submit(_check_slot0_unchanged, experts, anchor)
        write_planned_shards(staging, plan, max_shard_bytes)
        slot0_unchanged.result()
        write_json(staging / "config.json", {**config, "num_experts": num_experts, "num_experts_per_tok": top_k})
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


def _check_shapes(expert: ExpertInput, anchor: SafetensorsCheckpoint) -> None:
    for key in expert.tensors:
        if key in anchor and expert.tensors.shape(key) != anchor.shape(key):
            raise BarFedError(
                "SHAPE_MISMATCH",
                f"the {expert.domain} expert's {key} has shape {list(expert.tensors.shape(key))}, the anchor's "
                f"{list(anchor.shape(key))}; retrain it from this anchor.",
            )


def _check_slot0_unchanged(experts: list[ExpertInput], anchor: SafetensorsCheckpoint) -> None:
    """Every expert's slot 0 and router row 0 are the anchor's, bit for bit (BAR freezes them)."""
    for key in anchor:
        part, slot = disk_part(key)
        holders = [e for e in experts if key in e.tensors]
        if part == "expert_ffn" and slot == 0 and holders:
            reference, candidate = bytearray(anchor.nbytes(key)), bytearray(anchor.nbytes(key))
            anchor.read_into(key, reference)
            for expert in holders:
                if expert.tensors.dtype(key) == anchor.dtype(key):
                    expert.tensors.read_into(key, candidate)
                    unchanged = candidate == reference  # one memcmp
                else:
                    unchanged = torch.equal(expert.tensors.tensor(key).to(anchor.torch_dtype(key)), anchor.tensor(key))
                if not unchanged:
                    raise _slot0_error(expert, key)
        elif part == "router" and holders:
            row0 = anchor.tensor(key)[0]
            for expert in holders:
                if not torch.equal(expert.tensors.tensor(key)[0].to(row0.dtype), row0):
                    raise _slot0_error(expert, key)


def _carried(key: str, checkpoint: SafetensorsCheckpoint, source_key: str, dtype: torch.dtype, shape) -> PlannedTensor:
    """A tensor taken over unchanged: copied byte for byte, or converted where the input has another dtype."""
    if checkpoint.torch_dtype(source_key) == dtype:
        path, start, _end = checkpoint.byte_range(source_key)
        return PlannedTensor(key, dtype, shape, Copy(path, start))
    return PlannedTensor(key, dtype, shape, lambda: checkpoint.tensor(source_key).to(dtype))


def _average(experts: list[ExpertInput], anchor: SafetensorsCheckpoint, key: str, dtype: torch.dtype) -> torch.Tensor:
    """The uniform average of the experts' tensor, summed in float32."""
    total = experts[0].tensor(key, anchor).float()
    for expert in experts[1:]:
        total += expert.tensor(key, anchor)
    return total.div_(len(experts)).to(dtype)


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
    config = read_config(merged_dir)
    source = SafetensorsCheckpoint(merged_dir)
    plan: list[PlannedTensor] = []
    for key in source:
        part, slot = disk_part(key)
        dtype, shape = source.torch_dtype(key), source.shape(key)
        if part == "expert_ffn":
            if slot != drop:
                layer, _slot, projection = expert_address(key)
                new_key = expert_key(layer, slot - int(slot > drop), projection)
                plan.append(_carried(new_key, source, key, dtype, shape))
        elif part == "router":
            kept = [row for row in range(shape[0]) if row != drop]
            plan.append(
                PlannedTensor(key, dtype, (len(kept), *shape[1:]), lambda key=key, kept=kept: source.tensor(key)[kept])
            )
        else:
            plan.append(_carried(key, source, key, dtype, shape))
    num_experts = len(slots) - 1
    with atomic_directory(out_dir) as staging:
        write_planned_shards(staging, plan, MERGE_SHARD_BYTES)
        top_k = min(config["num_experts_per_tok"], num_experts)
        write_json(staging / "config.json", {**config, "num_experts": num_experts, "num_experts_per_tok": top_k})
        copy_tokenizer_files(merged_dir, staging)
        for extra in (merged_dir / "bar_router.json",):
            if extra.is_file():
                (staging / extra.name).write_text(extra.read_text())
        write_json(
            staging / MERGE_CARD,
            {
                **card,
                "slots": slots[:drop] + slots[drop + 1 :],
                "top_k": top_k,
                "experts": [e for e in card["experts"] if e["domain"] != domain],
                "opted_out": [*card.get("opted_out", []), domain],
            },
        )
    return out_dir
