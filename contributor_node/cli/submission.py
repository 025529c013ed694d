"""`barfed node package`, `submit`, `status` and `watch`: the expert signed, sent, judged and released."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from contributor_node import packaging
from contributor_node.cli.shared import (
    DomainOption,
    JsonOption,
    console,
    coordinator_client,
    err_console,
    interactive,
    node_settings,
    print_json,
    quiet_libraries,
    refusals,
    retrying,
)
from contributor_node.home import NodeHome, read_json
from contributor_node.progress import TransferProgress
from contributor_node.releases import follow_releases, retention_dict, retention_text
from contributor_node.scores import recorded_scores
from contributor_node.versions import package_to_submit


@refusals
def package(
    ctx: typer.Context,
    domain: DomainOption = None,
    version: Annotated[int | None, typer.Option(help="expert version (default: the next one)", min=1)] = None,
    no_calibration: Annotated[
        bool,
        typer.Option(
            "--no-calibration",
            help="share no data: no calibration sample or eval set; the router row comes from this node's own "
            "data (mean hidden states), and the coordinator keeps it",
        ),
    ] = False,
    expert_version: Annotated[
        int | None, typer.Option("--expert", help="which trained expert version to package (default: the newest)")
    ] = None,
) -> None:
    """Build and sign the expert's package with the organization's key: the tensors its stages changed, a
    stratified calibration sample and a held-out eval set (unless --no-calibration), and the local scores."""
    settings = node_settings(ctx)
    home = NodeHome(settings.home)
    domain = home.granted_domain(domain)
    plan = packaging.plan_package(home, domain, version, expert_version, calibration=not no_calibration)
    if plan.out.exists():
        console.print(f"package {plan.name} already built: {plan.out}")
        return
    scores = recorded_scores(home, domain, plan.expert_version, plan.card)
    if scores is None:
        err_console.print("no local scores for this expert (run `barfed node eval` first); packaging without them")
    with console.status(f"packaging {plan.name}"):
        if no_calibration:
            quiet_libraries()  # the privacy row runs the anchor: the one packaging path that loads transformers
        examples = packaging.build(settings, plan, scores)
    shared = "no data (privacy router row)" if examples is None else f"{examples} calibration examples"
    console.print(f"package {plan.name} built and signed: {plan.out} ({shared})")
    console.print("next: barfed node submit --wait")


@refusals
def submit(
    ctx: typer.Context,
    domain: DomainOption = None,
    version: Annotated[int | None, typer.Option(help="package version (default: the newest)", min=1)] = None,
    wait: Annotated[bool, typer.Option(help="follow the submission until it is accepted or rejected")] = False,
    timeout: Annotated[float | None, typer.Option(help="seconds --wait waits (default: wait_timeout_s)")] = None,
) -> None:
    """Upload the package (resumable, with progress, retried with backoff while the coordinator is unreachable)
    and commit it; a rerun after any crash continues the same upload session."""
    from contributor_node import upload

    settings = node_settings(ctx)
    home = NodeHome(settings.home)
    domain = home.granted_domain(domain)
    version = package_to_submit(home, domain, version)
    name, package_dir = f"{domain}-v{version}", home.package(domain, version)
    retry = retrying(settings, f"submit {name}")
    with coordinator_client(settings, retry) as client:
        submission_id = upload.submitted(home, name)
        if submission_id:
            console.print(f"{name} was already submitted as {submission_id}")
        else:
            upload.check_package(settings, client, retry, package_dir)
            with TransferProgress(err_console) as progress:
                task = progress.add_task(f"upload {name}", total=upload.package_bytes(package_dir))
                submission_id = upload.upload(
                    settings, client, retry, domain, version, on_sent=lambda sent: progress.update(task, completed=sent)
                )
            console.print(f"{name} submitted as {submission_id}")
        if wait:
            with console.status(f"{name}: the coordinator verifies it"):
                state = upload.verdict(client, retry, name, submission_id, timeout or settings.wait_timeout_s)
            console.print(f"{name}: {state}")


@refusals
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """This organization's submissions (recorded on this node): each one's state at the coordinator and, once
    accepted, its expert's status now (an operator may since have QUARANTINED, DEPRECATED or OPTED_OUT it)."""
    from protocol.v1 import barfed_pb2 as pb

    settings = node_settings(ctx)
    submissions = read_json(NodeHome(settings.home).record("submissions"), {})
    rows = []
    if submissions:
        retry = interactive(settings)
        with coordinator_client(settings, retry) as client:
            for name, record in sorted(submissions.items()):
                found = retry(lambda r=record: client.submission(r["submission_id"]))
                state = pb.SubmissionState.Name(found.state)
                rows.append(
                    {
                        "package": name,
                        "submission_id": record["submission_id"],
                        "domain": found.domain,
                        "version": found.version,
                        "state": state,
                        "expert_status": found.expert_status,
                        "error_code": found.error_code,
                        "message": found.message,
                        "release": found.release,
                        "retention": retention_dict(found.retention) if found.HasField("retention") else None,
                    }
                )
    if as_json:
        print_json({"submissions": rows})
        return
    if not rows:
        console.print("no submissions yet; `barfed node submit` makes one")
        return
    table = Table("package", "submission", "state", "expert", "code", "message", "newest release: kept")
    for row in rows:
        fields = ("package", "submission_id", "state", "expert_status", "error_code", "message")
        kept = f"{row['release']}: {retention_text(row['retention'])}" if row["retention"] else row["release"]
        table.add_row(*(str(row[field]) for field in fields), kept)
    console.print(table)


@refusals
def watch(
    ctx: typer.Context,
    after: Annotated[int | None, typer.Option(help="replay releases newer than rN (default: the last seen)")] = None,
    channel: Annotated[str, typer.Option(help="follow one channel's moves (default: every release)")] = "",
    once: Annotated[bool, typer.Option(help="stop after the first release")] = False,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print each release as one JSON object per line (JSON Lines), for scripts")
    ] = False,
) -> None:
    """Follow releases as the coordinator publishes them (the WatchReleases stream); remembers the last seen, and
    reconnects with backoff when the coordinator goes away."""
    settings = node_settings(ctx)
    retry = retrying(settings, "watch releases")
    with coordinator_client(settings, retry) as client:
        for event in follow_releases(NodeHome(settings.home), client, after, channel, timeout, retry):
            published = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.published_at_unix))
            if as_json:
                print_json(
                    {
                        "release": event.release,
                        "name": event.name,
                        "channels": list(event.channels),
                        "domains": list(event.domains),
                        "published_at": published.replace(" ", "T") + "Z",
                        "manifest_sha256": event.manifest_sha256,
                        "retention": {r.domain: retention_dict(r) for r in event.retention},
                    }
                )
            else:
                channels = f" [{', '.join(event.channels)}]" if event.channels else ""
                line = f"{event.name}{channels} published {published} UTC: {', '.join(event.domains)}"
                for kept in event.retention:
                    line += f"; {kept.domain} {retention_text(retention_dict(kept))}"
                console.print(line, markup=False, highlight=False)  # "[stable]" is text, not a Rich style
            if once:
                break
