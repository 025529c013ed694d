"""What an upload declares: every file of the package by name, size and sha256, checked before anything is stored.

Only names an expert package may hold, each once, sizes within the coordinator's limits, digests in the one
spelling the blob store uses, and the three files no package lacks. These checks need neither the database
nor the disk; what depends on them (ownership, versions, quotas, free space) is `admission`.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.settings import CoordinatorSettings
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, OPTIONAL_FILES, SHARD_INDEX_FILE, SIGNATURE_FILE, check_file_name

HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Declared:
    path: str
    size: int
    sha256: str


def allowed_name(path: str) -> bool:
    return path in (MANIFEST_FILE, SIGNATURE_FILE, SHARD_INDEX_FILE, *OPTIONAL_FILES) or path.endswith(".safetensors")


def check_declaration(files: list[Declared], limits: CoordinatorSettings) -> int:
    """Refuse a file list no package could have; returns the bytes it declares."""
    if not files or len(files) > limits.max_files:
        raise BarFedError("BAD_FILE_LIST", f"declare between 1 and {limits.max_files} files.")
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise BarFedError("BAD_FILE_LIST", "a file is declared twice; declare each file once.")
    for f in files:
        try:
            check_file_name(f.path)
        except ValueError as exc:
            raise BarFedError("BAD_PATH", f"{exc}.") from None
        if not allowed_name(f.path):
            raise BarFedError("FILE_NOT_ALLOWED", f"{f.path} is not a file an expert package may hold.")
        if f.size <= 0 or f.size > limits.max_file_bytes:
            raise BarFedError(
                "FILE_TOO_LARGE" if f.size > 0 else "BAD_FILE_LIST",
                f"{f.path} declares {f.size} bytes; files must hold 1 to {limits.max_file_bytes} bytes.",
            )
        if len(f.sha256) != 64 or not HEX.issuperset(f.sha256):
            raise BarFedError("BAD_DIGEST", f"{f.path}: sha256 must be 64 lowercase hex characters.")
    total = sum(f.size for f in files)
    if total > limits.max_package_bytes:
        raise BarFedError("PACKAGE_TOO_LARGE", f"the package exceeds {limits.max_package_bytes} bytes.")
    if MANIFEST_FILE not in paths or SIGNATURE_FILE not in paths or not any(p.endswith(".safetensors") for p in paths):
        raise BarFedError(
            "PACKAGE_INCOMPLETE",
            f"a package holds {MANIFEST_FILE}, {SIGNATURE_FILE} and at least one .safetensors.",
        )
    return total
