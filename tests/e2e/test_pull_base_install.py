"""A user with only the base install (`pip install bar-federation`, no extra) pulls a real release: the server runs
here with everything, the `barfed pull` subprocess without the node's or the coordinator's stacks
(tests/base_install.py). The release arrives whole and verifies against the release key."""

from __future__ import annotations

import pytest

from coordinator.embedded import running_coordinator
from protocol.signing import verify_directory
from tests.base_install import run_base
from tests.e2e.test_pull import published, release_files

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
__all__ = ["published"]  # the fixture test_pull.py serves r1 with, used here by name


def test_a_pull_only_install_pulls_and_verifies_a_release(published, tmp_path):
    coordinator, token = published
    settings = coordinator.settings
    target = tmp_path / "model"
    with running_coordinator(settings) as address:
        pulled = run_base(
            *("pull", "stable", "--to", str(target), "--api", address.api, "--ca", str(settings.pki_dir / "ca.pem")),
            env={"XDG_CONFIG_HOME": str(tmp_path / "config"), "BARFED_TOKEN": token},
            timeout=600,
        )
    assert pulled.returncode == 0, pulled.stderr
    assert "Pinned the release key" in pulled.stdout and "AutoModelForCausalLM.from_pretrained" in pulled.stdout
    assert {p.name: p.read_bytes() for p in target.iterdir()} == release_files(settings)
    assert not (tmp_path / "model.partial").exists()
    verify_directory(target, coordinator.keys.release_public_path.read_bytes())
