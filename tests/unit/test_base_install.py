"""Installs per role (issue 27): the base install (no extra) runs the root command and `barfed pull`, declares none
of the node's or the coordinator's distributions, and every command that needs an extra says which one, on one
line, exit 2. The real pull with only the base is in tests/e2e/test_pull_base_install.py."""

from __future__ import annotations

import importlib.metadata as metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from barfed.cli import COMMAND_EXTRAS, EXTRA_MODULES, require_extras
from tests.base_install import EXTRAS_ONLY, run_base

DISTRIBUTION = "bar-federation"


def requirements(name: str, extras: tuple[str, ...] = ()) -> list[Requirement]:
    """What ``name`` declares for its base and ``extras``, in this environment (markers evaluated)."""
    found = []
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in ("", *extras)):
            found.append(requirement)
    return found


def closure(name: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Every distribution ``pip install name[extras]`` brings, read from the installed metadata."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    pending = [(canonicalize_name(name), extras)]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in requirements(*current):
            pending.append((canonicalize_name(requirement.name), tuple(sorted(requirement.extras))))
    return {dist for dist, _ in seen}


def distributions_of(modules) -> set[str]:
    installed = metadata.packages_distributions()
    return {canonicalize_name(dist) for module in modules for dist in installed.get(module, [])}


def test_the_base_declares_none_of_the_extras_distributions():
    base = [r for r in metadata.requires(DISTRIBUTION) or [] if "extra ==" not in r]
    assert base, "the base declares its own requirements"
    heavy = distributions_of(EXTRAS_ONLY)
    assert {"torch", "fastapi", "celery", "sqlalchemy", "grpcio"} <= heavy
    assert closure(DISTRIBUTION) & heavy == set(), "a base requirement brings a distribution of an extra"
    assert {"torch", "grpcio"} <= closure(DISTRIBUTION, ("node",))
    assert {"torch", "fastapi", "celery", "sqlalchemy"} <= closure(DISTRIBUTION, ("coordinator",))
    assert heavy <= closure(DISTRIBUTION, ("test",)), "test must install everything"


def test_the_extras_check_knows_each_extra_by_modules_that_extra_declares():
    """The modules `barfed` looks for are what the extra installs, so a full install passes every check."""
    for extra, modules in EXTRA_MODULES.items():
        assert distributions_of(modules) <= closure(DISTRIBUTION, (extra,)), extra
    for command in COMMAND_EXTRAS:
        require_extras(command)


def test_the_base_runs_the_root_command_pull_and_every_help():
    shown = run_base("--help")
    assert shown.returncode == 0 and "pull" in shown.stdout and "node" in shown.stdout, shown.stderr
    version = run_base("--version")
    assert version.returncode == 0 and version.stdout == f"barfed {metadata.version(DISTRIBUTION)}\n", version.stderr
    pull = run_base("pull", "--help")
    assert pull.returncode == 0 and "--coordinator-key" in pull.stdout, pull.stderr
    node = run_base("node", "status", "--help")  # what installing the node extra would bring
    assert node.returncode == 0 and "--json" in node.stdout, node.stderr


@pytest.mark.parametrize(
    ("args", "extras"),
    [
        (["node", "status"], "node"),
        (["model", "domains"], "node"),
        (["coordinator", "orgs", "list"], "node,coordinator"),
        (["demo", "--quick"], "node,coordinator"),
    ],
)
def test_a_command_without_its_extra_names_it_on_one_line(args, extras, tmp_path):
    result = run_base(*args, env={"BARFED_NODE_HOME": str(tmp_path), "BARFED_COORD_HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error [MISSING_EXTRA] barfed {args[0]} needs the "), result.stderr
    assert result.stderr.rstrip().endswith(f'pip install "bar-federation[{extras}]"'), result.stderr
    assert list(tmp_path.iterdir()) == []
