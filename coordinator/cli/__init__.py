"""`barfed coordinator …`: set up and run the coordinator, and the operator's actions on its own host, one module
per command group; the options they share, and the check that the home was initialised, live in
`coordinator.cli.common`."""

from __future__ import annotations

import typer

from coordinator.cli import certs, experts, jobs, orgs, releases, service, storage, tokens
from coordinator.cli.common import remember_home

app = typer.Typer(help="Run the federation's coordinator and act on it as its operator.", no_args_is_help=True)
app.callback()(remember_home)
app.command()(service.init)
app.command()(service.serve)
app.command("audit-verify")(service.audit_verify)
app.add_typer(orgs.orgs, name="orgs")
app.add_typer(orgs.enrollments, name="enrollments")
app.add_typer(experts.app, name="experts")
app.add_typer(releases.app, name="releases")
app.add_typer(jobs.app, name="jobs")
app.add_typer(tokens.app, name="tokens")
app.add_typer(certs.app, name="certs")
app.add_typer(storage.app, name="storage")
