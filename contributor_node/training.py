"""`barfed node train` on the node: where training starts, whether the expert is already trained (decided before
torch is imported, so a rerun with nothing to do answers at once), and the training itself, its progress kept in
training.json for whoever watches a run that takes hours (the demo, a dashboard)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bar_model.card import expert_card
from bar_model.recipe import ExpertRecipe, load_expert_recipe, parse_stages
from contributor_node.anchor import our_anchor
from contributor_node.home import NodeHome, write_json
from contributor_node.versions import training_start
from protocol.errors import BarFedError


@dataclass(frozen=True)
class TrainingPlan:
    home: NodeHome
    domain: str
    version: int
    start: Path  # the anchor, or the earlier expert this version improves
    recipe: ExpertRecipe
    stages: list[str]
    done: bool  # the expert is there, trained with this recipe and these stages

    @property
    def out(self) -> Path:
        return self.home.expert(self.domain, self.version)


def plan_training(
    home: NodeHome,
    domain: str,
    version: int,
    from_version: int | None,
    recipe: str,
    stages: str,
    report_to: list[str] | None = None,
) -> TrainingPlan:
    """What `train` would do; EXPERT_EXISTS when v``version`` was trained with another recipe or stages.
    ``report_to`` (the node's setting) replaces the recipe's trackers; it is no part of what the recipe trains."""
    our_anchor(home)
    start = training_start(home, domain, version, from_version)
    chosen = load_expert_recipe(recipe)
    if report_to is not None:
        chosen = chosen.reporting_to(report_to)
    plan = TrainingPlan(home, domain, version, start, chosen, parse_stages(stages), done=False)
    if not plan.out.exists():
        return plan
    card = expert_card(plan.out)
    declared = set(plan.stages) | set(expert_card(start)["stages"] if from_version else ())
    if card["recipe"] == chosen.model_dump() and set(card["stages"]) == declared:
        return replace(plan, done=True)
    raise BarFedError(
        "EXPERT_EXISTS",
        f"{plan.out} was trained with another recipe or stages; give another --version, or package it as is.",
    )


class TrainingRecord:
    """training.json (the shape is in home.py): rewritten when a stage starts, at most once a second as steps end,
    and once more, done, when the expert is written."""

    EVERY_S = 1.0

    def __init__(self, path: Path, domain: str, version: int) -> None:
        self.path = path
        self.state: dict = {"domain": domain, "version": version}
        self.written_at = 0.0

    def __call__(self, stage: str, step: int, total: int) -> None:
        started = stage != self.state.get("stage")
        if started:
            self.state.update(stage=stage, stage_started_at=time.time())
        self.state.update(step=step, total=total)
        if started or time.monotonic() - self.written_at >= self.EVERY_S:
            self._write(done=False)

    def finish(self, stage: str, total: int) -> None:
        """Done; ``stage`` and its ``total`` steps stand for a run whose stages were all done before it started."""
        if "stage" not in self.state:
            self.state.update(stage=stage, step=total, total=total, stage_started_at=time.time())
        self._write(done=True)

    def _write(self, done: bool) -> None:
        write_json(self.path, {**self.state, "updated_at": time.time(), "done": done})
        self.written_at = time.monotonic()


def train(plan: TrainingPlan, on_step: Callable[[str, int, int], None] | None = None) -> Path:
    """Train the planned expert (resuming from its checkpoints), recording its progress; ``on_step(stage, step,
    total)`` hears every report the record does, as it comes."""
    from bar_model.checkpoint import on_main_process  # torch and transformers: only once there is training to do
    from bar_model.expert import train_expert

    record = TrainingRecord(plan.home.training, plan.domain, plan.version)

    def step(stage: str, n: int, total: int) -> None:
        record(stage, n, total)
        if on_step is not None:
            on_step(stage, n, total)

    # progress=False: no bars; one log line per stage, with its time
    train_expert(plan.start, plan.domain, plan.stages, plan.out, plan.recipe, progress=False, on_step=step)
    last = plan.stages[-1]
    on_main_process(record.finish, last, getattr(plan.recipe, last).steps)
    return plan.out
