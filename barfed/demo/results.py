"""What the demo shows at the end: the per-domain score table (anchor, experts, r1, r2), the r1→r2 diff and
``report.html``, all from what the nodes recorded and what the REST API serves."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from bar_model.score_table import score_table
from barfed import report
from barfed.demo.profiles import ORGS, Profile
from contributor_node.home import NodeHome, read_json

RETENTION_TITLE = "retention: each release's score against its expert's own, alone, on the same problems"


def score_columns(
    work: Path, profile: Profile, anchor: Path, homes: dict[str, Path], manifests: dict[int, dict]
) -> dict[str, dict[str, float]]:
    """Anchor (scored here), each expert (as its node scored it), r1 and r2 (as the coordinator's release
    evaluation scored them, from their release.json): the same held-out problems of each domain (seed 0,
    ``eval_examples`` of them)."""
    domains = list(ORGS.values())
    cache = work / "anchor-scores.json"
    if cache.is_file():
        anchor_scores = json.loads(cache.read_text())
    else:
        from bar_model.evaluate import evaluate, load_model  # torch and transformers: only when not cached

        model, tokenizer = load_model(anchor)
        anchor_scores = evaluate(model, tokenizer, domains, n=profile.eval_examples)
        cache.write_text(json.dumps(anchor_scores))
    columns = {"anchor": {d: anchor_scores[d] for d in domains}}
    for org, domain in ORGS.items():
        for version in (1, 2):
            saved = read_json(NodeHome(homes[org]).scores(domain, version))
            if saved:
                name = f"{domain} expert" + (f" v{version}" if version > 1 else "")
                columns[name] = {d: saved["scores"].get(d) for d in domains}
    for number, manifest in manifests.items():
        columns[f"r{number}"] = {d: (manifest["eval"].get(d) or {}).get("score") for d in domains}
    return columns


def retention_columns(manifests: dict[int, dict]) -> dict[str, dict[str, float | None]]:
    """Per release, from its release.json: each domain's expert alone (as the coordinator scored it, on the
    release's own problems), the release, and how much of the expert's score the release keeps (%)."""
    domains = list(ORGS.values())
    columns: dict[str, dict[str, float | None]] = {}
    for number, manifest in manifests.items():
        entries = {d: manifest["eval"].get(d) or {} for d in domains}
        columns[f"r{number} expert alone"] = {d: e.get("expert_score") for d, e in entries.items()}
        columns[f"r{number}"] = {d: e.get("score") for d, e in entries.items()}
        columns[f"r{number} kept (%)"] = {
            d: None if e.get("retention") is None else round(100 * e["retention"], 1) for d, e in entries.items()
        }
    return columns


def experts(release: dict) -> str:
    return ", ".join(f"{e['domain']} v{e['version']}" for e in release["experts"])


def diff_rows(r1: dict, r2: dict, diff: dict, manifest: dict) -> list[list]:
    """What r2 changed against r1: the experts, the router rows that trained, every domain's score."""
    router = manifest["router"]
    changed = ", ".join(f"{d} v{c['from']}→v{c['to']}" for d, c in diff["changed"].items()) or "none"
    rows = [
        ["experts", experts(r1), experts(r2), changed],
        [
            "router rows trained",
            "all",
            ", ".join(router["trained_rows"]) or "none",
            f"incremental, {router['steps']} steps" if router["incremental"] else f"cold, {router['steps']} steps",
        ],
    ]
    for domain, score in diff["eval"].items():
        rows.append([f"{domain} score", score.get("from"), score.get("to"), score.get("delta")])
    return rows


def show(
    console: Console, columns: dict[str, dict[str, float]], retention: dict, rows: list[list], profile: Profile
) -> None:
    console.print(score_table(columns, title=f"held-out score (0-100), {profile.eval_examples} problems each"))
    if profile.scores_note:
        console.print(f"    {profile.scores_note}", highlight=False)
    console.print(score_table(retention, title=RETENTION_TITLE))
    for row in rows:
        console.print(f"    {row[0]}: {row[1]} → {row[2]} ({row[3]})", highlight=False)


def write_report(
    work: Path,
    profile: Profile,
    columns: dict[str, dict[str, float]],
    retention: dict[str, dict[str, float | None]],
    rows: list[list],
    steps: list[tuple[str, float]],
    stable: Path,
    total: float,
) -> Path:
    notes = [
        f"Profile {profile.name}: expert recipes "
        + ", ".join(f"{domain} {recipe}" for domain, recipe in profile.expert_recipes.items())
        + f"; code v2 {profile.improved_recipe}; router recipe {profile.router_recipe}, "
        f"{profile.eval_examples} held-out problems per domain; {total:.0f} s in all on {os.cpu_count()} CPU cores.",
        f"Files: {work}. The release users pulled: {stable}.",
        *([profile.scores_note] if profile.scores_note else []),
    ]
    return report.write_report(
        work / "report.html",
        title="BAR Federation demo",
        scores=columns,
        retention=retention,
        domains=list(ORGS.values()),
        diff_rows=rows,
        steps=steps,
        notes=notes,
    )
