"""Verification of a committed expert package: every check of DESIGN §3 step 6, each with its own code.

Order: structure and manifest → the facts it binds (org, domain, version, anchor) → signature with the
organization's pinned, unrevoked key → domain ownership and version → tensors (names, shapes, dtypes
against the anchor's layout, slot 0 and router row 0 untouched, every value finite, shared tensors
within the drift bound) → side files. Nothing here unpickles or executes anything from the package.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bar_model.checkpoint import INDEX_FILE
from coordinator.verification.mapped import MappedCheckpoint
from protocol.errors import BarFedError
from protocol.layout import disk_part, package_tensor_names
from protocol.package import CALIBRATION_FILE, EVAL_FILE, ExpertManifest, read_package
from protocol.signing import verify_directory

MAX_SIDECAR_BYTES = 16 * 1024**2
MAX_PACKAGE_HEADER_BYTES = 16 * 1024**2
MAX_SIDECAR_FIELD = 4096
DRIFT_BLOCK = 4 * 1024**2  # elements per step of the drift computation (16 MiB of float32 scratch)
SIDECAR_FIELDS = {CALIBRATION_FILE: {"prompt", "response"}, EVAL_FILE: {"prompt", "response", "answer"}}


@dataclass(frozen=True)
class Expectations:
    """What the coordinator knows independently of the package."""

    org_id: str
    domain: str
    version: int
    public_keys: list[bytes]  # the org's pinned, unrevoked keys
    owned_domains: set[str]
    latest_version: int  # highest accepted version of the domain (0 when none)
    anchor_dir: Path
    anchor_fingerprint: str
    max_shared_drift: float


@contextlib.contextmanager
def _timed(wall_s: dict[str, float] | None, step: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        if wall_s is not None:
            wall_s[step] = round(time.perf_counter() - started, 3)


def verify_package(
    directory: Path,
    expect: Expectations,
    digests: dict[str, str] | None = None,
    wall_s: dict[str, float] | None = None,
) -> ExpertManifest:
    """Every check of DESIGN §3 step 6; ``digests`` are the files' sha256 as the blob store verified them;
    ``wall_s`` receives each step's wall time (manifest, signature, tensors, sidecars), for /metrics."""
    with _timed(wall_s, "manifest"):
        manifest = read_package(directory, known_digests=digests)
    if manifest.org != expect.org_id:
        raise BarFedError(
            "ORG_MISMATCH", f"the manifest names organization {manifest.org!r}, but {expect.org_id} submitted it."
        )
    if (manifest.domain, manifest.version) != (expect.domain, expect.version):
        raise BarFedError(
            "MANIFEST_MISMATCH",
            f"the manifest is for {manifest.domain} v{manifest.version}, the upload declared "
            f"{expect.domain} v{expect.version}; declare what the package holds.",
        )
    with _timed(wall_s, "signature"):
        _check_signature(directory, expect, digests)
    if manifest.domain not in expect.owned_domains:
        raise BarFedError("DOMAIN_NOT_OWNED", f"{expect.org_id} may not publish domain {manifest.domain!r}.")
    if manifest.version <= expect.latest_version:
        raise BarFedError(
            "VERSION_NOT_NEWER",
            f"{manifest.domain} is already at version {expect.latest_version}; a package for version "
            f"{manifest.version} is a replay or out of date. Submit version {expect.latest_version + 1}.",
        )
    if manifest.anchor_fingerprint != expect.anchor_fingerprint:
        raise BarFedError(
            "ANCHOR_MISMATCH",
            f"the expert was trained from anchor {manifest.anchor_fingerprint}, but the federation's anchor is "
            f"{expect.anchor_fingerprint}; fetch the current anchor and retrain.",
        )
    with _timed(wall_s, "tensors"):
        _check_tensors(directory, manifest, expect)
    with _timed(wall_s, "sidecars"):
        _check_sidecars(directory, manifest)
    return manifest


def _check_signature(directory: Path, expect: Expectations, digests: dict[str, str] | None) -> None:
    if not expect.public_keys:
        raise BarFedError("ORG_REVOKED", f"{expect.org_id} has no valid signing key; it was revoked or never enrolled.")
    failure: BarFedError | None = None
    for key in expect.public_keys:
        try:
            verify_directory(directory, key, known_digests=digests)
            return
        except BarFedError as exc:
            failure = exc
            if exc.code != "SIGNATURE_WRONG_KEY":
                break
    raise failure


def _check_tensors(directory: Path, manifest: ExpertManifest, expect: Expectations) -> None:
    anchor = MappedCheckpoint(expect.anchor_dir)
    # Before a tensor is read: headers bounded, judged by stock safetensors and then strictly by us (integer
    # shapes, tensors contiguous and covering the data exactly), so whatever stock refuses is BAD_SAFETENSORS.
    package = MappedCheckpoint(directory, max_header_bytes=MAX_PACKAGE_HEADER_BYTES, max_tensors=len(anchor.keys()))
    tensor_files = {f.path for f in manifest.files if f.path.endswith(".safetensors") or f.path == INDEX_FILE}
    expected_files = set(package.files) | ({INDEX_FILE} if (directory / INDEX_FILE).is_file() else set())
    if tensor_files != expected_files:
        stray = sorted(tensor_files ^ expected_files)[0]
        raise BarFedError(
            "BAD_SAFETENSORS",
            f"{stray} is not part of the package's tensors: ship one model.safetensors, or shards and their index.",
        )
    allowed = package_tensor_names(anchor.keys(), manifest.stages)
    present = set(package.keys())
    for name in sorted(present):
        if disk_part(name) == ("expert_ffn", 0):
            raise BarFedError(
                "SLOT0_MODIFIED", f"the package carries {name}, the anchor's slot 0, which no expert may change."
            )
    if extra := sorted(present - allowed):
        raise BarFedError(
            "EXTRA_TENSOR",
            f"{extra[0]} is not a tensor that stages {','.join(manifest.stages)} may change; remove it.",
        )
    if missing := sorted(allowed - present):
        raise BarFedError("MISSING_TENSOR", f"the package lacks {missing[0]}, which its stages train.")
    for name in sorted(present):
        if package.shape(name) != anchor.shape(name):
            raise BarFedError(
                "SHAPE_MISMATCH", f"{name} is {list(package.shape(name))}, the anchor's is {list(anchor.shape(name))}."
            )
        if package.dtype(name) != anchor.dtype(name):
            raise BarFedError(
                "DTYPE_MISMATCH", f"{name} is {package.dtype(name)}, the anchor's is {anchor.dtype(name)}."
            )
    with _one_thread():
        _check_values(package, anchor, sorted(present), expect)


@contextlib.contextmanager
def _one_thread():
    """The value checks are memory-bound passes over mapped pages: one thread runs them at memory speed, while
    intra-op threads waiting at barriers ran them ten times slower whenever the other core was busy (an upload
    being received, another job). The setting is the calling thread's, and restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_values(package: MappedCheckpoint, anchor: MappedCheckpoint, names: list[str], expect: Expectations) -> None:
    """Every value finite, router row 0 the anchor's, shared tensors within the drift bound."""
    scratch = torch.empty(DRIFT_BLOCK, dtype=torch.float32)
    for name in names:
        tensor = package.tensor(name)
        if tensor.is_floating_point() and not _all_finite(tensor):
            raise BarFedError("NON_FINITE", f"{name} holds NaN or infinite values.")
        part, _slot = disk_part(name)
        if part == "router":
            if not torch.equal(tensor[0], anchor.tensor(name)[0]):
                raise BarFedError("SLOT0_MODIFIED", f"router row 0 of {name} differs from the anchor's; it is frozen.")
        elif part in ("embeddings", "shared"):
            drift = _relative_drift(tensor, anchor.tensor(name), scratch)
            if drift >= expect.max_shared_drift:
                raise BarFedError(
                    "DRIFT_EXCEEDED",
                    f"{name} moved {drift:.2f} (relative L2) from the anchor; the federation allows "
                    f"{expect.max_shared_drift}. Shared tensors are averaged into every release.",
                )


def _all_finite(tensor: torch.Tensor) -> bool:
    """``torch.isfinite(tensor).all()`` without a tensor-sized temporary: a sum is finite only if every term is
    (NaN and infinities survive addition), so only a sum that overflows needs the elementwise check."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _relative_drift(tensor: torch.Tensor, reference: torch.Tensor, scratch: torch.Tensor) -> float:
    """||tensor - reference|| / ||reference|| in float32, a block at a time through ``scratch``."""
    ours, theirs = tensor.reshape(-1), reference.reshape(-1)
    squares = 0.0
    for start in range(0, ours.numel(), scratch.numel()):
        block = scratch[: min(scratch.numel(), ours.numel() - start)]
        block.copy_(ours[start : start + block.numel()]).sub_(theirs[start : start + block.numel()])
        squares += float(torch.linalg.vector_norm(block)) ** 2
    return math.sqrt(squares) / max(float(torch.linalg.vector_norm(reference.float())), 1e-12)


def _check_sidecars(directory: Path, manifest: ExpertManifest) -> None:
    for entry in manifest.files:
        fields = SIDECAR_FIELDS.get(entry.path)
        if fields is None:
            continue
        if entry.size > MAX_SIDECAR_BYTES:
            raise BarFedError("BAD_SIDECAR", f"{entry.path} is larger than {MAX_SIDECAR_BYTES} bytes.")
        for number, line in enumerate((directory / entry.path).read_bytes().splitlines(), start=1):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                raise BarFedError("BAD_SIDECAR", f"{entry.path} line {number} is not JSON.") from None
            if (
                not isinstance(row, dict)
                or set(row) != fields
                or not all(isinstance(v, str) and len(v) <= MAX_SIDECAR_FIELD for v in row.values())
            ):
                raise BarFedError(
                    "BAD_SIDECAR", f"{entry.path} line {number} must be an object with string fields {sorted(fields)}."
                )
