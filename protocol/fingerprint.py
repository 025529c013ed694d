"""The anchor's compatibility fingerprint: what an expert must match to be merged with others.

sha256 over a canonical JSON of (a) the architecture-relevant config fields, (b) every tensor's name,
shape and dtype, read from the safetensors headers without loading a byte of weights, and (c) the
sha256 of each tokenizer file. Two checkpoints with the same fingerprint can exchange FFN slots.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from protocol.errors import BarFedError

ARCHITECTURE_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "rms_norm_eps",
    "rope_parameters",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "num_experts",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)
MAX_HEADER_BYTES = 100 * 1024 * 1024


def safetensors_header(path: Path, max_bytes: int = MAX_HEADER_BYTES) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets), size-checked."""
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise BarFedError("BAD_SAFETENSORS", f"{path.name} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", prefix)
        if length > max_bytes:
            raise BarFedError("BAD_SAFETENSORS", f"{path.name} declares a {length}-byte header; refusing it.")
        raw = fh.read(length)
    if len(raw) != length:
        raise BarFedError("BAD_SAFETENSORS", f"{path.name} is truncated inside its header.")
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, absurd integers, absurd nesting
        raise BarFedError("BAD_SAFETENSORS", f"{path.name} has a header that is not valid JSON.") from None
    if not isinstance(header, dict):
        raise BarFedError("BAD_SAFETENSORS", f"{path.name} has a header that is not a JSON object.")
    return header


def tensor_layout(directory: str | Path) -> dict[str, tuple[str, list[int]]]:
    """name → (dtype, shape) for every tensor of a checkpoint directory."""
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise BarFedError("NO_SAFETENSORS", f"{directory} has no safetensors weights.")
    layout = {}
    for path in files:
        for name, entry in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            layout[name] = (entry["dtype"], list(entry["shape"]))
    return layout


def anchor_fingerprint(directory: str | Path) -> str:
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BarFedError("NOT_A_CHECKPOINT", f"{directory} has no config.json.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    canonical = {
        "config": {k: config.get(k) for k in ARCHITECTURE_FIELDS},
        "tensors": sorted([name, dtype, shape] for name, (dtype, shape) in tensor_layout(directory).items()),
        "tokenizer": {
            name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in TOKENIZER_FILES
            if (directory / name).is_file()
        },
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()
