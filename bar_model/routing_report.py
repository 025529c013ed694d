"""Where a merged release loses its experts' skill: how each domain's held-out tokens are routed, layer by layer.

An expert that scores well alone but poorly once merged has usually lost its tokens to the router: they go to
the anchor or to another expert instead of the slot trained on them. For every served domain (and the anchor's
general data) this teacher-forces held-out prompt+response pairs through the model and averages, over the
response tokens, the share of each token's expert mixture that goes to the anchor, to the domain's own slot and
to every other slot, naming the foreign slot that takes the most; the mixture's entropy (in nats); and the share
of tokens whose top choice is the own slot or the anchor. Per layer, ``load`` is every slot's share of all
measured tokens (domains weighted equally): a slot near 0 there is an expert the router has collapsed away. The
mixture is the one the model applies (softmax of the router logits, its top-k, renormalised to the share of the
token's mixture), read from the live gate modules, so a sparse or renormalised release is reported as it routes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bar_model.domains import domain_names, get_domain
from bar_model.evaluate import load_model
from bar_model.merge import merge_card
from bar_model.tokenizer import render_prompt
from protocol.errors import BarFedError
from protocol.layout import ANCHOR_SLOT

GENERAL = "general"  # the anchor's domain: its own slot is the anchor
BATCH = 16


def served_domains(slots: list[str]) -> dict[str, int]:
    """Domain -> its own slot: every expert slot whose domain has a scorer, then general (the anchor's)."""
    known = set(domain_names())
    served = {slot: i for i, slot in enumerate(slots) if slot != ANCHOR_SLOT and slot in known and slot != GENERAL}
    if ANCHOR_SLOT in slots:
        served[GENERAL] = slots.index(ANCHOR_SLOT)
    return served


def routing_report(model_dir: Path, examples: int = 32) -> dict:
    """Per layer and served domain: mean routing share of the anchor, the own slot and all foreign slots."""
    model_dir = Path(model_dir)
    slots: list[str] = merge_card(model_dir)["slots"]
    if examples < 1:
        raise BarFedError("BAD_EXAMPLES", f"give at least one example per domain, not {examples}.")
    model, tokenizer = load_model(model_dir)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    layers = model.model.layers
    if not hasattr(layers[0].mlp, "gate") or model.config.num_experts != len(slots):
        raise BarFedError(
            "WRONG_ARCHITECTURE",
            f"{model_dir} does not hold a {len(slots)}-slot FlexOlmo model as its merge card says; "
            "pass the directory `barfed model merge` or `train-router` wrote, or a release.",
        )
    anchor = slots.index(ANCHOR_SLOT) if ANCHOR_SLOT in slots else None
    domains, loads = {}, []
    for domain, own in served_domains(slots).items():
        measured = _mean_shares(model, tokenizer, get_domain(domain).eval_set(examples))
        domains[domain] = _summarise(measured, slots, anchor, own)
        loads.append(measured["shares"])
    load = torch.stack(loads).mean(dim=0)  # [layers, slots]
    unscored = [slot for slot in slots if slot != ANCHOR_SLOT and slot not in domains]  # still foreign to the others
    return {
        "model": str(model_dir),
        "slots": slots,
        "examples": examples,
        "layers": len(layers),
        "domains": domains,
        "unscored": unscored,
        "load": [{slot: round(v, 6) for slot, v in zip(slots, layer, strict=True)} for layer in load.tolist()],
    }


@torch.inference_mode()
def _mean_shares(model, tokenizer, examples) -> dict[str, torch.Tensor]:
    """Averaged over response tokens, per layer: ``shares`` [layers, slots], each slot's share of the token's
    expert mixture; ``top`` [layers, slots], the share of tokens whose largest weight is that slot's; ``entropy``
    [layers], the mixture's entropy in nats."""
    layers = model.model.layers
    sums = torch.zeros(len(layers), model.config.num_experts, dtype=torch.float64)
    tops = torch.zeros_like(sums)
    entropy = torch.zeros(len(layers), dtype=torch.float64)
    mask: dict[str, torch.Tensor] = {}

    def hook(index):
        def record(_module, _args, output):
            _logits, scores, chosen = output  # what the block mixes with: top-k weights and their slots
            weights = torch.zeros(chosen.shape[0], sums.shape[1], dtype=torch.float64, device=chosen.device)
            weights.scatter_(1, chosen, scores.double())
            weights /= weights.sum(dim=-1, keepdim=True).clamp_min(1e-30)
            weights = weights[mask["response"].reshape(-1)]
            sums[index] += weights.sum(dim=0).cpu()
            tops[index] += torch.bincount(weights.argmax(dim=-1), minlength=sums.shape[1]).double().cpu()
            entropy[index] += -(weights * weights.clamp_min(1e-30).log()).sum().cpu()

        return record

    handles = [layer.mlp.gate.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    tokens = 0
    try:
        for start in range(0, len(examples), BATCH):
            chunk = examples[start : start + BATCH]
            prompts = [render_prompt(tokenizer, e.prompt) for e in chunk]
            texts = [p + e.response + tokenizer.eos_token for p, e in zip(prompts, chunk, strict=True)]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            prompt_lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
            positions = torch.arange(batch["input_ids"].shape[1]).unsqueeze(0)
            response = (positions >= torch.tensor(prompt_lengths).unsqueeze(1)) & batch["attention_mask"].bool()
            mask["response"] = response.to(device)
            tokens += int(response.sum())
            model(**{key: value.to(device) for key, value in batch.items()})
    finally:
        for handle in handles:
            handle.remove()
    if not tokens:
        raise BarFedError("NO_EVAL_DATA", "the held-out examples have no response tokens to route.")
    return {"shares": sums / tokens, "top": tops / tokens, "entropy": entropy / tokens}


def _summarise(measured: dict[str, torch.Tensor], slots: list[str], anchor: int | None, own: int) -> dict:
    shares = measured["shares"]
    foreign_slots = [i for i in range(len(slots)) if i not in (anchor, own)]
    rows = []
    for layer, top_choice, entropy in zip(
        shares.tolist(), measured["top"].tolist(), measured["entropy"].tolist(), strict=True
    ):
        top = max(foreign_slots, key=lambda i: layer[i], default=None)
        rows.append(
            {
                "anchor": round(layer[anchor], 6) if anchor is not None else 0.0,
                "own": round(layer[own], 6),
                "foreign": round(sum(layer[i] for i in foreign_slots), 6),
                "top_foreign": slots[top] if top is not None else None,
                "top_foreign_mass": round(layer[top], 6) if top is not None else 0.0,
                "top_own": round(top_choice[own], 6),  # tokens whose largest weight is the own slot's
                "top_anchor": round(top_choice[anchor], 6) if anchor is not None else 0.0,
                "entropy": round(entropy, 6),
            }
        )
    keys = ("anchor", "own", "foreign", "top_own", "top_anchor", "entropy")
    mean = {key: round(sum(r[key] for r in rows) / len(rows), 6) for key in keys}
    worst = max(range(len(rows)), key=lambda i: rows[i]["foreign"])
    per_slot = shares.mean(dim=0).tolist()
    return {
        "slot": own,
        "layers": rows,
        "mean": mean,
        "slots": {slot: round(per_slot[i], 6) for i, slot in enumerate(slots)},  # every slot's share, layer mean
        "worst": {"layer": worst, "foreign": rows[worst]["foreign"], "top_foreign": rows[worst]["top_foreign"]},
    }


def report_table(report: dict):
    """A Rich table, one row per domain and layer; a foreign share above the own share is shown in red."""
    from rich.table import Table

    table = Table("domain", "layer", "anchor", "own", "foreign", "top foreign", title=f"routing of {report['model']}")
    for domain, entry in report["domains"].items():
        for layer, row in enumerate(entry["layers"]):
            style = "red" if domain != GENERAL and row["foreign"] > row["own"] else None
            top = f"{row['top_foreign']} {row['top_foreign_mass']:.3f}" if row["top_foreign"] else "-"
            shares = [f"{row[key]:.3f}" for key in ("anchor", "own", "foreign")]
            table.add_row(domain, str(layer), *shares, top, style=style)
        table.add_section()
    return table


def summary_lines(report: dict) -> list[str]:
    """One line per domain: shares averaged over layers, and the layer that sends the most elsewhere."""
    lines = []
    for domain, entry in report["domains"].items():
        mean, worst = entry["mean"], entry["worst"]
        where = f" (most to {worst['top_foreign']})" if worst["top_foreign"] else ""
        lines.append(
            f"{domain}: anchor {mean['anchor']:.3f}, own {mean['own']:.3f}, foreign {mean['foreign']:.3f} "
            f"(mean of {report['layers']} layers); worst layer {worst['layer']}: foreign {worst['foreign']:.3f}{where}"
        )
    if report["unscored"]:
        lines.append(f"not measured (no scorer here for their domain): {', '.join(report['unscored'])}")
    return lines
