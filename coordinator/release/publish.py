"""Sign and publish: a built model directory becomes the immutable release ``r<N>``.

The directory is assembled under a staging name, ``release.json`` is written into it, the coordinator's
release key signs it in the model-signing format, everything is fsynced, and one rename makes it
``releases/r<N>``; only then is the row written (with the channel moves and the audit entry), so no reader
ever sees a release that is not complete and signed. The rename is also the lock on the number: a build that
finds ``r<N>`` taken by another job takes the next number and signs again. The row's transaction refuses a
release one of whose experts left ACCEPTED since the plan (EXPERT_NO_LONGER_ACCEPTED): its directory is withdrawn.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from bar_model.checkpoint import write_json
from bar_model.durable import fsync_dir, fsync_tree
from bar_model.merge import MERGE_CARD
from bar_model.router import ROUTER_CARD
from coordinator.state import releases as state
from coordinator.state.db import Registry
from coordinator.state.models import Release
from protocol.errors import BarFedError
from protocol.package import file_sha256
from protocol.release import RELEASE_FILE, ReleaseManifest, read_manifest, write_manifest
from protocol.signing import sign_directory

log = logging.getLogger(__name__)
ANNOUNCE_CHANNEL = "barfed:releases"


def release_files(model_dir: Path, target: Path) -> None:
    """Copy the model's files into ``target``: everything a loader needs, the merge card without local paths."""
    for path in sorted(model_dir.iterdir()):
        if not path.is_file() or path.name == ROUTER_CARD:
            continue
        if path.name == MERGE_CARD:
            card = json.loads(path.read_text())
            card["experts"] = [{"domain": e["domain"]} for e in card.get("experts", [])]
            write_json(target / MERGE_CARD, card)
        else:  # a hard link: the build's scratch copy goes after publish, the bytes stay (shards can be GBs)
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copyfile(path, target / path.name)


def stage_release(model_dir: Path, releases_dir: Path, manifest: ReleaseManifest, release_key: Path) -> Path:
    """A complete, signed copy of the release under a staging name beside its final place."""
    releases_dir.mkdir(parents=True, exist_ok=True)
    # This job's own name: what an earlier attempt of it left is removed; another build's staging is not ours.
    staging = releases_dir / f".{manifest.name}.staging-job{manifest.job_id}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    release_files(model_dir, staging)
    write_manifest(staging, manifest)
    sign_directory(staging, release_key)
    fsync_tree(staging)
    return staging


def move_into_place(staging: Path, final: Path) -> bool:
    """Rename; False when ``final`` already exists (another build holds that number)."""
    try:
        os.rename(staging, final)
    except OSError:
        if final.exists():
            return False
        raise
    fsync_dir(final.parent)
    return True


def withdraw(final: Path) -> None:
    """Take away a release directory the registry refused: renamed out of sight in one step, then deleted."""
    hidden = final.with_name(f".{final.name}.withdrawn")
    shutil.rmtree(hidden, ignore_errors=True)
    os.rename(final, hidden)
    fsync_dir(final.parent)
    shutil.rmtree(hidden, ignore_errors=True)


def owned_by(final: Path, job_id: int | None) -> bool:
    """Did this job publish ``final`` already (a crash between the rename and the row)?"""
    try:
        return read_manifest(final).job_id == job_id
    except BarFedError:
        return False


def record(registry: Registry, final: Path, manifest: ReleaseManifest, actor: str) -> list[str]:
    release = Release(
        number=manifest.number,
        manifest_sha256=file_sha256(final / RELEASE_FILE),
        domains=[e.domain for e in manifest.experts],
        experts=[{k: v for k, v in e.model_dump().items() if k != "files"} for e in manifest.experts],
        eval={domain: score.score for domain, score in manifest.eval.items()},
        retention={
            domain: {"expert": s.expert_score, "release": s.score, "retention": s.retention, "difference": s.difference}
            for domain, s in manifest.eval.items()
            if s.expert_score is not None
        },
        routing={
            domain: {"own_share": s.own_share, "anchor_share": s.anchor_share, "load": s.load}
            for domain, s in manifest.eval.items()
            if s.load is not None
        },
        parent=manifest.parent,
        job_id=manifest.job_id,
        forced_by=manifest.gate.get("forced_by") or "",
    )
    return state.insert_release(registry, release, actor)


def announce(redis_url: str | None, event: dict) -> None:
    """Tell subscribers of ``barfed:releases``; the release is published whether or not anyone listens."""
    if not redis_url:
        return
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        client.publish(ANNOUNCE_CHANNEL, json.dumps(event, sort_keys=True))
        client.close()
    except redis.RedisError as exc:
        log.warning("could not announce %s on %s: %s", event.get("name"), redis_url, exc)
