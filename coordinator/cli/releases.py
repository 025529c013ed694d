"""`barfed coordinator releases …`: build, list, show, promote, rollback, diff and rebuild releases."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coordinator.cli.common import (
    ACTOR,
    HomeOption,
    console,
    dispatched,
    registry_for,
    runtime_for,
    settings_for,
    timestamp,
)
from protocol.errors import BarFedError

app = typer.Typer(help="Releases: build, list, show, promote, rollback, diff, rebuild.", no_args_is_help=True)


@app.command("build")
def build(
    pin: Annotated[list[str] | None, typer.Option(help="DOMAIN=VERSION to build from (repeatable)")] = None,
    force: Annotated[bool, typer.Option(help="publish even if the gate refuses (recorded in the audit log)")] = False,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    home: HomeOption = None,
) -> None:
    """Queue a release build; the running coordinator's workers pick it up."""
    from coordinator.release.actions import parse_pins, request_build

    with runtime_for(home) as runtime:
        job = request_build(runtime.registry, parse_pins(pin or []), force, ACTOR)
        console.print(f"build queued as job {job.id}" + dispatched(runtime, job.id))
        if wait:
            _follow(runtime.registry, job.id)


def _follow(registry, job_id: int) -> None:
    from coordinator.state import jobs

    step = None
    while True:
        job = jobs.get(registry, job_id)
        if job.step != step:
            step = job.step
            console.print(f"job {job_id}: {job.state} {step}")
        if job.state in jobs.FINAL:
            break
        time.sleep(1.0)
    if job.state == "done":
        console.print(f"published {job.result.get('name')} ({', '.join(job.result.get('channels', []))})")
        return
    if job.state == "gated":
        _eval_table(job.result.get("eval", {}))
    raise BarFedError(job.error_code or job.state.upper(), job.error_message or job.result.get("message", job.state))


def _eval_table(table: dict) -> None:
    rows = Table("domain", "score", "parent", "delta", "package's own set")
    for domain, entry in sorted(table.items()):
        cells = [entry.get(k) for k in ("score", "parent", "delta", "package_score")]
        rows.add_row(domain, *("-" if v is None else f"{v:g}" for v in cells))
    console.print(rows)


@app.command("list")
def list_releases(home: HomeOption = None) -> None:
    from coordinator.state import releases as state

    registry = registry_for(home)
    channels: dict[int, list[str]] = {}
    for name, number in state.channels(registry).items():
        channels.setdefault(number, []).append(name)
    table = Table("release", "published", "experts", "channels", "parent", "forced by")
    for release in state.list_releases(registry):
        table.add_row(
            f"r{release.number}",
            timestamp(release.published_at),
            ", ".join(f"{e['domain']} v{e['version']}" for e in release.experts),
            ", ".join(sorted(channels.get(release.number, []))),
            f"r{release.parent}" if release.parent else "",
            release.forced_by,
        )
    console.print(table)


@app.command("show")
def show(release: Annotated[str, typer.Argument(help="rN or a channel")], home: HomeOption = None) -> None:
    """release.json of a release."""
    from coordinator.release.actions import show as do_show

    settings = settings_for(home)
    _, manifest = do_show(settings, registry_for(home), release)
    typer.echo(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True))


@app.command("promote")
def promote(
    release: Annotated[str, typer.Argument(help="rN or a channel")],
    channel: Annotated[str, typer.Option(help="the channel to point at it")] = "stable",
    home: HomeOption = None,
) -> None:
    from coordinator.release.actions import promote as do_promote

    number, previous = do_promote(registry_for(home), release, channel, ACTOR)
    console.print(f"{channel}: r{number}" + (f" (was r{previous})" if previous else ""))


@app.command("rollback")
def rollback(channel: Annotated[str, typer.Argument()] = "stable", home: HomeOption = None) -> None:
    """Move a channel back to where it pointed before."""
    from coordinator.release.actions import rollback as do_rollback

    current, target = do_rollback(registry_for(home), channel, ACTOR)
    console.print(f"{channel}: r{target} (was r{current})")


@app.command("diff")
def diff(a: str, b: str, home: HomeOption = None) -> None:
    """Experts added, removed or changed from A to B, and every domain's score delta."""
    from coordinator.release.actions import diff as do_diff

    result = do_diff(registry_for(home), a, b)
    for label in ("added", "removed"):
        for domain, version in result[label].items():
            console.print(f"{label} {domain} v{version}")
    for domain, change in result["changed"].items():
        console.print(f"changed {domain} v{change['from']} → v{change['to']}")
    table = Table("domain", result["from"], result["to"], "delta")
    for domain, entry in result["eval"].items():
        table.add_row(domain, *("-" if entry[k] is None else f"{entry[k]:g}" for k in ("from", "to", "delta")))
    console.print(table)


@app.command("rebuild")
def rebuild(
    release: Annotated[str, typer.Argument(help="rN or a channel")],
    scratch: Annotated[Path | None, typer.Option(help="scratch directory (default: home/rebuild-rN)")] = None,
    home: HomeOption = None,
) -> None:
    """Re-run a release's build from its release.json and compare every file's digest with the published one."""
    from coordinator.release.rebuild import rebuild as do_rebuild
    from coordinator.state import releases as state

    with runtime_for(home) as runtime:
        number = state.resolve(runtime.registry, release).number
        report = do_rebuild(runtime, number, scratch or runtime.settings.home / f"rebuild-r{number}")
    table = Table("file", "digest")
    for name, verdict in report.items():
        table.add_row(name, verdict if verdict == "match" else f"[red]{verdict}[/]")
    console.print(table)
    if set(report.values()) != {"match"}:
        raise BarFedError("REBUILD_DIFFERS", f"r{number} did not rebuild bit for bit; see the files marked above.")
    console.print(f"r{number} rebuilt bit for bit ({len(report)} files)")
