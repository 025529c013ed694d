"""The house rules of the code base, read from the code itself (``ast``), so a change that breaks one fails here.

- Packages depend one way: protocol ← bar_model ← contributor_node, coordinator ← barfed; the coordinator never
  imports the node. Inside the coordinator, the process is assembled in `coordinator/serve.py` alone; `grpc/` and
  `api/` do not import each other; `release/`, `verification/`, `uploads/` and `state/` know nothing of Celery,
  the transports or the CLI; `tasks/` knows no transport; only the root `barfed` command imports a CLI.
- No import cycle, counting imports inside functions too (so none can dodge one).
- Importing any module reads no settings and creates nothing, in an empty working directory.
- No file of `coordinator/`, `contributor_node/` or `barfed/` is longer than 350 lines.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "bar_model", "contributor_node", "coordinator", "barfed")
GENERATED = ("_pb2.py", "_pb2_grpc.py")
ALLOWED = {  # package -> the project's packages it may import (itself included)
    "protocol": {"protocol"},
    "bar_model": {"protocol", "bar_model"},
    "contributor_node": {"protocol", "bar_model", "contributor_node"},
    "coordinator": {"protocol", "bar_model", "coordinator"},
    "barfed": set(PACKAGES),
}
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name.endswith(GENERATED):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every project module ``name`` imports, wherever the statement stands (functions, TYPE_CHECKING blocks)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _importers(target: str) -> set[str]:
    return {name for name, deps in GRAPH.items() if any(d == target or d.startswith(f"{target}.") for d in deps)}


def test_packages_depend_one_way():
    wrong = [
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        for dep in deps
        if dep.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert wrong == []


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("coordinator.state", ("coordinator.tasks", "coordinator.release", "coordinator.uploads", "coordinator.api")),
        ("coordinator.release", ("coordinator.tasks", "coordinator.api", "coordinator.grpc", "coordinator.cli")),
        ("coordinator.verification", ("coordinator.tasks", "coordinator.api", "coordinator.grpc", "coordinator.cli")),
        ("coordinator.uploads", ("coordinator.tasks", "coordinator.api", "coordinator.grpc", "coordinator.cli")),
        ("coordinator.tasks", ("coordinator.api", "coordinator.grpc", "coordinator.cli", "coordinator.serve")),
        ("coordinator.grpc", ("coordinator.api", "coordinator.cli", "coordinator.serve")),
        ("coordinator.api", ("coordinator.grpc", "coordinator.cli", "coordinator.serve")),
    ],
)
def test_coordinator_layers(layer, forbidden):
    wrong = [
        f"{name} imports {dep}"
        for name, deps in GRAPH.items()
        if name == layer or name.startswith(f"{layer}.")
        for dep in deps
        if any(dep == f or dep.startswith(f"{f}.") for f in forbidden)
    ]
    assert wrong == []


def test_one_place_assembles_the_coordinator_and_only_the_root_command_imports_a_cli():
    assert {name for name in _importers("coordinator.grpc") if not name.startswith("coordinator.grpc")} == {
        "coordinator.serve"
    }
    assert _importers("coordinator.serve") <= {"coordinator.embedded", "coordinator.cli.service"}
    for cli in ("coordinator.cli", "contributor_node.cli", "bar_model.cli"):
        outside = {name for name in _importers(cli) if not name.startswith(cli)}
        assert outside <= {"barfed.cli", "bar_model.__main__"}, f"{cli} is imported by {outside}"


def test_only_the_task_layer_imports_celery():
    users = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == "celery" or n.startswith("celery.") for n in names):
                users.add(name)
    assert users and all(name.startswith("coordinator.tasks.") for name in users), users


def test_no_import_cycle():
    """Tarjan's strongly connected components over every import, function-level ones included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in GRAPH:
        if node not in index:
            visit(node)
    assert cycles == []


def test_no_long_files():
    long = {
        str(path.relative_to(ROOT)): count
        for name, path in MODULES.items()
        if name.split(".")[0] in ("coordinator", "contributor_node", "barfed")
        and (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_importing_any_module_reads_no_settings_and_creates_nothing(tmp_path):
    """In a fresh interpreter, in an empty directory with an empty HOME: constructing any pydantic-settings class
    fails loudly, and afterwards the directory and HOME must still be empty."""
    work, home = tmp_path / "cwd", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    skip = {"bar_model.__main__", "protocol.generate"}  # `python -m` entry points: running is their purpose
    migrations = "coordinator.state.migrations."  # scripts Alembic runs, not modules to import
    modules = sorted(name for name in MODULES if name not in skip and not name.startswith(migrations))
    probe = (
        "import importlib, pydantic_settings\n"
        "def refuse(self, *a, **k):\n"
        "    raise RuntimeError(f'{type(self).__name__} read at import')\n"
        "pydantic_settings.BaseSettings.__init__ = refuse\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
    )
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(home / ".config")}
    env = {k: v for k, v in env.items() if not k.startswith(("BARFED_", "HF_HOME"))}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(work.iterdir()) == [] and list(home.iterdir()) == []
