"""Sign and verify directories (expert packages, releases, the anchor) in the OpenSSF model-signing format.

The signature is a DSSE/in-toto bundle (``model.sig`` inside the directory) over the sha256 of every
other file, made with an EC P-256 key; anyone can check it with the standard tool::

    model_signing verify key DIR --signature DIR/model.sig --public_key org.pub

Verification is strict (git files are not ignored; any unsigned extra file fails it) and every
failure maps to its own stable code, so a node or an operator learns exactly what is wrong.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from model_signing import hashing, signing, verifying

from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, SIGNATURE_FILE, file_sha256

MAX_SIGNATURE_BYTES = 1024 * 1024


def _hashing_config() -> hashing.Config:
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def sign_directory(directory: str | Path, private_key: str | Path, passphrase: str | None = None) -> Path:
    """Write ``directory/model.sig`` over every other file in ``directory``."""
    directory = Path(directory)
    signature = directory / SIGNATURE_FILE
    signature.unlink(missing_ok=True)
    (
        signing.Config()
        .use_elliptic_key_signer(private_key=Path(private_key), password=passphrase)
        .set_hashing_config(_hashing_config())
        .sign(directory, signature)
    )
    return signature


def verify_directory(directory: str | Path, public_key_pem: bytes) -> None:
    """Check ``directory/model.sig`` against ``public_key_pem``; raise `BarFedError` with a precise code."""
    directory = Path(directory)
    signature = directory / SIGNATURE_FILE
    if not signature.is_file():
        raise BarFedError("SIGNATURE_MISSING", f"{directory} has no {SIGNATURE_FILE}; sign it before submitting.")
    if signature.stat().st_size > MAX_SIGNATURE_BYTES:
        raise BarFedError("SIGNATURE_MALFORMED", f"{SIGNATURE_FILE} is larger than {MAX_SIGNATURE_BYTES} bytes.")
    with tempfile.NamedTemporaryFile(suffix=".pub") as key_file:
        key_file.write(public_key_pem)
        key_file.flush()
        try:
            config = verifying.Config().use_elliptic_key_verifier(public_key=Path(key_file.name))
        except (ValueError, TypeError):
            raise BarFedError("KEY_INVALID", "the pinned public key is not an EC P-256 PEM key.") from None
        try:
            config.set_hashing_config(_hashing_config()).verify(directory, signature)
        except InvalidSignature:
            raise BarFedError(
                "SIGNATURE_INVALID", "the signature does not verify with the organization's pinned key."
            ) from None
        except ValueError as exc:
            raise _classify(str(exc), directory) from None
        except Exception as exc:  # a bundle that does not even parse (JSON, protobuf, base64)
            raise BarFedError(
                "SIGNATURE_MALFORMED",
                f"{SIGNATURE_FILE} is not a model-signing bundle ({type(exc).__name__}).",
            ) from None


def _signed_digests(signature: Path) -> dict[str, str]:
    """name → sha256 of every file the (already verified) bundle's in-toto statement covers."""
    bundle = json.loads(signature.read_text(encoding="utf-8"))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}


def _classify(message: str, directory: Path) -> BarFedError:
    """Name what differs between the signed content and the directory, once the signature itself verified."""
    if message.startswith("Key mismatch"):
        return BarFedError(
            "SIGNATURE_WRONG_KEY", "the package was signed with a key other than the organization's pinned key."
        )
    if not message.startswith("Signature mismatch"):
        return BarFedError("SIGNATURE_MALFORMED", f"{SIGNATURE_FILE} is not a valid bundle: {message[:200]}")
    try:
        signed = _signed_digests(directory / SIGNATURE_FILE)
    except (ValueError, KeyError, TypeError, AttributeError):
        return BarFedError("SIGNATURE_MALFORMED", f"{SIGNATURE_FILE} does not hold a readable in-toto statement.")
    actual = {
        p.relative_to(directory).as_posix(): file_sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != SIGNATURE_FILE
    }
    extra = sorted(set(actual) - set(signed))
    missing = sorted(set(signed) - set(actual))
    modified = sorted(name for name in set(signed) & set(actual) if signed[name] != actual[name])
    # The manifest binds the package's identity (org, domain, version, nonce): when it differs from the
    # signed one and so does anything else, the signature belongs to another package.
    if MANIFEST_FILE in modified and (extra or missing or len(modified) > 1):
        return BarFedError(
            "SIGNATURE_NOT_FOR_PACKAGE",
            "model.sig was made for another package (its manifest and files differ); use this package's own signature.",
        )
    if extra:
        return BarFedError("PACKAGE_UNSIGNED_FILE", f"{extra[0]} is not covered by the signature; remove it.")
    if missing:
        return BarFedError("PACKAGE_SIGNED_FILE_MISSING", f"{missing[0]} was signed but is missing; restore it.")
    changed = modified[0] if modified else "a file"
    return BarFedError("PACKAGE_FILE_MODIFIED", f"{changed} changed after it was signed; rebuild the package.")
