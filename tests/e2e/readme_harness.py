"""How tests/e2e/test_readme.py reads README.md's shell blocks and runs them as a reader would, on loopback.

Rules, all here so that the README stays plain prose and commands:

- Every ```` ```bash ```` block runs, in file order, in one scratch directory (the reader's), each in a fresh
  ``bash`` with ``set -euo pipefail``, a clean environment (``ENVIRONMENT``) and ``.venv/bin`` first on PATH. The
  variables a block sets (``NAME=…``, ``export NAME=…``; upper-case names) carry over to later blocks, as they would
  in the reader's shell.
- A block the harness cannot run has ``<!-- not run by tests/e2e/test_readme.py: REASON -->`` on the line above it,
  and REASON starts with one of ``NOT_RUN``.
- Before a block runs, ``SUBSTITUTIONS`` rewrite its text: the README's host, handed-over files and token become
  this federation's, and the model commands get micro recipes so the whole README runs in a few minutes.
- A line that runs until stopped (``LONG_RUNNING``: ``barfed coordinator serve``, ``barfed node watch`` without
  ``--once``, a ``celery … worker``) starts in the background, and the block goes on once it is up (a server:
  its port files; a worker: ``/readyz`` answers 200); it runs until the test ends. A later ``serve`` replaces the
  earlier one, as a reader stops the old one first.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import ChainMap
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"^\s*<!-- not run by tests/e2e/test_readme\.py: (?P<reason>.+?) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\S*)\s*$")

NOT_RUN = {  # the only reasons a block may give for not being run, and what covers it instead
    "needs a Docker engine": "tests/unit/test_compose.py checks docker-compose.yml and the Dockerfile statically",
    "runs the whole demo and the whole test suite": "minutes each: CI runs `make test`; tests/e2e/test_demo.py "
    "runs the demo's flow (--quick)",
    "needs several GPUs": "`accelerate launch` on more than one device",
}

# (pattern, replacement, why). A replacement's {names} are the federation's (``Reader.values``); {match[1]} is
# the pattern's first group.
SUBSTITUTIONS = [
    (r"https://coord\.example:8443", "https://127.0.0.1:{api}", "the REST API the test's coordinator serves"),
    (r"coord\.example:50051", "127.0.0.1:{grpc}", "its gRPC service (its certificate names loopback too)"),
    (r"coord\.example:50052", "127.0.0.1:{enroll}", "its enrollment port"),
    (r"(?<![\w./-])ca\.pem\b", "{pki}/ca.pem", "the CA the operator hands over, where `init` wrote it"),
    (r"(?<![\w./-])release\.pub\b", "{pki}/release.pub", "the release key the operator hands over"),
    (r"bft_…", "{org_token}", "an org token of acme-labs, made with the command the README's comment names"),
    (
        r"\bbarfed model (build-base|train-expert|train-router)\b",
        "barfed model {match[1]} --recipe micro",
        "micro recipes: seconds instead of the tiny recipes' minutes",
    ),
    (r"expert-tiny\.toml", "expert-micro-v2.toml", "the micro recipe for a version trained further, as the demo's"),
    (r"redis://redis:6379/", "redis://127.0.0.1:6379/", "the local Redis the integration tests use"),
]

# (name, value, why): the whole environment of every block, besides PATH and HOME. {names} as above.
ENVIRONMENT = [
    ("LC_ALL", "C.UTF-8", "a UTF-8 locale, as a reader's terminal has"),
    ("BARFED_COORD_LISTEN", "127.0.0.1:{grpc}", "free loopback ports instead of coordinator.toml's public ones"),
    ("BARFED_COORD_ENROLL_LISTEN", "127.0.0.1:{enroll}", "(the environment overrides coordinator.toml)"),
    ("BARFED_COORD_API_LISTEN", "127.0.0.1:{api}", ""),
    ("BARFED_COORD_AUTO_BUILD", "false", "the README's `releases build` builds r1 and r2, not the coordinator first"),
    ("BARFED_COORD_ROUTER_RECIPE", "micro", "release builds in seconds"),
    ("BARFED_COORD_EVAL_EXAMPLES", "4", ""),
    ("BARFED_COORD_MIN_FREE_BYTES", "0", "a test machine's disk may be nearly full"),
    ("BARFED_COORD_TASK_QUEUE", "readme-{run}", "a queue of its own on the shared Redis"),
    ("BARFED_NODE_RECIPE", "micro", "the node's `train` in seconds"),
    ("BARFED_NODE_ROUTER_RECIPE", "micro", "and its calibration sample sized to match"),
]
CURLRC = "fail-with-body\nsilent\nshow-error\n"  # ~/.curlrc: an HTTP error fails the block, showing its JSON body

LONG_RUNNING = [  # (pattern on a line without its comment, what tells the harness it is up)
    (r"^(\w+=\S+\s+)*barfed coordinator serve\b", "serving"),
    (r"^(\w+=\S+\s+)*barfed node watch\b(?!.*--once)(?!.*--timeout)", "running"),
    (r"^(\w+=\S+\s+)*celery\b.*\bworker\b", "worker"),
]
ASSIGNED = re.compile(r"(?:^|[\s;&|(])(?:export\s+)?([A-Z][A-Z0-9_]*)=")


@dataclass
class Block:
    number: int  # 1 for the README's first bash block
    line: int  # the README line of its opening fence
    text: str
    not_run: str | None  # the marker's reason

    @property
    def first_line(self) -> str:
        return next((line for line in self.text.splitlines() if line.strip()), "")


def read_blocks(text: str) -> tuple[list[Block], list[str], list[int]]:
    """The bash blocks; every fence's language; the lines of markers that stand above no bash block."""
    lines, blocks, languages, stray = text.splitlines(), [], [], []
    markers = {i for i, line in enumerate(lines) if MARKER.match(line)}
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening["indent"], opening["language"]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        languages.append(language)
        if language == "bash":
            marker = MARKER.match(lines[i - 1]) if i else None
            markers.discard(i - 1)
            body = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end])
            blocks.append(Block(len(blocks) + 1, i + 1, body + "\n", marker["reason"] if marker else None))
        i = end + 1
    stray = sorted(m + 1 for m in markers)
    return blocks, languages, stray


def substitute(text: str, values: Values) -> str:
    for pattern, replacement, _ in SUBSTITUTIONS:
        text = re.sub(pattern, lambda m, r=replacement: r.format_map(ChainMap({"match": m}, values)), text)
    return text


def long_running(line: str) -> str | None:
    """What tells that ``line`` is up, when it runs until stopped; None for a command that ends."""
    command = re.sub(r"\s+#.*$", "", line.strip())
    return next((ready for pattern, ready in LONG_RUNNING if re.search(pattern, command)), None)


def segments(text: str) -> list[tuple[str | None, str]]:
    """(None, script) for lines that end, (readiness, line) for each line that runs until stopped, in order."""
    parts, current = [], []
    for line in text.splitlines():
        ready = None if current and current[-1].rstrip().endswith("\\") else long_running(line)
        if ready:
            if any(part.strip() for part in current):
                parts.append((None, "\n".join(current) + "\n"))
            parts.append((ready, line))
            current = []
        else:
            current.append(line)
    if any(part.strip() for part in current):
        parts.append((None, "\n".join(current) + "\n"))
    return parts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BlockFailed(AssertionError):
    pass


@dataclass
class Background:
    line: str
    process: subprocess.Popen
    log: Path
    replaced: bool = False  # a serve a later one replaced

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


class Values(dict):
    """The values substitutions and the environment name; the org token is made when a block first needs it."""

    def __init__(self, reader: Reader, **values) -> None:
        super().__init__(values)
        self.reader = reader

    def __missing__(self, key: str) -> str:
        if key != "org_token":
            raise KeyError(key)
        self[key] = self.reader.barfed("coordinator", "tokens", "create", "--role", "org", "--org", "acme-labs")
        return self[key]


@dataclass
class Reader:
    """One reader's shell, directory and home, and what their blocks left running."""

    root: Path
    background: list[Background] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    timings: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work, self.home, self.logs = self.root / "reader", self.root / "home", self.root / "logs"
        for path in (self.work, self.home, self.logs):
            path.mkdir(parents=True)
        (self.home / ".curlrc").write_text(CURLRC)
        self.state = self.root / "shell-state.sh"
        self.state.write_text("")
        self.coordinator_home = self.work / ".barfed" / "coordinator"
        ports = {"grpc": free_port(), "enroll": free_port(), "api": free_port()}
        self.values = Values(self, **ports, pki=str(self.coordinator_home / "pki"), run=uuid.uuid4().hex[:12])
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            **{name: value.format_map(self.values) for name, value, _ in ENVIRONMENT},
        }

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.values['api']}"

    def barfed(self, *args: str) -> str:
        """A command the harness itself runs as the operator (not part of any block)."""
        done = subprocess.run(["barfed", *args], cwd=self.work, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, f"barfed {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout.strip()

    def run(self, block: Block) -> None:
        text = substitute(block.text, self.values)
        started = time.monotonic()
        for ready, part in segments(text):
            if ready is None:
                self._script(block, text, part)
            else:
                self._start(block, text, ready, part)
        self.timings.append((block.number, time.monotonic() - started))

    def _script(self, block: Block, text: str, script: str) -> None:
        self.names |= set(ASSIGNED.findall(script))
        keep = (
            f"{{ declare -p {' '.join(sorted(self.names))} || true; }} 2>/dev/null > {self.state}" if self.names else ""
        )
        program = f"set -euo pipefail\nsource {self.state}\n{script}\n{keep}\n"
        try:
            done = subprocess.run(
                ["bash", "-c", program], cwd=self.work, env=self.env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=600,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            self.fail(block, text, f"timed out after {exc.timeout} s", exc.output or "")
        if done.returncode != 0:
            self.fail(block, text, f"exit status {done.returncode}", done.stdout)

    def _start(self, block: Block, text: str, ready: str, line: str) -> None:
        if ready == "serving":
            for earlier in [b for b in self.background if "coordinator serve" in b.line and b.alive()]:
                earlier.stop()
                earlier.replaced = True
            for name in ("grpc.port", "enroll.port", "api.port"):
                (self.coordinator_home / name).unlink(missing_ok=True)
        log = self.logs / f"block-{block.number}-{len(self.background)}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"set -euo pipefail\nsource {self.state}\n{line}\n"], cwd=self.work, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started = Background(line, process, log)
        self.background.append(started)
        up = {"serving": self._serving, "worker": self._worker_answers, "running": lambda: True}[ready]
        deadline = time.monotonic() + 120
        while not up():
            if not started.alive() or time.monotonic() > deadline:
                why = "ended" if not started.alive() else "was not up within 120 s"
                self.fail(block, text, f"`{line.strip()}` {why}", started.output())
            time.sleep(0.2)
        time.sleep(0.5)
        if not started.alive():
            self.fail(block, text, f"`{line.strip()}` ended", started.output())

    def _serving(self) -> bool:
        return all((self.coordinator_home / name).is_file() for name in ("grpc.port", "enroll.port", "api.port"))

    def _worker_answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.api}/readyz", verify=self.values["pki"] + "/ca.pem", timeout=10).is_success
        except httpx.HTTPError:
            return False

    def fail(self, block: Block, text: str, why: str, output: str) -> None:
        running = "".join(
            f"\n--- `{b.line.strip()}` ({'running' if b.alive() else 'ended'}), its output's tail ---\n"
            f"{b.output()[-2000:]}"
            for b in self.background
        )
        raise BlockFailed(
            f"README block {block.number} (README.md line {block.line}: {block.first_line.strip()!r}): {why}\n"
            f"--- its output's tail ---\n{output[-4000:]}\n--- as run (after the substitutions) ---\n{text}{running}"
        )

    def stop(self) -> None:
        for process in reversed(self.background):
            process.stop()
