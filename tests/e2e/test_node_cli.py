"""`barfed node …` as an organization runs it, against `barfed coordinator serve` on loopback (a subprocess, so
it can be SIGKILLed), every command a subprocess too.

The tests share one coordinator and one trained node (module fixture) and run in file order (`make test`
hands each file to one worker): the flow to r1 (with --json through a pipe, and the exported public key checked by
the standard model_signing tool), a submission that survives a coordinator kill (then quarantined by the operator,
which `status` shows), then refusals that end the organization (expired certificate, revocation), then the anchor
tests, the last of which tampers with the coordinator's anchor, and coordinators that never answer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ORG, DOMAIN = "acme-labs", "math"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


class CoordinatorProcess:
    """`barfed coordinator serve` on fixed loopback ports, so a restarted one is where the node expects it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.service, self.enroll = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
        self.env = {
            **os.environ,
            "BARFED_COORD_HOME": str(home),
            "BARFED_COORD_LISTEN": self.service,
            "BARFED_COORD_ENROLL_LISTEN": self.enroll,
            "BARFED_COORD_API_LISTEN": "127.0.0.1:0",
            "BARFED_COORD_MIN_FREE_BYTES": "0",
            "BARFED_COORD_AUTO_BUILD": "false",
            "BARFED_COORD_CHUNK_BYTES": str(64 * 1024),
            "BARFED_COORD_SYNC_EVERY_BYTES": str(16 * 1024),
            "BARFED_COORD_ROUTER_RECIPE": "micro",
            "BARFED_COORD_EVAL_EXAMPLES": "4",
            "BARFED_COORD_SWEEP_INTERVAL_S": "1",
        }
        self.process: subprocess.Popen | None = None
        self.log = home.parent / "coordinator.log"

    def start(self) -> None:
        (self.home / "grpc.port").unlink(missing_ok=True)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "barfed.cli", "coordinator", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for(lambda: (self.home / "grpc.port").is_file(), 60, "the coordinator to listen")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def barfed(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "barfed.cli", "coordinator", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )


@dataclass
class Node:
    home: Path
    coordinator: CoordinatorProcess

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "BARFED_NODE_HOME": str(self.home),
            "BARFED_NODE_RECIPE": "micro",
            "BARFED_NODE_ROUTER_RECIPE": "micro",
            "BARFED_NODE_CALL_TIMEOUT_S": "20",
            "BARFED_NODE_INTERACTIVE_TIMEOUT_S": "20",  # a loaded test machine; a closed port still fails at once
            "BARFED_NODE_RETRY_FOR_S": "120",
            "BARFED_NODE_POLL_S": "0.2",
            "BARFED_NODE_CHUNK_BYTES": str(16 * 1024),
            **extra,
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "barfed.cli", "node", *args]

    def run(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env(**env), capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(*args), env=self.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def ok(self, *args: str, **env: str) -> str:
        result = self.run(*args, **env)
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def refused(self, *args: str, code: str, **env: str) -> str:
        result = self.run(*args, **env)
        assert result.returncode == 2, f"{args}: {result.stdout}\n{result.stderr}"
        assert code in result.stderr and "Traceback" not in result.stderr, result.stderr
        return result.stderr


def admin_token(coordinator: CoordinatorProcess) -> str:
    """The operator's admin token for the REST API, made once with `barfed coordinator tokens create`."""
    if not getattr(coordinator, "token", None):
        made = coordinator.barfed("tokens", "create", "--role", "admin", "--label", "test operator")
        assert made.returncode == 0, made.stderr
        coordinator.token = made.stdout.strip()
    return coordinator.token


def rest(coordinator: CoordinatorProcess):
    """An HTTPS client of the coordinator's REST API (CA-verified), as the operator."""
    import httpx

    return httpx.Client(
        base_url=f"https://127.0.0.1:{(coordinator.home / 'api.port').read_text().strip()}",
        verify=str(coordinator.home / "pki" / "ca.pem"),
        headers={"Authorization": f"Bearer {admin_token(coordinator)}"},
    )


def approve_pending(coordinator: CoordinatorProcess, registry, org_id: str) -> str:
    """The operator approves ``org_id``'s pending enrollment through the REST API."""
    with rest(coordinator) as api:

        def pending():
            rows = api.get("/v1/enrollments").json()
            return next((e["id"] for e in rows if e["org"] == org_id and e["state"] == "pending"), None)

        enrollment_id = _wait_for(pending, 60, f"{org_id}'s enrollment request", poll=0.2)
        approved = api.post(f"/v1/enrollments/{enrollment_id}/approve")
        assert approved.status_code == 200, approved.text
    return enrollment_id


def _init_args(coordinator: CoordinatorProcess, org_id: str) -> tuple[str, ...]:
    pki = coordinator.home / "pki"
    return ("init", "--org", org_id, "--service", coordinator.service, "--enroll", coordinator.enroll,
            "--ca", str(pki / "ca.pem"), "--release-key", str(pki / "release.pub"))  # fmt: skip


def _init_node(coordinator: CoordinatorProcess, root: Path, org_id: str) -> Node:
    node = Node(root / "nodes" / org_id, coordinator)
    out = node.ok(*_init_args(coordinator, org_id))
    assert "never leaves" in out
    return node


@dataclass
class Federation:
    coordinator: CoordinatorProcess
    registry: object
    node: Node
    root: Path


@pytest.fixture(scope="module")
def federation(micro, tmp_path_factory):
    """A serving coordinator and acme-labs' node, enrolled (approved while `enroll --wait` waits), holding the
    anchor and a trained micro math expert, all through the CLI."""
    from coordinator.enrollment import invite
    from coordinator.settings import load_settings
    from coordinator.setup import initialize
    from coordinator.state.db import Registry

    root = tmp_path_factory.mktemp("node-cli")
    settings = load_settings(home=root / "coordinator", min_free_bytes=0, auto_build=False)
    initialize(settings, micro["branch"])
    registry = Registry(settings.db_url)
    coordinator = CoordinatorProcess(settings.home)
    coordinator.start()
    try:
        node = _init_node(coordinator, root, ORG)
        assert node.run("init", "--org", "globex", "--service", "x:1", "--enroll", "x:2", "--ca", "c", "--release-key",
                        "k").returncode == 2  # fmt: skip
        assert oct((node.home / "org.key").stat().st_mode & 0o777) == "0o600"
        token = invite(registry, ORG, [DOMAIN])
        waiting = node.start("enroll", "--token", token, "--wait", "--timeout", "120")
        approve_pending(coordinator, registry, ORG)
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0 and f"may publish {DOMAIN}" in out, out + err
        assert "already enrolled" in node.ok("enroll")
        assert "signature verified" in node.ok("fetch-anchor")
        assert "is here and current" in node.ok("fetch-anchor")
        again = node.ok(*_init_args(coordinator, ORG))  # a rerun of init on an enrolled node: not "enroll" again
        assert "kept key" in again and "next: barfed node train" in again and "enroll" not in again
        # The node's tracker setting reaches training (the recipe names none); its logs stay with the expert.
        assert "expert trained" in node.ok("train", "--stages", "mid,sft,rl", BARFED_NODE_REPORT_TO="tensorboard")
        assert "already trained" in node.ok("train")
        yield Federation(coordinator, registry, node, root)
    finally:
        coordinator.stop()
        registry.dispose()


def test_train_left_its_progress_record_done(federation):
    """training.json, which a watcher (the demo) reads, ends done with the last stage's figures; the trackers
    BARFED_NODE_REPORT_TO named (TensorBoard) left every stage's event files in the expert."""
    from bar_model.recipe import load_expert_recipe

    record = json.loads((federation.node.home / "training.json").read_text())
    steps = load_expert_recipe("micro").rl.steps
    assert (record["domain"], record["version"], record["done"]) == (DOMAIN, 1, True)
    assert (record["stage"], record["step"], record["total"]) == ("rl", steps, steps)
    assert record["stage_started_at"] <= record["updated_at"] <= time.time()
    logs = federation.node.home / "experts" / DOMAIN / "tracker-logs"
    assert {p.parent.parent.name for p in logs.glob("*/*/events.out.tfevents.*")} == {"mid", "sft", "rl"}


def test_package_submit_accepted_then_r1(federation):
    node, coordinator = federation.node, federation.coordinator
    scores = node.ok("eval", "--n", "4")
    assert DOMAIN in scores and "general" in scores
    scored = json.loads(node.ok("eval", "--n", "4", "--json"))  # recorded: not scored again
    assert (scored["domain"], scored["n"]) == (DOMAIN, 4) and {DOMAIN, "general"} <= set(scored["scores"])
    assert "built and signed" in node.ok("package")
    assert "already built" in node.ok("package")  # idempotent
    package = node.home / "packages" / f"{DOMAIN}-v1"
    assert (package / "calibration.jsonl").is_file() and (package / "eval.jsonl").is_file()
    assert json.loads((package / "expert.json").read_text())["eval_scores"][DOMAIN] >= 0

    # README's standard-tool check of a package, with the public key `export-key` writes (never the private one).
    assert str(node.home / "org.pub") in node.ok("export-key")
    assert "PUBLIC KEY" in (node.home / "org.pub").read_text() and "PRIVATE" not in (node.home / "org.pub").read_text()
    verify = ["verify", "key", str(package), "--signature", str(package / "model.sig")]
    verify += ["--public_key", str(node.home / "org.pub"), "--no-ignore-git-paths"]
    checked = subprocess.run([sys.executable, "-m", "model_signing", *verify], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    out = node.ok("submit", "--wait", "--timeout", "240")
    assert f"{DOMAIN}-v1: ACCEPTED" in out
    assert "already submitted" in node.ok("submit")  # a rerun commits nothing twice
    submission_id = json.loads((node.home / "submissions.json").read_text())[f"{DOMAIN}-v1"]["submission_id"]
    shown = node.ok("status")  # through a pipe: the table is not cut to 80 columns
    assert "ACCEPTED" in shown and submission_id in shown
    [row] = json.loads(node.ok("status", "--json"))["submissions"]
    assert row["package"] == f"{DOMAIN}-v1" and row["submission_id"] == submission_id and row["version"] == 1
    assert (row["state"], row["expert_status"], row["error_code"]) == ("ACCEPTED", "ACCEPTED", "")

    built = coordinator.barfed("releases", "build", "--wait")
    assert built.returncode == 0, built.stdout + built.stderr
    assert (coordinator.home / "releases" / "r1" / "model.sig").is_file()
    watched = json.loads(node.ok("watch", "--once", "--timeout", "60", "--after", "0", "--json"))
    assert (watched["name"], watched["domains"]) == ("r1", [DOMAIN])
    # The organization hears how much of its expert's own score the release keeps, as release.json records it.
    own = json.loads((coordinator.home / "releases" / "r1" / "release.json").read_text())["eval"][DOMAIN]
    kept = {"expert": own["expert_score"], "release": own["score"], "retention": own["retention"]}
    kept["difference"] = own["difference"]
    assert own["expert_score"] is not None and watched["retention"] == {DOMAIN: kept}
    line = node.ok("watch", "--once", "--timeout", "60", "--after", "0")
    assert "r1" in line and f"{DOMAIN} {own['score']:g} of its expert's {own['expert_score']:g}" in line
    [row] = json.loads(node.ok("status", "--json"))["submissions"]
    assert (row["release"], row["retention"]) == ("r1", kept)

    # A user pulls the stable release over the REST API and loads it with stock transformers.
    target = node.home.parent / "user" / "stable"
    pki = coordinator.home / "pki"
    api = str(rest(coordinator).base_url).rstrip("/")
    command = [sys.executable, "-m", "barfed.cli", "pull", "stable", "--to", str(target), "--api", api]
    command += ["--ca", str(pki / "ca.pem"), "--token", admin_token(coordinator)]
    pulled = subprocess.run(
        [*command, "--coordinator-key", str(pki / "release.pub")], capture_output=True, text=True, timeout=300
    )
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(target), AutoTokenizer.from_pretrained(target)
    prompt = tokenizer("2 + 2 =", return_tensors="pt")
    assert model.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] > prompt["input_ids"].shape[1]


def test_submit_survives_a_coordinator_kill(federation):
    """SIGKILL mid-upload, restart: the same `submit` resumes its session and ends ACCEPTED by itself."""
    from sqlalchemy import func, select

    from coordinator.state.models import UploadSession

    node, coordinator, registry = federation.node, federation.coordinator, federation.registry
    assert "no data (privacy router row)" in node.ok("package", "--version", "2", "--no-calibration")
    assert not (node.home / "packages" / f"{DOMAIN}-v2" / "calibration.jsonl").exists()
    uploading = node.start("submit", "--wait", "--timeout", "240", BARFED_NODE_MAX_BYTES_PER_S=str(48 * 1024))

    def durable_bytes():
        with registry.session() as session:
            from coordinator.state.models import UploadFile

            return session.scalar(select(func.sum(UploadFile.committed)))

    _wait_for(lambda: (durable_bytes() or 0) > 16 * 1024, 60, "upload progress to become durable")
    assert uploading.poll() is None, uploading.communicate()
    coordinator.kill()
    time.sleep(1.0)
    coordinator.start()
    out, err = uploading.communicate(timeout=240)
    assert uploading.returncode == 0, out + err
    assert f"{DOMAIN}-v2: ACCEPTED" in out
    with registry.session() as session:
        sessions = session.scalar(select(func.count()).where(UploadSession.version == 2))
    assert sessions == 1  # resumed, not started over

    # The operator quarantines v2 later: `status` shows it, not only the ACCEPTED verdict.
    with rest(coordinator) as api:
        experts = api.get("/v1/experts", params={"domain": DOMAIN}).json()["items"]
        submitted = json.loads((node.home / "submissions.json").read_text())
        v2 = next(e for e in experts if e["submission_id"] == submitted[f"{DOMAIN}-v2"]["submission_id"])
        quarantined = api.post(f"/v1/experts/{DOMAIN}/{v2['version']}/quarantine", json={"reason": "leaks data"})
        assert quarantined.status_code == 200, quarantined.text
    rows = {row["package"]: row for row in json.loads(node.ok("status", "--json"))["submissions"]}
    assert (rows[f"{DOMAIN}-v2"]["state"], rows[f"{DOMAIN}-v2"]["expert_status"]) == ("ACCEPTED", "QUARANTINED")
    assert rows[f"{DOMAIN}-v1"]["expert_status"] == "ACCEPTED"
    assert "QUARANTINED" in node.ok("status")


def _stored(federation) -> tuple[int, int, list[str]]:
    from sqlalchemy import func, select

    from coordinator.state.models import Submission, UploadSession

    with federation.registry.session() as session:
        submissions = session.scalar(select(func.count()).select_from(Submission))
        uploads = session.scalar(select(func.count()).select_from(UploadSession))
    blobs = sorted(str(p) for p in (federation.coordinator.home / "blobs").rglob("*") if p.is_file())
    return submissions, uploads, blobs


def test_expired_certificate_and_revoked_org_store_nothing(federation):
    import datetime as dt

    from coordinator.keys import CoordinatorKeys
    from protocol import pki

    node, coordinator = federation.node, federation.coordinator
    node.ok("package", "--version", "3")
    before = _stored(federation)

    cert_path = node.home / "org.pem"
    good = cert_path.read_bytes()
    ca_key, ca_cert = CoordinatorKeys(coordinator.home / "pki").ca()
    csr = pki.make_csr(pki.load_private_key(node.home / "org.key"), ORG)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = pki.issue_client_certificate(ca_key, ca_cert, csr, ORG, days=1, not_before=old)
    cert_path.write_bytes(pki.certificate_pem(expired))
    assert "enroll --token NEW" in node.refused("submit", code="CERT_EXPIRED")
    cert_path.write_bytes(good)
    assert _stored(federation) == before

    revoked = coordinator.barfed("orgs", "revoke", ORG, "--reason", "left the federation")
    assert revoked.returncode == 0, revoked.stderr
    node.refused("submit", code="CERT_REVOKED")
    node.refused("status", code="CERT_REVOKED")
    assert _stored(federation) == before
    assert not (node.home / "uploads" / f"{DOMAIN}-v3.json").exists()


def test_fetch_anchor_resumes_then_a_tampered_anchor_is_refused(federation):
    from coordinator.enrollment import invite

    coordinator, registry = federation.coordinator, federation.registry
    node = _init_node(coordinator, federation.root, "globex")
    node.ok("enroll", "--token", invite(registry, "globex", ["code"]))  # pending: a rerun follows the same request
    approve_pending(coordinator, registry, "globex")
    assert "may publish code" in node.ok("enroll")

    partial = node.home / ".anchor.partial"
    fetching = node.start("fetch-anchor", BARFED_NODE_MAX_BYTES_PER_S=str(64 * 1024))
    _wait_for(lambda: (partial / "files" / "model.safetensors").is_file(), 60, "the download to reach the weights")
    fetching.send_signal(signal.SIGKILL)
    fetching.wait(30)
    declared = {f["path"]: f["size"] for f in json.loads((partial / "manifest.json").read_text())["files"]}
    held = {p.name: p.stat() for p in (partial / "files").iterdir()}
    complete = {name for name, st in held.items() if st.st_size == declared[name]}
    assert complete and "config.json" in complete
    assert held["model.safetensors"].st_size < declared["model.safetensors"]

    out = node.ok("fetch-anchor")
    already = sum(st.st_size for st in held.values())
    assert f"downloaded {sum(declared.values()) - already} bytes" in out
    for name in complete:  # the very files the interrupted run completed: not written again
        now = (node.home / "anchor" / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (held[name].st_ino, held[name].st_mtime_ns)
    assert not partial.exists()

    record = node.home / "anchor.json"  # as if the coordinator had published another anchor since this fetch
    fetched = record.read_text()
    record.write_text(json.dumps({**json.loads(fetched), "fingerprint": "sha256:" + "0" * 64}))
    assert "fetch-anchor" in node.refused("fetch-anchor", code="ANCHOR_CHANGED")
    record.write_text(fetched)
    assert "is here and current" in node.ok("fetch-anchor")

    coordinator.stop()
    tokenizer = coordinator.home / "anchor" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text() + "\n")  # the bytes served no longer match the signed ones
    coordinator.start()
    other = _init_node(coordinator, federation.root, "initech")
    other.ok("enroll", "--token", invite(registry, "initech", ["tool_use"]))
    approve_pending(coordinator, registry, "initech")
    other.ok("enroll")
    stderr = other.refused("fetch-anchor", code="ANCHOR_SIGNATURE_INVALID")
    assert "Traceback" not in stderr
    assert not (other.home / "anchor").exists() and not (other.home / ".anchor.partial").exists()


def test_an_unreachable_coordinator_is_named_within_seconds_or_waited_for(federation, tmp_path):
    """Nothing listens at the address: what a person waits on (status, fetch-anchor's check, enroll without --wait)
    gives up within seconds with the address and the cause; enroll --wait retries with backoff for retry_for_s,
    saying on each wait what it waits for and where, then gives up the same way. A CA that does not match is a TLS
    failure, said as such. Exit 2 each time, nothing stored."""
    from protocol import pki

    node, closed = federation.node, f"127.0.0.1:{_free_port()}"
    for command in ("status", "fetch-anchor"):
        started = time.monotonic()
        stderr = node.refused(command, code="COORDINATOR_UNREACHABLE", BARFED_NODE_SERVICE_ADDRESS=closed)
        assert time.monotonic() - started < 10, f"{command} took {time.monotonic() - started:.1f}s"
        assert f"the coordinator at {closed} did not answer (connection refused" in stderr
        assert "check BARFED_NODE_SERVICE_ADDRESS" in stderr and "retrying in" not in stderr

    ca = node.home / "ca.pem"
    pinned = ca.read_bytes()
    ca.write_bytes(pki.certificate_pem(pki.create_ca("Another CA")[1]))
    try:
        assert "TLS failure" in node.refused("status", code="COORDINATOR_UNREACHABLE")
    finally:
        ca.write_bytes(pinned)

    pki_dir = federation.coordinator.home / "pki"
    lost = Node(tmp_path / "lost", federation.coordinator)
    service, enroll = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    lost.ok("init", "--org", "lost", "--service", service, "--enroll", enroll, "--ca", str(pki_dir / "ca.pem"),
            "--release-key", str(pki_dir / "release.pub"))  # fmt: skip
    started = time.monotonic()
    quick = lost.refused("enroll", "--token", "x" * 32, code="COORDINATOR_UNREACHABLE")
    assert time.monotonic() - started < 10 and f"the coordinator at {enroll} did not answer" in quick
    started = time.monotonic()
    waited = lost.refused("enroll", "--token", "x" * 32, "--wait", code="COORDINATOR_UNREACHABLE",
                          BARFED_NODE_RETRY_FOR_S="4")  # fmt: skip
    assert f"enroll: the coordinator at {enroll} does not answer; retrying in" in waited
    assert f"the coordinator at {enroll} did not answer (connection refused" in waited
    assert str(lost.home / "node.toml") in waited and waited.count("retrying in") >= 2
    assert time.monotonic() - started < 60
    assert not (lost.home / "org.pem").exists() and not (lost.home / "enrollment.json").exists()
