"""Benchmark: `barfed model merge` against `mergekit-moe` on the same expert shapes, whole processes, in pairs.

Four experts of an 8-layer, hidden-1024 model in float32 (the shapes of bench/merge_memory.py): ours as the
FlexOlmo experts BAR trains (the anchor's FFN in slot 0, the domain FFN in slot 1), mergekit's as the dense
Llama models it merges into a Mixtral (the same attention, norms, embeddings and domain FFN). mergekit-moe
runs as the outside harness ran it (`--lazy-unpickle`, gate mode `random`, so it computes no hidden states
either); it writes no anchor slot and fsyncs nothing, ours writes one more slot and makes its output durable.
Each run starts a fresh process (start-up and imports count), the two alternate, and the ratios are taken pair
by pair. Peak RSS is the child's own (`wait4`); this parent never imports torch, so it lends the child nothing.

mergekit is not a dependency of ours; install it beside (CPU torch first, so pip takes no CUDA wheels):

    python -m venv /tmp/mergekit && /tmp/mergekit/bin/pip install torch==2.13.0 mergekit==0.1.5
    .venv/bin/python bench/merge_speed.py --mergekit /tmp/mergekit/bin/mergekit-moe --write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERTS = 4
TOKENIZER = ROOT / "barfed" / "anchors" / "tiny" / "base"


def build_inputs(work: Path) -> None:
    """The anchor, four FlexOlmo experts, and the dense models mergekit takes (run in a child: it imports torch)."""
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import LlamaConfig, Olmo2Config, Olmo2ForCausalLM

    from bar_model.branch import init_anchor
    from bar_model.checkpoint import SafetensorsCheckpoint, ShardedSafetensorsWriter
    from bench.merge_memory import SIZE, synthetic_expert
    from protocol.fingerprint import anchor_fingerprint

    torch.manual_seed(0)
    Olmo2ForCausalLM(Olmo2Config(vocab_size=2048, pad_token_id=0, eos_token_id=1, **SIZE)).save_pretrained(
        work / "dense-anchor"
    )
    branch = init_anchor(work / "dense-anchor", work / "anchor")
    fingerprint = anchor_fingerprint(branch)
    dense_config = LlamaConfig(vocab_size=2048, pad_token_id=0, eos_token_id=1, **SIZE)

    def dense(source: Path, out: Path, slot: int) -> None:
        """The FlexOlmo checkpoint as a Llama model with FFN ``slot`` as its MLP (Olmo2's q/k norms dropped)."""
        out.mkdir()
        checkpoint, writer = SafetensorsCheckpoint(source), ShardedSafetensorsWriter(out)
        for key in checkpoint:
            if ".mlp.gate.weight" in key or ("_norm." in key and "self_attn" in key):
                continue
            if ".mlp.experts." in key:
                if f".experts.{slot}." not in key:
                    continue
                key_out = key.replace(f".mlp.experts.{slot}.", ".mlp.")
            else:
                key_out = key.replace("post_feedforward_layernorm", "input_layernorm")
            writer.add(key_out, checkpoint.tensor(key))
        writer.close()
        dense_config.save_pretrained(out)
        for name in ("tokenizer.json", "tokenizer_config.json"):  # mergekit-moe loads the base's tokenizer
            shutil.copy(TOKENIZER / name, out / name)

    dense(branch, work / "dense-base", 0)
    for i in range(EXPERTS):
        synthetic_expert(branch, work / f"expert-{i}", i, fingerprint)
        dense(work / f"expert-{i}", work / f"dense-{i}", 1)
    lines = [f"base_model: {work / 'dense-base'}", "gate_mode: random", "dtype: float32", "experts:"]
    lines += [f"  - source_model: {work / f'dense-{i}'}" for i in range(EXPERTS)]
    (work / "mergekit-moe.yml").write_text("\n".join(lines) + "\n")


def run(argv: list[str], output: Path, cwd: Path = ROOT) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of one whole process; its output directory is removed first, untimed."""
    shutil.rmtree(output, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{argv[0]} failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mergekit", type=Path, required=True, help="the mergekit-moe executable")
    parser.add_argument("--work", type=Path, default=ROOT / ".barfed" / "bench" / "merge-speed")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--before", type=Path, help="a `git archive` of an older commit, merged the same way as a third"
    )
    parser.add_argument("--write", action="store_true", help="record the section in docs/PERFORMANCE.md")
    parser.add_argument("--build-inputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()
    if args.build_inputs:
        build_inputs(work)
        return
    if not (work / "mergekit-moe.yml").is_file():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        print("building the inputs (anchor, 4 experts, their dense forms) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--work", str(work), "--mergekit", "-", "--build-inputs"], check=True)

    ours = [sys.executable, "-m", "bar_model", "merge", "--anchor", str(work / "anchor"), "--out", str(work / "merged")]
    ours += [arg for i in range(EXPERTS) for arg in ("--expert", str(work / f"expert-{i}"))]  # = barfed model merge
    theirs = [str(args.mergekit), str(work / "mergekit-moe.yml"), str(work / "mergekit-out"), "--lazy-unpickle"]
    theirs += ["--no-copy-tokenizer", "--i-understand-this-is-not-useful-without-training"]
    results: dict[str, list[tuple[float, float, float]]] = {"ours": [], "mergekit": []}
    if args.before:
        results["before"] = []
    for round_ in range(args.rounds + 1):  # the first round warms the page cache and is not counted
        pair = {"ours": run(ours, work / "merged"), "mergekit": run(theirs, work / "mergekit-out")}
        if args.before:
            pair["before"] = run(ours, work / "merged", cwd=args.before.resolve())
        if round_:
            for name, figures in pair.items():
                results[name].append(figures)
            print(f"round {round_}: " + ", ".join(f"{n} {f[0]:.2f} s" for n, f in pair.items()), flush=True)
    size = {
        name: sum(p.stat().st_size for p in (work / name).glob("*.safetensors")) / 1024**2
        for name in ("merged", "mergekit-out")
    }
    expert_mb = (work / "expert-0" / "model.safetensors").stat().st_size / 1024**2
    report_text = report(results, size, expert_mb, args.rounds)
    print(report_text)
    print(json.dumps(results))
    if args.write:
        sys.path.insert(0, str(ROOT))
        from bench.report import replace_section

        replace_section(ROOT / "docs" / "PERFORMANCE.md", "merge_speed", "Merge speed (issue 29)", report_text)


def report(results: dict, size: dict, expert_mb: float, rounds: int) -> str:
    sys.path.insert(0, str(ROOT))
    from bench.report import machine_line

    def median(name: str, index: int) -> float:
        return statistics.median(figures[index] for figures in results[name])

    def ratio(index: int, name: str = "ours") -> float:
        pairs = zip(results[name], results["mergekit"], strict=True)
        return statistics.median(a[index] / b[index] for a, b in pairs)

    wall, rss = ratio(0), ratio(2)
    rows = [
        f"| `barfed model merge` (5 slots, fsynced) | {median('ours', 0):.2f} | {median('ours', 1):.2f} | "
        f"{median('ours', 2):.0f} | {size['merged']:.0f} |",
        f"| `mergekit-moe --lazy-unpickle` 0.1.5 (4 experts) | {median('mergekit', 0):.2f} | "
        f"{median('mergekit', 1):.2f} | {median('mergekit', 2):.0f} | {size['mergekit-out']:.0f} |",
        f"| ours / mergekit, median of the pairs | {wall:.2f}× | {ratio(1):.2f}× | {rss:.2f}× | |",
    ]
    if "before" in results:
        rows += [
            f"| before: the commit before issue 29's merge change | {median('before', 0):.2f} | "
            f"{median('before', 1):.2f} | {median('before', 2):.0f} | |",
            f"| before / mergekit | {ratio(0, 'before'):.2f}× | {ratio(1, 'before'):.2f}× | "
            f"{ratio(2, 'before'):.2f}× | |",
        ]
    return "\n".join(
        [
            "Command: `.venv/bin/python bench/merge_speed.py --mergekit /tmp/mergekit/bin/mergekit-moe --before DIR "
            "--write` (mergekit 0.1.5 in its own venv, see the script; DIR: `git archive` of the commit before)  ",
            f"Machine: {machine_line()}.",
            "",
            f"{EXPERTS} experts of an 8-layer, hidden-1024 model, float32 (one FlexOlmo expert file {expert_mb:.0f} "
            f"MB); whole processes, start-up included, alternating, medians of {rounds} pairs after a warm-up pair.",
            "",
            "| merge | wall (s) | CPU (s) | peak RSS (MiB) | output (MiB) |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Target (issue 29): wall ≤ 0.7× mergekit-moe at ≤ 0.5× its RSS → "
            f"**{'met' if wall <= 0.7 and rss <= 0.5 else 'NOT met'}** ({wall:.2f}×, {rss:.2f}×).",
        ]
    )


if __name__ == "__main__":
    main()
