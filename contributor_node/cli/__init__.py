"""`barfed node …`: an organization's node, from its key to its accepted expert, one resumable command at a time.

Every command can be rerun: it skips what is done (records in the node home, contributor_node/home.py) and
continues what was interrupted (an anchor download, training from its checkpoints, an upload session). Every
refusal is a `BarFedError`: a stable code and what to do, exit status 2.

One module per group of commands parses the options, calls the workflow (contributor_node/enrollment.py,
anchor.py, training.py, packaging.py, upload.py, …) and prints. Workflows that load grpc, torch or transformers
are imported inside the commands, or import those inside themselves, so `barfed --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contributor_node.cli import anchor, identity, submission, training
from contributor_node.settings import node_home

app = typer.Typer(
    help="An organization's node: enroll, fetch the anchor, train, package, submit.", no_args_is_help=True
)


@app.callback()
def node(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(help="the node's directory (default: $BARFED_NODE_HOME, else .barfed/node)", show_default=False),
    ] = None,
) -> None:
    ctx.obj = node_home(home)  # only `init` creates it; the others refuse NOT_INITIALIZED without it


app.command()(identity.init)
app.command()(identity.enroll)
app.command("export-key")(identity.export_key)
app.command("fetch-anchor")(anchor.fetch_anchor)
app.command()(training.train)
app.command("eval")(training.eval_command)
app.command()(submission.package)
app.command()(submission.submit)
app.command()(submission.status)
app.command()(submission.watch)
