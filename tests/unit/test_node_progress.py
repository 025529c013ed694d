"""What `barfed node train` leaves for a watcher (training.json) and shows a person (one line per stage)."""

from __future__ import annotations

import io
import logging
import sys
import time

from rich.console import Console

from contributor_node.home import read_json
from contributor_node.progress import TrainingLine, clock
from contributor_node.training import TrainingRecord

FIELDS = {"domain", "version", "stage", "step", "total", "stage_started_at", "updated_at", "done"}


def test_the_record_is_rewritten_when_a_stage_starts_at_most_once_a_second_and_once_done(tmp_path):
    path = tmp_path / "training.json"
    record = TrainingRecord(path, "math", 2)
    before = time.time()
    record("mid", 0, 3)
    first = read_json(path)
    assert set(first) == FIELDS
    assert (first["domain"], first["version"], first["stage"], first["step"], first["total"]) == (
        "math",
        2,
        "mid",
        0,
        3,
    )
    assert before <= first["stage_started_at"] <= first["updated_at"] <= time.time() and first["done"] is False
    record("mid", 1, 3)
    assert read_json(path)["step"] == 0  # within the second
    record("sft", 0, 5)
    assert read_json(path)["stage"] == "sft" and read_json(path)["stage_started_at"] >= first["stage_started_at"]
    record.EVERY_S = 0.0  # as if a second had passed
    record("sft", 4, 5)
    assert read_json(path)["step"] == 4
    record.EVERY_S = 3600.0
    record("sft", 5, 5)
    record.finish("sft", 5)
    last = read_json(path)
    assert set(last) == FIELDS and (last["stage"], last["step"], last["total"], last["done"]) == ("sft", 5, 5, True)


def test_a_run_whose_stages_were_all_done_records_the_last_one_done(tmp_path):
    record = TrainingRecord(tmp_path / "training.json", "code", 1)
    record.finish("rl", 20)
    last = read_json(tmp_path / "training.json")
    assert set(last) == FIELDS and (last["stage"], last["step"], last["total"], last["done"]) == ("rl", 20, 20, True)


def test_off_a_terminal_the_line_is_printed_at_most_every_30_s():
    out = io.StringIO()
    with TrainingLine(Console(file=out, width=200), "math") as line:
        line("sft", 0, 1200)
        line("sft", 1, 1200)
        line.PLAIN_EVERY_S = 0.0  # as if half a minute had passed
        line("sft", 640, 1200)
    assert out.getvalue().splitlines() == ["math: SFT 0/1200 · 0:00", "math: SFT 640/1200 · 0:00"]
    assert (clock(151), clock(3751)) == ("2:31", "1:02:31")


def test_on_a_terminal_log_lines_print_above_the_live_line_not_through_it():
    out = io.StringIO()
    stderr = sys.stderr
    handler = logging.StreamHandler(stderr)
    logging.getLogger().addHandler(handler)
    try:
        with TrainingLine(Console(file=out, force_terminal=True, width=100), "math") as line:
            line("mid", 0, 3)
            assert handler.stream is not stderr
            logging.getLogger("bar_model.expert").warning("stage mid done in 1.0s")
        assert handler.stream is stderr and sys.stderr is stderr
    finally:
        logging.getLogger().removeHandler(handler)
    assert "stage mid done in 1.0s" in out.getvalue() and "math: MID 0/3" in out.getvalue()
