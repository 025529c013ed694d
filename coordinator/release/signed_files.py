"""A published release's files with their sizes and sha256, read from its signature, not by hashing its bytes.

``model.sig`` (model-signing: a DSSE envelope whose in-toto statement lists every file with its sha256) is
verified once per release against the coordinator's release key, with the signed digests standing in for the
files' own (so a multi-GB shard is not read again), which still checks the signature and that the directory holds
exactly the signed files, no symlinks. Releases are immutable once published, so the result is cached per release
directory; a release that does not verify is refused and not cached (an operator's repair is seen next call).
With an object store, the listing and ``model.sig`` come from the store and downloads are presigned URLs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from coordinator.runtime import Runtime
from coordinator.storage import release_prefix
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
    key = (str(directory.resolve()) if runtime.store is None else repr(runtime.store.location), number)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    if runtime.store is None:
        entries = _verified_entries(runtime, number, directory)
    else:
        entries = _verified_on_store(runtime, number)
    with _lock:
        if len(_cache) >= MAX_CACHED:
            _cache.pop(next(iter(_cache)))
        _cache[key] = entries
    return entries


def _verified_on_store(runtime: Runtime, number: int) -> dict[str, FileEntry]:
    """The store's listing of r``number`` checked against its signature, without reading the files: ``model.sig``
    is fetched into a directory of empty stand-ins named as the listing, which must be exactly the signed files."""
    sizes = runtime.store.sizes(release_prefix(number))
    if SIGNATURE_FILE not in sizes:
        raise BarFedError("UNKNOWN_RELEASE", f"r{number} has no files on the artifact store; list releases again.")
    strays = [name for name in sizes if name.startswith("/") or ".." in name.split("/") or "" in name.split("/")]
    if strays:  # a key that names no file inside the release (written by hand into the bucket): never a path here
        raise BarFedError(
            "RELEASE_UNVERIFIED",
            f"r{number} on the artifact store holds {strays[0][:200]!r}, which is no file of a release; the operator "
            "must remove it.",
        )
    with tempfile.TemporaryDirectory(prefix="barfed-release-") as tmp:
        shadow = Path(tmp)
        runtime.store.get_file(f"{release_prefix(number)}/{SIGNATURE_FILE}", shadow / SIGNATURE_FILE)
        for name in sizes:
            (shadow / name).parent.mkdir(parents=True, exist_ok=True)
            (shadow / name).touch()
        return _verified_entries(runtime, number, shadow, sizes)


def _verified_entries(
    runtime: Runtime, number: int, directory: Path, sizes: dict[str, int] | None = None
) -> dict[str, FileEntry]:
    """``sizes``: the files' sizes where ``directory`` holds stand-ins for them (a release on the store)."""
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
    size = sizes.__getitem__ if sizes is not None else lambda name: (directory / name).stat().st_size
    entries = {name: FileEntry(size(name), digest) for name, digest in sorted(signed.items())}
    entries[SIGNATURE_FILE] = FileEntry(signature.stat().st_size, file_sha256(signature))
    return dict(sorted(entries.items()))


def file_url(runtime: Runtime, number: int, name: str) -> tuple[str, FileEntry]:
    """A presigned URL of the file ``name`` of r``number`` on the store, only when the release lists it."""
    entry = _entry(runtime, number, name)
    return runtime.store.presigned_get(f"{release_prefix(number)}/{name}"), entry


def cached_dir(runtime: Runtime, number: int) -> Path:
    return runtime.settings.home / "cache" / "releases" / f"r{number}"


def local_copy(runtime: Runtime, number: int, names: tuple[str, ...] | None = None) -> Path:
    """A directory holding r``number``'s files ``names`` (all when None): the published directory under home when
    this machine has it, else a cache under ``home/cache`` filled from the store, each file checked against its
    signed sha256 (a release's files never change, so what is cached stays good). The cache keeps the releases
    used last within ``cache_max_gb``."""
    directory = release_dir(runtime, number)
    if runtime.store is None or (directory / SIGNATURE_FILE).is_file():
        return directory
    cache = cached_dir(runtime, number)
    entries = release_files(runtime, number)
    fetched = False
    for name in names if names is not None else tuple(entries):
        entry = _entry(runtime, number, name)
        if not (cache / name).is_file():
            runtime.store.get_file(f"{release_prefix(number)}/{name}", cache / name, entry.sha256)
            fetched = True
    os.utime(cache)  # the cache's recency
    if fetched:
        trim_cache(runtime, keep=cache)
    return cache


def keep_in_cache(runtime: Runtime, number: int) -> None:
    """With a store, a release this machine built and published moves from ``releases/`` into the cache (one
    rename): the store holds it, and the next build finds its parent here without a download."""
    directory, cache = release_dir(runtime, number), cached_dir(runtime, number)
    if runtime.store is None or not directory.is_dir():
        return
    if cache.exists():
        shutil.rmtree(directory)
    else:
        cache.parent.mkdir(parents=True, exist_ok=True)
        os.rename(directory, cache)
    trim_cache(runtime, keep=cache)


def trim_cache(runtime: Runtime, keep: Path) -> int:
    """Remove the releases used least recently (the directory's mtime) until the cache fits ``cache_max_gb``;
    ``keep`` and the latest release (the parent a build now running reads) stay. Returns how many went."""
    from coordinator.state import releases as state

    root = runtime.settings.home / "cache" / "releases"
    latest = state.latest_release(runtime.registry)
    kept = {keep, cached_dir(runtime, latest.number) if latest is not None else keep}
    sized = []
    for directory in root.glob("r*"):
        with contextlib.suppress(FileNotFoundError):  # another thread removed or renamed it meanwhile
            size = sum(_size(p) for p in directory.rglob("*"))
            sized.append((directory.stat().st_mtime, size, directory))
    total, removed = sum(size for _, size, _ in sized), 0
    for _, size, directory in sorted(sized):
        if total <= runtime.settings.cache_max_gb * 2**30:
            break
        if directory not in kept:
            shutil.rmtree(directory, ignore_errors=True)
            total, removed = total - size, removed + 1
    return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except FileNotFoundError:  # a download's temporary file, renamed meanwhile
        return 0


def _entry(runtime: Runtime, number: int, name: str) -> FileEntry:
    entry = release_files(runtime, number).get(name)
    if entry is None:
        raise BarFedError("UNKNOWN_FILE", f"r{number} has no file {name[:200]!r}; its file list names every one.")
    return entry


def file_path(runtime: Runtime, number: int, name: str) -> tuple[Path, FileEntry]:
    """The file ``name`` of r``number`` on disk, only when the release lists it (never a path built from input)."""
    entry = _entry(runtime, number, name)
    return release_dir(runtime, number) / name, entry
