"""No traceback reaches a user: every leaf of the `barfed` command tree, found by walking the Typer app, runs as a
newcomer runs it (a subprocess in an empty working directory, an empty HOME, no BARFED_* variables) under each
failure that applies to it, and must end in one line `error [CODE] what to do` on stderr, exit status 2, naming
what to fix, with nothing created anywhere (working directory, HOME, the files and homes it was given).

Required arguments get harmless values from their types (``ARGUMENTS`` where a command needs a particular one).
The runs go through a thread pool: about 160 subprocesses, about a minute and a half on 2 cores."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer.main

from barfed.cli import app

pytestmark = pytest.mark.slow
ORG = "acme-labs"
LINE = re.compile(r"error \[([A-Z_]+)\] (.+)")
NETWORK = {("node", "enroll"), ("node", "fetch-anchor"), ("node", "status"), ("node", "watch"), ("pull",)}
INPUTS = {("coordinator", "init"), ("node", "init")}  # besides every `barfed model` command that reads a path


def leaves(command=None, path=()):
    """(path, click command) of every leaf of the `barfed` tree."""
    command = command or typer.main.get_command(app)
    children = getattr(command, "commands", None)
    if children is None:
        yield path, command
        return
    for name, child in sorted(children.items()):
        yield from leaves(child, (*path, name))


@dataclass
class Sandbox:
    """One run's world: ``cwd`` (the working directory), ``home`` (HOME) and ``given`` (what the test hands the
    command: a valid CA and release key, and a node home where a condition needs one)."""

    root: Path
    closed: str  # a loopback address nobody listens on
    env: dict[str, str] = field(default_factory=dict)
    before: list[str] = field(default_factory=list)  # after the group's name: `barfed coordinator --home X …`
    after: list[str] = field(default_factory=list)  # after the command's own arguments
    values: dict[str, str] = field(default_factory=dict)  # a required parameter's value, by name

    def __post_init__(self) -> None:
        self.cwd, self.home, self.given = self.root / "cwd", self.root / "home", self.root / "given"
        for path in (self.cwd, self.home, self.given):
            path.mkdir(parents=True)

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def node_home(self, template: Path, *leave_out: str) -> Path:
        ignore = shutil.ignore_patterns(*leave_out) if leave_out else None
        return Path(shutil.copytree(template, self.given / "node", symlinks=True, ignore=ignore))

    def files(self) -> dict[str, int]:
        return {str(p.relative_to(self.root)): p.stat().st_size if p.is_file() else -1 for p in self.root.rglob("*")}


def _coordinator_home_missing(s: Sandbox, path) -> str:
    home = s.given / "absent" / "coordinator"
    s.after += ["--home", str(home)]
    return f"barfed coordinator init --home {home}"


def _coordinator_home_empty(s: Sandbox, path) -> str:
    (home := s.given / "empty").mkdir()
    s.before += ["--home", str(home)]  # on the group this time
    return f"barfed coordinator init --home {home}"


def _node_home_missing(s: Sandbox, path) -> str:
    s.env["BARFED_NODE_HOME"] = str(s.given / "absent" / "node")
    return "barfed node init"


def _node_home_empty(s: Sandbox, path) -> str:
    (home := s.given / "empty").mkdir()
    s.before += ["--home", str(home)]
    return "barfed node init"


def _node_toml_broken(s: Sandbox, path, template: Path) -> str:
    config = s.node_home(template) / "node.toml"
    s.env["BARFED_NODE_HOME"] = str(config.parent)
    config.write_text(config.read_text() + 'org_id = "unterminated\n')
    return f"{config} is not valid TOML"


def _node_variable_wrong(s: Sandbox, path, template: Path) -> str:
    s.env.update(BARFED_NODE_HOME=str(s.node_home(template)), BARFED_NODE_RETRY_FOR_S="abc")
    return "BARFED_NODE_RETRY_FOR_S='abc'"


def _ca_not_pem(s: Sandbox, path) -> str:
    s.write(s.given / "ca.pem", "this is not a certificate\n")
    return "is not a PEM"


def _inputs_missing(s: Sandbox, path) -> str:
    absent = s.given / "absent"
    if path == ("coordinator", "init"):
        s.after += ["--home", str(s.given / "coordinator"), "--anchor", str(absent / "anchor")]
    elif path == ("node", "init"):
        s.values["ca"] = str(absent / "ca.pem")
    return str(absent)


def _unreachable(s: Sandbox, path, template: Path) -> str:
    """An enrolled node (its certificate from the test's CA) and a pull, both pointed at a closed port; the
    long-running commands retry for a second only."""
    enrolling = path == ("node", "enroll")  # a node not enrolled yet (no certificate), with its invitation
    home = s.node_home(template, *(["org.pem"] if enrolling else []))
    s.env.update(BARFED_NODE_HOME=str(home), BARFED_NODE_RETRY_FOR_S="1")
    if enrolling:
        s.after += ["--token", "t" * 32]
    return f"the coordinator at {s.closed} did not answer" if path != ("pull",) else s.closed


# name: (the leaves it applies to, the code the line must give, what the condition does; it returns what the line
# must mention). Root conditions come first: the root command reads barfed.toml and BARFED_* before any other.
def _first_of_each_group(path: tuple[str, ...]) -> bool:
    """The root command reads barfed.toml and BARFED_* before any command runs, the same way for all of them: one
    command of each group (and each command of the root) is enough to show it, and keeps the walk short."""
    return path in FIRSTS


CONDITIONS = {
    "a broken barfed.toml": (
        _first_of_each_group,
        "BAD_CONFIG",
        lambda s, path: s.write(s.cwd / "barfed.toml", "log_level = [\n") and "barfed.toml is not valid TOML",
    ),
    "a wrong BARFED_* value": (
        _first_of_each_group,
        "BAD_CONFIG",
        lambda s, path: s.env.update(BARFED_NUM_THREADS="many") or "BARFED_NUM_THREADS='many'",
    ),
    "a missing coordinator home": (
        lambda path: path[0] == "coordinator" and path != ("coordinator", "init"),
        "NOT_INITIALIZED",
        _coordinator_home_missing,
    ),
    "an empty coordinator home": (
        lambda path: path[0] == "coordinator" and path != ("coordinator", "init"),
        "NOT_INITIALIZED",
        _coordinator_home_empty,
    ),
    "a broken coordinator.toml": (
        lambda path: path[0] == "coordinator",
        "BAD_SETTINGS",
        lambda s, path: s.write(s.cwd / "coordinator.toml", "gate_tolerance = \n") and "coordinator.toml is not valid",
    ),
    "a wrong BARFED_COORD_* value": (
        lambda path: path[0] == "coordinator",
        "BAD_SETTINGS",
        lambda s, path: s.env.update(BARFED_COORD_JOB_LEASE_S="soon") or "$BARFED_COORD_JOB_LEASE_S: job_lease_s",
    ),
    "a missing node home": (
        lambda path: path[0] == "node" and path[1] != "init",
        "NOT_INITIALIZED",
        _node_home_missing,
    ),
    "an empty node home": (lambda path: path[0] == "node" and path[1] != "init", "NOT_INITIALIZED", _node_home_empty),
    "a broken node.toml": (lambda path: path[0] == "node" and path[1] != "init", "BAD_NODE_CONFIG", _node_toml_broken),
    "a wrong BARFED_NODE_* value": (
        lambda path: path[0] == "node" and path[1] != "init",
        "BAD_NODE_CONFIG",
        _node_variable_wrong,
    ),
    "a CA that is no PEM": (lambda path: path in {("pull",), ("node", "init")}, "BAD_CA", _ca_not_pem),
    "missing input files": (
        lambda path: path in INPUTS or (path[0] == "model" and path[1] not in ("build-base", "domains")),
        None,
        _inputs_missing,
    ),
    "an unreachable coordinator": (lambda path: path in NETWORK, "COORDINATOR_UNREACHABLE", _unreachable),
}
NEEDS_TEMPLATE = {_node_toml_broken, _node_variable_wrong, _unreachable}
FIRSTS = {next(p for p, _ in leaves() if p[0] == group) for group in {p[0] for p, _ in leaves()}}

ARGUMENTS = {  # a required parameter that needs a particular value: by (command, parameter name)
    ("pull", "name"): "r1",
    ("pull", "to"): "{cwd}/model",
    ("node", "init", "org"): ORG,
    ("node", "init", "service"): "{closed}",
    ("node", "init", "enroll"): "{closed}",
    ("node", "init", "ca"): "{given}/ca.pem",
    ("node", "init", "release_key"): "{given}/release.pub",
    ("coordinator", "tokens", "create", "role"): "admin",
    ("coordinator", "experts", "set-state", "state"): "QUARANTINED",
    ("model", "train-expert", "domain"): "math",
    ("model", "drop-expert", "domain"): "math",
}
OPTIONAL = {("pull",): ["--api", "https://{closed}", "--ca", "{given}/ca.pem"]}  # where pull would go by default


def invocation(path: tuple[str, ...], command, s: Sandbox) -> list[str]:
    """`barfed PATH …` with a harmless value for every required parameter: a file or directory that does not exist,
    1 for a number, a fitting word otherwise."""
    args = [*path[:1], *s.before, *path[1:]]
    for param in command.params:
        if not param.required:
            continue
        value = s.values.get(param.name) or ARGUMENTS.get((*path, param.name))
        if value is None:
            annotation = param.type_descriptor.annotation
            kind = (typing.get_args(annotation) or (annotation,))[0]  # list[Path] → Path
            value = str(s.given / "absent" / param.name) if kind is Path else "1" if kind in (int, float) else "math"
        value = value.format(cwd=s.cwd, given=s.given, closed=s.closed)
        args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    optional = [a.format(cwd=s.cwd, given=s.given, closed=s.closed) for a in OPTIONAL.get(path, [])]
    return [*args, *optional, *s.after]


@pytest.fixture(scope="module")
def given(tmp_path_factory):
    """A CA and release key, a closed loopback port, and an enrolled node of acme-labs pointed at it (its
    certificate from that CA, one domain granted, one submission recorded), made in-process."""
    from contributor_node.home import write_json
    from contributor_node.setup import initialize
    from protocol import pki

    root = tmp_path_factory.mktemp("walk-given")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    ca_key, ca_cert = pki.create_ca("walk CA")
    (root / "ca.pem").write_bytes(pki.certificate_pem(ca_cert))
    (root / "release.pub").write_bytes(pki.public_key_pem(pki.generate_private_key()))
    home = root / "node"
    initialize(home, ORG, closed, closed, root / "ca.pem", root / "release.pub")
    csr = pki.make_csr(pki.load_private_key(home / "org.key"), ORG)
    (home / "org.pem").write_bytes(pki.certificate_pem(pki.issue_client_certificate(ca_key, ca_cert, csr, ORG)))
    write_json(home / "enrollment.json", {"enrollment_id": "e-1", "token_sha256": "0" * 64, "domains": ["math"]})
    write_json(home / "submissions.json", {"math-v1": {"submission_id": "s-1"}})
    return root, closed


def run(number: int, path, command, condition: str, given, tmp_path: Path) -> str | None:
    """What is wrong with ``barfed PATH`` under ``condition`` (None: nothing)."""
    root, closed = given
    _, code, setup = CONDITIONS[condition]
    s = Sandbox(tmp_path / f"{number}", closed)
    for name in ("ca.pem", "release.pub"):
        shutil.copy(root / name, s.given / name)
    mention = setup(s, path, root / "node") if setup in NEEDS_TEMPLATE else setup(s, path)
    args = invocation(path, command, s)
    before = s.files()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BARFED_", "XDG_", "HF_HOME"))}
    env = {**clean, "HOME": str(s.home), **s.env}
    done = subprocess.run(
        [sys.executable, "-m", "barfed.cli", *args], cwd=s.cwd, env=env, capture_output=True, text=True, timeout=120
    )
    said = f"`barfed {' '.join(args)}` under {condition}: exit {done.returncode}\n{done.stdout[-1500:]}{done.stderr}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    found = LINE.fullmatch(lines[-1]) if lines else None
    earlier = lines[:-1] if condition != "an unreachable coordinator" else [x for x in lines[:-1] if "error" in x]
    if "Traceback" in done.stdout + done.stderr or done.returncode != 2 or not found or earlier:
        return said
    if code and found[1] != code:
        return f"{said}\n(expected {code})"
    if mention not in found[2]:
        return f"{said}\n(the line should mention {mention!r})"
    created = sorted(set(s.files()) - set(before)) + sorted(p for p, size in before.items() if s.files().get(p) != size)
    return f"{said}\n(created or changed: {created})" if created else None


def test_every_command_under_every_failure_ends_in_one_line(given, tmp_path):
    plan = [
        (path, command, condition)
        for path, command in leaves()
        for condition, (applies, _, _) in CONDITIONS.items()
        if applies(path)
    ]
    assert len({path for path, _, _ in plan}) >= 44 and len(plan) >= 150  # the whole tree, not a corner of it
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 1) as pool:
        problems = [p for p in pool.map(lambda item: run(item[0], *item[1], given, tmp_path), enumerate(plan)) if p]
    assert problems == [], f"{len(problems)} of {len(plan)} runs:\n\n" + "\n\n".join(problems)
