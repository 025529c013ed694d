"""`barfed model …` as a user runs it: errors without tracebacks, eval output, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BARFED = [sys.executable, "-m", "barfed.cli"]


def barfed(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*BARFED, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def test_user_errors_print_code_and_advice_without_traceback(micro, tmp_path):
    result = barfed(
        "model", "train-expert", "--anchor", micro["branch"], "--domain", "astrology", "--out", tmp_path / "x"
    )
    assert result.returncode == 2
    assert "UNKNOWN_DOMAIN" in result.stderr and "Traceback" not in result.stderr
    result = barfed("model", "init-anchor", "--anchor", micro["branch"], "--out", tmp_path / "y")
    assert result.returncode == 2 and "WRONG_ARCHITECTURE" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 3\n")
    result = barfed(
        "model",
        "train-expert",
        "--anchor",
        micro["branch"],
        "--domain",
        "math",
        "--out",
        tmp_path / "z",
        "--recipe",
        bad,
    )
    assert result.returncode == 2 and "BAD_RECIPE" in result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_eval_prints_json_scores(micro):
    result = barfed("model", "eval", micro["anchor"], "--domains", "math,general", "--n", "4", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["scores"]) == {"math", "general", "overall"}
    assert all(0 <= v <= 100 for v in report["scores"].values())


def test_killed_training_resumes_and_never_exposes_a_partial_expert(micro, tmp_path):
    recipe = Path(__file__).parents[2] / "bar_model" / "recipes" / "expert-micro.toml"
    slow = tmp_path / "slow.toml"
    # Enough SFT steps that the kill lands mid-stage, with frequent checkpoints.
    sft = "steps = 3\nbatch_size = 4\nmax_length = 96\nlearning_rate = 1e-2\nsave_steps = 2"
    assert sft in recipe.read_text()
    slow.write_text(recipe.read_text().replace(sft, sft.replace("= 3", "= 400").replace("= 2", "= 20")))
    out = tmp_path / "expert"
    partial = tmp_path / ".expert.partial"
    args = [
        *BARFED,
        "model",
        "train-expert",
        "--anchor",
        str(micro["branch"]),
        "--domain",
        "math",
        "--out",
        str(out),
        "--recipe",
        str(slow),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((partial / "runs" / "sft").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, "training finished before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must not leave anything at --out"
    assert (partial / "stages" / "mid" / "model.safetensors").is_file()
    mid_mtime = (partial / "stages" / "mid" / "model.safetensors").stat().st_mtime

    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((out / "bar_expert.json").read_text())
    assert card["stage_summaries"]["sft"]["resumed_from"].startswith("checkpoint-")
    assert card["stage_summaries"]["sft"]["steps"] == 400
    assert (out / "stages" / "mid" / "model.safetensors").stat().st_mtime == mid_mtime, "mid was retrained"
    assert not partial.exists()


def test_resume_with_other_settings_is_refused(micro, tmp_path):
    partial = tmp_path / ".expert.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"domain": "code"}))
    result = barfed(
        "model",
        "train-expert",
        "--anchor",
        micro["branch"],
        "--domain",
        "math",
        "--out",
        tmp_path / "expert",
        "--recipe",
        "micro",
    )
    assert result.returncode == 2 and "RESUME_MISMATCH" in result.stderr


def test_merge_route_and_opt_out_from_the_command_line(micro, micro_math, tmp_path):
    merged, routed, without = tmp_path / "merged", tmp_path / "routed", tmp_path / "without"
    result = barfed("model", "merge", "--anchor", micro["branch"], "--expert", micro_math, "--out", merged)
    assert result.returncode == 0, result.stderr
    result = barfed("model", "train-router", merged, "--out", routed, "--recipe", "micro")
    assert result.returncode == 0, result.stderr
    assert json.loads((routed / "config.json").read_text())["num_experts"] == 2
    result = barfed("model", "drop-expert", routed, "--domain", "code", "--out", without)
    assert result.returncode == 2 and "UNKNOWN_EXPERT" in result.stderr and "Traceback" not in result.stderr
    result = barfed("model", "merge", "--anchor", micro["branch"], "--expert", micro_math, "--out", merged)
    assert result.returncode == 2 and "OUTPUT_EXISTS" in result.stderr
    assert not without.exists()
    again = tmp_path / "again"
    result = barfed("model", "train-router", merged, "--out", again, "--recipe", "micro", "--previous", routed)
    assert result.returncode == 2 and "NOTHING_TO_ROUTE" in result.stderr and "Traceback" not in result.stderr
    assert not again.exists()
