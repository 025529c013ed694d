"""The `barfed` command: one entry point for the coordinator, contributor nodes, the model and the demo.

Exit status: 0 done, 2 a refusal (``error [CODE] what to do``), 64 a usage error (EX_USAGE in sysexits.h: an
unknown option, a missing argument; Click's message), 1 a bug (a traceback)."""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape  # a message's [text] is text: pip's "bar-federation[node]"
from typer.core import TyperGroup

from bar_model.cli import app as model_app
from contributor_node.cli import app as node_app
from coordinator.cli import app as coordinator_app
from protocol.errors import BarFedError

# Installs per role (pyproject.toml): the base runs `barfed pull`; every other command needs extras, known here by
# the modules our code imports from them, so a missing one is one line before any of them is imported.
EXTRA_MODULES = {
    "node": ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers", "safetensors", "grpc"),
    "coordinator": (
        "fastapi",
        "fastapi_offline",
        "uvicorn",
        "prometheus_client",
        "celery",
        "kombu",
        "redis",
        "sqlalchemy",
        "alembic",
    ),
}
COMMAND_EXTRAS = {
    "node": ("node",),
    "model": ("node",),
    "coordinator": ("node", "coordinator"),  # release builds merge, route and evaluate with the node's stack
    "demo": ("node", "coordinator"),
}


def require_extras(command: str | None) -> None:
    """MISSING_EXTRA with the pip command when ``barfed <command>`` cannot run in this install (and the modules, when
    an extra is there only in part): a pull-only install would otherwise end in an ImportError deep in the command."""
    lacking = {}
    for extra in COMMAND_EXTRAS.get(command or "", ()):
        missing = [module for module in EXTRA_MODULES[extra] if not installed(module)]
        if missing:
            lacking[extra] = missing
    if lacking:
        partly = [m for extra, missing in lacking.items() if len(missing) < len(EXTRA_MODULES[extra]) for m in missing]
        named = f" ({', '.join(partly)} not installed)" if partly else ""
        raise BarFedError(
            "MISSING_EXTRA",
            f"barfed {command} needs the {' and '.join(lacking)} extra{'s' if len(lacking) > 1 else ''}{named}: "
            f'pip install "bar-federation[{",".join(lacking)}]"',
        )


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it (so ``barfed --help`` stays fast)."""
    if module in sys.modules:  # loaded already (kombu's replaces itself by a module without __spec__)
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses it: not usable here
        return False


class RootGroup(TyperGroup):
    """`barfed`: a command whose extra is not installed ends before anything runs, even settings (its help still
    shows, so a user can see what installing it would bring)."""

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        if "--help" not in rest and not ctx.resilient_parsing:  # resilient: shell completion, which must not fail
            require_extras(name)
        return name, command, rest


app = typer.Typer(
    cls=RootGroup, help="BAR Federation: train experts separately, merge them together.", no_args_is_help=True
)
app.add_typer(model_app, name="model")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(node_app, name="node")
err_console = Console(stderr=True, soft_wrap=True)  # one line per error, so logs and the demo can read it whole
EX_USAGE = 64  # sysexits.h: the command was used incorrectly; 2 stays a refusal's
UsageError = typer.BadParameter.__base__  # Click's, as typer has it (its own copy of Click, or Click)
ClickException = UsageError.__base__


def show_version(wanted: bool) -> None:
    """``barfed --version``: the installed distribution's version, before any setting is read."""
    if wanted:
        from importlib.metadata import version

        typer.echo(f"barfed {version('bar-federation')}")
        raise typer.Exit()


@app.callback()
def configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug log lines, libraries' chatter too")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Read settings, set up logging and threads before any command runs, without importing torch: commands
    that need no model (and a node's commands that find nothing to do) start in a fraction of a second."""
    from barfed.logs import quiet_progress_bars, setup_logging
    from barfed.settings import load_settings

    settings = load_settings()
    setup_logging("DEBUG" if verbose else settings.log_level, settings.log_format, verbose=verbose)
    if not verbose:
        quiet_progress_bars()
    if settings.num_threads:  # torch takes its thread count from OpenMP's variable when it loads
        os.environ["OMP_NUM_THREADS"] = str(settings.num_threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(settings.num_threads)


@app.command()
def demo(
    home: Annotated[Path | None, typer.Option(help="working directory (default: settings.home)")] = None,
    quick: Annotated[
        bool, typer.Option(help="micro models: the same flow in about two minutes, learning nothing")
    ] = False,
) -> None:
    """The whole federation on embedded defaults: a coordinator, four organizations, r1, a pull, v2 and r2."""
    from barfed.demo import run_demo
    from barfed.settings import load_settings

    run_demo(home or load_settings().home, quick=quick)


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="rN, a channel (stable, latest) or a release's 40-hex commit id")],
    to: Annotated[Path, typer.Option("--to", help="directory to create; appears only once verified")],
    api: Annotated[
        str, typer.Option(envvar="BARFED_API", help="the coordinator's REST API")
    ] = "https://127.0.0.1:8443",
    ca: Annotated[Path | None, typer.Option(envvar="BARFED_CA", help="the federation's CA certificate")] = None,
    token: Annotated[str | None, typer.Option(envvar="BARFED_TOKEN", help="API token (any role)")] = None,
    coordinator_key: Annotated[
        Path | None,
        typer.Option(help="the release public key to pin; default: pinned on first use, its fingerprint printed"),
    ] = None,
) -> None:
    """Download a release (resumable), check every file's sha256 and its signature, then show how to load it."""
    from barfed.pull import pull as run_pull

    run_pull(name, to, api=api, ca=ca, token=token, coordinator_key=coordinator_key)


def main() -> None:
    """Console entry point: a user's mistake prints its code and advice, never a traceback; scripts tell a
    refusal (2) from a command line that was never valid (64) by the exit status alone."""
    try:
        status = app(standalone_mode=False)  # Click's errors come here, to get their own status
    except BarFedError as exc:
        err_console.print(f"[bold red]error[/] [{exc.code}] {escape(exc.message)}", highlight=False)
        sys.exit(2)
    except UsageError as exc:
        exc.show()
        sys.exit(EX_USAGE)
    except ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        sys.exit(1)
    finally:
        # The interpreter's last act would be a full garbage collection over every object the imports made: about
        # a second of CPU after the training stack, 0.2 s after `barfed pull` (bench/startup_imports.py), with the
        # command done. Frozen, they are out of its way; atexit handlers (log handlers' flush) still run.
        gc.freeze()
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


if __name__ == "__main__":
    main()
