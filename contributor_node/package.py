"""Package a trained expert for submission: the tensors its stages changed, ``expert.json``, a signature.

The package holds exactly the tensors the contract (protocol.layout) lets the declared stages change,
read lazily from the expert checkpoint and written as sharded safetensors; it is built under a staging
name, signed with the organization's key on this node, and only then renamed into place.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path

from bar_model.card import expert_card
from bar_model.checkpoint import SafetensorsCheckpoint, ShardedSafetensorsWriter
from bar_model.domains import Example
from bar_model.durable import atomic_directory
from protocol.errors import BarFedError
from protocol.layout import package_tensor_names
from protocol.package import CALIBRATION_FILE, EVAL_FILE, MANIFEST_FILE, ExpertManifest, canonical_json, describe_files
from protocol.signing import sign_directory

DEFAULT_SHARD_BYTES = 2 * 1024**3


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def build_package(
    expert_dir: str | Path,
    out_dir: str | Path,
    *,
    org: str,
    version: int,
    private_key: str | Path,
    passphrase: str | None = None,
    calibration: list[Example] | None = None,
    eval_set: list[Example] | None = None,
    eval_scores: dict[str, float] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    replace_tensors: dict | None = None,
) -> ExpertManifest:
    """Write the signed package of the expert at ``expert_dir`` to ``out_dir`` and return its manifest.

    ``replace_tensors`` (name -> tensor) stands in for packaged tensors of the checkpoint: the node's privacy
    router rows (contributor_node.privacy_router) when it shares no calibration sample."""
    expert_dir, out_dir = Path(expert_dir), Path(out_dir)
    card = expert_card(expert_dir)
    checkpoint = SafetensorsCheckpoint(expert_dir)
    names = package_tensor_names(checkpoint.keys(), card["stages"])
    if not names:
        raise BarFedError("NOT_AN_EXPERT", f"{expert_dir} has no FlexOlmo expert tensors to package.")
    replace_tensors = replace_tensors or {}
    if set(replace_tensors) - names:
        unknown = sorted(set(replace_tensors) - names)[:3]
        raise BarFedError("NOT_PACKAGED", f"{unknown} are not tensors this expert's package holds.")
    with atomic_directory(out_dir) as staging:
        writer = ShardedSafetensorsWriter(staging, max_shard_bytes)
        for name in sorted(names):
            writer.add(name, replace_tensors[name] if name in replace_tensors else checkpoint.tensor(name))
        writer.close()
        if calibration:
            _write_jsonl(
                staging / CALIBRATION_FILE,
                [{"prompt": e.prompt, "response": e.response} for e in calibration],
            )
        if eval_set:
            _write_jsonl(
                staging / EVAL_FILE,
                [{"prompt": e.prompt, "response": e.response, "answer": e.answer} for e in eval_set],
            )
        paths = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = ExpertManifest(
            org=org,
            domain=card["domain"],
            version=version,
            anchor_fingerprint=card["anchor_fingerprint"],
            stages=card["stages"],
            recipe=card["recipe"],
            stage_summaries=card["stage_summaries"],
            eval_scores=eval_scores or {},
            nonce=secrets.token_hex(16),
            created_at=datetime.now(UTC).replace(microsecond=0),
            files=describe_files(staging, paths),
        )
        (staging / MANIFEST_FILE).write_bytes(canonical_json(manifest))
        sign_directory(staging, private_key, passphrase)
    return manifest
