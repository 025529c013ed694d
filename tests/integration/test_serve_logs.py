"""What `barfed coordinator serve` prints, its `celery worker` child included, from start to SIGTERM: with
``log_format = json``, even verbose and with a job run on the worker (so the child migrates its registry and runs
task code), every line on stdout and stderr is one JSON object; by default, text lines without Celery's banner,
Alembic's INFO lines or Celery's SecurityWarning (a worker run as root), once the worker consumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BARFED = [sys.executable, "-m", "barfed.cli"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("serve-logs") / "home"  # not "coordinator": the cwd is on sys.path
    command = [*BARFED, "coordinator", "init", "--home", str(home)]
    done = subprocess.run(command, env=_environment(), cwd=home.parent, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return home


def _serve(home: Path, *options: str, job: bool, **env: str) -> tuple[str, str]:
    """Serve on free ports until its worker consumes (and, with ``job``, has run one), then SIGTERM; what it printed
    on stdout and stderr."""
    from coordinator.release.actions import request_build
    from coordinator.state import jobs
    from coordinator.state.db import Registry

    registry = Registry(f"sqlite:///{home / 'registry.db'}")
    job_id = request_build(registry, {}, True, "test").id if job else None  # serve's sweeper sends it to the worker
    for stale in (home / "api.port", *(home / "workers").glob("*")):
        stale.unlink(missing_ok=True)
    variables = _environment() | {"BARFED_COORD_LISTEN": "127.0.0.1:0", "BARFED_COORD_ENROLL_LISTEN": "127.0.0.1:0"}
    variables |= {"BARFED_COORD_SWEEP_INTERVAL_S": "0.5", "BARFED_COORD_MIN_FREE_BYTES": "0", **env}
    command = [*BARFED, *options, "coordinator", "serve", "--home", str(home), "--api-listen", "127.0.0.1:0"]
    out, err = home.parent / "serve.out", home.parent / "serve.err"  # files: a full pipe would stall the server
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, env=variables, cwd=home.parent, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 120  # a bound on the wait, not a measurement
        while not (
            (home / "api.port").is_file()
            and any((home / "workers").glob("*"))  # the worker's heartbeat: it consumes
            and (job_id is None or jobs.get(registry, job_id).state in jobs.FINAL)
        ):
            assert process.poll() is None and time.monotonic() < deadline, "serve exited, or its worker never ran"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        registry.dispose()
    assert process.returncode == 0, err.read_text()
    if job_id is not None:  # run by the worker child, to the plan's refusal
        assert jobs.get(registry, job_id).error_code == "NO_EXPERTS"
    return out.read_text(), err.read_text()


def _environment() -> dict[str, str]:
    """This process's environment without any BARFED_* setting a developer or an earlier test left there."""
    return {name: value for name, value in os.environ.items() if not name.startswith("BARFED_")}


def test_json_lines_only_even_verbose(home):
    stdout, stderr = _serve(home, "--verbose", job=True, BARFED_LOG_FORMAT="json")
    lines = (stdout + stderr).splitlines()
    records = [json.loads(line) for line in lines]  # a line that is not one JSON object fails here
    assert all(set(record) >= {"time", "level", "logger", "message"} for record in records)
    loggers = {record["logger"] for record in records}
    # the parent's lines, the worker child's, a migration's, a warning's (Celery's, to a root worker): one format
    expected = {"coordinator.serve", "coordinator.tasks.worker", "coordinator.tasks.runner"}
    assert expected | ({"py.warnings"} if os.geteuid() == 0 else set()) <= loggers, loggers
    assert any(name.startswith("celery") for name in loggers) and any(name.startswith("alembic") for name in loggers)


def test_text_by_default_without_library_chatter(home):
    stdout, stderr = _serve(home, job=False)
    assert stdout == ""
    lines = stderr.splitlines()
    assert lines and all(" INFO coordinator." in line or " WARNING " in line for line in lines), lines
    for chatter in ("celery@", "[config]", "[queues]", "alembic", "SecurityWarning", "superuser", "fork_posix"):
        assert chatter not in stderr, chatter
