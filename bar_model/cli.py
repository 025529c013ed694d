"""`barfed model …`: build the tiny base, branch an anchor, train, merge, route and evaluate experts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bar_model.domains import CORE_DOMAINS
from bar_model.score_table import score_table

app = typer.Typer(help="The BAR method on one machine: base, anchor, experts, evaluation.", no_args_is_help=True)
console = Console()


@app.command("domains")
def domains_command() -> None:
    """List every synthetic domain."""
    from bar_model.domains import domain_names, get_domain

    table = Table("domain", "description")
    for name in domain_names():
        table.add_row(name, get_domain(name).description)
    console.print(table)


@app.command("build-base")
def build_base_command(
    out: Annotated[Path, typer.Option(help="directory that receives base/ and anchor/")],
    recipe: Annotated[str, typer.Option(help="named base recipe (tiny, micro) or a TOML file")] = "tiny",
) -> None:
    """Train the tokenizer, pretrain a tiny Olmo2 base on general text, and post-train it into the anchor."""
    from bar_model.base import build_base
    from bar_model.recipe import load_base_recipe

    base, anchor = build_base(load_base_recipe(recipe), out)
    console.print(f"base: {base}\nanchor: {anchor}")


@app.command("init-anchor")
def init_anchor_command(
    anchor: Annotated[Path, typer.Option(help="dense Olmo2 anchor (post-trained)")],
    out: Annotated[Path, typer.Option(help="where to write the 2-expert FlexOlmo checkpoint")],
    base: Annotated[Path | None, typer.Option(help="dense Olmo2 base whose FFN seeds slot 1")] = None,
) -> None:
    """Build the 2-expert FlexOlmo training checkpoint from an OLMo-2 base/anchor pair."""
    from bar_model.branch import init_anchor
    from protocol.fingerprint import anchor_fingerprint

    init_anchor(anchor, out, base)
    console.print(f"wrote {out} (fingerprint {anchor_fingerprint(out)})")


@app.command("train-expert")
def train_expert_command(
    anchor: Annotated[Path, typer.Option(help="2-expert anchor from init-anchor, or a dense Olmo2 anchor")],
    domain: Annotated[str, typer.Option(help="domain to specialise in (`barfed model domains`)")],
    out: Annotated[Path, typer.Option(help="where the finished expert appears")],
    stages: Annotated[str, typer.Option(help="comma-separated, in order")] = "mid,sft,rl",
    recipe: Annotated[str, typer.Option(help="named expert recipe (tiny, micro) or a TOML file")] = "tiny",
    base: Annotated[Path | None, typer.Option(help="dense base, when --anchor is dense")] = None,
) -> None:
    """Train one domain expert with BAR's progressive unfreezing; rerun the same command to resume. Each stage logs
    one line as it ends, with its time; progress bars only on a terminal."""
    from bar_model.expert import expert_card, train_expert
    from bar_model.recipe import STAGE_ORDER, load_expert_recipe

    train_expert(anchor, domain, stages, out, load_expert_recipe(recipe), base_dir=base, progress=sys.stderr.isatty())
    summaries = expert_card(out)["stage_summaries"]
    losses = ", ".join(
        f"{stage} {_loss(summaries[stage]['first_loss'])} → {_loss(summaries[stage]['last_loss'])}"
        for stage in STAGE_ORDER
        if stage in summaries
    )
    console.print(f"expert written to {out} (loss {losses})", soft_wrap=True)


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@app.command("merge")
def merge_command(
    anchor: Annotated[Path, typer.Option(help="the 2-expert anchor every expert branched from")],
    expert: Annotated[list[Path], typer.Option(help="an expert checkpoint or package; repeat for each expert")],
    out: Annotated[Path, typer.Option(help="where the merged (N+1)-expert model appears")],
    top_k: Annotated[int | None, typer.Option(help="experts per token (default: all)", min=1)] = None,
) -> None:
    """Merge N experts into one FlexOlmo model: anchor slot, one slot per expert, averaged shared tensors."""
    from bar_model.merge import merge_card, merge_experts

    merge_experts(anchor, expert, out, top_k=top_k)
    console.print(f"merged {', '.join(merge_card(out)['slots'])} into {out}; train its router next")


@app.command("train-router")
def train_router_command(
    merged: Annotated[Path, typer.Argument(help="a model written by `barfed model merge`")],
    out: Annotated[Path, typer.Option(help="where the routed model appears")],
    recipe: Annotated[str, typer.Option(help="named router recipe (tiny, micro) or a TOML file")] = "tiny",
    previous: Annotated[
        Path | None,
        typer.Option(help="the previous routed release: unchanged experts keep their router rows from it, frozen"),
    ] = None,
) -> None:
    """Train only the router of a merged model on a stratified sample of every domain's SFT data."""
    from bar_model.recipe import load_router_recipe
    from bar_model.router import train_router

    train_router(merged, out, load_router_recipe(recipe), previous=previous)
    console.print(f"routed model written to {out}")


@app.command("drop-expert")
def drop_expert_command(
    merged: Annotated[Path, typer.Argument(help="a merged (and possibly routed) model")],
    domain: Annotated[str, typer.Option(help="the expert to remove")],
    out: Annotated[Path, typer.Option(help="where the model without it appears")],
) -> None:
    """Opt-out: the same model without one expert's FFN slot and router row."""
    from bar_model.merge import drop_expert

    drop_expert(merged, domain, out)
    console.print(f"{domain} removed; written to {out}")


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="any dense, 2-expert or merged checkpoint")],
    domains: Annotated[str, typer.Option(help="comma-separated domains")] = ",".join(CORE_DOMAINS),
    n: Annotated[int, typer.Option(help="held-out problems per domain", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="which held-out problems are drawn (the same seed, the same problems)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Print per-domain scores (0-100) of a checkpoint."""
    from bar_model.domains import get_domain
    from bar_model.evaluate import evaluate, load_model

    names = [d.strip() for d in domains.split(",") if d.strip()]
    for name in names:
        get_domain(name)  # unknown domains fail before the model loads
    model, tokenizer = load_model(checkpoint)
    scores = evaluate(model, tokenizer, names, n=n, seed=seed)
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "n": n, "scores": scores}))
    else:
        console.print(score_table({checkpoint.name: scores}))


@app.command("routing-report")
def routing_report_command(
    model_dir: Annotated[Path, typer.Argument(help="a merged or routed model, a release or a build's routed/ dir")],
    examples: Annotated[int, typer.Option(help="held-out examples per domain", min=1)] = 32,
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the numbers to this file")] = None,
) -> None:
    """Where a merged model sends each domain's tokens, per layer: its anchor, its own expert, or a foreign one."""
    from bar_model.routing_report import report_table, routing_report, summary_lines

    report = routing_report(model_dir, examples)
    console.print(report_table(report))
    for line in summary_lines(report):
        console.print(line, soft_wrap=True)
    if json_file is not None:
        json_file.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {json_file}")
