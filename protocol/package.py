"""The expert package: what an organization submits, and how anyone checks its structure.

A package is a directory::

    expert.json          the manifest below (canonical JSON), signed with the rest
    *.safetensors        the tensors the declared stages may change (protocol.layout), nothing else
    calibration.jsonl    optional router-calibration sample: {"prompt", "response"} per line
    eval.jsonl           optional held-out eval set: {"prompt", "response", "answer"} per line
    model.sig            the OpenSSF model-signing bundle over all of the above (protocol.signing)

Every fact that must be bound to the signature (org, domain, version, anchor, nonce) is in
``expert.json``, which the signature covers; the signature format itself binds no name or version.
Parsing is strict: unknown fields, duplicate keys, NaN, unsafe paths and oversized input are refused
with ``MANIFEST_INVALID`` (or ``MANIFEST_TOO_LARGE``), never with another exception.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocol.errors import BarFedError
from protocol.layout import STAGES

MANIFEST_FILE = "expert.json"
SIGNATURE_FILE = "model.sig"
CALIBRATION_FILE = "calibration.jsonl"  # the router's sample of the domain: {"prompt", "response"} per line
EVAL_FILE = "eval.jsonl"  # the organization's held-out set: {"prompt", "response", "answer"} per line
OPTIONAL_FILES = (CALIBRATION_FILE, EVAL_FILE)
SHARD_INDEX_FILE = "model.safetensors.index.json"
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_FILES = 256
MAX_FILE_BYTES = 64 * 1024**3
MAX_PATH_CHARS = 200
MAX_JSON_DEPTH = 16
HASH_CHUNK = 4 * 1024 * 1024

_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def check_file_name(path: str) -> str:
    """A package is a flat directory: every entry a plain file name (no '/', no '..', nothing hidden or odd)."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        raise ValueError(f"file names have 1-{MAX_PATH_CHARS} characters")
    if not _FILE_NAME.fullmatch(path):
        raise ValueError(f"unsafe file name {path[:80]!r}: use letters, digits, '.', '_' and '-', no directories")
    return path


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()], default=level)
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value], default=level)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    return level


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    _depth(value)
    return value


SafePath = Annotated[str, AfterValidator(check_file_name)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_json)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PackageFile(_Strict):
    path: SafePath
    size: int = Field(ge=0, le=MAX_FILE_BYTES)
    sha256: Sha256Hex


class ExpertManifest(_Strict):
    """``expert.json``: who made the expert, for which domain and anchor, how, and what is in the package."""

    schema_version: Literal[1] = 1
    org: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    domain: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    version: int = Field(ge=1, le=2**31 - 1)
    anchor_fingerprint: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    stages: list[Literal["mid", "sft", "rl"]] = Field(min_length=1, max_length=3)
    recipe: JsonObject = Field(default_factory=dict)
    stage_summaries: JsonObject = Field(default_factory=dict)
    eval_scores: dict[Annotated[str, Field(max_length=64)], Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict, max_length=256
    )
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    created_at: datetime
    files: list[PackageFile] = Field(min_length=1, max_length=MAX_FILES)

    @field_validator("stages")
    @classmethod
    def _stages_in_order(cls, stages: list[str]) -> list[str]:
        if [STAGES.index(s) for s in stages] != sorted({STAGES.index(s) for s in stages}):
            raise ValueError("stages must be distinct and in the order mid, sft, rl")
        return stages

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at needs a time zone (use UTC, e.g. 2026-01-01T00:00:00Z)")
        return value

    @field_validator("files")
    @classmethod
    def _files_unique_and_known(cls, files: list[PackageFile]) -> list[PackageFile]:
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise ValueError("a file is listed twice")
        for path in paths:
            if path in (MANIFEST_FILE, SIGNATURE_FILE):
                raise ValueError(f"{path} cannot list itself")
            if not (path.endswith(".safetensors") or path in (*OPTIONAL_FILES, SHARD_INDEX_FILE)):
                raise ValueError(f"{path} is not a file an expert package may hold")
        if not any(p.endswith(".safetensors") for p in paths):
            raise ValueError("the package holds no safetensors file")
        return files

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def canonical_json(value: BaseModel | dict) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same manifest always has the same bytes."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def parse_manifest(data: bytes) -> ExpertManifest:
    """Parse untrusted bytes as ``expert.json``; only `BarFedError` can come out of here."""
    if not isinstance(data, bytes | bytearray):
        raise BarFedError("MANIFEST_INVALID", "the manifest must be bytes.")
    if len(data) > MAX_MANIFEST_BYTES:
        raise BarFedError("MANIFEST_TOO_LARGE", f"expert.json is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}.")
    try:
        raw = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BarFedError("MANIFEST_INVALID", f"expert.json is not valid JSON ({exc}).") from None
    if not isinstance(raw, dict):
        raise BarFedError("MANIFEST_INVALID", "expert.json must hold a JSON object.")
    try:
        _depth(raw)
        # Validate the bytes in strict JSON mode: ISO strings become datetimes, nothing else is coerced.
        return ExpertManifest.model_validate_json(bytes(data))
    except (ValidationError, ValueError, RecursionError, TypeError) as exc:
        raise BarFedError("MANIFEST_INVALID", f"expert.json is not a valid expert manifest: {_summary(exc)}") from None


def _summary(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return (
            "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()[:5]
            )
            + "."
        )
    return f"{exc}."


def file_sha256(path: Path) -> str:
    """Streamed sha256 of a file (constant memory, whatever its size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path, paths: list[str]) -> list[PackageFile]:
    return [PackageFile(path=p, size=(directory / p).stat().st_size, sha256=file_sha256(directory / p)) for p in paths]


def read_package(
    directory: str | Path, known_digests: dict[str, str] | None = None, *, check_digests: bool = True
) -> ExpertManifest:
    """Parse ``expert.json``; check the directory holds exactly its files, with their sizes and digests.

    This is the structural check; the signature (protocol.signing) is checked separately. ``known_digests``
    (path -> sha256) are digests the caller has already established, e.g. a content-addressed store's: they are
    compared instead of hashing those files again. ``check_digests=False`` leaves the digests to someone who
    hashes the bytes anyway (the coordinator, as it receives them).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_FILE
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise BarFedError("PACKAGE_NO_MANIFEST", f"{directory} has no {MANIFEST_FILE}; is it an expert package?")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BarFedError("MANIFEST_TOO_LARGE", f"{MANIFEST_FILE} is larger than {MAX_MANIFEST_BYTES} bytes.")
    manifest = parse_manifest(manifest_path.read_bytes())
    listed = {f.path: f for f in manifest.files}
    present = set()
    for entry in directory.iterdir():
        if entry.name in (MANIFEST_FILE, SIGNATURE_FILE):
            continue
        if entry.is_symlink() or not entry.is_file():
            raise BarFedError("PACKAGE_EXTRA_FILE", f"{entry.name} is not a plain file; a package holds plain files.")
        present.add(entry.name)
    if extra := sorted(present - set(listed)):
        raise BarFedError("PACKAGE_EXTRA_FILE", f"{extra[0]} is in the package but not in {MANIFEST_FILE}.")
    if missing := sorted(set(listed) - present):
        raise BarFedError("PACKAGE_FILE_MISSING", f"{missing[0]} is listed in {MANIFEST_FILE} but missing.")
    for path, entry in listed.items():
        target = directory / path
        if target.stat().st_size != entry.size:
            raise BarFedError(
                "PACKAGE_FILE_SIZE",
                f"{path} is {target.stat().st_size} bytes, not the declared {entry.size}.",
            )
        if not check_digests:
            continue
        digest = (known_digests or {}).get(path) or file_sha256(target)
        if digest != entry.sha256:
            raise BarFedError("PACKAGE_FILE_DIGEST", f"{path} does not match its declared sha256.")
    return manifest
