"""What a newcomer meets first with `barfed coordinator`: help on every command and parameter, a one-line refusal
(and nothing created) on a home `init` did not make, one-line BAD_SETTINGS naming the source and field, and tables
that a pipe receives whole."""

from __future__ import annotations

import io

import pytest
import typer.main
from rich.table import Table
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.cli.common import _Console, table
from coordinator.settings import load_settings
from protocol.errors import BarFedError


def _commands(command=None, path=()):
    """(path, command) of every leaf command under `barfed coordinator`."""
    command = command or typer.main.get_command(app)
    children = getattr(command, "commands", None)
    if children is None:
        yield path, command
        return
    for name, child in sorted(children.items()):
        yield from _commands(child, (*path, name))


def _groups(command=None):
    command = command or typer.main.get_command(app)
    yield command
    for child in getattr(command, "commands", {}).values():
        if hasattr(child, "commands"):
            yield from _groups(child)


def test_every_command_and_parameter_has_help():
    missing = []
    for path, command in _commands():
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        for param in command.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {param.name}")
    for group in _groups():
        missing += [f"{group.name} {p.name}" for p in group.params if not (getattr(p, "help", None) or "").strip()]
        missing += [f"{group.name} {n}" for n, c in group.commands.items() if not (c.help or "").strip()]
    assert missing == []


def _invocation(path, command, home) -> list[str]:
    """The command with a value for each required parameter ("1" parses as any of them) and ``--home``."""
    args = [*path]
    for param in command.params:
        if param.required:
            args += ["1"] if param.param_type_name == "argument" else [param.opts[0], "1"]
    return [*args, "--home", str(home)]


@pytest.mark.parametrize("made", [False, True], ids=["missing home", "empty directory"])
def test_every_command_but_init_refuses_a_home_init_did_not_make_and_creates_nothing(tmp_path, monkeypatch, made):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("BARFED_COORD_HOME", raising=False)
    monkeypatch.delenv("BARFED_COORD_DATABASE_URL", raising=False)
    home = tmp_path / "coordinator"
    if made:
        home.mkdir()
    runner = CliRunner()
    checked = []
    for path, command in _commands():
        if path == ("init",):
            continue
        result = runner.invoke(app, _invocation(path, command, home))
        error = result.exception
        assert isinstance(error, BarFedError) and error.code == "NOT_INITIALIZED", (path, result.output, error)
        assert "\n" not in error.message and f"barfed coordinator init --home {home}" in error.message
        checked.append(" ".join(path))
    grouped = runner.invoke(app, ["--home", str(home), "releases", "list"])  # the group's --home, the same check
    assert getattr(grouped.exception, "code", None) == "NOT_INITIALIZED", grouped.output
    assert {"serve", "tokens create", "enrollments list", "releases list", "certs reissue-server"} <= set(checked)
    assert list(work.iterdir()) == []  # no ./.barfed/coordinator, nothing
    assert (list(home.iterdir()) == []) if made else not home.exists()


def test_bad_settings_are_one_line_naming_where_and_which_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "coordinator.toml"
    monkeypatch.setenv("BARFED_COORDINATOR_CONFIG", str(config))
    config.write_text('gate_tolerance = "lots"\nlisten_on = "0.0.0.0:1"\n')
    monkeypatch.setenv("BARFED_COORD_JOB_LEASE_S", "soon")

    def refusal() -> str:
        with pytest.raises(BarFedError) as refused:
            load_settings()
        assert refused.value.code == "BAD_SETTINGS" and "\n" not in refused.value.message
        assert "pydantic" not in refused.value.message
        return refused.value.message

    message = refusal()
    assert "$BARFED_COORD_JOB_LEASE_S: job_lease_s: Input should be a valid number" in message
    assert f"{config}: gate_tolerance: Input should be a valid number" in message
    assert f"{config}: listen_on: there is no such setting" in message
    monkeypatch.delenv("BARFED_COORD_JOB_LEASE_S")
    config.write_text("gate_tolerance = \n")
    assert refusal().startswith(f"{config} is not valid TOML (")


def test_off_a_terminal_a_table_is_never_cut():
    wide_id = "4f1c2a7e-9b3d-4e65-8a1f-0c2d3e4f5a6b"
    out = io.StringIO()
    console = _Console(file=out, force_terminal=False)
    listing: Table = table("id", "org", "state", "contact", "created")
    listing.add_row(wide_id, "an-organization-with-a-long-name", "pending", "x" * 60, "2026-01-01T00:00:00+00:00")
    console.print(listing)
    assert wide_id in out.getvalue() and "x" * 60 in out.getvalue() and "…" not in out.getvalue()
