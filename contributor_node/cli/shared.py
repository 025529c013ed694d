"""What the `barfed node` commands share: the consoles, the --domain option, the refusal of a full disk, and the
node's settings, client and retries as every command gets them."""

from __future__ import annotations

import errno
import functools
import logging
from typing import Annotated

import typer
from rich.console import Console

from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings, load_node_settings
from protocol.errors import BarFedError

console = Console(soft_wrap=True)  # paths and ids stay on one line, for scripts
err_console = Console(stderr=True, soft_wrap=True)

DomainOption = Annotated[
    str | None, typer.Option(help="the expert's domain (default: the one domain this organization was granted)")
]


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


def coordinator_client(settings: NodeSettings):
    """An mTLS client as this organization, after the local checks a TLS failure would hide."""
    from contributor_node.identity import NodeIdentity  # grpc: only for the commands that talk to the coordinator

    identity = NodeIdentity(settings.home, settings.org_id)
    identity.check_certificate()
    return identity.client(settings.service_address, timeout=settings.call_timeout_s)


def retrying(settings: NodeSettings, address: str | None = None) -> Retrying:
    """Calls to ``address`` (default: the gRPC service) retried while it is unreachable, each wait said on stderr."""

    def say(delay: float) -> None:
        err_console.print(f"coordinator unreachable; retrying in {delay:.1f}s", highlight=False)

    return Retrying(settings, address or settings.service_address, on_wait=say)


def quiet_libraries() -> None:
    """Training libraries' INFO and warning chatter only with `barfed --verbose`."""
    if logging.getLogger().level <= logging.DEBUG:
        return
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
