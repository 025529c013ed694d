"""The release build: plan → merge → route → evaluate → gate → sign → publish, one job, resumable by step.

Every step writes its output under the job's directory and is skipped when that output exists, so a retried
job (its worker killed, the coordinator restarted) continues where it stopped; router training itself resumes
from its last checkpoint. Plain functions: the Celery task that runs a build is a thin wrapper around
``build_release``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import torch

from bar_model.calibration import slot_sample
from bar_model.domains import Example
from bar_model.merge import MERGE_CARD, merge_experts
from bar_model.recipe import RouterRecipe, load_router_recipe
from bar_model.router import router_card, train_router
from coordinator.release import publish
from coordinator.release.evaluate import evaluate_release
from coordinator.release.gate import GateRefused, regressions
from coordinator.release.plan import load_plan, plan_experts, save_plan
from coordinator.runtime import Runtime
from coordinator.state import releases as state
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint
from protocol.layout import ANCHOR_SLOT
from protocol.package import CALIBRATION_FILE, SIGNATURE_FILE, file_sha256
from protocol.release import RELEASE_FILE, ReleaseExpert, ReleaseManifest, RouterRun, read_manifest

log = logging.getLogger(__name__)
STEPS = ("plan", "merge", "route", "evaluate", "gate", "sign", "publish")


@dataclass(frozen=True)
class BuildRequest:
    pins: dict[str, int]
    force: bool
    actor: str
    job_id: int | None

    @classmethod
    def from_params(cls, params: dict, job_id: int | None) -> BuildRequest:
        return cls(
            pins={str(k): int(v) for k, v in (params.get("pins") or {}).items()},
            force=bool(params.get("force", False)),
            actor=str(params.get("actor") or "coordinator"),
            job_id=job_id,
        )


class Timer:
    """Wall time per step, kept in the job directory so a resumed build still reports every step."""

    def __init__(self, work: Path) -> None:
        self.path = work / "wall_s.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @contextlib.contextmanager
    def step(self, name: str):
        started = time.perf_counter()
        yield
        self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - started, 2)
        self.path.write_text(json.dumps(self.times))


@contextlib.contextmanager
def torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def router_samples(
    experts: list[ReleaseExpert], packages: dict[str, Path], recipe: RouterRecipe
) -> tuple[dict[str, list[Example]], frozenset[str]]:
    """Each package's calibration sample for its slot, the coordinator's general data for the anchor's;
    a domain whose package carries no sample keeps the row its node computed."""
    samples: dict[str, list[Example]] = {}
    kept: set[str] = set()
    for expert in experts:
        path = packages[expert.domain] / CALIBRATION_FILE
        if not path.is_file():
            kept.add(expert.domain)
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        samples[expert.domain] = [Example(r["prompt"], r["response"], "", expert.domain) for r in rows]
    samples[ANCHOR_SLOT] = slot_sample(ANCHOR_SLOT, recipe)
    return samples, frozenset(kept)


def build_model(
    coordinator: Runtime,
    experts: list[ReleaseExpert],
    parent_dir: Path | None,
    work: Path,
    recipe: RouterRecipe,
    threads: int,
    timer: Timer,
    on_step: Callable[[str], None],
) -> tuple[Path, dict[str, Path]]:
    """Merge and route into ``work/routed`` (each step skipped when done); returns it and the packages."""
    packages = {e.domain: coordinator.blobs.materialize(e.files, work / "packages" / e.domain) for e in experts}
    merged, routed = work / "merged", work / "routed"
    on_step("merge")
    if not merged.exists():
        with timer.step("merge"):
            merge_experts(coordinator.settings.anchor_dir, [packages[e.domain] for e in experts], merged)
    on_step("route")
    if not routed.exists():
        samples, kept = router_samples(experts, packages, recipe)
        with timer.step("route"), torch_threads(threads):
            train_router(
                merged,
                routed,
                recipe,
                previous=parent_dir,
                samples=samples,
                keep_rows=kept,
                untrained_ok=True,
                progress=False,
            )
    return routed, packages


def build_release(
    coordinator: Runtime,
    request: BuildRequest,
    work: Path,
    on_step: Callable[[str], None] = lambda step: None,
) -> dict:
    """Build, gate, sign and publish one release; returns what was published (raises GateRefused)."""
    settings, registry = coordinator.settings, coordinator.registry
    work.mkdir(parents=True, exist_ok=True)
    done = _published_by(coordinator, request, work)
    if done is not None:  # a redelivered or retried job whose release is out: record it if needed, nothing more
        on_step("publish")
        return _record(coordinator, request, done)
    timer = Timer(work)
    on_step("plan")
    if load_plan(work) is None:
        with timer.step("plan"):
            parent = state.latest_release(registry)
            save_plan(work, plan_experts(registry, request.pins), parent.number if parent else None)
    experts, parent_number = load_plan(work)
    parent_dir = settings.releases_dir / f"r{parent_number}" if parent_number else None
    recipe = load_router_recipe(settings.router_recipe)
    routed, packages = build_model(
        coordinator, experts, parent_dir, work, recipe, settings.build_threads, timer, on_step
    )

    on_step("evaluate")
    eval_path = work / "eval.json"
    if not eval_path.is_file():
        parent_eval = None
        if parent_number:
            parent_eval = {d: {"score": s} for d, s in state.get_release(registry, parent_number).eval.items()}
        with timer.step("evaluate"):
            table = evaluate_release(routed, packages, settings.eval_examples, parent_eval)
        eval_path.write_text(json.dumps(table, sort_keys=True))
    table = json.loads(eval_path.read_text())

    on_step("gate")
    tolerances = {d: settings.gate_tolerances.get(d, settings.gate_tolerance) for d in table}
    refused = regressions(table, settings.gate_tolerance, settings.gate_tolerances)
    if refused and not request.force:
        raise GateRefused(refused, table)
    gate = {"tolerances": tolerances, "regressions": refused, "forced_by": request.actor if refused else ""}

    on_step("sign")
    _number, final = _publish_directory(coordinator, request, work, experts, parent_number, routed, table, gate, timer)
    on_step("publish")
    result = _record(coordinator, request, final)
    for scratch in ("packages", "merged", "routed"):  # the release holds what is worth keeping now
        shutil.rmtree(work / scratch, ignore_errors=True)
    return result


def _published_by(coordinator: Runtime, request: BuildRequest, work: Path) -> Path | None:
    number_file = work / "number.json"
    if request.job_id is None or not number_file.is_file():
        return None
    final = coordinator.settings.releases_dir / f"r{json.loads(number_file.read_text())}"
    return final if final.is_dir() and publish.owned_by(final, request.job_id) else None


def _record(coordinator: Runtime, request: BuildRequest, final: Path) -> dict:
    """Write the release's row (once) and announce it; the result of the build job."""
    manifest = read_manifest(final)
    try:
        moved = publish.record(coordinator.registry, final, manifest, request.actor)
    except BarFedError as exc:
        if exc.code != "RELEASE_EXISTS":
            raise
        moved = state.channels_of(coordinator.registry, manifest.number)
    event = {
        "release": manifest.number,
        "name": manifest.name,
        "channels": moved,
        "domains": [e.domain for e in manifest.experts],
    }
    publish.announce(coordinator.settings.announce_redis_url, event)
    table = {d: s.model_dump() for d, s in manifest.eval.items()}
    return {**event, "eval": table, "gate": manifest.gate, "wall_s": manifest.wall_s}


def run_build(ctx) -> dict:
    """The build job's handler: the task layer calls it with its JobContext (settings, stores, job, work_dir)."""
    from coordinator.tasks.runner import Gated

    coordinator = Runtime(ctx.settings, ctx.registry, ctx.blobs, ctx.keys)
    try:
        return build_release(coordinator, BuildRequest.from_params(ctx.params, ctx.job_id), ctx.work_dir, ctx.step)
    except GateRefused as refused:
        raise Gated(
            {
                "code": refused.code,
                "message": refused.message,
                "regressions": refused.regressions,
                "eval": refused.table,
            }
        ) from None


def _publish_directory(coordinator, request, work, experts, parent_number, routed, table, gate, timer):
    """Stage, sign and rename into ``releases/r<N>``, taking the next free number; idempotent per job."""
    settings = coordinator.settings
    number_file = work / "number.json"
    for _ in range(100):
        number = _number(coordinator, number_file)
        final = settings.releases_dir / f"r{number}"
        if final.exists() and publish.owned_by(final, request.job_id) and request.job_id is not None:
            return number, final
        if final.exists():
            _forget_number(number_file)
            continue
        with timer.step("sign"):
            manifest = release_manifest(
                settings, request, experts, parent_number, routed, table, gate, number, {**timer.times}
            )
            staging = publish.stage_release(routed, settings.releases_dir, manifest, coordinator.keys.release_key_path)
        if publish.move_into_place(staging, final):
            return number, final
        shutil.rmtree(staging, ignore_errors=True)
        _forget_number(number_file)
    raise BarFedError("NO_RELEASE_NUMBER", "could not claim a release number; another build keeps taking them.")


def release_manifest(settings, request, experts, parent_number, routed, table, gate, number, wall_s):
    card = router_card(routed)
    slots = json.loads((routed / MERGE_CARD).read_text())["slots"]
    frozen = card.get("frozen_rows", [])
    return ReleaseManifest(
        name=f"r{number}",
        number=number,
        parent=parent_number,
        anchor_fingerprint=anchor_fingerprint(settings.anchor_dir),
        experts=experts,
        router=RouterRun(
            recipe=card["recipe"],
            seed=card["recipe"]["seed"],
            steps=card["summary"].get("steps", 0),
            threads=settings.build_threads,
            incremental=parent_number is not None,
            trained_rows=[slot for slot in slots if slot not in frozen],
            frozen_rows=frozen,
            kept_rows=card.get("kept_rows", []),
            examples=card.get("examples", 0),
            resumed_from=card["summary"].get("resumed_from"),
        ),
        eval=table,
        eval_examples=settings.eval_examples,
        gate=gate,
        project_version=version("bar-federation"),
        job_id=request.job_id,
        built_at=datetime.now(UTC).replace(microsecond=0),
        wall_s=wall_s,
    )


def _number(coordinator: Runtime, number_file: Path | None) -> int:
    if number_file is not None and number_file.is_file():
        return int(json.loads(number_file.read_text()))
    taken = [int(p.name[1:]) for p in coordinator.settings.releases_dir.glob("r*") if p.name[1:].isdigit()]
    number = max([state.next_number(coordinator.registry) - 1, *taken], default=0) + 1
    if number_file is not None:
        number_file.parent.mkdir(parents=True, exist_ok=True)
        number_file.write_text(json.dumps(number))
    return number


def _forget_number(number_file: Path | None) -> None:
    if number_file is not None:
        number_file.unlink(missing_ok=True)


def rebuild(coordinator: Runtime, number: int, scratch: Path) -> dict[str, str]:
    """Re-run r``number``'s build from its release.json in ``scratch``; per file: match, differs, missing, extra.

    release.json (it holds wall times) and model.sig (it signs release.json) are not compared: every other
    file must come out bit for bit the same on CPU with the recorded thread count.
    """
    published = coordinator.settings.releases_dir / f"r{number}"
    manifest = read_manifest(published)
    parent_dir = coordinator.settings.releases_dir / f"r{manifest.parent}" if manifest.parent else None
    recipe = RouterRecipe.model_validate(manifest.router.recipe)
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    timer = Timer(scratch)
    routed, _ = build_model(
        coordinator, manifest.experts, parent_dir, scratch, recipe, manifest.router.threads, timer, lambda s: None
    )
    files = scratch / "files"
    files.mkdir()
    publish.release_files(routed, files)
    skip = {RELEASE_FILE, SIGNATURE_FILE}
    ours = {p.name: file_sha256(p) for p in files.iterdir() if p.is_file()}
    theirs = {p.name: file_sha256(p) for p in published.iterdir() if p.is_file() and p.name not in skip}
    report = {}
    for name in sorted(set(ours) | set(theirs)):
        if name not in ours:
            report[name] = "missing"
        elif name not in theirs:
            report[name] = "extra"
        else:
            report[name] = "match" if ours[name] == theirs[name] else "differs"
    return report
