"""`barfed coordinator certs …`: the coordinator's TLS server certificate, after `init`.

`init` names the settings' `hostnames` (and loopback) in the server certificate; a coordinator reached by another
name (its public DNS name, a new address) needs a certificate that names it, from the same CA, so that no
organization enrolls again: nodes and users pin the CA, not the server certificate.
"""

from __future__ import annotations

from typing import Annotated

import typer

from coordinator.cli.common import HomeOption, console, settings_for

app = typer.Typer(help="The coordinator's TLS server certificate.", no_args_is_help=True)


@app.command("reissue-server")
def reissue_server(
    hostname: Annotated[
        list[str],
        typer.Option(
            "--hostname", help="a name (or IP address) clients reach the coordinator by; repeatable", show_default=False
        ),
    ],
    home: HomeOption = None,
) -> None:
    """Issue a new server certificate from the same CA naming these hosts and loopback; the running coordinator
    serves it from its next start. The old one stays valid until it expires and nobody enrolls again."""
    from coordinator.keys import CoordinatorKeys, server_names

    keys = CoordinatorKeys(settings_for(home).pki_dir)
    cert = keys.issue_server(hostname)
    names, ips = server_names(hostname)
    console.print(f"{keys.server_cert_path} now names {', '.join([*names, *ips])}", highlight=False)
    console.print(f"valid until {cert.not_valid_after_utc:%Y-%m-%d}; restart `barfed coordinator serve` to serve it")
