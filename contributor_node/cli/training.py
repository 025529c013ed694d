"""`barfed node train` and `eval`: the organization's expert, trained on the anchor and scored locally."""

from __future__ import annotations

from typing import Annotated

import typer

from bar_model.card import expert_card
from bar_model.score_table import score_table
from contributor_node import training
from contributor_node.cli.shared import (
    DomainOption,
    JsonOption,
    console,
    node_settings,
    print_json,
    quiet_libraries,
    refusals,
)
from contributor_node.home import NodeHome
from contributor_node.progress import TrainingLine
from contributor_node.scores import recorded_scores, score_expert, scored_domains


@refusals
def train(
    ctx: typer.Context,
    domain: DomainOption = None,
    recipe: Annotated[str | None, typer.Option(help="expert recipe: a name (tiny, micro) or a TOML file")] = None,
    stages: Annotated[str, typer.Option(help="comma-separated, in order")] = "mid,sft,rl",
    version: Annotated[int, typer.Option(help="which expert version this training makes", min=1)] = 1,
    from_version: Annotated[
        int | None, typer.Option(help="improve this earlier version (train further from it) instead of the anchor")
    ] = None,
) -> None:
    """Train this organization's expert on the anchor through mid-training, SFT and RL (bar_model's stages), or
    improve an earlier version with `--version 2 --from-version 1 --stages sft --recipe …`.

    Resumes from the last checkpoint when interrupted. On GPUs run it under accelerate (HF Trainer and TRL
    underneath): `accelerate launch -m barfed.cli node train …`; on CPU or one GPU run it as is."""
    settings = node_settings(ctx)
    home = NodeHome(settings.home)
    domain = home.granted_domain(domain)
    plan = training.plan_training(
        home, domain, version, from_version, recipe or settings.recipe, stages, settings.report_to
    )
    if plan.done:
        console.print(f"{domain} expert already trained (v{version}): {plan.out}")
        return
    quiet_libraries()
    with TrainingLine(console, domain) as line:
        out = training.train(plan, on_step=line)
    console.print(f"{domain} expert trained (v{version}): {out}")
    console.print(f"next: barfed node eval --version {version}, then barfed node package --version {version}")


@refusals
def eval_command(
    ctx: typer.Context,
    domain: DomainOption = None,
    n: Annotated[int | None, typer.Option(help="held-out problems per domain (default: the recipe's)", min=1)] = None,
    version: Annotated[int, typer.Option(help="which expert version to score", min=1)] = 1,
    as_json: JsonOption = False,
) -> None:
    """Score the trained expert on its domain and the core domains; `package` records the scores."""
    settings = node_settings(ctx)
    home = NodeHome(settings.home)
    domain = home.granted_domain(domain)
    card = expert_card(home.expert(domain, version))
    n = n or card["recipe"]["eval_examples"]
    saved = recorded_scores(home, domain, version, card, n)
    if saved is None:
        quiet_libraries()
        with console.status(f"scoring the {domain} expert on {n} problems of {len(scored_domains(domain))} domains"):
            saved = score_expert(home, domain, version, card, n)
    if as_json:
        print_json({"domain": domain, "version": version, "n": n, "scores": saved["scores"]})
        return
    console.print(
        score_table({f"{domain} expert v{version}": saved["scores"]}, title=f"held-out score (0-100), n = {n}")
    )
