"""What a command imports before it does anything is paid on every run: in the demo, fifteen node processes.
The root CLI and the node's network commands (init, enroll, fetch-anchor, submit) load no ML library, and packaging
loads torch for the tensors but not transformers, trl, datasets or torch's compiler stack (ten seconds of imports
on a 2-core machine)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "trl", "datasets", "torch._dynamo")


def loaded_after(statement: str) -> set[str]:
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "from barfed.cli import app",
        "from barfed.pull import pull",
        "from contributor_node.identity import NodeIdentity",
        "from contributor_node.client import CoordinatorClient",
        "from contributor_node.setup import initialize",
        "from contributor_node.enrollment import Enrollment",
        "from contributor_node.anchor import fetch",
        "from contributor_node.upload import upload",
    ],
)
def test_the_root_command_and_the_network_commands_load_no_ml_library(statement):
    assert loaded_after(statement) == set()


def test_looking_for_each_commands_extra_imports_none_of_it():
    """`barfed node …` checks its extra is installed before it runs (barfed/cli.py) by finding modules, not loading
    them, so the check costs no import."""
    check = "from barfed.cli import COMMAND_EXTRAS, require_extras\nfor name in COMMAND_EXTRAS: require_extras(name)"
    assert loaded_after(check) == set()


def test_a_rerun_of_train_or_package_with_nothing_to_do_loads_no_ml_library():
    """`train` and `package` decide whether there is work before they import what does it."""
    assert loaded_after("import contributor_node.training, contributor_node.packaging") == set()


@pytest.mark.parametrize(
    "statement",
    [
        "from contributor_node.package import build_package",
        "from bar_model.calibration import stratified_sample",
    ],
)
def test_packaging_loads_no_training_library(statement):
    assert loaded_after(statement) <= {"torch"}
