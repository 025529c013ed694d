"""Hugging Face checkpoint directories: read tensors lazily, write sharded safetensors, publish atomically.

Reading goes through safetensors memory-mapping, so a 7B checkpoint is never held in memory at once;
writing produces exactly what `save_pretrained` writes (``model.safetensors`` or numbered shards plus
``model.safetensors.index.json``), into a directory that `bar_model.durable.atomic_directory` publishes whole.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from protocol.errors import BarFedError
from protocol.fingerprint import MAX_HEADER_BYTES, TOKENIZER_FILES, safetensors_header
from protocol.package import SHARD_INDEX_FILE as INDEX_FILE

SINGLE_FILE = "model.safetensors"
SIDE_FILES = (*TOKENIZER_FILES, "generation_config.json")  # copied beside the weights of every checkpoint written


def read_config(directory: str | Path) -> dict:
    """The ``config.json`` of a checkpoint directory, or a clear error."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise BarFedError(
            "NOT_A_CHECKPOINT",
            f"{directory} has no config.json; point at a Hugging Face model directory.",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BarFedError("NOT_A_CHECKPOINT", f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise BarFedError("NOT_A_CHECKPOINT", f"{path} must hold a JSON object.")
    return config


DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class _Entry:
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class SafetensorsCheckpoint:
    """Lazy access to the tensors of a checkpoint directory (single file or sharded), one tensor at a time.

    Tensors are read with plain positioned reads rather than memory-mapping: mapped pages stay in the
    process's resident set once touched, which would make streaming a 7B merge cost the whole inputs'
    size in RSS. Every header is size-checked, then judged by stock safetensors (we refuse whatever it
    refuses), then checked again here: integer shapes, byte ranges matching dtype and shape, tensors
    contiguous and covering the data exactly, so an untrusted file can neither make us read out of bounds
    nor carry bytes outside its tensors.
    """

    def __init__(
        self, directory: str | Path, *, max_header_bytes: int = MAX_HEADER_BYTES, max_tensors: int | None = None
    ) -> None:
        self.directory = Path(directory)
        self.max_header_bytes, self.max_tensors = max_header_bytes, max_tensors
        single, index = self.directory / SINGLE_FILE, self.directory / INDEX_FILE
        if single.is_file() and index.is_file():
            raise BarFedError("BAD_SAFETENSORS", f"{self.directory} holds both {SINGLE_FILE} and {INDEX_FILE}.")
        weight_map: dict[str, str] | None = None
        if single.is_file():
            self.files = [SINGLE_FILE]
        elif index.is_file():
            weight_map = _read_index(index)
            self.files = sorted(set(weight_map.values()))
        else:
            pickled = any(self.directory.glob("*.bin")) or any(self.directory.glob("*.pt"))
            hint = " It holds pickle weights, which are never loaded; convert them to safetensors." if pickled else ""
            raise BarFedError("NO_SAFETENSORS", f"{self.directory} has no safetensors weights.{hint}")
        self._entries: dict[str, _Entry] = {}
        for name in self.files:
            path = self.directory / name
            if "/" in name or name.startswith(".") or not path.is_file():
                raise BarFedError("NO_SAFETENSORS", f"{self.directory} lists a missing shard {name[:200]!r}.")
            self._index_file(path)
        if weight_map is not None:
            actual = {key: entry.path.name for key, entry in self._entries.items()}
            if actual != weight_map:
                raise BarFedError(
                    "BAD_SAFETENSORS", f"{INDEX_FILE} does not describe the tensors its shards actually hold."
                )

    def _index_file(self, path: Path) -> None:
        header = safetensors_header(path, self.max_header_bytes)  # bounded before anything parses it
        with open(path, "rb") as fh:
            data_start = 8 + int.from_bytes(fh.read(8), "little")
        _stock_accepts(path)
        entries = _layout(path, header, path.stat().st_size - data_start)
        for key, (dtype, shape, begin, finish) in entries.items():
            if key in self._entries:
                raise BarFedError("BAD_SAFETENSORS", f"tensor {key[:200]!r} appears in two shards.")
            self._entries[key] = _Entry(path, dtype, shape, data_start + begin, data_start + finish)
            if self.max_tensors is not None and len(self._entries) > self.max_tensors:
                raise BarFedError(
                    "EXTRA_TENSOR", f"the checkpoint holds more than the {self.max_tensors} tensors it may hold."
                )

    def keys(self) -> list[str]:
        return list(self._entries)

    def __iter__(self):
        return iter(list(self._entries))

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key].shape

    def dtype(self, key: str) -> str:
        return self._entries[key].dtype

    def nbytes(self, key: str) -> int:
        entry = self._entries[key]
        return entry.end - entry.start

    def torch_dtype(self, key: str) -> torch.dtype:
        return DTYPES[self._entries[key].dtype]

    def byte_range(self, key: str) -> tuple[Path, int, int]:
        """Where the tensor's bytes lie: file, first byte, one past the last (checked against the header)."""
        entry = self._entries[key]
        return entry.path, entry.start, entry.end

    def read_into(self, key: str, buffer) -> None:
        """Read the tensor's raw bytes into ``buffer`` (exactly ``nbytes(key)`` long)."""
        entry = self._entries[key]
        with open(entry.path, "rb", buffering=0) as fh:
            fh.seek(entry.start)
            view, got = memoryview(buffer).cast("B"), 0
            while got < len(view):
                read = fh.readinto(view[got:])
                if not read:
                    raise BarFedError("BAD_SAFETENSORS", f"{entry.path.name} is truncated inside tensor {key!r}.")
                got += read

    def tensor(self, key: str) -> torch.Tensor:
        entry = self._entries[key]
        raw = torch.empty(entry.end - entry.start, dtype=torch.uint8)  # not zero-filled: every byte is read
        if raw.numel():
            self.read_into(key, raw.numpy())
        return raw.view(DTYPES[entry.dtype]).reshape(entry.shape)


ENTRY_FIELDS = {"dtype", "shape", "data_offsets"}


def _stock_accepts(path: Path) -> None:
    """Let stock safetensors judge the header and layout first, so we never accept a file it refuses.

    ``safe_open`` maps the file and parses only its header (numpy framework: no tensor is built), so this
    costs a page or two of RSS, not the file's size.
    """
    try:
        with safe_open(path, framework="numpy") as opened:
            opened.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise BarFedError(
            "BAD_SAFETENSORS", f"{path.name} is not a valid safetensors file ({reason}); save it with safetensors."
        ) from None


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0  # not bool, not float: 2.9 is not a dimension


def _layout(path: Path, header: dict, data_bytes: int) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """name -> (dtype, shape, begin, end) relative to the data section, checked to the letter of the format:
    known dtype, non-negative integer shape, ranges that match dtype and shape, tensors contiguous from 0
    and covering the data section exactly (no byte before, between or after them)."""
    entries = {}
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise BarFedError("BAD_SAFETENSORS", f"{path.name}: __metadata__ must map strings to strings.")
            continue
        bad = BarFedError("BAD_SAFETENSORS", f"{path.name}: tensor {key[:200]!r} has an invalid header entry.")
        if not isinstance(entry, dict) or set(entry) != ENTRY_FIELDS or entry["dtype"] not in DTYPES:
            raise bad
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise bad
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            raise bad
        begin, finish = offsets
        if finish - begin != math.prod(shape) * DTYPES[entry["dtype"]].itemsize:
            raise BarFedError(
                "BAD_SAFETENSORS", f"{path.name}: tensor {key[:200]!r} does not fit its declared dtype and shape."
            )
        entries[key] = (entry["dtype"], tuple(shape), begin, finish)
    position = 0
    for key, (_dtype, _shape, begin, finish) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin != position:
            raise BarFedError(
                "BAD_SAFETENSORS", f"{path.name}: tensor {key[:200]!r} overlaps another or leaves a gap before it."
            )
        position = finish
    if position != data_bytes:
        raise BarFedError(
            "BAD_SAFETENSORS",
            f"{path.name}: its tensors cover {position} of its {data_bytes} data bytes; nothing may follow them.",
        )
    return entries


def _read_index(path: Path, max_bytes: int = 16 * 1024**2) -> dict[str, str]:
    """``weight_map`` of a sharded checkpoint's index, size-checked and type-checked."""
    if path.stat().st_size > max_bytes:
        raise BarFedError("BAD_SAFETENSORS", f"{path.name} is larger than {max_bytes} bytes.")
    try:
        weight_map = json.loads(path.read_bytes()).get("weight_map")
    except (ValueError, RecursionError, AttributeError):
        raise BarFedError("BAD_SAFETENSORS", f"{path.name} is not a valid index.") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise BarFedError("BAD_SAFETENSORS", f"{path.name} has no valid weight_map.")
    return weight_map


class ShardedSafetensorsWriter:
    """Write tensors one at a time into shards of at most ``max_shard_bytes``, the way HF names them."""

    def __init__(self, directory: str | Path, max_shard_bytes: int = 2 * 1024**3) -> None:
        self.directory = Path(directory)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self.total_bytes = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[key] = tensor.contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        name = f"shard-{len(self._shards):05d}.tmp"
        save_file(self._pending, str(self.directory / name), metadata={"format": "pt"})
        self._shards.append((name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> None:
        if self._pending or not self._shards:
            self._flush()
        if len(self._shards) == 1:
            os.replace(self.directory / self._shards[0][0], self.directory / SINGLE_FILE)
            return
        total = len(self._shards)
        weight_map = {}
        for i, (tmp, keys) in enumerate(self._shards, start=1):
            final = f"model-{i:05d}-of-{total:05d}.safetensors"
            os.replace(self.directory / tmp, self.directory / final)
            weight_map.update(dict.fromkeys(keys, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def copy_tokenizer_files(source: Path, target: Path) -> None:
    """Copy tokenizer and generation files that exist in ``source``."""
    for name in SIDE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def on_main_process(fn, *args, **kwargs):
    """Run ``fn`` on the main process of an `accelerate launch` (or the only process); others wait."""
    from accelerate import PartialState  # only training needs it; importing it costs a merge 0.2 s

    state = PartialState()
    result = fn(*args, **kwargs) if state.is_main_process else None
    state.wait_for_everyone()
    return result
