"""What each `barfed node` command pays in imports before it does anything, against what it paid before.

Every node command is its own process, and the demo runs about twenty of them, so an import that a command does
not need is paid again and again. For each command: the wall time of a fresh interpreter importing what that
command imports now, beside (in the same run) what it imported before the router's calibration sample moved to
`bar_model/calibration.py` and the directory helpers to `bar_model/durable.py`: packaging imported the whole
training stack (trl, datasets, torch's compiler stack through transformers' model code), and the network
commands torch, accelerate and safetensors through the node's partial-anchor writer. And "now" twice: exiting as
`barfed` exits (every object frozen out of the garbage collector's way first, so the interpreter's last full
collection walks nothing: `barfed.cli.main`) and exiting as every command did before that, collecting last. The
interpreters of a command run in turn, round by round, so a machine that slows down mid-run slows them all.
Median of --runs runs.

Run: `.venv/bin/python bench/startup_imports.py [--runs 5] [--write]` (--write records it in docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import machine_line, replace_section  # noqa: E402

NETWORK = "from contributor_node.identity import NodeIdentity"
# (command, what it imports now, what it imported before)
COMMANDS = [
    ("node init / enroll / fetch-anchor / submit", NETWORK, f"{NETWORK}; import torch, accelerate, safetensors"),
    (
        "node package",
        f"{NETWORK}; from contributor_node.package import build_package; "
        "from bar_model.calibration import stratified_sample",
        f"{NETWORK}; from contributor_node.package import build_package; from bar_model.router import train_router",
    ),
    ("node eval (unchanged)", "from bar_model.evaluate import evaluate, load_model", None),
    ("node train (unchanged)", "from bar_model.expert import train_expert", None),
]


EXIT_AS_BARFED = "; import gc; gc.freeze()"


def import_seconds(statements: list[str], runs: int) -> list[float]:
    """The median wall time of a fresh interpreter running each statement, the statements taking turns."""
    times: list[list[float]] = [[] for _ in statements]
    for _ in range(runs):
        for i, statement in enumerate(statements):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], cwd=REPO, check=True)
            times[i].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    rows = [
        "| command | imports now (s) | now, collecting at exit (s) | imports before (s) |",
        "|---|---|---|---|",
    ]
    for command, now, before in COMMANDS:
        now_s, collecting_s, *before_s = import_seconds(
            [now + EXIT_AS_BARFED, now, *([before] if before else [])], args.runs
        )
        line = f"| `{command}` | {now_s:.2f} | {collecting_s:.2f} | {f'{before_s[0]:.2f}' if before_s else '-'} |"
        print(line, flush=True)
        rows.append(line)
    body = (
        f"`.venv/bin/python bench/startup_imports.py --runs {args.runs} --write` on {machine_line()}: the median wall "
        "time of a fresh interpreter importing what each node command imports and exiting, now (as `barfed` exits, "
        "with no last garbage collection; and collecting at exit) and before (measured in the same run; see the "
        "script's docstring).\n\n" + "\n".join(rows) + "\n"
    )
    if args.write:
        replace_section(REPO / "docs" / "PERFORMANCE.md", "startup-imports", "Node command start-up", body)


if __name__ == "__main__":
    main()
