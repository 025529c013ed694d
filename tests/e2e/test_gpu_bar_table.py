"""bench/gpu_bar_table.py, the GPU BAR table's one script (issue 24), run at micro scale on a CPU: every row and column
of the table, the retention and the swap come out, and a rerun rebuilds and re-evaluates nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["math", "code", "tool_use", "safety", "general", "overall"]
ROWS = [
    "anchor",
    "math expert",
    "code expert",
    "tool_use expert",
    "safety expert",
    "weight average",
    "multitask (4x budget)",
    "BTX (no anchor slot)",
    "BAR (merge + router)",
    "BAR, router at lr 1e-2",
]
SWAP_ROWS = [
    "code expert retrained, alone",
    "BAR, code swapped, router retrained",
    "BAR, code swapped, incremental router",
]


def run_micro(work: Path, out: Path) -> str:
    script = str(ROOT / "bench" / "gpu_bar_table.py")
    done = subprocess.run(
        [sys.executable, script, "--scale", "micro", "--work", str(work), "--out", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def table_rows(text: str) -> dict[str, list[str]]:
    return {
        cells[0].strip("* "): [c.strip() for c in cells[1:]]
        for line in text.splitlines()
        if line.startswith("| ") and (cells := line.strip().strip("|").split("|"))
    }


def test_micro_table_has_every_row_and_column_and_a_rerun_builds_nothing(tmp_path):
    work, out = tmp_path / "work", tmp_path / "table.md"
    stdout = run_micro(work, out)
    text = out.read_text()
    assert "| model | " + " | ".join(COLUMNS) + " |" in text
    rows = table_rows(text)
    for name in ROWS:
        assert len(rows[name]) == len(COLUMNS) and all(0 <= float(c) <= 100 for c in rows[name]), name
    assert rows["retention (release / expert alone), %"] == ["math", "code", "tool_use", "safety"]
    assert len(rows["BAR (merge + router): kept"]) == len(rows["BAR, router at lr 1e-2: kept"]) == 4
    for name in SWAP_ROWS:
        assert len(rows[name]) == len(COLUMNS) - 1, name
    assert "incremental router: code" in text and "largest move of any other domain" in text
    steps = re.findall(r"^\[\s*[\d.]+ s\] (.+): [\d.]+ s$", stdout, re.M)
    assert {"base + anchor", "expert code", "merge + router (BAR)", "multitask re-training (4x)"} <= set(steps)

    scores = work / "micro" / "gpu_scores.json"
    weights = sorted(work.rglob("*.safetensors"))
    before = scores.read_text(), [w.stat().st_mtime_ns for w in weights]
    run_micro(work, out)  # resumable: every product and score is kept
    assert (scores.read_text(), [w.stat().st_mtime_ns for w in weights]) == before
    assert table_rows(out.read_text())["BAR (merge + router)"] == rows["BAR (merge + router)"]
