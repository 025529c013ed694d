"""`barfed node fetch-anchor`: the federation's anchor, downloaded resumably and verified before any use."""

from __future__ import annotations

import typer

from contributor_node import anchor
from contributor_node.cli.shared import (
    console,
    coordinator_client,
    err_console,
    interactive,
    node_settings,
    refusals,
    retrying,
)
from contributor_node.home import NodeHome
from contributor_node.progress import TransferProgress


@refusals
def fetch_anchor(ctx: typer.Context) -> None:
    """Download the federation's anchor over mTLS and verify the coordinator's release signature before it is
    used; an interrupted download continues without fetching again what it already has. Once it is here, only
    ask (within seconds) whether the coordinator still publishes it."""
    settings = node_settings(ctx)
    home = NodeHome(settings.home)
    if anchor.fetched(home):
        ours, retry = anchor.our_anchor(home), interactive(settings)
        with coordinator_client(settings, retry) as client:
            anchor.check_current(ours, client, retry)
        console.print(f"anchor {ours} is here and current")
        return
    retry = retrying(settings, "fetch the anchor")
    with coordinator_client(settings, retry) as client, TransferProgress(err_console) as progress:
        task = progress.add_task("anchor", total=None)

        def show(path: str, done: int, size: int) -> None:
            progress.update(task, description=path, completed=done, total=size)

        fingerprint, received = anchor.fetch(settings, client, retry, on_progress=show)
    console.print(f"anchor {fingerprint}: signature verified with {settings.release_key_path}")
    console.print(f"downloaded {received} bytes")
