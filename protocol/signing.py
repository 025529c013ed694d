"""Sign and verify directories (expert packages, releases, the anchor) in the OpenSSF model-signing format.

The signature is a DSSE/in-toto bundle (``model.sig`` inside the directory) over the sha256 of every
other file, made with an EC P-256 key; anyone can check it with the standard tool::

    model_signing verify key DIR --signature DIR/model.sig --public_key org.pub --no-ignore-git-paths

(the tool ignores ``.git*`` paths unless told not to, and would pass a directory whose extra files hide there).
Verification is strict (git files are not ignored; any unsigned extra file fails it) and every
failure maps to its own stable code, so a node or an operator learns exactly what is wrong. A caller that
already knows the sha256 of the directory's files (the coordinator's blob store hashed them on arrival)
passes them as ``known_digests`` and the files are not read again; everything else is model_signing's own
verification.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from model_signing import hashing, signing, verifying
from model_signing._hashing import hashing as digests
from model_signing._hashing import io as file_hashers
from model_signing._hashing import memory

from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, SIGNATURE_FILE, file_sha256

MAX_SIGNATURE_BYTES = 1024 * 1024


def _hashing_config(known: dict[Path, str] | None = None) -> hashing.Config:
    config = _KnownDigestsConfig(known) if known else hashing.Config()
    return config.set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


class _KnownFileDigest(file_hashers.SimpleFileHasher):
    """A file whose sha256 is already established: answers it instead of reading the file."""

    def __init__(self, path: Path, sha256_hex: str) -> None:
        super().__init__(path, memory.SHA256())
        self._known = bytes.fromhex(sha256_hex)

    def compute(self) -> digests.Digest:
        return digests.Digest(self.digest_name, self._known)


class _KnownDigestsConfig(hashing.Config):
    """model_signing's hashing configuration, except that a file listed in ``known`` (absolute path → sha256) is
    not hashed again. The directory walk, ignored paths, symlink refusal and the comparison with the signed
    manifest all stay model_signing's; files it does not list, and other algorithms, are hashed as usual."""

    def __init__(self, known: dict[Path, str]) -> None:
        self._known = known  # before super().__init__(), which builds the file hasher factory
        super().__init__()

    def _build_file_hasher_factory(self, hashing_algorithm="sha256", chunk_size=1048576, max_workers=None):
        hash_file = super()._build_file_hasher_factory(hashing_algorithm, chunk_size, max_workers)
        if hashing_algorithm != "sha256":
            return hash_file

        def factory(path: Path) -> file_hashers.FileHasher:
            known = self._known.get(path)
            return hash_file(path) if known is None else _KnownFileDigest(path, known)

        return factory


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


def verify_directory(directory: str | Path, public_key_pem: bytes, known_digests: dict[str, str] | None = None) -> None:
    """Check ``directory/model.sig`` against ``public_key_pem``; raise `BarFedError` with a precise code.

    ``known_digests`` (relative path → sha256) must have been established over these exact bytes, e.g. by a
    content-addressed store; those files are compared by that digest instead of being hashed again.
    """
    directory = Path(directory)
    known = {directory / name: digest for name, digest in (known_digests or {}).items()}
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
            config.set_hashing_config(_hashing_config(known)).verify(directory, signature)
        except InvalidSignature:
            raise BarFedError(
                "SIGNATURE_INVALID", "the signature does not verify with the organization's pinned key."
            ) from None
        except ValueError as exc:
            raise _classify(str(exc), directory, known_digests or {}) from None
        except Exception as exc:  # a bundle that does not even parse (JSON, protobuf, base64)
            raise BarFedError(
                "SIGNATURE_MALFORMED",
                f"{SIGNATURE_FILE} is not a model-signing bundle ({type(exc).__name__}).",
            ) from None


def signed_digests(signature: Path) -> dict[str, str]:
    """name → sha256 of every file the bundle's in-toto statement covers; trust it only once the bundle verified
    (e.g. by passing it to `verify_directory` as ``known_digests``, which checks the signature over it)."""
    bundle = json.loads(signature.read_text(encoding="utf-8"))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}


def _classify(message: str, directory: Path, known_digests: dict[str, str]) -> BarFedError:
    """Name what differs between the signed content and the directory, once the signature itself verified."""
    if message.startswith("Key mismatch"):
        return BarFedError(
            "SIGNATURE_WRONG_KEY", "the package was signed with a key other than the organization's pinned key."
        )
    if not message.startswith("Signature mismatch"):
        return BarFedError("SIGNATURE_MALFORMED", f"{SIGNATURE_FILE} is not a valid bundle: {message[:200]}")
    try:
        signed = signed_digests(directory / SIGNATURE_FILE)
    except (ValueError, KeyError, TypeError, AttributeError):
        return BarFedError("SIGNATURE_MALFORMED", f"{SIGNATURE_FILE} does not hold a readable in-toto statement.")
    names = [p.relative_to(directory).as_posix() for p in sorted(directory.rglob("*")) if p.is_file()]
    actual = {
        name: known_digests.get(name) or file_sha256(directory / name) for name in names if name != SIGNATURE_FILE
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
