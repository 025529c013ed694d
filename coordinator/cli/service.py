"""`barfed coordinator init`, `serve` and `audit-verify`: set the coordinator up, run it, check its audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.common import HomeOption, console, registry_for, settings_for


def init(
    home: HomeOption = None,
    anchor: Annotated[Path | None, typer.Option(help="2-expert anchor to publish (from init-anchor)")] = None,
) -> None:
    """Create the CA, the coordinator's keys and database, and publish the anchor (rerun it to add what is
    missing). The server certificate names `hostnames` from the settings: set them first, or run
    `barfed coordinator certs reissue-server` later."""
    from coordinator.setup import initialize

    settings = settings_for(home, initialized=False)
    fingerprint = initialize(settings, anchor)
    console.print(f"coordinator ready in {settings.home}")
    console.print(f"CA certificate (give it to organizations): {settings.pki_dir / 'ca.pem'}")
    console.print(f"release public key (publish it): {settings.pki_dir / 'release.pub'}")
    if fingerprint:
        console.print(f"anchor {fingerprint}")


def serve(
    home: HomeOption = None,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker", help="run no task worker: `celery -A coordinator.tasks.celery_app worker` runs elsewhere"
        ),
    ] = False,
    api_listen: Annotated[
        str | None, typer.Option("--api-listen", help="host:port of the REST API (default: settings, 127.0.0.1:8443)")
    ] = None,
) -> None:
    """Serve gRPC and the REST API, sweep jobs and supervise a `celery worker` subprocess, until interrupted."""
    settings = settings_for(home, api_listen=api_listen)  # checked before the servers' imports
    from coordinator.serve import run

    run(settings, worker="none" if no_worker else "process")


def audit_verify(home: HomeOption = None) -> None:
    """Recompute the audit log's hash chain."""
    from coordinator.state.audit import verify

    count = verify(registry_for(home))
    console.print(f"audit log intact: {count} entries")
