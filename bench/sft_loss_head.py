"""What SFT's loss head costs a training step on a CPU: the model's own logits and cross-entropy (now) against TRL's
fused LM head (before, `stages.LogitsLossWithoutTritonMixin` says why it went).

Two loops the demo runs, on the shipped tiny anchor: an expert's SFT stage (the 2-slot branch, only the expert
FFN and its router row training, `expert-demo-code`'s SFT settings) and the router of a 4-expert release (5 slots,
router rows only, `router-demo`'s settings; the experts are copies of the branch, which costs the same per step as
trained ones). Each arm trains --steps steps in this process after --warmup steps of its own; the arms alternate,
round by round, so a machine that slows down mid-run slows both. Median seconds per step over --rounds rounds.

Run: `.venv/bin/python bench/sft_loss_head.py [--rounds 3] [--threads 1] [--write]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import SFTTrainer  # noqa: E402

from bar_model import stages  # noqa: E402
from bar_model.branch import init_anchor  # noqa: E402
from bar_model.card import EXPERT_CARD  # noqa: E402
from bar_model.domains import get_domain  # noqa: E402
from bar_model.freezing import StageFreeze  # noqa: E402
from bar_model.merge import merge_experts  # noqa: E402
from bar_model.recipe import load_expert_recipe, load_router_recipe  # noqa: E402
from bar_model.router import RouterOnly  # noqa: E402
from barfed.anchors import check_shipped  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402
from protocol.fingerprint import anchor_fingerprint  # noqa: E402


def fused_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    """TRL's own compute_loss, skipping the mixin: what every SFT loop ran before."""
    return SFTTrainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def models(root: Path) -> dict[str, Path]:
    _base, anchor = check_shipped("tiny")
    branch = init_anchor(anchor, root / "branch")
    experts = []
    for domain in ("math", "code", "tool_use", "safety"):
        expert = root / domain
        shutil.copytree(branch, expert)
        (expert / EXPERT_CARD).write_text(
            json.dumps({"domain": domain, "anchor_fingerprint": anchor_fingerprint(branch)})
        )
        experts.append(expert)
    return {"expert SFT (2 slots)": branch, "router (5 slots)": merge_experts(branch, experts, root / "merged")}


def seconds_per_step(loop: str, directory: Path, steps: int, warmup: int, work: Path) -> float:
    """Train ``warmup`` + ``steps`` steps; the seconds per step of the last ``steps``."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    examples = get_domain("code").sft(16 * (steps + warmup))
    if loop.startswith("router"):
        recipe = load_router_recipe("demo")
        freeze = RouterOnly(model)
    else:
        recipe = load_expert_recipe("demo-code").sft
        freeze = StageFreeze(model, "sft", recipe.shared_lr_scale)
    recipe = recipe.model_copy(update={"steps": steps + warmup, "save_steps": 10_000})
    trainer = stages.chat_trainer(model, tokenizer, examples, recipe, work, seed=0, freeze=freeze, progress=False)
    stamps = []
    trainer.add_callback(stages.StepReport(lambda step, total: stamps.append(time.perf_counter())))
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(loop.startswith("router"))  # as train_router trains
    try:
        trainer.train()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        freeze.remove()
    shutil.rmtree(work, ignore_errors=True)
    return (stamps[-1] - stamps[warmup - 1]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the demo's nodes train with one each)")
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logits_loss = stages.LogitsLossWithoutTritonMixin.compute_loss
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        loops = models(Path(tmp))
        for round_ in range(args.rounds):
            for loop, directory in loops.items():
                for arm, loss in (("now", logits_loss), ("before", fused_loss)):
                    stages.LogitsLossWithoutTritonMixin.compute_loss = loss
                    seconds = seconds_per_step(loop, directory, args.steps, args.warmup, Path(tmp) / "work")
                    results.setdefault((loop, arm), []).append(seconds)
                    print(f"round {round_ + 1}: {loop}, {arm}: {seconds * 1000:.0f} ms a step", flush=True)
    stages.LogitsLossWithoutTritonMixin.compute_loss = logits_loss
    rows = [
        "| loop | now: logits + cross-entropy (ms/step) | before: TRL's fused LM head (ms/step) | now / before |",
        "|---|---|---|---|",
    ]
    for loop in loops:
        now, before = (statistics.median(results[loop, arm]) for arm in ("now", "before"))
        rows.append(f"| {loop} | {now * 1000:.0f} | {before * 1000:.0f} | {now / before:.2f} |")
    body = (
        f"`.venv/bin/python bench/sft_loss_head.py --rounds {args.rounds} --threads {args.threads} --write` on "
        f"{machine_line()}: median seconds per step over {args.rounds} alternating rounds of {args.steps} steps "
        f"(after {args.warmup} of warm-up), {args.threads} torch thread(s), batch 16 × 128 tokens.\n\n"
        + "\n".join(rows)
    )
    print(body)
    if args.write:
        replace_section(REPO / "docs/PERFORMANCE.md", "sft-loss-head", "SFT's loss head on a CPU", body)


if __name__ == "__main__":
    main()
