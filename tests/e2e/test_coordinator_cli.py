"""`barfed coordinator …` as an operator runs it."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def barfed(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "barfed.cli", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_init_invite_audit(micro, tmp_path):
    home = tmp_path / "coordinator"
    result = barfed("coordinator", "init", "--home", home, "--anchor", micro["branch"])
    assert result.returncode == 0, result.stderr
    assert "anchor sha256:" in result.stdout
    for key in ("ca.key", "server.key", "release.key"):
        assert stat.S_IMODE((home / "pki" / key).stat().st_mode) == 0o600
    assert (home / "anchor" / "model.sig").is_file() and (home / "registry.db").is_file()
    assert barfed("coordinator", "init", "--home", home, "--anchor", micro["branch"]).returncode == 0  # idempotent

    result = barfed("coordinator", "orgs", "invite", "acme-labs", "--domains", "math,code", "--home", home)
    assert result.returncode == 0 and len(result.stdout.strip()) >= 32, result.stderr
    result = barfed("coordinator", "orgs", "invite", "globex", "--domains", "math", "--home", home)
    assert result.returncode == 2 and "DOMAIN_TAKEN" in result.stderr and "Traceback" not in result.stderr
    result = barfed("coordinator", "audit-verify", "--home", home)
    assert result.returncode == 0 and "intact" in result.stdout


def test_init_refuses_a_dense_anchor(micro, tmp_path):
    result = barfed("coordinator", "init", "--home", tmp_path / "c", "--anchor", micro["anchor"])
    assert result.returncode == 2 and "WRONG_ARCHITECTURE" in result.stderr


def test_a_home_init_did_not_make_is_one_line_and_nothing_is_created(tmp_path):
    """The README's commands on a home nobody initialised: exit 2, one line saying what to run, no file anywhere."""
    work, home = tmp_path / "cwd", tmp_path / "never-initialised"
    work.mkdir()
    for args in (
        ("releases", "list", "--home", home),
        ("--home", home, "serve"),
        ("tokens", "create", "--role", "admin"),
    ):
        result = barfed("coordinator", *args, cwd=work)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("error [NOT_INITIALIZED]") and "barfed coordinator init --home" in lines[0]
    assert not home.exists() and list(work.iterdir()) == []  # no ./.barfed/coordinator either
