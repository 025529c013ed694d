"""What the node's commands and `barfed pull` print where nobody watches a terminal (a pipe, a log): transfers as a
plain line now and then and one as each ends, tables not cut to 80 columns; and what `init` says comes next."""

from __future__ import annotations

import io
import json

from rich.console import Console
from rich.table import Table

from contributor_node.home import write_json
from contributor_node.progress import WIDE, TransferProgress, make_console
from contributor_node.setup import next_step


def test_off_a_terminal_a_transfer_prints_a_line_at_most_every_30_s_and_one_as_it_ends():
    out = io.StringIO()
    with TransferProgress(Console(file=out, width=200)) as progress:
        first = progress.add_task("model.safetensors", total=4_000_000)
        progress.update(first, advance=1_000_000)
        progress.update(first, advance=1_000_000)  # within 30 s of the last line: nothing
        progress.PLAIN_EVERY_S = 0.0  # as if half a minute had passed
        progress.update(first, advance=1_000_000)
        progress.PLAIN_EVERY_S = 3600.0
        progress.update(first, advance=1_000_000)
        progress.remove_task(first)
        second = progress.add_task("config.json", total=1_200)
        progress.update(second, advance=1_200)  # ended by the progress stopping
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [
        "model.safetensors: 1.0 MB/4.0 MB",
        "model.safetensors: 3.0 MB/4.0 MB",
        "model.safetensors: 4.0 MB in 0:00",
        "config.json: 1.2 kB in 0:00",
    ]


def test_on_a_terminal_a_transfer_is_a_bar_and_no_lines():
    out = io.StringIO()
    with TransferProgress(Console(file=out, force_terminal=True, width=100)) as progress:
        task = progress.add_task("model.safetensors", total=10)
        progress.update(task, advance=10)
    assert "model.safetensors: " not in out.getvalue()


def test_off_a_terminal_tables_keep_full_ids(capsys):
    console = make_console()  # stdout is captured: not a terminal
    assert console.width == WIDE
    table = Table("package", "submission", "state", "expert", "code", "message")
    submission = "5f0c1a2e-7a4b-4c7e-9a57-0d2f3c4b5a69"
    table.add_row("math-v1", submission, "ACCEPTED", "QUARANTINED", "", "a long message " * 6)
    console.print(table)
    shown = capsys.readouterr().out
    assert submission in shown and "QUARANTINED" in shown and max(map(len, shown.splitlines())) > 80


def test_init_says_what_comes_next_from_what_the_node_holds(tmp_path):
    assert next_step(tmp_path) == "barfed node enroll --token TOKEN --wait"
    write_json(tmp_path / "enrollment.json", {"enrollment_id": "e1", "token_sha256": "x", "domains": []})
    assert next_step(tmp_path).startswith("barfed node enroll --wait")
    (tmp_path / "org.pem").write_text("certificate")
    write_json(tmp_path / "enrollment.json", {"enrollment_id": "e1", "token_sha256": "x", "domains": ["math"]})
    assert next_step(tmp_path) == "barfed node fetch-anchor"
    (tmp_path / "anchor").mkdir()
    (tmp_path / "anchor.json").write_text(json.dumps({"fingerprint": "sha256:ab"}))
    assert next_step(tmp_path) == "barfed node train"
    (tmp_path / "experts" / "math").mkdir(parents=True)
    assert next_step(tmp_path) == "barfed node eval, then barfed node package"
    (tmp_path / "packages" / "math-v1").mkdir(parents=True)
    assert next_step(tmp_path) == "barfed node submit --wait"
    write_json(tmp_path / "submissions.json", {"math-v1": {"submission_id": "s1", "domain": "math", "version": 1}})
    assert next_step(tmp_path).startswith("barfed node status")
