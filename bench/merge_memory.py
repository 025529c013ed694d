"""Benchmark: peak resident memory of a streamed merge, against the size of one input expert.

Builds four synthetic experts of a mid-sized FlexOlmo (random weights; about 700 MB each in float32),
merges them in a fresh process and reports that process's peak RSS, beside a fresh process that only
imports the same libraries (measured in the same run). Target (issue 3): peak RSS <= 1.5 x one input
expert's file size + 200 MB.

    .venv/bin/python bench/merge_memory.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import Olmo2Config, Olmo2ForCausalLM  # noqa: E402

from bar_model.branch import init_anchor  # noqa: E402
from bar_model.checkpoint import SafetensorsCheckpoint, ShardedSafetensorsWriter, write_json  # noqa: E402
from bar_model.durable import atomic_directory  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402
from protocol.fingerprint import anchor_fingerprint  # noqa: E402
from protocol.layout import disk_part  # noqa: E402

SIZE = {"hidden_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 16, "intermediate_size": 2816}
# Peak RSS is read from /proc/self/status (VmHWM, per process image); getrusage's ru_maxrss would carry the
# parent's peak across fork+exec.
CHILD = """
import re, sys, time
from bar_model.merge import merge_experts
started = time.perf_counter()
if sys.argv[1] == "merge":
    merge_experts(sys.argv[2], sys.argv[4:], sys.argv[3])
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(peak_kb, time.perf_counter() - started)
"""


def synthetic_expert(anchor_dir: Path, out: Path, seed: int, fingerprint: str, domain: str | None = None) -> None:
    """The anchor with its domain slot, router and shared tensors perturbed, as train-expert would leave it."""
    generator = torch.Generator().manual_seed(seed)
    source = SafetensorsCheckpoint(anchor_dir)
    with atomic_directory(out) as staging:
        writer = ShardedSafetensorsWriter(staging)
        for key in source:
            tensor = source.tensor(key)
            if disk_part(key) != ("expert_ffn", 0):
                tensor = tensor + 1e-3 * torch.randn(tensor.shape, generator=generator)
                if disk_part(key)[0] == "router":
                    tensor[0] = source.tensor(key)[0]
            writer.add(key, tensor)
        writer.close()
        shutil.copy(anchor_dir / "config.json", staging / "config.json")
        card = {
            "domain": domain or f"synthetic-{seed}",
            "anchor_fingerprint": fingerprint,
            "stages": ["mid", "sft", "rl"],
            "recipe": {},
            "stage_summaries": {},
        }
        write_json(staging / "bar_expert.json", card)


def child(*args: str) -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    rss_kb, seconds = result.stdout.split()[-2:]
    return int(rss_kb) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench" / "merge-memory")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(0)
    config = Olmo2Config(vocab_size=2048, pad_token_id=0, eos_token_id=1, **SIZE)
    Olmo2ForCausalLM(config).save_pretrained(work / "anchor")
    branch = init_anchor(work / "anchor", work / "anchor-2x")
    fingerprint = anchor_fingerprint(branch)
    experts = []
    for seed in range(args.experts):
        synthetic_expert(branch, work / f"expert-{seed}", seed, fingerprint)
        experts.append(str(work / f"expert-{seed}"))
    expert_mb = (work / "expert-0" / "model.safetensors").stat().st_size / 1024**2

    imports_mb, _ = child("imports")
    merge_mb, merge_s = child("merge", str(branch), str(work / "merged"), *experts)
    merged_mb = sum(p.stat().st_size for p in (work / "merged").glob("*.safetensors")) / 1024**2
    bound = 1.5 * expert_mb + 200
    report = "\n".join(
        [
            "Command: `.venv/bin/python bench/merge_memory.py`  ",
            f"Machine: {machine_line()}.",
            "",
            f"{args.experts} synthetic experts of a {SIZE['num_hidden_layers']}-layer, hidden-{SIZE['hidden_size']} "
            f"FlexOlmo (float32): one input expert file {expert_mb:.0f} MB, merged output {merged_mb:.0f} MB, "
            f"merge wall time {merge_s:.1f} s.",
            "",
            "| process | peak RSS (MB) |",
            "|---|---|",
            f"| baseline: python + torch + transformers imports only | {imports_mb:.0f} |",
            f"| merge of {args.experts} experts | {merge_mb:.0f} |",
            "",
            f"Target: peak RSS <= 1.5 x {expert_mb:.0f} MB + 200 MB = {bound:.0f} MB -> "
            f"**{'met' if merge_mb <= bound else 'NOT met'}**.",
        ]
    )
    print(report)
    print(json.dumps({"expert_mb": expert_mb, "merge_rss_mb": merge_mb, "imports_rss_mb": imports_mb}))
    if not args.no_write:
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "merge_memory", "Merge memory (issue 3)", report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
