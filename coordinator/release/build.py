"""The release build: plan → merge → route → evaluate → gate → sign → publish, one job, resumable by step.

Every step writes its output under the job's directory and is skipped when that output exists, so a retried
job (its worker killed, the coordinator restarted) continues where it stopped; router training itself resumes
from its last checkpoint. The plan is kept too, so an expert may leave ACCEPTED while the build runs: the registry
then refuses the release, which is withdrawn, the job fails with EXPERT_NO_LONGER_ACCEPTED and the same request
is queued again, to be planned afresh. Plain functions: the Celery task that runs a build is a thin wrapper around
``build_release``.

Wall times: release.json is signed, so it cannot hold the time it takes to sign it. Its ``wall_s`` holds exactly
the steps finished before it is written (plan, merge, route, evaluate, evaluate_experts); ``sign`` (copying the
files, writing release.json, hashing and signing every file, fsync) and ``publish`` (the rename into place, the
registry row, the announcement) are measured after and added in the job's result, which `releases show` and
GET /v1/releases/{name} read, so a release's whole cost is the sum of the job's ``wall_s``.

A cold build (``cold``) trains every router row from scratch as for a first release; the latest release is still
its parent for the eval delta and the gate, and release.json says ``router.incremental: false``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bar_model.calibration import slot_sample
from bar_model.domains import Example
from bar_model.merge import merge_experts
from bar_model.recipe import RouterRecipe, load_router_recipe
from bar_model.router import train_router
from coordinator.release import publish
from coordinator.release.evaluate import evaluate_release
from coordinator.release.gate import GateRefused, low_retention, regressions, starved
from coordinator.release.manifest import BuiltModel, release_manifest
from coordinator.release.numbering import ReleaseNumber
from coordinator.release.plan import load_plan, plan_experts, save_plan, unchanged
from coordinator.release.retention import add_retention, alone_scores
from coordinator.release.routing import add_routing
from coordinator.release.signed_files import cached_dir, keep_in_cache, local_copy
from coordinator.runtime import Runtime
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.storage import release_prefix, upload_release
from protocol.errors import BarFedError
from protocol.layout import ANCHOR_SLOT
from protocol.package import CALIBRATION_FILE
from protocol.release import ReleaseExpert, read_manifest

log = logging.getLogger(__name__)
STEPS = ("plan", "merge", "route", "evaluate", "gate", "sign", "publish")


@dataclass(frozen=True)
class BuildRequest:
    pins: dict[str, int]
    force: bool
    actor: str
    job_id: int | None
    cold: bool = False  # train every router row from scratch: no parent rows carried

    @classmethod
    def from_params(cls, params: dict, job_id: int | None) -> BuildRequest:
        return cls(
            pins={str(k): int(v) for k, v in (params.get("pins") or {}).items()},
            force=bool(params.get("force", False)),
            actor=str(params.get("actor") or "coordinator"),
            job_id=job_id,
            cold=bool(params.get("cold", False)),
        )

    def params(self) -> dict:
        return {"pins": self.pins, "force": self.force, "cold": self.cold, "actor": self.actor}


class Timer:
    """Wall time per step, kept in the job directory so a resumed build still reports every step."""

    def __init__(self, work: Path) -> None:
        self.path = work / "wall_s.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @contextlib.contextmanager
    def step(self, name: str):
        started = time.perf_counter()
        yield
        self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.times[name] = round(self.times.get(name, 0.0) + seconds, 2)
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
    runtime: Runtime,
    experts: list[ReleaseExpert],
    parent_dir: Path | None,
    work: Path,
    recipe: RouterRecipe,
    threads: int,
    timer: Timer,
    on_step: Callable[[str], None],
    on_checkpoint: Callable[[], None] | None = None,
) -> tuple[Path, dict[str, Path]]:
    """Merge and route into ``work/routed`` (each step skipped when done); returns it and the packages."""
    packages = {e.domain: runtime.blobs.materialize(e.files, work / "packages" / e.domain) for e in experts}
    merged, routed = work / "merged", work / "routed"
    on_step("merge")
    if not merged.exists():
        with timer.step("merge"):
            merge_experts(runtime.settings.anchor_dir, [packages[e.domain] for e in experts], merged)
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
                on_checkpoint=on_checkpoint,
            )
    return routed, packages


def build_release(
    runtime: Runtime,
    request: BuildRequest,
    work: Path,
    on_step: Callable[[str], None] = lambda step: None,
    on_checkpoint: Callable[[], None] | None = None,
    check: Callable[[], None] = lambda: None,
) -> dict:
    """Build, gate, sign and publish one release; returns what was published, or NOTHING_CHANGED's code and message
    when the latest release holds these experts already (raises GateRefused). ``on_checkpoint()`` runs after each
    router checkpoint is saved (the job keeps it on the artifact store); ``check()`` raises once this worker no
    longer holds the job (asked before it removes anything from the store)."""
    settings, registry = runtime.settings, runtime.registry
    work.mkdir(parents=True, exist_ok=True)
    number = ReleaseNumber(runtime, work, request.job_id, check)
    done = number.published()
    timer = Timer(work)
    if done is not None:  # a redelivered or retried job whose release is out: record it if needed, nothing more
        on_step("publish")
        with timer.step("publish"):
            result = _record(runtime, request, done)
            keep_in_cache(runtime, result["release"])
        return {**result, "wall_s": {**result["wall_s"], **timer.times}}
    on_step("plan")
    if load_plan(work) is None:
        with timer.step("plan"):
            parent = state.latest_release(registry)
            save_plan(work, plan_experts(registry, request.pins), parent.number if parent else None)
    experts, parent_number = load_plan(work)
    if not (request.force or request.cold) and (same := unchanged(registry, experts)) is not None:
        # Checked on every attempt, against the latest release now: a build queued before another published the
        # same experts ends here, done and publishing nothing, so no policy or retry builds it again.
        return {"code": same.code, "message": same.message}
    parent_dir = local_copy(runtime, parent_number) if parent_number and not request.cold else None
    recipe = load_router_recipe(settings.router_recipe)
    if settings.top_k:  # the release policy's sparsity; a release of fewer slots routes to every one of them
        recipe = recipe.model_copy(update={"top_k": min(settings.top_k, len(experts) + 1)})
    routed, packages = build_model(
        runtime, experts, parent_dir, work, recipe, settings.build_threads, timer, on_step, on_checkpoint
    )

    on_step("evaluate")
    eval_path = work / "eval.json"
    if not eval_path.is_file():
        parent_eval = None
        if parent_number:
            parent_eval = {d: {"score": s} for d, s in state.get_release(registry, parent_number).eval.items()}
        with timer.step("evaluate"), torch_threads(settings.build_threads):
            table = evaluate_release(routed, packages, settings.eval_examples, parent_eval)
        with timer.step("evaluate_experts"), torch_threads(settings.build_threads):
            alone, scored_now = alone_scores(
                runtime, experts, packages, work, settings.eval_examples, settings.build_threads
            )
        table = add_retention(table, alone)
        with timer.step("routing"), torch_threads(settings.build_threads):
            table = add_routing(table, routed)
        eval_path.write_text(json.dumps(table, sort_keys=True))
        (work / "experts_scored.json").write_text(json.dumps(scored_now))
    table = json.loads(eval_path.read_text())

    on_step("gate")
    tolerances = {d: settings.gate_tolerances.get(d, settings.gate_tolerance) for d in table}
    minimums = {d: settings.min_retentions.get(d, settings.min_retention) for d in table}
    refused = regressions(table, settings.gate_tolerance, settings.gate_tolerances)
    kept_too_little = low_retention(table, settings.min_retention, settings.min_retentions)
    idle = starved(table, settings.min_own_share, settings.min_own_shares)
    if (refused or kept_too_little or idle) and not request.force:
        raise GateRefused(refused, kept_too_little, idle, table, str(routed))
    gate = {
        "tolerances": tolerances,
        "regressions": refused,
        "min_retention": minimums,
        "low_retention": kept_too_little,
        "min_own_share": {d: settings.min_own_shares.get(d, settings.min_own_share) for d in table if d != "general"},
        "starved": idle,
        "forced_by": request.actor if refused or kept_too_little or idle else "",
    }

    on_step("sign")
    before = {step: s for step, s in timer.times.items() if step not in ("sign", "publish")}  # what release.json holds
    built = BuiltModel(experts, parent_number, routed, table, gate, request.job_id, before, parent_dir is not None)

    staged_at = [time.perf_counter()]

    def stage(release_number: int) -> Path:
        with timer.step("sign"):
            manifest = release_manifest(settings, built, release_number)
            staging = publish.stage_release(routed, settings.releases_dir, manifest, runtime.keys.release_key_path)
        staged_at.append(time.perf_counter())
        return staging

    final = number.publish(stage)
    on_step("publish")
    result = _record(runtime, request, final)
    keep_in_cache(runtime, result["release"])  # with a store: the release is there; here it is a cached copy
    timer.add("publish", time.perf_counter() - staged_at[-1])  # the rename into place, the row, the announcement
    result["wall_s"] = {**result["wall_s"], **timer.times}
    result["experts_scored"] = json.loads((work / "experts_scored.json").read_text())  # evaluated alone, not cached
    for scratch in ("packages", "merged", "routed"):  # the release holds what is worth keeping now
        shutil.rmtree(work / scratch, ignore_errors=True)
    return result


def _record(runtime: Runtime, request: BuildRequest, final: Path) -> dict:
    """Upload the release to the object store (if any), write its row (once) and announce it; the result of the
    build job."""
    manifest = read_manifest(final)
    if runtime.store is not None:  # every object before the row: a release is visible only once complete
        upload_release(runtime.store, final, manifest.number)
    try:
        moved = publish.record(runtime.registry, final, manifest, request.actor)
    except BarFedError as exc:
        if exc.code == "EXPERT_NO_LONGER_ACCEPTED":
            raise _withdrawn(runtime, request, final, exc) from None
        if exc.code != "RELEASE_EXISTS":
            raise
        moved = state.channels_of(runtime.registry, manifest.number)
    event = {
        "release": manifest.number,
        "name": manifest.name,
        "channels": moved,
        "domains": [e.domain for e in manifest.experts],
    }
    publish.announce(runtime.settings.announce_redis_url, event)
    table = {d: s.model_dump() for d, s in manifest.eval.items()}
    return {**event, "eval": table, "gate": manifest.gate, "wall_s": manifest.wall_s}


def _withdrawn(runtime: Runtime, request: BuildRequest, final: Path, refused: BarFedError) -> BarFedError:
    """The registry refused the release (an expert left ACCEPTED after the plan): its directory goes, and the same
    request is queued again (once per job), so a fresh plan builds what is ACCEPTED now."""
    number = read_manifest(final).number
    publish.withdraw(final)
    if runtime.store is not None:  # the number may be taken again: no object and no cached copy of this one stays
        runtime.store.delete(
            [f"{release_prefix(number)}/{name}" for name in runtime.store.sizes(release_prefix(number))]
        )
        shutil.rmtree(cached_dir(runtime, number), ignore_errors=True)
    key = f"recheck-{request.job_id if request.job_id is not None else uuid.uuid4().hex[:12]}"
    rebuild = jobs.queue(runtime.registry, "build", key, request.params())
    runtime.dispatch(rebuild.id)
    log.warning("%s: %s; rebuild queued as job %s", final.name, refused.message, rebuild.id)
    return BarFedError(refused.code, f"{refused.message} The same build is queued again as job {rebuild.id}.")
