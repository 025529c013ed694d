"""The documented standard-tool command checks what the coordinator checks: with ``--no-ignore-git-paths`` a
package carrying extra files under ``.git/`` fails, as our own verification does; the tool's default would
pass it, which is why README and protocol/signing.py spell the flag out."""

from __future__ import annotations

import subprocess
import sys

import pytest

from protocol import pki
from protocol.errors import BarFedError
from protocol.package import SIGNATURE_FILE
from protocol.signing import sign_directory, verify_directory


def _standard_verify(directory, public, *extra) -> subprocess.CompletedProcess:
    command = ["verify", "key", str(directory), "--signature", str(directory / SIGNATURE_FILE)]
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *command, "--public_key", str(public), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_documented_command_refuses_what_hides_under_git(tmp_path):
    key = pki.generate_private_key()
    key_path = pki.write_private_key(tmp_path / "org.key", key)
    public = tmp_path / "org.pub"
    public.write_bytes(pki.public_key_pem(key))
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.safetensors").write_bytes(b"weights")
    sign_directory(package, key_path)
    assert _standard_verify(package, public, "--no-ignore-git-paths").returncode == 0
    (package / ".git").mkdir()
    (package / ".git" / "payload").write_bytes(b"unsigned")
    assert _standard_verify(package, public).returncode == 0  # the tool's default looks away
    result = _standard_verify(package, public, "--no-ignore-git-paths")
    assert result.returncode != 0, result.stdout + result.stderr
    with pytest.raises(BarFedError):
        verify_directory(package, pki.public_key_pem(key))
