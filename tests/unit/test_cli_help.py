"""Every command and parameter a newcomer meets under `barfed node`, `barfed pull`, `barfed demo` and `barfed model`
says what it is for in `--help` (the coordinator's commands have their own test)."""

from __future__ import annotations

import typer.main

from barfed.cli import app

WALKED = ("node", "pull", "demo", "model")


def _silent(command, path: str) -> list[str]:
    """The command at ``path`` and everything under it that `--help` would show without a word of help."""
    found = [] if (command.help or command.short_help) else [path]
    for param in command.params:
        if not getattr(param, "hidden", False) and not (getattr(param, "help", None) or "").strip():
            found.append(f"{path} {param.name}")
    for name, sub in getattr(command, "commands", {}).items():
        found += _silent(sub, f"{path} {name}")
    return found


def test_every_command_and_parameter_has_help():
    root = typer.main.get_command(app)
    assert set(WALKED) <= set(root.commands)
    silent = [line for name in WALKED for line in _silent(root.commands[name], f"barfed {name}")]
    assert silent == []
    assert len([p for p in root.params if p.name in ("verbose", "version") and p.help]) == 2
