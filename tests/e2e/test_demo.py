"""`barfed demo --quick`: the whole federation (coordinator, two orgs over mTLS, release r1 built by its worker)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_quick_demo_runs_the_federation_and_resumes(tmp_path):
    command = [sys.executable, "-m", "barfed.cli", "demo", "--quick", "--home", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "acme-labs/math v1: ACCEPTED" in result.stdout and "globex/tool_use v1: ACCEPTED" in result.stdout
    assert "published r1: math, tool_use" in result.stdout and "r1 (BAR)" in result.stdout
    work = tmp_path / "demo-micro"
    engine = create_engine(f"sqlite:///{work / 'coordinator' / 'registry.db'}")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT domain, version, status FROM experts ORDER BY domain")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("math", 1, "ACCEPTED"), ("tool_use", 1, "ACCEPTED")]
    for org in ("acme-labs", "globex"):
        assert (work / "nodes" / org / "org.key").stat().st_mode & 0o077 == 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ACCEPTED" not in again.stdout, "a resumed demo must not submit twice"
    assert "published r1" in again.stdout and not (work / "coordinator" / "releases" / "r2").exists()
    assert (work / "coordinator" / "releases" / "r1" / "model.sig").is_file()
