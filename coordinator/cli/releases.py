"""`barfed coordinator releases …`: build, list, show, promote, rollback, diff and rebuild releases."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.common import (
    ACTOR,
    HomeOption,
    JsonOption,
    console,
    dispatched,
    print_json,
    registry_for,
    runtime_for,
    settings_for,
    table,
    timestamp,
)
from protocol.errors import BarFedError

app = typer.Typer(help="Releases: build, list, show, promote, rollback, diff, rebuild.", no_args_is_help=True)
ReleaseArgument = Annotated[str, typer.Argument(help="rN, a channel (latest, stable, …) or a release's commit id")]


@app.command("build")
def build(
    pin: Annotated[list[str] | None, typer.Option(help="DOMAIN=VERSION to build from (repeatable)")] = None,
    force: Annotated[
        bool,
        typer.Option(help="build even if nothing changed, publish even if the gate refuses (the audit log names you)"),
    ] = False,
    cold: Annotated[
        bool,
        typer.Option(help="train every router row from scratch, none carried over; allowed when nothing changed"),
    ] = False,
    wait: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    home: HomeOption = None,
) -> None:
    """Queue a release build; the running coordinator's workers pick it up. Refused (NOTHING_CHANGED) when the
    latest release already holds exactly the experts it would, unless --force or --cold."""
    from coordinator.release.actions import parse_pins, request_build

    with runtime_for(home) as runtime:
        job = request_build(runtime.registry, parse_pins(pin or []), force, ACTOR, cold=cold)
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
    if job.state == "done" and "code" not in job.result:  # a done build that published nothing says why in code
        console.print(f"published {job.result.get('name')} ({', '.join(job.result.get('channels', []))})")
        return
    if job.state == "gated":
        _eval_table(job.result.get("eval", {}))
    code = job.error_code or job.result.get("code") or job.state.upper()
    raise BarFedError(code, job.error_message or job.result.get("message", job.state))


def _eval_table(scores: dict) -> None:
    rows = table(
        "domain", "score", "parent", "delta", "package's own set", "expert alone", "retention", "own share", "load"
    )
    for domain, entry in sorted(scores.items()):
        cells = [entry.get(k) for k in ("score", "parent", "delta", "package_score", "expert_score")]
        shares = [entry.get(k) for k in ("retention", "own_share", "load")]
        rows.add_row(
            domain,
            *("-" if v is None else f"{v:g}" for v in cells),
            *("-" if v is None else f"{v:.0%}" for v in shares),
        )
    console.print(rows)


@app.command("list")
def list_releases(home: HomeOption = None, as_json: JsonOption = False) -> None:
    """Published releases, oldest first, with their experts and the channels pointing at them."""
    from coordinator.state import releases as state

    registry = registry_for(home)
    channels: dict[int, list[str]] = {}
    for name, number in state.channels(registry).items():
        channels.setdefault(number, []).append(name)
    rows = state.list_releases(registry)
    if as_json:
        print_json(
            [
                {
                    "name": f"r{release.number}",
                    "number": release.number,
                    "parent": f"r{release.parent}" if release.parent else None,
                    "experts": release.experts,
                    "eval": release.eval,
                    "retention": release.retention,
                    "routing": release.routing,
                    "channels": sorted(channels.get(release.number, [])),
                    "forced_by": release.forced_by,
                    "manifest_sha256": release.manifest_sha256,
                    "commit": state.commit_id(release),
                    "published_at": release.published_at,
                }
                for release in rows
            ]
        )
        return
    listing = table("release", "published", "experts", "channels", "parent", "forced by")
    for release in rows:
        listing.add_row(
            f"r{release.number}",
            timestamp(release.published_at),
            ", ".join(f"{e['domain']} v{e['version']}" for e in release.experts),
            ", ".join(sorted(channels.get(release.number, []))),
            f"r{release.parent}" if release.parent else "",
            release.forced_by,
        )
    console.print(listing)


@app.command("show")
def show(release: ReleaseArgument, home: HomeOption = None, as_json: JsonOption = False) -> None:
    """A release's release.json (JSON with or without --json), its wall_s with the build job's sign and publish."""
    from coordinator.release.actions import show as do_show

    del as_json  # accepted like every show command's: release.json is one JSON document already
    settings = settings_for(home)
    _, manifest = do_show(settings, registry_for(home, settings), release)
    print_json(manifest.model_dump(mode="json"))


@app.command("promote")
def promote(
    release: ReleaseArgument,
    channel: Annotated[str, typer.Option(help="the channel to point at it (any but latest)")] = "stable",
    home: HomeOption = None,
) -> None:
    """Point a channel at a release; a channel already there stays as it is (nothing for rollback to undo)."""
    from coordinator.release.actions import promote as do_promote

    number, previous = do_promote(registry_for(home), release, channel, ACTOR)
    if previous == number:
        console.print(f"{channel} already points at r{number}; nothing changed")
        return
    console.print(f"{channel}: r{number}" + (f" (was r{previous})" if previous else ""))


@app.command("rollback")
def rollback(
    channel: Annotated[str, typer.Argument(help="the channel to move back")] = "stable", home: HomeOption = None
) -> None:
    """Move a channel back to where it pointed before."""
    from coordinator.release.actions import rollback as do_rollback

    current, target = do_rollback(registry_for(home), channel, ACTOR)
    console.print(f"{channel}: r{target} (was r{current})")


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="the release to compare from (rN or a channel)")],
    b: Annotated[str, typer.Argument(help="the release to compare to (rN or a channel)")],
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Experts added, removed or changed from A to B, every domain's score delta and retention."""
    from coordinator.release.actions import diff as do_diff

    result = do_diff(registry_for(home), a, b)
    if as_json:
        print_json(result)
        return
    for label in ("added", "removed"):
        for domain, version in result[label].items():
            console.print(f"{label} {domain} v{version}")
    for domain, change in result["changed"].items():
        console.print(f"changed {domain} v{change['from']} → v{change['to']}")
    scores = table("domain", result["from"], result["to"], "delta", "retention")
    for domain, entry in result["eval"].items():
        kept = result["retention"].get(domain, {})
        retention = " → ".join("-" if kept.get(k) is None else f"{kept[k]:.0%}" for k in ("from", "to"))
        cells = ("-" if entry[k] is None else f"{entry[k]:g}" for k in ("from", "to", "delta"))
        scores.add_row(domain, *cells, retention)
    console.print(scores)


@app.command("rebuild")
def rebuild(
    release: ReleaseArgument,
    scratch: Annotated[Path | None, typer.Option(help="scratch directory (default: home/rebuild-rN)")] = None,
    home: HomeOption = None,
) -> None:
    """Re-run a release's build from its release.json and compare every file's digest with the published one."""
    with runtime_for(home) as runtime:  # the home is checked first: a refusal takes a second, not torch's import
        from coordinator.release.rebuild import rebuild as do_rebuild
        from coordinator.state import releases as state

        number = state.resolve(runtime.registry, release).number
        report = do_rebuild(runtime, number, scratch or runtime.settings.home / f"rebuild-r{number}")
    digests = table("file", "digest")
    for name, verdict in report.items():
        digests.add_row(name, verdict if verdict == "match" else f"[red]{verdict}[/]")
    console.print(digests)
    if set(report.values()) != {"match"}:
        raise BarFedError("REBUILD_DIFFERS", f"r{number} did not rebuild bit for bit; see the files marked above.")
    console.print(f"r{number} rebuilt bit for bit ({len(report)} files)")
