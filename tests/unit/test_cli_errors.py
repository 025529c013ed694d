"""What a newcomer's mistakes end in, `barfed` run as a user runs it (a subprocess): a refusal is one line
`error [CODE] what to do` and exit 2, never a traceback, whatever was wrong (a setting, a file, a variable); a
command line that was never valid is Click's usage message and exit 64 (EX_USAGE), so a script can tell the two
apart; `--help` and `--version` exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from contributor_node.settings import write_config


def barfed(*args: str, cwd=None, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BARFED_")}
    return subprocess.run(
        [sys.executable, "-m", "barfed.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def refusal(result: subprocess.CompletedProcess) -> tuple[str, str]:
    """(code, message) of the one line a refusal prints; exit status 2."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    code, message = re.fullmatch(r"error \[([A-Z_]+)\] (.*)", lines[0]).groups()
    return code, message


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("node", "status", "--bogus"), "No such option: --bogus"),
        (("pull", "--to", "x"), "Missing argument"),
        (("node", "init", "--org", "acme"), "Missing option"),
    ],
)
def test_a_usage_error_is_clicks_message_and_exit_64(args, says, tmp_path):
    result = barfed(*args, cwd=tmp_path)
    assert result.returncode == 64, result.stdout + result.stderr
    assert "Usage:" in result.stderr and says in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_and_version_exit_0(tmp_path):
    assert barfed("--help", cwd=tmp_path).returncode == 0
    shown = barfed("--version", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.strip() == f"barfed {version('bar-federation')}"
    (tmp_path / "barfed.toml").write_text("log_level = [\n")
    assert barfed("--version", cwd=tmp_path).returncode == 0  # before any setting is read


@pytest.mark.parametrize("command", ["status", "export-key", "fetch-anchor", "watch"])
def test_a_missing_node_home_is_one_line_and_nothing_is_created(command, tmp_path):
    home = tmp_path / "node"
    code, message = refusal(barfed("node", "--home", str(home), command, cwd=tmp_path))
    assert code == "NOT_INITIALIZED" and "barfed node init" in message
    assert list(tmp_path.iterdir()) == []


def test_a_bad_barfed_toml_or_variable_is_named(tmp_path):
    (tmp_path / "barfed.toml").write_text("log_level = [\n")
    code, message = refusal(barfed("node", "status", cwd=tmp_path))
    assert code == "BAD_CONFIG" and "barfed.toml is not valid TOML" in message
    (tmp_path / "barfed.toml").write_text('log_level = "INFO"\nlog_colour = "red"\n')
    code, message = refusal(barfed("node", "status", cwd=tmp_path))
    assert code == "BAD_CONFIG" and "log_colour in barfed.toml" in message
    (tmp_path / "barfed.toml").unlink()
    code, message = refusal(barfed("node", "status", cwd=tmp_path, BARFED_LOG_LEVEL="LOUD"))
    assert code == "BAD_CONFIG" and message.startswith("BARFED_LOG_LEVEL='LOUD'")
    code, message = refusal(barfed("node", "status", cwd=tmp_path, BARFED_CONFIG=str(tmp_path / "nowhere.toml")))
    assert code == "BAD_CONFIG" and "nowhere.toml" in message


def test_a_bad_node_variable_is_blamed_on_the_variable_and_a_bad_node_toml_on_the_file(tmp_path):
    home = tmp_path / "node"
    home.mkdir()
    config = write_config(home, {"org_id": "acme", "service_address": "127.0.0.1:1", "enroll_address": "127.0.0.1:2"})
    code, message = refusal(barfed("node", "--home", str(home), "status", BARFED_NODE_RETRY_FOR_S="abc"))
    assert code == "BAD_NODE_CONFIG" and message.startswith("BARFED_NODE_RETRY_FOR_S='abc'")
    assert "node.toml" not in message
    config.write_text('org_id = "acme\n')
    code, message = refusal(barfed("node", "--home", str(home), "status"))
    assert code == "BAD_NODE_CONFIG" and f"{config} is not valid TOML" in message
    config.write_text('org_id = "acme"\n')
    code, message = refusal(barfed("node", "--home", str(home), "status"))
    assert code == "BAD_NODE_CONFIG" and f"service_address in {config}" in message


def test_pull_with_a_ca_that_is_no_pem_is_one_line(tmp_path):
    (tmp_path / "ca.pem").write_text("this is not a certificate\n")
    result = barfed("pull", "r1", "--to", "model", "--api", "https://127.0.0.1:1", "--ca", "ca.pem", cwd=tmp_path)
    code, message = refusal(result)
    assert code == "BAD_CA" and "ca.pem is not a PEM CA certificate" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem"]
