"""`barfed demo`: a whole federation on one machine, on embedded defaults, through the surfaces a real one uses.

1. anchor: the tiny anchor the project ships (built once by `barfed model build-base --recipe tiny`, checked
   against its digests here), branched into the 2-expert training anchor;
2. coordinator: CA, keys, registry and the published anchor; gRPC (mTLS), the REST API and the task worker on
   free loopback ports; the operator acts through the REST API with an admin token;
3. four organizations (math, code, tool_use, safety) run `barfed node` as separate processes: init, enroll
   (the operator approves through the REST API), fetch-anchor; then train, eval and package, each with the
   recipe its organization chose (two organizations at a time, as separate machines would); submit --wait;
4. the coordinator builds, gates, signs and publishes r1 by itself once the experts are in;
5. a user runs `barfed pull stable`, loads it with stock transformers and asks one question per domain;
6. the code organization trains an improved expert and submits v2; the coordinator builds r2 incrementally;
7. the per-domain table (anchor, experts, r1, r2), the r1→r2 diff and ``report.html``.

Every step prints one line with its wall time; a failure names its step, its code and what to do. Every step
is skipped when its output exists, so rerunning resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from protocol.errors import BarFedError

ORGS = {"acme-labs": "math", "initech": "code", "globex": "tool_use", "umbrella": "safety"}
IMPROVED_ORG = "initech"
ERROR_LINE = re.compile(r"error \[([A-Z0-9_]+)\] (.*)")


@dataclass(frozen=True)
class Profile:
    """What the demo trains with: the full run (tiny models that learn) or --quick (micro models, a smoke run)."""

    name: str
    base_recipe: str
    expert_recipes: dict[str, str]  # domain -> the recipe its organization trains with, as each org chooses its own
    improved_recipe: str
    router_recipe: str
    eval_examples: int
    shipped_anchor: bool
    parallel: int  # organizations training at once (each its own process, one thread each)


# Each organization sizes its own training, as real ones do: math learns slowest on the tiny anchor and gets the
# longest recipe, safety the shortest; code's v1 is a first version, its v2 trains it further.
FULL = Profile(
    "demo",
    "tiny",
    {"math": "demo-math", "code": "demo-code", "tool_use": "demo-tool-use", "safety": "demo-safety"},
    "demo-code-v2",
    "demo",
    100,
    True,
    2,
)
QUICK = Profile("quick", "micro", dict.fromkeys(ORGS.values(), "micro"), "micro-v2", "micro", 8, False, 4)


@dataclass
class Demo:
    work: Path
    profile: Profile
    console: Console
    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One progress line per step with its wall time; a failure names the step and says how to resume."""
        number = len(self.steps) + 1
        self.console.print(f"[bold][{number}][/] {name} …", highlight=False)
        started = time.perf_counter()
        try:
            yield
        except BarFedError as exc:
            self.console.print(f"[bold red]✗[/] {name} failed after {time.perf_counter() - started:.1f} s")
            raise BarFedError(
                exc.code, f"demo step {number} ({name}): {exc.message} Rerun `barfed demo` to resume."
            ) from None
        seconds = time.perf_counter() - started
        self.steps.append((name, round(seconds, 1)))
        self.console.print(f"[green]✓[/] {name} [dim]{seconds:.1f} s[/]", highlight=False)

    # -- organizations' nodes, as separate processes ------------------------------------------

    def node_home(self, org: str) -> Path:
        return self.work / "nodes" / org

    def node(self, org: str, *args: str, threads: int | None = None, background: bool = False):
        """Run `barfed node --home <org's home> ARGS` as its own process, its output in the node's log."""
        home = self.node_home(org)
        (home / "logs").mkdir(parents=True, exist_ok=True)
        log_path = home / "logs" / f"{args[0]}.log"
        env = {**os.environ, "BARFED_NODE_RECIPE": self.profile.expert_recipes[ORGS[org]]}
        env["BARFED_NODE_ROUTER_RECIPE"] = self.profile.router_recipe
        if threads:
            env["BARFED_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "barfed.cli", "node", "--home", str(home), *args]
        log = open(log_path, "ab")  # noqa: SIM115 (closed by finish)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        process.log_path, process.log, process.org = log_path, log, org
        return process if background else self.finish(process)

    def finish(self, process) -> None:
        code = process.wait()
        process.log.close()
        if code == 0:
            return
        text = process.log_path.read_text(errors="replace")
        found = ERROR_LINE.findall(text)
        error, message = found[-1] if found else ("NODE_COMMAND_FAILED", f"it exited with status {code}.")
        raise BarFedError(error, f"{process.org}: {message} (log: {process.log_path})")

    def node_steps(self, org: str, *commands: str, threads: int | None = None) -> None:
        """Several `barfed node` commands in a row for one organization (its own machine, in a real federation)."""
        for command in commands:
            self.node(org, command, threads=threads)

    def each_org(self, work, parallel: int = len(ORGS)) -> None:
        """``work(org)`` for every organization, ``parallel`` at a time, as separate machines would."""
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for future in [pool.submit(work, org) for org in ORGS]:
                future.result()

    def all_orgs(self, *args: str) -> None:
        """The same `barfed node` command for every organization."""
        self.each_org(lambda org: self.node(org, *args))


def run_demo(home: Path, console: Console | None = None, quick: bool = False) -> dict[str, dict[str, float]]:
    """Run the demo under ``home`` (``demo/`` or ``demo-quick/``) and return the score table."""
    import httpx

    from bar_model.branch import init_anchor
    from barfed import anchors, report
    from coordinator.embedded import running_coordinator
    from coordinator.settings import load_settings
    from coordinator.setup import initialize

    if logging.getLogger().level > logging.DEBUG:  # one line per step; the services' own lines with --verbose
        for name in ("coordinator", "bar_model", "contributor_node"):
            logging.getLogger(name).setLevel(logging.WARNING)
    profile = QUICK if quick else FULL
    demo = Demo(home / ("demo-quick" if quick else "demo"), profile, console or Console(soft_wrap=True))
    work = demo.work
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
    with demo.step("coordinator: CA, keys, registry, published anchor"):
        fingerprint = initialize(settings, branch)
        admin_token = _operator_token(settings, work / "operator.token")

    with running_coordinator(settings) as address:
        demo.console.print(
            f"    coordinator: gRPC {address.service} (mTLS), enrollment {address.enroll}, REST {address.api}",
            highlight=False,
        )
        ca = settings.pki_dir / "ca.pem"
        api = httpx.Client(
            base_url=address.api, verify=str(ca), headers={"Authorization": f"Bearer {admin_token}"}, timeout=60
        )
        operator = Operator(api)

        with demo.step("organizations: init and enroll (approved through the REST API)"):
            demo.each_org(lambda org: _enroll(demo, operator, org, ORGS[org], address, settings))

        with demo.step("organizations: fetch the anchor and check its signature"):
            demo.all_orgs("fetch-anchor")
            demo.console.print(f"    anchor {fingerprint}", highlight=False)

        for org, domain in ORGS.items():
            recipe = _recipe_summary(profile.expert_recipes[domain])
            demo.console.print(f"    {org} ({domain}): {recipe}", highlight=False)
        threads = max(1, (os.cpu_count() or 2) // profile.parallel)
        with demo.step(f"organizations: train, evaluate and package their experts ({profile.parallel} at a time)"):
            demo.each_org(
                lambda org: demo.node_steps(org, "train", "eval", "package", threads=threads), profile.parallel
            )

        with demo.step("organizations: submit their signed packages; the coordinator verifies them"):
            demo.all_orgs("submit", "--wait")

        with demo.step("coordinator: builds, gates, signs and publishes r1 by itself"):
            r1 = operator.wait_release(1)
            demo.console.print(f"    r1: {_experts(r1)}", highlight=False)

        stable = work / "user" / "stable"
        with demo.step("user: barfed pull stable, from_pretrained, one question per domain"):
            _pull(demo, address, ca, admin_token, settings, stable)
            for line in _ask(stable, list(ORGS.values())):
                demo.console.print(f"    {line}", highlight=False)

        domain = ORGS[IMPROVED_ORG]
        with demo.step(f"{IMPROVED_ORG}: trains an improved {domain} expert and submits v2"):
            improve = ("--version", "2", "--from-version", "1", "--stages", "sft", "--recipe", profile.improved_recipe)
            demo.node(IMPROVED_ORG, "train", *improve)
            demo.node(IMPROVED_ORG, "eval", "--version", "2")
            demo.node(IMPROVED_ORG, "package", "--version", "2", "--expert", "2")
            demo.node(IMPROVED_ORG, "submit", "--version", "2", "--wait")

        with demo.step("coordinator: builds r2 incrementally (only the new expert's router rows train)"):
            r2 = operator.wait_release(2)
            diff = operator.get("/v1/releases/r1/diff/r2")

        with demo.step("evaluate the anchor; gather the experts' and releases' scores"):
            columns = _score_columns(demo, anchor, settings, operator)
        api.close()

    from bar_model.cli import score_table

    domains = list(ORGS.values())
    demo.console.print(score_table(columns, title=f"held-out score (0-100), {profile.eval_examples} problems each"))
    manifest = json.loads((settings.releases_dir / "r2" / "release.json").read_text())
    diff_rows = _diff_rows(r1, r2, diff, manifest)
    for row in diff_rows:
        demo.console.print(f"    {row[0]}: {row[1]} → {row[2]} ({row[3]})", highlight=False)
    total = time.perf_counter() - started
    notes = [
        f"Profile {profile.name}: expert recipes "
        + ", ".join(f"{domain} {recipe}" for domain, recipe in profile.expert_recipes.items())
        + f"; code v2 {profile.improved_recipe}; router recipe {profile.router_recipe}, "
        f"{profile.eval_examples} held-out problems per domain; {total:.0f} s in all on {os.cpu_count()} CPU cores.",
        f"Files: {work}. The release users pulled: {stable}.",
    ]
    path = report.write_report(
        work / "report.html",
        title="BAR Federation demo",
        scores=columns,
        domains=domains,
        diff_rows=diff_rows,
        steps=demo.steps,
        notes=notes,
    )
    demo.console.print(f"demo finished in {total:.0f} s; report {path}", highlight=False)
    return columns


class Operator:
    """The operator's side, through the REST API only."""

    def __init__(self, client) -> None:
        self.client = client

    def _check(self, response):
        if response.status_code >= 400:
            try:
                body = response.json()
                raise BarFedError(body.get("code", "API_ERROR"), body.get("message", response.text))
            except ValueError:
                raise BarFedError("API_ERROR", f"{response.status_code}: {response.text[:300]}") from None
        return response.json()

    def get(self, path: str, **params):
        return self._check(self.client.get(path, params=params))

    def post(self, path: str, body: dict | None = None):
        return self._check(self.client.post(path, json=body or {}))

    def wait_release(self, number: int, timeout: float = 3600.0) -> dict:
        """Poll until release ``number`` is published; a build that ends gated or failed stops the wait."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            releases = {r["number"]: r for r in self.get("/v1/releases")}
            if number in releases:
                return releases[number]
            for job in self.get("/v1/jobs", kind="build"):
                if job["state"] in ("failed", "gated") and not any(r >= number for r in releases):
                    raise BarFedError(job["error_code"] or "BUILD_FAILED", job["error_message"] or "the build failed.")
            time.sleep(1.0)
        raise BarFedError("BUILD_TIMEOUT", f"r{number} was not published within {timeout:.0f} s.")


def _operator_token(settings, path: Path) -> str:
    """The demo operator's admin token, made once and kept 0600 beside the demo's files."""
    if path.is_file():
        return path.read_text().strip()
    from coordinator.state import tokens
    from coordinator.state.db import Registry

    registry = Registry(settings.db_url)
    token, _row = tokens.create(registry, "admin", "demo-operator", label="barfed demo")
    registry.dispose()
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def _enroll(demo: Demo, operator: Operator, org: str, domain: str, address, settings) -> None:
    """Invite (REST), `node init` (again on a rerun: the coordinator's ports are new), `enroll --wait` while the
    operator approves the pending request (REST)."""
    home = demo.node_home(org)
    if not (home / "invitation.token").is_file() and not (home / "org.pem").is_file():
        token = operator.post("/v1/orgs", {"org": org, "domains": [domain]})["token"]
        home.mkdir(parents=True, exist_ok=True)
        (home / "invitation.token").write_text(token)
    demo.node(
        org,
        "init",
        "--org",
        org,
        "--service",
        address.service,
        "--enroll",
        address.enroll,
        "--ca",
        str(settings.pki_dir / "ca.pem"),
        "--release-key",
        str(settings.pki_dir / "release.pub"),
    )
    if (home / "org.pem").is_file():
        return
    waiting = demo.node(
        org, "enroll", "--token", (home / "invitation.token").read_text().strip(), "--wait", background=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and waiting.poll() is None:
        pending = [e for e in operator.get("/v1/enrollments") if e["org"] == org]
        pending = [e for e in pending if e["state"] == "pending"]
        if pending:
            operator.post(f"/v1/enrollments/{pending[0]['id']}/approve")
            break
        time.sleep(0.2)
    demo.finish(waiting)


def _pull(demo: Demo, address, ca: Path, token: str, settings, target: Path) -> None:
    if target.is_dir():
        return
    command = [sys.executable, "-m", "barfed.cli", "pull", "stable", "--to", str(target), "--api", address.api]
    command += ["--ca", str(ca), "--token", token, "--coordinator-key", str(settings.pki_dir / "release.pub")]
    log = target.parent / "pull.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        found = ERROR_LINE.findall(log.read_text(errors="replace"))
        error, message = found[-1] if found else ("PULL_FAILED", f"it exited with status {code}.")
        raise BarFedError(error, f"barfed pull: {message} (log: {log})")


def _ask(model_dir: Path, domains: list[str]) -> list[str]:
    """Load the pulled release as any user would (stock transformers) and answer one held-out prompt per domain."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bar_model.domains import get_domain
    from bar_model.evaluate import generate

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lines = []
    for domain in domains:
        example = get_domain(domain).eval_set(1, seed=7)[0]
        answer = generate(model, tokenizer, [example.prompt], get_domain(domain).max_new_tokens)[0]
        verdict = "right" if get_domain(domain).score(example, answer) else "wrong"
        lines.append(f"{domain}: {_short(example.prompt)} → {_short(answer)} ({verdict})")
    return lines


def _recipe_summary(name: str) -> str:
    """``recipe demo-math: mid 300, SFT 1200, RL 20 steps``: what an organization's training costs, in steps."""
    from bar_model.recipe import load_expert_recipe

    recipe = load_expert_recipe(name)
    return f"recipe {name}: mid {recipe.mid.steps}, SFT {recipe.sft.steps}, RL {recipe.rl.steps} steps"


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _score_columns(demo: Demo, anchor: Path, settings, operator: Operator) -> dict[str, dict[str, float]]:
    """Anchor (scored here), each expert (as its node scored it), r1 and r2 (as the coordinator's release
    evaluation scored them): the same held-out problems of each domain (seed 0, ``eval_examples`` of them)."""
    from bar_model.evaluate import evaluate, load_model
    from contributor_node.home import NodeHome, read_json

    domains = list(ORGS.values())
    cache = demo.work / "anchor-scores.json"
    if cache.is_file():
        anchor_scores = json.loads(cache.read_text())
    else:
        model, tokenizer = load_model(anchor)
        anchor_scores = evaluate(model, tokenizer, domains, n=demo.profile.eval_examples)
        cache.write_text(json.dumps(anchor_scores))
    columns = {"anchor": {d: anchor_scores[d] for d in domains}}
    for org, domain in ORGS.items():
        for version in (1, 2):
            saved = read_json(NodeHome(demo.node_home(org)).scores(domain, version))
            if saved:
                name = f"{domain} expert" + (f" v{version}" if version > 1 else "")
                columns[name] = {d: saved["scores"].get(d) for d in domains}
    for number in (1, 2):
        release = operator.get(f"/v1/releases/r{number}")
        columns[f"r{number}"] = {d: (release["eval"].get(d) or {}).get("score") for d in domains}
    return columns


def _experts(release: dict) -> str:
    return ", ".join(f"{e['domain']} v{e['version']}" for e in release["experts"])


def _diff_rows(r1: dict, r2: dict, diff: dict, manifest: dict) -> list[list]:
    """What r2 changed against r1: the experts, the router rows that trained, every domain's score."""
    router = manifest["router"]
    changed = ", ".join(f"{d} v{c['from']}→v{c['to']}" for d, c in diff["changed"].items()) or "none"
    rows = [
        ["experts", _experts(r1), _experts(r2), changed],
        [
            "router rows trained",
            "all",
            ", ".join(router["trained_rows"]) or "none",
            f"incremental, {router['steps']} steps" if router["incremental"] else f"cold, {router['steps']} steps",
        ],
    ]
    for domain, score in diff["eval"].items():
        rows.append([f"{domain} score", score.get("from"), score.get("to"), score.get("delta")])
    return rows
