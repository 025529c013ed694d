"""What an operator does with releases, once, for every surface: `barfed coordinator releases …` and the REST API."""

from __future__ import annotations

import contextlib
import re
import uuid
from pathlib import Path

from coordinator.release.diff import diff_releases
from coordinator.release.plan import plan_experts, unchanged
from coordinator.settings import CoordinatorSettings
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.state.db import Registry
from coordinator.state.models import Job, Release
from coordinator.storage import ObjectStore, release_prefix
from protocol.errors import BarFedError
from protocol.release import RELEASE_FILE, ReleaseManifest, read_manifest

CHANNEL = re.compile(state.CHANNEL_NAME)
MAX_PINS = 256


def parse_pins(pins: list[str]) -> dict[str, int]:
    """``["math=3", "code=2"]`` → {"math": 3, "code": 2}, refusing anything else."""
    parsed: dict[str, int] = {}
    if len(pins) > MAX_PINS:
        raise BarFedError("BAD_PIN", f"at most {MAX_PINS} pins.")
    for pin in pins:
        domain, sep, version = pin.partition("=")
        if not sep or not domain.strip() or not version.strip().isdigit() or len(version.strip()) > 9:
            raise BarFedError("BAD_PIN", f"{pin!r} is not DOMAIN=VERSION (e.g. math=3).")
        if domain.strip() in parsed:
            raise BarFedError("BAD_PIN", f"{domain.strip()} is pinned twice.")
        parsed[domain.strip()] = int(version.strip())
    return parsed


def request_build(registry: Registry, pins: dict[str, int], force: bool, actor: str, cold: bool = False) -> Job:
    """Queue a build job (the coordinator's sweeper dispatches it to a worker); refused with NOTHING_CHANGED, and
    nothing queued, when the latest release already holds what it would build, unless ``force`` or ``cold`` (a cold
    build retrains every router row from scratch, a deliberate rebuild). A plan that cannot be made (no expert, a
    pin that is not ACCEPTED) is the job's to report, with its code, where `jobs show` finds it; the job's own plan
    step checks for NOTHING_CHANGED again."""
    if not (force or cold):
        try:
            planned = plan_experts(registry, pins)
        except BarFedError:
            planned = None
        if planned is not None and (same := unchanged(registry, planned)) is not None:
            raise same
    params = {"pins": pins, "force": force, "cold": cold, "actor": actor}
    return jobs.queue(registry, "build", f"manual-{uuid.uuid4().hex[:12]}", params, actor=actor)


def manifest_dir(settings: CoordinatorSettings, release: Release) -> Path:
    """Where the release's release.json is: under home, or fetched from the object store into ``home/cache``,
    checked against the sha256 its registry row recorded."""
    directory = settings.releases_dir / f"r{release.number}"
    if not settings.artifact_store or (directory / RELEASE_FILE).is_file():
        return directory
    cache = settings.home / "cache" / "releases" / f"r{release.number}"
    if not (cache / RELEASE_FILE).is_file():
        key = f"{release_prefix(release.number)}/{RELEASE_FILE}"
        ObjectStore(settings).get_file(key, cache / RELEASE_FILE, release.manifest_sha256)
    return cache


def show(settings: CoordinatorSettings, registry: Registry, name: str) -> tuple[Release, ReleaseManifest]:
    """The release's release.json, its ``wall_s`` completed with what its build job measured after signing it
    (``sign``, ``publish``; see coordinator/release/build.py), so the whole cost of the release shows."""
    release = state.resolve(registry, name)
    manifest = read_manifest(manifest_dir(settings, release))
    measured = {}
    if release.job_id is not None:
        with contextlib.suppress(BarFedError):
            measured = (jobs.get(registry, release.job_id).result or {}).get("wall_s") or {}
    after = {step: float(measured[step]) for step in ("sign", "publish") if step in measured}
    return release, manifest.model_copy(update={"wall_s": {**manifest.wall_s, **after}})


def promote(registry: Registry, name: str, channel: str, actor: str) -> tuple[int, int | None]:
    """(the release, where the channel pointed before): the same number twice when it already pointed there, and
    then nothing moved and nothing was recorded."""
    if not CHANNEL.fullmatch(channel) or channel == "latest":
        raise BarFedError(
            "BAD_CHANNEL", f"{channel!r} cannot be promoted to: use lowercase letters, digits and '-', not 'latest'."
        )
    release = state.resolve(registry, name)
    return release.number, state.move_channel(registry, channel, release.number, actor)


def rollback(registry: Registry, channel: str, actor: str) -> tuple[int, int]:
    return state.rollback_channel(registry, channel, actor)


def diff(registry: Registry, a: str, b: str) -> dict:
    return diff_releases(state.resolve(registry, a), state.resolve(registry, b))
