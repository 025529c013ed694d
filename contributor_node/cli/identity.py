"""`barfed node init`, `enroll` and `export-key`: the node's key, its pins and settings, its certificate, and the
public key others check its packages with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contributor_node.cli.shared import console, interactive, node_settings, refusals, retrying


@refusals
def init(
    ctx: typer.Context,
    org: Annotated[str, typer.Option(help="this organization's id, as its invitation names it")],
    service: Annotated[str, typer.Option(help="host:port of the coordinator's gRPC service (mutual TLS)")],
    enroll: Annotated[str, typer.Option(help="host:port of the coordinator's enrollment port")],
    ca: Annotated[Path, typer.Option(help="the federation's CA certificate (pki/ca.pem), handed over out of band")],
    release_key: Annotated[
        Path, typer.Option(help="the coordinator's release public key (pki/release.pub): signs the anchor, releases")
    ],
) -> None:
    """Create the node: its settings, the pinned CA and release key, and the organization's private key (0600),
    which never leaves this machine. Rerunning with the same organization only updates the addresses."""
    from contributor_node.setup import initialize, next_step

    home: Path = ctx.obj
    key_path, fingerprint, created = initialize(home, org, service, enroll, ca, release_key)
    console.print(f"node of {org} ready in {home}")
    console.print(f"{'created' if created else 'kept'} key {key_path} ({fingerprint}); it never leaves here")
    console.print(f"next: {next_step(home)}")


@refusals
def enroll(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Option(help="the one-time token of the invitation")] = None,
    wait: Annotated[bool, typer.Option(help="wait until an operator approves or rejects")] = False,
    contact: Annotated[str, typer.Option(help="who the operator may contact (shown when approving)")] = "",
    timeout: Annotated[float | None, typer.Option(help="seconds --wait waits (default: wait_timeout_s)")] = None,
) -> None:
    """Send a certificate request for this node's key with the invitation token; with --wait, poll until the
    enrollment is decided and store the certificate. Rerunning asks about the same enrollment."""
    from contributor_node.enrollment import Enrollment, pending

    settings = node_settings(ctx)
    address = settings.enroll_address
    retry = retrying(settings, "enroll", address) if wait else interactive(settings, address)
    enrollment = Enrollment(settings, retry, token, contact)
    cert = enrollment.certificate()
    if cert is not None:
        console.print(f"already enrolled: certificate valid until {cert.not_valid_after_utc:%Y-%m-%d} UTC")
        return
    answer = enrollment.ask()
    if wait and pending(answer):
        with console.status(f"enrollment {answer.enrollment_id} waits for an operator's approval"):
            answer = enrollment.wait(answer, timeout or settings.wait_timeout_s)
    cert = enrollment.settle(answer)
    if cert is None:
        console.print(
            f"enrollment {answer.enrollment_id} is pending an operator's approval; "
            "rerun `barfed node enroll --wait` to follow it"
        )
        return
    console.print(
        f"enrolled {settings.org_id}: may publish {', '.join(answer.domains)}; certificate valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d} UTC"
    )
    console.print("next: barfed node fetch-anchor")


@refusals
def export_key(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option(help="where to write it (default: org.pub in the node home)", show_default=False)
    ] = None,
) -> None:
    """Write the organization's public key (PEM), for anyone who checks its packages with the standard tool:
    `model_signing verify key PACKAGE --signature PACKAGE/model.sig --public_key org.pub --no-ignore-git-paths`.
    The private key is never written out."""
    from contributor_node.identity import NodeIdentity

    settings = node_settings(ctx)
    path, fingerprint = NodeIdentity(settings.home, settings.org_id).export_public_key(out or settings.home / "org.pub")
    console.print(f"public key {fingerprint} of {settings.org_id} written to {path}")
