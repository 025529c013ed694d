"""The BAR table's products, built and scored two at a time: one process of one torch thread per core.

The four experts, the retrained code expert and multitask re-training depend only on the anchor, and every
evaluation only on its model, so `build_table` runs them as a dependency graph in spawned worker processes
(a forked torch misbehaves with threads, and one thread each is what two shared cores do best: an expert stage
ran 5x slower with two threads than with one there, docs/PERFORMANCE.md). Every product is published
atomically and `ensure` skips what exists, so a killed run resumes where it stopped (a job that fails stops
the run once the job beside it has finished and published its product).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

EXPERT_DOMAINS = ["math", "code", "tool_use", "safety"]
COLUMNS = [*EXPERT_DOMAINS, "general"]


class ScoreCache:
    """Scores of every evaluated model, kept in the work directory so a rerun evaluates only what changed.

    A model is known by its path, its weights' modification time and the number of problems. Several
    processes may score at once: each update re-reads the file under a lock and replaces it in one rename.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scores = json.loads(path.read_text()) if path.is_file() else {}

    def key(self, model_dir: Path, n: int) -> str:
        weights = sorted(model_dir.glob("*.safetensors"))
        return f"{model_dir.resolve()}|{max(w.stat().st_mtime_ns for w in weights)}|{n}"

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def __call__(self, model_dir: Path, n: int) -> dict[str, float]:
        from bar_model.evaluate import evaluate, load_model

        key = self.key(model_dir, n)
        if key not in self.scores and self.path.is_file():  # another process may have scored it meanwhile
            self.scores.update(json.loads(self.path.read_text()))
        if key not in self.scores:
            model, tokenizer = load_model(model_dir)
            scores = evaluate(model, tokenizer, COLUMNS, n=n)
            with self._locked():  # keep what another process added meanwhile
                if self.path.is_file():
                    self.scores.update(json.loads(self.path.read_text()))
                self.scores[key] = scores
                staging = self.path.with_suffix(f".{os.getpid()}.tmp")
                staging.write_text(json.dumps(self.scores, indent=1))
                staging.replace(self.path)
            print(f"{model_dir.name}: {self.scores[key]}", flush=True)
        return dict(self.scores[key])


def ensure(path: Path, build, recipe=None) -> Path:
    """Build ``path`` unless a previous run already did (every product is published atomically).

    With ``recipe``, a product whose card records another recipe (an expert's or a router's) is rebuilt,
    so a run after a recipe change never reuses stale models.
    """
    if path.exists() and recipe is not None and recorded_recipe(path) != recipe.model_dump():
        shutil.rmtree(path)
    if not path.exists():
        build()
    return path


def recorded_recipe(path: Path) -> dict | None:
    """The recipe on a product's expert or router card (None when there is no such product)."""
    from bar_model.card import EXPERT_CARD
    from bar_model.router import ROUTER_CARD

    for card in (ROUTER_CARD, EXPERT_CARD):
        if (path / card).is_file():
            return json.loads((path / card).read_text())["recipe"]
    return None


def bar_model(branch: Path, experts: list[Path], out: Path, router_recipe, previous: Path | None = None) -> Path:
    """Merge ``experts`` onto ``branch`` and train the router: a BAR release's model."""
    from bar_model.merge import merge_experts
    from bar_model.router import train_router

    merged = out.parent / f"{out.name}-unrouted"
    shutil.rmtree(merged, ignore_errors=True)
    merge_experts(branch, experts, merged)
    train_router(merged, out, router_recipe, previous=previous, progress=False)
    shutil.rmtree(merged, ignore_errors=True)
    return out


# -- the jobs: top-level functions, so a spawned worker can run them -------------------------------------------


def expert_job(branch: Path, domain: str, out: Path, recipe) -> Path:
    from bar_model.expert import train_expert

    return ensure(out, lambda: train_expert(branch, domain, "mid,sft,rl", out, recipe, progress=False), recipe)


def multitask_job(branch: Path, out: Path, recipe) -> Path:
    from bar_model.baselines import train_multitask

    # Nothing is merged, so no layer needs to keep the anchor's FFN: every layer trains, as in the experts' own
    # recipe otherwise.
    multitask = recipe.model_copy(update={"anchor_layers": 0})
    return ensure(out, lambda: train_multitask(branch, EXPERT_DOMAINS, out, multitask, progress=False))


def average_job(branch: Path, experts: list[Path], out: Path) -> Path:
    from bar_model.baselines import weight_average

    return ensure(out, lambda: weight_average(branch, experts, out))


def bar_job(branch: Path, experts: list[Path], out: Path, router_recipe, previous: Path | None = None) -> Path:
    return ensure(out, lambda: bar_model(branch, experts, out, router_recipe, previous=previous), router_recipe)


def btx_job(branch: Path, experts: list[Path], out: Path, router_recipe) -> Path:
    from bar_model.baselines import build_btx

    return ensure(out, lambda: build_btx(branch, experts, out, router_recipe, progress=False), router_recipe)


def score_job(cache: Path, model_dir: Path, n: int) -> dict[str, float]:
    return ScoreCache(cache)(model_dir, n)


@dataclass
class Job:
    fn: object
    args: tuple
    after: list[str] = field(default_factory=list)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_jobs(jobs: dict[str, Job], workers: int) -> dict[str, object]:
    """Run ``jobs`` in their dict order as soon as what they come ``after`` is done, ``workers`` at a time.

    Returns each job's result. With one worker everything runs here, in order (the same products, no processes).
    """
    if workers <= 1:
        return {name: job.fn(*job.args) for name, job in jobs.items()}
    done: dict[str, object] = {}
    pending = dict(jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        running = {}
        while pending or running:
            for name, job in list(pending.items()):
                if len(running) < workers and set(job.after) <= done.keys():
                    running[pool.submit(job.fn, *job.args)] = name, time.perf_counter()
                    del pending[name]
            if not running:
                raise RuntimeError(f"jobs wait on something that never runs: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                result = future.result()  # a failed job stops the run; a rerun resumes from what was published
                name, started = running.pop(future)
                done[name] = result
                print(f"[{len(done)}/{len(jobs)}] {name}: {time.perf_counter() - started:.0f} s", flush=True)
    return done


def table_jobs(work: Path, anchor: Path, branch: Path, recipe, plus_recipe, router_recipe, cache: Path, n: int):
    """Every product and score of the table and the swap, longest chains first."""
    table, experts_dir = work / "table", work / "experts"
    experts = [experts_dir / d for d in EXPERT_DOMAINS]
    code_plus = experts_dir / "code-plus"
    swapped = [code_plus if d == "code" else experts_dir / d for d in EXPERT_DOMAINS]
    jobs = {"multitask": Job(multitask_job, (branch, table / "multitask", recipe))}
    jobs |= {d: Job(expert_job, (branch, d, experts_dir / d, recipe)) for d in EXPERT_DOMAINS}
    jobs["bar"] = Job(bar_job, (branch, experts, table / "bar", router_recipe), EXPERT_DOMAINS)
    jobs["code-plus"] = Job(expert_job, (branch, "code", code_plus, plus_recipe))
    after_swap = [*EXPERT_DOMAINS, "code-plus"]
    incremental = (branch, swapped, table / "bar-swapped-incremental", router_recipe, table / "bar")
    jobs["bar-swapped-incremental"] = Job(bar_job, incremental, [*after_swap, "bar"])
    jobs["bar-swapped"] = Job(bar_job, (branch, swapped, table / "bar-swapped", router_recipe), after_swap)
    jobs["btx"] = Job(btx_job, (branch, experts, table / "btx", router_recipe), EXPERT_DOMAINS)
    jobs["average"] = Job(average_job, (branch, experts, table / "average"), EXPERT_DOMAINS)
    scored = {"anchor": anchor, **{d: experts_dir / d for d in [*EXPERT_DOMAINS, "code-plus"]}}
    scored |= {name: table / name for name in ("bar", "btx", "average", "bar-swapped", "bar-swapped-incremental")}
    scored["multitask"] = table / "multitask"
    for name, path in scored.items():
        jobs[f"score {name}"] = Job(score_job, (cache, path, n), [] if name == "anchor" else [name])
    return jobs
