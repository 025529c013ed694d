"""Tensors of a validated safetensors checkpoint viewed through a private memory map instead of copied.

Verification reads every value of a package once. Copying each tensor into a fresh buffer first (what
`SafetensorsCheckpoint.tensor` does, to keep a streaming merge's resident set small) costs a page fault per
4 KiB of new memory, which on a small machine takes longer than checking the values. Headers and layout
are still validated by `SafetensorsCheckpoint` (stock safetensors first, then our stricter checks) before any
view is made.

The map is private (copy on write): nothing written to a view can reach the file. Use it only on files that
nobody truncates meanwhile (blobs are immutable, so is the published anchor): a shrunk file would fault
where a read would have raised.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import torch

from bar_model.checkpoint import DTYPES, SafetensorsCheckpoint


class MappedCheckpoint(SafetensorsCheckpoint):
    def __init__(self, directory: str | Path, **limits) -> None:
        super().__init__(directory, **limits)
        self._maps: dict[Path, mmap.mmap] = {}

    def tensor(self, key: str) -> torch.Tensor:
        entry = self._entries[key]
        dtype = DTYPES[entry.dtype]
        if entry.end == entry.start:
            return torch.empty(entry.shape, dtype=dtype)
        if entry.path not in self._maps:
            with open(entry.path, "rb") as fh:
                self._maps[entry.path] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        count = (entry.end - entry.start) // dtype.itemsize
        view = torch.frombuffer(self._maps[entry.path], dtype=dtype, count=count, offset=entry.start)
        return view.reshape(entry.shape)
