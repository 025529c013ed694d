"""Expert packages: built from a trained expert, signed; every kind of tampering caught by its own code."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from safetensors import safe_open

from bar_model.domains import get_domain
from contributor_node.package import build_package
from protocol import pki
from protocol.errors import BarFedError
from protocol.layout import disk_part
from protocol.package import SIGNATURE_FILE, file_sha256, read_package
from protocol.signing import sign_directory, verify_directory

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    out = {}
    for org in ("acme-labs", "globex"):
        key = pki.generate_private_key()
        out[org] = (pki.write_private_key(root / f"{org}.key", key), pki.public_key_pem(key))
    return out


@pytest.fixture(scope="module")
def package(micro_expert, keys, tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    math = get_domain("math")
    build_package(
        micro_expert,
        root / "pkg",
        org="acme-labs",
        version=1,
        private_key=keys["acme-labs"][0],
        calibration=math.sft(4),
        eval_set=math.eval_set(4),
        eval_scores={"test-vowels": 0.0},
    )
    build_package(micro_expert, root / "other", org="acme-labs", version=2, private_key=keys["acme-labs"][0])
    return root


@pytest.fixture
def copy(package, tmp_path):
    target = tmp_path / "pkg"
    shutil.copytree(package / "pkg", target)
    return target


def _code(directory, public_pem, known_digests=None) -> str:
    with pytest.raises(BarFedError) as err:
        verify_directory(directory, public_pem, known_digests=known_digests)
    return err.value.code


def _digests(directory) -> dict[str, str]:
    """What the coordinator's blob store knows: the sha256 of every file as it actually is."""
    return {p.name: file_sha256(p) for p in directory.iterdir() if p.is_file()}


def test_round_trip(package, keys):
    manifest = read_package(package / "pkg")
    verify_directory(package / "pkg", keys["acme-labs"][1])
    assert manifest.org == "acme-labs" and manifest.version == 1 and manifest.domain == "test-vowels"
    assert manifest.stages == ["mid", "sft", "rl"]
    assert {f.path for f in manifest.files} == {"model.safetensors", "calibration.jsonl", "eval.jsonl"}


def test_package_holds_exactly_the_tensors_the_stages_may_change(package):
    with safe_open(package / "pkg" / "model.safetensors", "pt") as fh:
        names = list(fh.keys())
    parts = {disk_part(n) for n in names}
    assert ("expert_ffn", 0) not in parts, "slot 0 is the anchor's and never shipped"
    assert ("expert_ffn", 1) in parts and ("router", None) in parts
    assert ("embeddings", None) in parts and ("shared", None) in parts  # rl unfreezes them


@pytest.mark.parametrize("known", [False, True], ids=["hashed", "known-digests"])
@pytest.mark.parametrize("victim", ["expert.json", "model.safetensors", "calibration.jsonl", "eval.jsonl"])
def test_one_byte_changed_in_any_file(copy, keys, victim, known):
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / victim).write_bytes(bytes(data))
    assert _code(copy, keys["acme-labs"][1], _digests(copy) if known else None) == "PACKAGE_FILE_MODIFIED"


def test_known_digests_verify_without_reading_the_files(copy, keys):
    """The coordinator's path: its blob store's digests stand in for hashing, so only they are compared."""
    known = _digests(copy)
    verify_directory(copy, keys["acme-labs"][1], known_digests=known)
    (copy / "model.safetensors").write_bytes(b"not read again")  # the digests are trusted for these bytes
    verify_directory(copy, keys["acme-labs"][1], known_digests=known)
    assert _code(copy, keys["acme-labs"][1]) == "PACKAGE_FILE_MODIFIED"  # without them the file is hashed


def test_known_digests_leave_every_other_check_to_model_signing(copy, package, keys):
    (copy / "extra.safetensors").write_bytes(b"sneaky")  # not among the known digests: hashed, and unsigned
    assert _code(copy, keys["acme-labs"][1], _digests(copy)) == "PACKAGE_UNSIGNED_FILE"
    (copy / "extra.safetensors").unlink()
    (copy / "eval.jsonl").unlink()
    assert _code(copy, keys["acme-labs"][1], _digests(copy)) == "PACKAGE_SIGNED_FILE_MISSING"
    shutil.copy(package / "other" / SIGNATURE_FILE, copy / SIGNATURE_FILE)
    assert _code(copy, keys["acme-labs"][1], _digests(copy)) == "SIGNATURE_NOT_FOR_PACKAGE"
    sign_directory(copy, keys["globex"][0])
    assert _code(copy, keys["acme-labs"][1], _digests(copy)) == "SIGNATURE_WRONG_KEY"


def test_file_added(copy, keys):
    (copy / "extra.safetensors").write_bytes(b"sneaky")
    assert _code(copy, keys["acme-labs"][1]) == "PACKAGE_UNSIGNED_FILE"
    (copy / "extra.safetensors").unlink()
    (copy / ".gitignore").write_text("*\n")  # git files are not exempt
    assert _code(copy, keys["acme-labs"][1]) == "PACKAGE_UNSIGNED_FILE"


def test_file_removed(copy, keys):
    (copy / "eval.jsonl").unlink()
    assert _code(copy, keys["acme-labs"][1]) == "PACKAGE_SIGNED_FILE_MISSING"


def test_signature_from_another_orgs_key(copy, keys):
    sign_directory(copy, keys["globex"][0])
    assert _code(copy, keys["acme-labs"][1]) == "SIGNATURE_WRONG_KEY"
    verify_directory(copy, keys["globex"][1])  # it is a fine signature, just not acme's


def test_swapped_signature_file(copy, package, keys):
    shutil.copy(package / "other" / SIGNATURE_FILE, copy / SIGNATURE_FILE)
    assert _code(copy, keys["acme-labs"][1]) == "SIGNATURE_NOT_FOR_PACKAGE"


def test_missing_and_garbage_signature(copy, keys):
    (copy / SIGNATURE_FILE).write_text('{"not": "a bundle"}')
    assert _code(copy, keys["acme-labs"][1]) == "SIGNATURE_MALFORMED"
    (copy / SIGNATURE_FILE).unlink()
    assert _code(copy, keys["acme-labs"][1]) == "SIGNATURE_MISSING"


def test_forged_signature_bytes(copy, keys):
    import base64
    import json

    bundle = json.loads((copy / SIGNATURE_FILE).read_text())
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (copy / SIGNATURE_FILE).write_text(json.dumps(bundle))
    assert _code(copy, keys["acme-labs"][1]) in ("SIGNATURE_INVALID", "SIGNATURE_MALFORMED")


def test_structural_check_catches_a_lying_manifest(copy):
    (copy / "calibration.jsonl").write_text("changed\n")
    with pytest.raises(BarFedError) as err:
        read_package(copy)
    assert err.value.code in ("PACKAGE_FILE_SIZE", "PACKAGE_FILE_DIGEST")


def test_known_digests_replace_hashing_but_are_still_compared(copy):
    """The coordinator passes its blob store's digests; one that disagrees with the manifest is refused."""
    manifest = read_package(copy)
    known = {f.path: f.sha256 for f in manifest.files}
    assert read_package(copy, known_digests=known) == manifest
    victim = manifest.files[0].path
    with pytest.raises(BarFedError) as err:
        read_package(copy, known_digests={**known, victim: "0" * 64})
    assert err.value.code == "PACKAGE_FILE_DIGEST"


def test_standard_model_signing_cli_verifies_our_package(package, keys, tmp_path):
    public = tmp_path / "acme.pub"
    public.write_bytes(keys["acme-labs"][1])
    pkg = package / "pkg"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_signing",
            "verify",
            "key",
            str(pkg),
            "--signature",
            str(pkg / SIGNATURE_FILE),
            "--public_key",
            str(public),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in (result.stdout + result.stderr).lower()
