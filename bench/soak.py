"""Reliability soak (issue 25): one `barfed coordinator serve` process under load, a dead worker and hostile clients.

The long part of the reliability suite (docs/RELIABILITY.md); the faults that need a clean slate each (kill -9 of
`serve`, a database outage, a full disk, stalled and frozen clients, skewed clocks, hostile bytes) are tests that
CI runs. Scenarios, in this order, against one coordinator (SQLite, the embedded verification worker):

- submissions: 16 organizations each submit a 64 MiB expert package at once over mTLS: every one must end
  ACCEPTED with the digest it sent; the coordinator's peak RSS (itself and its worker);
- worker-kill: four more submissions, and kill -9 of the worker while it verifies one: each must end ACCEPTED with
  no rerun; seconds from the kill to that submission's ACCEPTED, against job_lease_s + 10;
- downloads: one download of a 64 MiB release file, then 100 at once: throughput of each against the one;
- reads: GET /v1/experts at 200 requests/s for 20 s, open loop (latency counted from each request's scheduled
  time, so a server that falls behind cannot hide it): the rate achieved, p50 and p99;
- stalled: 3000 anonymous connections that complete TLS, send half a request and stop: the coordinator's RSS while
  they are held and after they are gone, and how many it closed by itself;
- schema: schemathesis over every operation of the served API, every check and every phase (stateful included),
  with an admin token and path parameters that name what exists; its failures in full in $TMPDIR.

    .venv/bin/python bench/soak.py [--only submissions,worker-kill,downloads,reads,stalled,schema] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import Olmo2Config, Olmo2ForCausalLM  # noqa: E402

from bar_model.branch import init_anchor  # noqa: E402
from bar_model.domains.parametric import parametric_names  # noqa: E402
from bench.merge_memory import synthetic_expert  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402
from contributor_node.identity import NodeIdentity  # noqa: E402
from contributor_node.package import build_package  # noqa: E402
from coordinator.enrollment import approve, invite  # noqa: E402
from coordinator.runtime import Runtime  # noqa: E402
from coordinator.settings import load_settings  # noqa: E402
from coordinator.setup import initialize  # noqa: E402
from coordinator.state import tokens  # noqa: E402
from protocol.fingerprint import anchor_fingerprint  # noqa: E402
from protocol.package import file_sha256  # noqa: E402
from protocol.v1 import barfed_pb2 as pb  # noqa: E402
from tests.integration.fake_release import publish_fake_release  # noqa: E402

MiB = 1024**2
# a 2-slot expert whose package is a little over 64 MiB
SIZE = {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 1792}
ORGS = 16
JOB_LEASE_S = 20.0
RELEASE_FILE_BYTES = 64 * MiB
SCENARIOS = ("submissions", "worker-kill", "downloads", "reads", "stalled", "schema")


@dataclass
class Federation:
    work: Path
    settings: object
    anchor: Path
    fingerprint: str
    orgs: list[tuple[str, str, NodeIdentity]]  # (org, domain, identity)
    server: subprocess.Popen
    api: str
    token: str
    admin_token: str
    figures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.settings.pki_dir / "ca.pem"

    def processes(self) -> list[psutil.Process]:
        """The coordinator and its children (the supervised worker)."""
        parent = psutil.Process(self.server.pid)
        return [parent, *parent.children(recursive=True)]

    def rss(self) -> tuple[int, int]:
        """(the coordinator's RSS, its worker's and the worker's children's together)."""
        sizes = []
        for process in self.processes():
            try:
                sizes.append(process.memory_info().rss)
            except psutil.Error:
                sizes.append(0)
        return sizes[0], sum(sizes[1:])

    def package(self, index: int, version: int) -> tuple[Path, str]:
        """Organization ``index``'s package of ``version`` (new weights each), and its expected digest."""
        org, domain, identity = self.orgs[index]
        expert, package = self.work / f"expert-{org}-v{version}", self.work / f"package-{org}-v{version}"
        synthetic_expert(self.anchor, expert, 1000 * version + index, self.fingerprint, domain=domain)
        build_package(expert, package, org=org, version=version, private_key=identity.key_path)
        shutil.rmtree(expert)
        return package, file_sha256(package / "expert.json")


class PeakRss:
    """Sample the coordinator's and its worker's RSS every 50 ms while the block runs; ``str()`` says both."""

    def __init__(self, federation: Federation):
        self.federation, self.before = federation, federation.rss()
        self.peak = self.before
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            now = self.federation.rss()
            self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        """The coordinator's own growth (what a client can make it hold)."""
        return self.peak[0] - self.before[0]

    def __str__(self) -> str:
        return (
            f"RSS coordinator {self.before[0] / MiB:.0f} -> peak {self.peak[0] / MiB:.0f} MiB, worker "
            f"{self.before[1] / MiB:.0f} -> peak {self.peak[1] / MiB:.0f} MiB"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def federation(work: Path) -> Iterator[Federation]:
    """A coordinator (`serve` in its own process, embedded worker) with ORGS enrolled organizations and r1."""
    torch.manual_seed(0)
    Olmo2ForCausalLM(Olmo2Config(vocab_size=2048, pad_token_id=0, eos_token_id=1, **SIZE)).save_pretrained(
        work / "dense"
    )
    anchor = init_anchor(work / "dense", work / "anchor-2x")
    shutil.rmtree(work / "dense")
    settings = load_settings(
        home=work / "coordinator", listen=f"127.0.0.1:{free_port()}", enroll_listen=f"127.0.0.1:{free_port()}"
    )
    initialize(settings, anchor)
    runtime = Runtime.from_settings(settings)
    publish_fake_release(runtime, 1, {"model.safetensors": RELEASE_FILE_BYTES})
    token, _ = tokens.create(runtime.registry, "operator", "soak")
    admin_token, _ = tokens.create(runtime.registry, "admin", "soak")
    orgs = []
    from contributor_node.client import CoordinatorClient

    env = {
        **os.environ,
        "BARFED_COORD_HOME": str(settings.home),
        "BARFED_COORD_LISTEN": settings.listen,
        "BARFED_COORD_ENROLL_LISTEN": settings.enroll_listen,
        "BARFED_COORD_API_LISTEN": "127.0.0.1:0",
        "BARFED_COORD_AUTO_BUILD": "false",
        "BARFED_COORD_JOB_LEASE_S": str(JOB_LEASE_S),
        "BARFED_COORD_ENROLL_BURST": str(4 * ORGS),  # every organization enrolls from this one address
        "BARFED_COORDINATOR_CONFIG": str(work / "none.toml"),
        "BARFED_LOG_LEVEL": "WARNING",
    }
    log = open(work / "serve.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "barfed.cli", "coordinator", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while not (settings.home / "api.port").is_file():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the coordinator did not start: {(work / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.1)
        ca = (settings.pki_dir / "ca.pem").read_bytes()
        with CoordinatorClient(settings.enroll_listen, ca_pem=ca) as anonymous:
            for org, domain in zip((f"org-{i:02d}" for i in range(ORGS)), parametric_names(), strict=False):
                identity = NodeIdentity(work / "nodes" / org, org)
                pending = anonymous.enroll(org, identity.csr(), invite(runtime.registry, org, [domain]))
                approve(runtime.registry, runtime.keys, pending.enrollment_id)
                identity.save_enrollment(anonymous.enrollment(pending.enrollment_id))
                orgs.append((org, domain, identity))
        api = f"https://127.0.0.1:{(settings.home / 'api.port').read_text().strip()}"
        yield Federation(work, settings, anchor, anchor_fingerprint(anchor), orgs, server, api, token, admin_token)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        runtime.registry.dispose()


def submit_and_wait(fed: Federation, index: int, package: Path, on_submitted: Callable[[str], None] | None = None):
    """(final state name, package digest the coordinator recorded, seconds from the first byte to the end)."""
    _org, _domain, identity = fed.orgs[index]
    with identity.client(fed.settings.listen) as client:
        started = time.perf_counter()
        submission_id = client.submit(package)
        if on_submitted:
            on_submitted(submission_id)
        status = client.wait(submission_id, timeout=1800, poll=0.2)
        return pb.SubmissionState.Name(status.state), status.package_digest, time.perf_counter() - started


def submissions(fed: Federation) -> list[str]:
    packages = [fed.package(i, 1) for i in range(ORGS)]
    size = sum(p.stat().st_size for p in packages[0][0].iterdir()) / MiB
    with PeakRss(fed) as rss, ThreadPoolExecutor(ORGS) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda i: submit_and_wait(fed, i, packages[i][0]), range(ORGS)))
        wall = time.perf_counter() - started
    accepted = sum(state == "ACCEPTED" for state, _, _ in results)
    right = sum(digest == packages[i][1] for i, (_, digest, _) in enumerate(results))
    for package, _ in packages:
        shutil.rmtree(package)
    return [
        f"| {ORGS} concurrent submissions of {size:.0f} MiB | {accepted}/{ORGS} ACCEPTED, {right}/{ORGS} digests "
        f"right; all done in {wall:.1f} s (each {statistics.median(s for *_, s in results):.1f} s median); "
        f"{rss} | 0 lost |",
    ]


def worker_kill(fed: Federation) -> list[str]:
    """Four submissions; kill -9 the worker once one of them is VERIFYING."""
    packages = [fed.package(i, 2) for i in range(4)]
    ids: dict[int, str] = {}
    killed: dict[str, float | str] = {}

    def kill_when_verifying() -> None:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(fed.orgs[i][2].client(fed.settings.listen)) for i in range(4)]
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                for index, submission_id in list(ids.items()):
                    if clients[index].submission(submission_id).state == pb.VERIFYING:
                        for process in fed.processes()[1:]:  # the supervised worker and its children
                            process.send_signal(signal.SIGKILL)
                        killed.update(at=time.perf_counter(), id=submission_id)
                        return
                time.sleep(0.02)

    def one(index: int):
        state, digest, _ = submit_and_wait(fed, index, packages[index][0], lambda sid: ids.__setitem__(index, sid))
        return state, digest, time.perf_counter()

    watcher = threading.Thread(target=kill_when_verifying)
    watcher.start()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    watcher.join()
    for package, _ in packages:
        shutil.rmtree(package)
    accepted = sum(state == "ACCEPTED" for state, _, _ in results)
    right = sum(digest == packages[i][1] for i, (_, digest, _) in enumerate(results))
    if not killed:
        return ["| kill -9 of the worker mid-verification | the worker was never seen VERIFYING | not measured |"]
    victim = next(i for i, sid in ids.items() if sid == killed["id"])
    recovery = results[victim][2] - killed["at"]
    target = JOB_LEASE_S + 10
    return [
        f"| kill -9 of the worker mid-verification (job_lease_s {JOB_LEASE_S:.0f}) | {accepted}/4 ACCEPTED, "
        f"{right}/4 digests right, no rerun; the killed job ACCEPTED {recovery:.1f} s after the kill | "
        f"recovery <= {target:.0f} s: **{'met' if recovery <= target else 'NOT met'}** |",
    ]


def download(api: str, ca: Path, token: str) -> tuple[int, float]:
    with httpx.Client(base_url=api, verify=str(ca), headers={"Authorization": f"Bearer {token}"}, timeout=600) as c:
        started, received = time.perf_counter(), 0
        with c.stream("GET", "/v1/releases/r1/files/model.safetensors") as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(MiB):
                received += len(chunk)
        return received, time.perf_counter() - started


def downloads(fed: Federation) -> list[str]:
    download(fed.api, fed.ca, fed.token)  # warm: TLS, the release's verified file list
    one_bytes, one_s = download(fed.api, fed.ca, fed.token)
    with PeakRss(fed) as rss, ThreadPoolExecutor(100) as pool:
        started = time.perf_counter()
        results = list(pool.map(lambda _i: download(fed.api, fed.ca, fed.token), range(100)))
        wall = time.perf_counter() - started
    complete = sum(received == RELEASE_FILE_BYTES for received, _ in results)
    total = sum(received for received, _ in results)
    return [
        f"| 1 download of {RELEASE_FILE_BYTES // MiB} MiB | {one_bytes / MiB / one_s:.0f} MiB/s | baseline |",
        f"| 100 concurrent downloads of it | {complete}/100 complete, {total / MiB / wall:.0f} MiB/s together "
        f"({total / MiB / wall / (one_bytes / MiB / one_s):.2f}x the one), slowest {max(s for _, s in results):.1f} s;"
        f" {rss} | all complete |",
    ]


def reads(fed: Federation, rate: int = 200, seconds: int = 20, threads: int = 16) -> list[str]:
    count = rate * seconds
    latencies: list[float] = []
    failures: list[int] = []
    start = time.perf_counter() + 1.0

    def worker(offset: int) -> None:
        headers = {"Authorization": f"Bearer {fed.token}"}
        with httpx.Client(base_url=fed.api, verify=str(fed.ca), headers=headers, timeout=30) as client:
            client.get("/v1/experts")  # connect before the clock starts
            for i in range(offset, count, threads):
                scheduled = start + i / rate
                time.sleep(max(0.0, scheduled - time.perf_counter()))
                response = client.get("/v1/experts", params={"limit": 20})
                latencies.append(time.perf_counter() - scheduled)
                if response.status_code != 200:
                    failures.append(response.status_code)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    achieved = count / (time.perf_counter() - start)
    quantiles = statistics.quantiles(latencies, n=100)
    p50, p99 = quantiles[49] * 1000, quantiles[98] * 1000
    met = achieved >= 0.98 * rate and p99 < 100 and not failures
    return [
        f"| admin reads, GET /v1/experts at {rate} req/s for {seconds} s ({threads} keep-alive clients) | "
        f"{achieved:.0f} req/s achieved, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {len(failures)} not 200 | "
        f">= {rate} req/s with p99 < 100 ms: **{'met' if met else 'NOT met'}** |",
    ]


def stalled(fed: Federation, count: int = 3000) -> list[str]:
    port = int(fed.api.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(fed.ca))
    held: list[ssl.SSLSocket] = []
    refused = 0
    with PeakRss(fed) as rss:
        for _ in range(count):
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                sock.sendall(b"GET /v1/orgs HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a request
                held.append(sock)
            except OSError:
                refused += 1
        opened = time.perf_counter()
        time.sleep(40)  # longer than any header timeout the server sets
        closed = 0
        for sock in held:
            sock.settimeout(0.01)
            try:
                sock.recv(1)  # an answer (408) or EOF: the server gave up on it
                closed += 1
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        waited = time.perf_counter() - opened
    for sock in held:
        with contextlib.suppress(OSError):
            sock.close()
    time.sleep(5)
    after = fed.rss()[0]
    growth = rss.growth / MiB
    return [
        f"| {count} anonymous connections: TLS, half a request, then nothing | {len(held)} opened, {refused} refused; "
        f"{closed} closed by the server within {waited:.0f} s; {rss}; the coordinator {after / MiB:.0f} MiB 5 s "
        f"after they were gone | growth < 100 MB: **{'met' if growth < 100 else 'NOT met'}** ({growth:.0f} MiB) |",
    ]


def schema(fed: Federation, examples: int = 100) -> list[str]:
    """Schemathesis over every operation of the served API's own document, all checks, every phase (stateful
    links included), with an admin token; the failures it reports, by check."""
    report = fed.work / "schemathesis.json"
    org, domain, _ = fed.orgs[0]
    values = {"org": org, "domain": domain, "version": 1, "name": "r1", "a": "r1", "b": "r1", "channel": "stable"}
    values |= {"path": "model.safetensors", "filename": "model.safetensors", "revision": "r1"}
    values |= {"repo_id": fed.settings.hub_repo}
    # path parameters that name what exists, so operations reach their logic instead of answering 404
    (fed.work / "schemathesis.toml").write_text(
        "[parameters]\n" + "".join(f'"path.{key}" = {json.dumps(value)}\n' for key, value in values.items())
    )
    command = [
        *(str(Path(sys.executable).parent / "schemathesis"), "run", f"{fed.api}/openapi.json"),
        *("--checks", "all", "--max-examples", str(examples), "--tls-verify", str(fed.ca)),
        *("-H", f"Authorization: Bearer {fed.admin_token}", "--seed", "1", "--continue-on-failure"),
        *("--report", "json", "--report-json-path", str(report), "--no-color"),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=fed.work)  # its cache there
    wall = time.perf_counter() - started
    lines = [line.strip() for line in result.stdout.splitlines()]
    cases = next((lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "Test cases:"), "no summary")
    return [
        f"| schemathesis `--checks all`, every phase, {examples} examples an operation, admin token | exit "
        f"{result.returncode} in {wall:.0f} s: {cases} | 0 failures: "
        f"**{'met' if result.returncode == 0 else 'NOT met'}** |",
    ]


RUNNERS: dict[str, Callable[[Federation], list[str]]] = {
    "submissions": submissions,
    "worker-kill": worker_kill,
    "downloads": downloads,
    "reads": reads,
    "stalled": stalled,
    "schema": schema,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios, in this order")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/RELIABILITY.md as it is")
    args = parser.parse_args()
    chosen = [name for name in SCENARIOS if name in args.only.split(",")]
    rows: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, federation(Path(tmp)) as fed:
        for name in chosen:
            step = time.perf_counter()
            print(f"{name} ...", flush=True)
            found = RUNNERS[name](fed)
            rows += found
            print(f"{name}: {time.perf_counter() - step:.0f} s\n  " + "\n  ".join(found), flush=True)
    only = "" if len(chosen) == len(SCENARIOS) else " --only " + ",".join(chosen)
    report = "\n".join(
        [
            f"Command: `.venv/bin/python bench/soak.py{only}`  ",
            f"Machine: {machine_line()}; `barfed coordinator serve` in its own process (SQLite, the embedded "
            f"verification worker, job_lease_s {JOB_LEASE_S:.0f}), clients in the bench's process on the same "
            f"cores; {time.perf_counter() - started:.0f} s in all.",
            "",
            "| scenario | what happened | target |",
            "|---|---|---|",
            *rows,
        ]
    )
    print(report)
    if not args.no_write and len(chosen) == len(SCENARIOS):
        replace_section(
            ROOT / "docs" / "RELIABILITY.md", "soak", "The soak: load, a dead worker and hostile clients", report
        )


if __name__ == "__main__":
    main()
