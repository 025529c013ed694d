"""`barfed model train-expert` off a terminal: one log line per stage with its time (JSON with ``log_format =
json``) and one result line, never the Trainer's log dicts or a progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_train_expert_prints_a_line_per_stage_and_its_result(micro, tmp_path):
    out = tmp_path / "expert"
    command = ["model", "train-expert", "--anchor", str(micro["branch"]), "--domain", "math", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "barfed.cli", *command, "--stages", "sft", "--recipe", "micro"],
        env={**os.environ, "BARFED_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()  # the result, on one line however long
    assert line.startswith(f"expert written to {out} (loss sft ") and line.endswith(")"), line
    records = [json.loads(line) for line in result.stderr.splitlines()]  # no bar, no dict: log lines only
    done = [r["message"] for r in records if r["logger"] == "bar_model.expert" and " done in " in r["message"]]
    assert len(done) == 1 and done[0].startswith("stage sft done in "), records
