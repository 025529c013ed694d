"""`barfed coordinator releases …` as an operator runs it, on a coordinator home with two published releases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coordinator.setup import initialize
from tests.integration.release_helpers import accept, build, coordinator_for, package, release_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_list_show_promote_rollback_diff_rebuild_and_build(micro, say_experts, tmp_path):
    settings = release_settings(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    accept(coordinator, package(coordinator, say_experts["no-weak"], "org-no", 1, tmp_path / "p1"), "org-no")
    build(coordinator, tmp_path)
    accept(coordinator, package(coordinator, say_experts["no"], "org-no", 2, tmp_path / "p2"), "org-no")
    build(coordinator, tmp_path)
    coordinator.registry.dispose()
    env = {
        **os.environ,
        "BARFED_COORD_HOME": str(settings.home),
        "BARFED_COORD_DATABASE_URL": settings.db_url,
        "BARFED_COORD_BROKER_URL": "redis://127.0.0.1:6379/0",
        "BARFED_COORD_TASK_QUEUE": "test-releases-cli",
    }

    def barfed(*args):
        return subprocess.run(
            [sys.executable, "-m", "barfed.cli", "coordinator", "releases", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    listed = barfed("list")
    assert listed.returncode == 0, listed.stderr
    assert "r1" in listed.stdout and "r2" in listed.stdout and "test-say-no v2" in listed.stdout

    shown = barfed("show", "latest")
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    assert manifest["name"] == "r2" and manifest["parent"] == 1 and manifest["router"]["incremental"]

    promoted = barfed("promote", "r2", "--channel", "stable")
    assert promoted.returncode == 0 and "stable: r2 (was r1)" in promoted.stdout, promoted.stderr
    rolled = barfed("rollback", "stable")
    assert rolled.returncode == 0 and "stable: r1 (was r2)" in rolled.stdout, rolled.stderr
    again = barfed("rollback", "stable")
    assert again.returncode == 2 and "NOTHING_TO_ROLL_BACK" in again.stderr and "Traceback" not in again.stderr
    same = barfed("promote", "r1", "--channel", "stable")  # already there: nothing moves, nothing to roll back
    assert same.returncode == 0 and "stable already points at r1; nothing changed" in same.stdout, same.stderr
    assert "NOTHING_TO_ROLL_BACK" in barfed("rollback", "stable").stderr

    diff = barfed("diff", "r1", "r2")
    assert diff.returncode == 0 and "changed test-say-no v1 → v2" in diff.stdout, diff.stderr

    rebuilt = barfed("rebuild", "r2")
    assert rebuilt.returncode == 0 and "rebuilt bit for bit" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr

    for bad in (("show", "r99"), ("promote", "r1", "--channel", "latest"), ("build", "--pin", "math")):
        refused = barfed(*bad)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, (bad, refused.stderr)
        assert any(code in refused.stderr for code in ("UNKNOWN_RELEASE", "BAD_CHANNEL", "BAD_PIN")), refused.stderr

    unchanged = barfed("build")  # r2 holds the newest accepted experts already: refused, nothing queued
    assert unchanged.returncode == 2 and "NOTHING_CHANGED" in unchanged.stderr, unchanged.stdout + unchanged.stderr
    queued = barfed("build", "--pin", "test-say-no=1")
    assert queued.returncode == 0 and "build queued as job" in queued.stdout, queued.stderr
    from coordinator.state import jobs
    from coordinator.state.db import Registry

    registry = Registry(settings.db_url)
    queued_jobs = jobs.list_jobs(registry, kind="build", state="queued")
    registry.dispose()
    assert [j.params["pins"] for j in queued_jobs] == [{"test-say-no": 1}]
