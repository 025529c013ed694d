"""A published release's files with their sizes and sha256, read from its signature, not by hashing its bytes.

``model.sig`` (model-signing: a DSSE envelope whose in-toto statement lists every file with its sha256) is
verified once per release against the coordinator's release key, with the signed digests standing in for the
files' own (so a multi-GB shard is not read again), which still checks the signature and that the directory holds
exactly the signed files, no symlinks. Releases are immutable once published, so the result is cached per release
directory; a release that does not verify is refused and not cached (an operator's repair is seen next call).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from coordinator.runtime import Runtime
from protocol.errors import BarFedError
from protocol.package import SIGNATURE_FILE, file_sha256
from protocol.signing import signed_digests, verify_directory


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


_cache: dict[tuple[str, int], dict[str, FileEntry]] = {}
_lock = threading.Lock()
MAX_CACHED = 256  # releases; each entry is a few dozen names


def release_dir(runtime: Runtime, number: int) -> Path:
    return runtime.settings.releases_dir / f"r{number}"


def release_files(runtime: Runtime, number: int) -> dict[str, FileEntry]:
    """path (relative, POSIX) → FileEntry for every file of r``number``, ``model.sig`` included (its own digest)."""
    directory = release_dir(runtime, number)
    key = (str(directory.resolve()), number)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    entries = _verified_entries(runtime, number, directory)
    with _lock:
        if len(_cache) >= MAX_CACHED:
            _cache.pop(next(iter(_cache)))
        _cache[key] = entries
    return entries


def _verified_entries(runtime: Runtime, number: int, directory: Path) -> dict[str, FileEntry]:
    signature = directory / SIGNATURE_FILE
    if not signature.is_file():
        raise BarFedError("UNKNOWN_RELEASE", f"r{number} has no files on this coordinator; list releases again.")
    public_key = runtime.keys.release_public_path.read_bytes()
    try:
        signed = signed_digests(signature)
        verify_directory(directory, public_key, known_digests=signed)
    except BarFedError as exc:
        raise BarFedError(
            "RELEASE_UNVERIFIED",
            f"r{number} on this coordinator does not verify with its release key ({exc.code}); "
            "the operator must restore the release directory (`barfed coordinator releases rebuild`).",
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BarFedError(
            "RELEASE_UNVERIFIED",
            f"r{number}'s {SIGNATURE_FILE} holds no readable in-toto statement; the operator must restore it.",
        ) from None
    entries = {name: FileEntry((directory / name).stat().st_size, digest) for name, digest in sorted(signed.items())}
    entries[SIGNATURE_FILE] = FileEntry(signature.stat().st_size, file_sha256(signature))
    return dict(sorted(entries.items()))


def file_path(runtime: Runtime, number: int, name: str) -> tuple[Path, FileEntry]:
    """The file ``name`` of r``number`` on disk, only when the release lists it (never a path built from input)."""
    entry = release_files(runtime, number).get(name)
    if entry is None:
        raise BarFedError("UNKNOWN_FILE", f"r{number} has no file {name[:200]!r}; its file list names every one.")
    return release_dir(runtime, number) / name, entry
