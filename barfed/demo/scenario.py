"""`barfed demo`: a whole federation on one machine, on embedded defaults, through the surfaces a real one uses.

1. anchor: the tiny anchor the project ships (built once by `barfed model build-base --recipe tiny`, checked
   against its digests here), branched into the 2-expert training anchor;
2. coordinator: CA, keys, registry and the published anchor; the operator's admin token from
   `barfed coordinator tokens create`; then gRPC (mTLS), the REST API and the task worker on free loopback
   ports, and the operator acts through the REST API only;
3. four organizations (math, code, tool_use, safety) run `barfed node` as separate processes: init, enroll
   (the operator approves through the REST API), fetch-anchor; then train, eval and package, each with the
   recipe its organization chose (two organizations at a time, as separate machines would); submit --wait;
4. the coordinator builds, gates, signs and publishes r1 by itself once the experts are in;
5. a user runs `barfed pull stable`, loads it with stock transformers and asks one question per domain;
6. the code organization trains an improved expert and submits v2; the coordinator builds r2 incrementally;
7. the per-domain table (anchor, experts, r1, r2), the r1→r2 diff and ``report.html``.

Every step prints one line with its wall time, and the steps that run nodes show each organization's live
state while they run; a failure names its step, its code and what to do. Every step is skipped when its output
exists, so rerunning resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from barfed import anchors
from barfed.demo.nodes import Nodes
from barfed.demo.operator import Operator, admin_token
from barfed.demo.profiles import FULL, IMPROVED_ORG, ORGS, QUICK, recipe_summary
from barfed.demo.progress import Board
from barfed.demo.results import diff_rows, experts, retention_columns, score_columns, show, write_report
from barfed.demo.user import ask, pull
from contributor_node.progress import clock
from protocol.errors import BarFedError


@dataclass
class Demo:
    console: Console
    board: Board
    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str, orgs: Iterable[str] = ()) -> Iterator[None]:
        """One progress line per step with its wall time, ``orgs``' live state while it runs; a failure names the
        step and says how to resume."""
        number = len(self.steps) + 1
        self.console.print(f"[bold][{number}][/] {name} …", highlight=False)
        started = time.perf_counter()
        try:
            with self.board.watching(list(orgs)):
                yield
        except BarFedError as exc:
            self.console.print(f"[bold red]✗[/] {name} failed after {time.perf_counter() - started:.1f} s")
            raise BarFedError(
                exc.code, f"demo step {number} ({name}): {exc.message} Rerun `barfed demo` to resume."
            ) from None
        seconds = time.perf_counter() - started
        self.steps.append((name, round(seconds, 1)))
        self.console.print(f"[green]✓[/] {name} [dim]{seconds:.1f} s[/]", highlight=False)


def run_demo(home: Path, console: Console | None = None, quick: bool = False) -> dict[str, dict[str, float]]:
    """Run the demo under ``home`` (``demo/`` or ``demo-quick/``) and return the score table."""
    # Branching loads torch and the coordinator runs in this process: they load when the demo runs, not on import.
    from bar_model.branch import init_anchor
    from coordinator.embedded import running_coordinator
    from coordinator.settings import load_settings
    from coordinator.setup import initialize

    if logging.getLogger().level > logging.DEBUG:  # one line per step; the services' own lines with --verbose
        for name in ("coordinator", "bar_model", "contributor_node"):
            logging.getLogger(name).setLevel(logging.WARNING)
    profile = QUICK if quick else FULL
    work = home / ("demo-quick" if quick else "demo")
    console = console or Console(soft_wrap=True)
    homes = {org: work / "nodes" / org for org in ORGS}
    demo = Demo(console, Board(console, homes))
    nodes = Nodes(homes, profile, demo.board)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    with demo.step("anchor: " + ("the shipped tiny anchor" if profile.shipped_anchor else "a micro anchor")):
        base, anchor = anchors.prepare(work / "base", profile.base_recipe, shipped=profile.shipped_anchor)
        branch = work / "anchor-2x"
        if not branch.exists():
            init_anchor(anchor, branch, base)

    settings = load_settings(
        home=work / "coordinator",
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        router_recipe=profile.router_recipe,
        eval_examples=profile.eval_examples,
        build_debounce_s=5.0,
        sweep_interval_s=1.0,
        build_threads=os.cpu_count() or 1,  # recorded in release.json: a rebuild here still matches bit for bit
    )
    ca, release_key = settings.pki_dir / "ca.pem", settings.pki_dir / "release.pub"
    with demo.step("coordinator: CA, keys, registry, published anchor"):
        fingerprint = initialize(settings, branch)
        token = admin_token(settings.home, work / "operator.token")

    with running_coordinator(settings) as address:
        console.print(
            f"    coordinator: gRPC {address.service} (mTLS), enrollment {address.enroll}, REST {address.api}",
            highlight=False,
        )
        operator = Operator(address.api, ca, token)

        with demo.step("organizations: init and enroll (approved through the REST API)", ORGS):
            nodes.each(lambda org: _enroll(nodes, operator, org, address, ca, release_key))

        with demo.step("organizations: fetch the anchor and check its signature", ORGS):
            nodes.all("fetch-anchor")
            console.print(f"    anchor {fingerprint}", highlight=False)

        for org, domain in ORGS.items():
            console.print(f"    {org} ({domain}): {recipe_summary(profile.expert_recipes[domain])}", highlight=False)
        threads = max(1, (os.cpu_count() or 2) // profile.parallel)
        name = f"organizations: train, evaluate and package their experts ({profile.parallel} at a time)"
        with demo.step(name, ORGS):
            nodes.each(lambda org: nodes.steps(org, "train", "eval", "package", threads=threads), profile.parallel)

        with demo.step("organizations: submit their signed packages; the coordinator verifies them", ORGS):
            nodes.all("submit", "--wait")

        with demo.step("coordinator: builds, gates, signs and publishes r1 by itself"):
            r1 = operator.wait_release(1, on_step=build_steps(console, "r1"))
            console.print(f"    r1: {experts(r1)}", highlight=False)

        stable = work / "user" / "stable"
        with demo.step("user: barfed pull stable, from_pretrained, one question per domain"):
            pull(address.api, ca, token, release_key, stable)
            for line in ask(stable, list(ORGS.values())):
                console.print(f"    {line}", highlight=False)

        domain = ORGS[IMPROVED_ORG]
        with demo.step(f"{IMPROVED_ORG}: trains an improved {domain} expert and submits v2", [IMPROVED_ORG]):
            improve = ("--version", "2", "--from-version", "1", "--stages", "sft", "--recipe", profile.improved_recipe)
            nodes.run(IMPROVED_ORG, "train", *improve)
            nodes.run(IMPROVED_ORG, "eval", "--version", "2")
            nodes.run(IMPROVED_ORG, "package", "--version", "2", "--expert", "2")
            nodes.run(IMPROVED_ORG, "submit", "--version", "2", "--wait")

        with demo.step("coordinator: builds r2 incrementally (only the new expert's router rows train)"):
            r2 = operator.wait_release(2, on_step=build_steps(console, "r2"))
            diff = operator.get("/v1/releases/r1/diff/r2")

        with demo.step("evaluate the anchor; gather the experts' and releases' scores"):
            manifests = {number: operator.get(f"/v1/releases/r{number}") for number in (1, 2)}  # their release.json
            columns = score_columns(work, profile, anchor, homes, manifests)
        operator.close()

    rows = diff_rows(r1, r2, diff, manifests[2])
    retention = retention_columns(manifests)
    show(console, columns, retention, rows, profile)
    total = time.perf_counter() - started
    path = write_report(work, profile, columns, retention, rows, demo.steps, stable, total)
    console.print(f"demo finished in {total:.0f} s; report {path}", highlight=False)
    return columns


def _enroll(nodes: Nodes, operator: Operator, org: str, address, ca: Path, release_key: Path) -> None:
    """Invite (REST), `node init` (again on a rerun: the coordinator's ports are new), `enroll --wait` while the
    operator approves the pending request (REST)."""
    home = nodes.homes[org]
    if not (home / "invitation.token").is_file() and not (home / "org.pem").is_file():
        invitation = operator.invite(org, ORGS[org])
        home.mkdir(parents=True, exist_ok=True)
        (home / "invitation.token").write_text(invitation)
    addresses = ("--service", address.service, "--enroll", address.enroll)
    nodes.run(org, "init", "--org", org, *addresses, "--ca", str(ca), "--release-key", str(release_key))
    if (home / "org.pem").is_file():
        return
    waiting = nodes.start(org, "enroll", "--token", (home / "invitation.token").read_text().strip(), "--wait")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and waiting.poll() is None and not operator.approve_pending(org):
        time.sleep(0.2)
    nodes.finish(waiting)


def build_steps(console: Console, release: str):
    """A line per step the coordinator's build enters (``r1 build: route at 0:03``): routing takes minutes."""
    started = time.monotonic()

    def report(step: str) -> None:
        console.print(f"    {release} build: {step} at {clock(time.monotonic() - started)}", highlight=False)

    return report
