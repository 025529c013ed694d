"""Write a checkpoint whose tensors are known before a byte is written, each straight to its place.

The merge knows every output tensor's name, dtype and shape up front, and most of its bytes are unchanged
copies of an input's (the anchor's slot, each expert's slot). So each shard's safetensors header is written
first and every tensor after it in order: a copied tensor moves file to file inside the kernel
(``os.copy_file_range``: no read into Python, no second buffer), a computed one is written from its own
memory. safetensors' ``save_file`` would instead serialize the whole shard into one buffer first. The files
are the ones ``save_pretrained`` writes (numbered shards and an index past one shard), and stock
safetensors reads them (tests load them with it and with transformers).
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bar_model.checkpoint import DTYPES, INDEX_FILE, SINGLE_FILE
from bar_model.durable import Writeback
from protocol.errors import BarFedError

CODES = {dtype: code for code, dtype in DTYPES.items()}
_COPY_FALLBACK = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


@dataclass(frozen=True)
class Copy:
    """Bytes ``start``..``start + nbytes`` of ``path``, already checked to be the tensor (see SafetensorsCheckpoint)."""

    path: Path
    start: int


@dataclass(frozen=True)
class PlannedTensor:
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    source: Copy | Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def write_planned_shards(directory: Path, plan: list[PlannedTensor], max_shard_bytes: int) -> int:
    """Write ``plan`` in order into shards of at most ``max_shard_bytes`` (a larger tensor gets one alone)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for item in plan:
        if shards[-1] and size + item.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    names = (
        [SINGLE_FILE]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    with Writeback() as writeback:
        for name, shard in zip(names, shards, strict=True):
            _write_shard(directory / name, shard, writeback)
    if len(shards) > 1:
        weight_map = {item.key: name for name, shard in zip(names, shards, strict=True) for item in shard}
        total = sum(item.nbytes for item in plan)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return sum(item.nbytes for item in plan)


def _header(shard: list[PlannedTensor]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for item in shard:
        header[item.key] = {
            "dtype": CODES[item.dtype],
            "shape": list(item.shape),
            "data_offsets": [offset, offset + item.nbytes],
        }
        offset += item.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors pads its header so the data starts 8-byte aligned
    return len(encoded).to_bytes(8, "little") + encoded


def _write_shard(path: Path, shard: list[PlannedTensor], writeback: Writeback) -> None:
    with open(path, "wb", buffering=0) as out:
        _write_all(out.fileno(), _header(shard))
        unsynced = 0
        for item in shard:
            if isinstance(item.source, Copy):
                _copy_range(item.source, out.fileno(), item.nbytes, item.key)
            else:
                tensor = item.source()
                if tensor.dtype != item.dtype or tuple(tensor.shape) != item.shape:
                    raise AssertionError(
                        f"{item.key}: computed {tensor.dtype} {tuple(tensor.shape)}, planned otherwise"
                    )
                _write_all(out.fileno(), tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
            unsynced += item.nbytes
            if unsynced >= Writeback.EVERY_BYTES:
                writeback.start(out.fileno())
                unsynced = 0
        writeback.start(out.fileno(), unless_busy=False)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _copy_range(source: Copy, out_fd: int, nbytes: int, key: str) -> None:
    with open(source.path, "rb", buffering=0) as src:
        offset, left = source.start, nbytes
        try:
            while left:
                copied = os.copy_file_range(src.fileno(), out_fd, left, offset)
                if copied == 0:
                    raise BarFedError("BAD_SAFETENSORS", f"{source.path.name} is truncated inside tensor {key!r}.")
                offset, left = offset + copied, left - copied
        except OSError as exc:
            if exc.errno not in _COPY_FALLBACK:
                raise
            src.seek(offset)  # another filesystem or an old kernel: copy through a buffer instead
            while left:
                chunk = src.read(min(left, 16 * 1024**2))
                if not chunk:
                    raise BarFedError(
                        "BAD_SAFETENSORS", f"{source.path.name} is truncated inside tensor {key!r}."
                    ) from None
                _write_all(out_fd, chunk)
                left -= len(chunk)
