"""What the `barfed node` commands share: the consoles, the --domain and --json options, the refusal of a full
disk, and the node's settings, client and retries as every command gets them."""

from __future__ import annotations

import errno
import functools
import json
import logging
from typing import Annotated

import typer

from contributor_node.progress import make_console
from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings, load_node_settings
from protocol.errors import BarFedError

console = make_console()  # paths and ids stay on one line, and tables whole, for scripts
err_console = make_console(stderr=True)

DomainOption = Annotated[
    str | None, typer.Option(help="the expert's domain (default: the one domain this organization was granted)")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print one JSON document on stdout (full ids, for scripts) instead of text")
]


def print_json(document) -> None:
    """One JSON document on one line: no markup, no wrapping, nothing a table would cut."""
    typer.echo(json.dumps(document, sort_keys=True))


def refusals(command):
    """A full disk becomes DISK_FULL, with what to do: every command continues where it stopped."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise BarFedError(
                "DISK_FULL",
                f"no space left on the device holding {exc.filename or 'the node home'}; free some and rerun "
                "the command: it continues where it stopped.",
            ) from None

    return run


def node_settings(ctx: typer.Context) -> NodeSettings:
    return load_node_settings(ctx.obj)


def coordinator_client(settings: NodeSettings, retry: Retrying):
    """An mTLS client as this organization, after the local checks a TLS failure would hide; its calls are as
    patient as ``retry``."""
    from contributor_node.identity import NodeIdentity  # grpc: only for the commands that talk to the coordinator

    identity = NodeIdentity(settings.home, settings.org_id)
    identity.check_certificate()
    return identity.client(settings.service_address, **retry.client_options())


def interactive(settings: NodeSettings, address: str | None = None) -> Retrying:
    """Calls a person waits on at the prompt: a couple of quick tries, then the refusal with the address and why."""
    return Retrying(settings, address or settings.service_address, interactive=True)


def retrying(settings: NodeSettings, purpose: str, address: str | None = None) -> Retrying:
    """Calls of a long-running command to ``address`` (default: the gRPC service), retried with backoff while it is
    unreachable; each wait says on stderr what the command waits for (``purpose``) and where."""
    address = address or settings.service_address

    def say(delay: float) -> None:
        err_console.print(
            f"{purpose}: the coordinator at {address} does not answer; retrying in {delay:.1f}s", highlight=False
        )

    return Retrying(settings, address, on_wait=say)


def quiet_libraries() -> None:
    """Training libraries' INFO and warning chatter only with `barfed --verbose`."""
    if logging.getLogger().level <= logging.DEBUG:
        return
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
