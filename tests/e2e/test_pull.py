"""`barfed pull` as a user runs it (a subprocess), against a real r1 served over HTTPS on loopback (SQLite):
pull by channel, load with stock transformers; trust on first use and a changed key; a pull killed mid-file
resumes without fetching again what it had (bytes counted by the server); a tampered file on the server ends
with DIGEST_MISMATCH, exit 2, and no directory."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import anyio
import pytest
from rich import filesize

from coordinator.api.app import create_app
from coordinator.api.uvicorn_server import ApiServer
from coordinator.embedded import running_coordinator
from coordinator.setup import initialize
from coordinator.state import releases as state
from coordinator.state import tokens
from protocol import pki
from tests.integration.release_helpers import accept, build, coordinator_for, package, release_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def published(micro, say_experts, tmp_path_factory):
    """A coordinator home with a real r1 (one micro expert) on SQLite, and a token of the org role."""
    root = tmp_path_factory.mktemp("pull")
    settings = release_settings(root, f"sqlite:///{root / 'registry.db'}")
    initialize(settings, micro["branch"])
    coordinator = coordinator_for(settings)
    accept(coordinator, package(coordinator, say_experts["yes"], "org-yes", 1, root / "pkg-yes"), "org-yes")
    build(coordinator, root)
    token, _ = tokens.create(coordinator.registry, "org", "test", org_id="org-yes")
    yield coordinator, token
    coordinator.registry.dispose()


def barfed_pull(name, to, api, settings, token, config_home, *extra, wait=True):
    env = {**os.environ, "XDG_CONFIG_HOME": str(config_home), "BARFED_TOKEN": token}
    command = [sys.executable, "-m", "barfed.cli", "pull", name, "--to", str(to), "--api", api]
    command += ["--ca", str(settings.pki_dir / "ca.pem"), *extra]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def release_files(settings) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (settings.releases_dir / "r1").iterdir()}


def test_pull_stable_then_load_it_and_pin_the_key(published, tmp_path):
    coordinator, token = published
    settings = coordinator.settings
    with running_coordinator(settings) as address:
        target = tmp_path / "model"
        first = barfed_pull("stable", target, address.api, settings, token, tmp_path / "config")
        assert first.returncode == 0, first.stderr
        fingerprint = pki.public_key_fingerprint(pki.load_public_key(coordinator.keys.release_public_path.read_bytes()))
        assert "Pinned the release key" in first.stdout and fingerprint in first.stdout
        assert "AutoModelForCausalLM.from_pretrained" in first.stdout
        assert {p.name: p.read_bytes() for p in target.iterdir()} == release_files(settings)
        assert not (tmp_path / "model.partial").exists()
        for name, data in release_files(settings).items():  # off a terminal: a plain line as each file ends
            assert f"{name}: {filesize.decimal(len(data))} in " in first.stderr, first.stderr

        # The stored pin is used next time (no new pin), by commit id; the same target again is already done.
        commit = state.commit_id(state.resolve(coordinator.registry, "r1"))
        again = barfed_pull(commit, tmp_path / "by-commit", address.api, settings, token, tmp_path / "config")
        assert again.returncode == 0 and "Pinned" not in again.stdout, again.stderr
        same = barfed_pull("r1", target, address.api, settings, token, tmp_path / "config")
        assert same.returncode == 0 and "was already" in same.stdout, same.stderr

        # A pinned key that differs from the one the coordinator presents: refused, nothing made.
        pins = tmp_path / "other-config" / "barfed" / "coordinators"
        pins.mkdir(parents=True)
        host, port = address.api.removeprefix("https://").rsplit(":", 1)
        (pins / f"{host}_{port}.pub").write_bytes(pki.public_key_pem(pki.generate_private_key()))
        changed = barfed_pull("stable", tmp_path / "m2", address.api, settings, token, tmp_path / "other-config")
        assert changed.returncode == 2 and "KEY_CHANGED" in changed.stderr and "Traceback" not in changed.stderr
        assert not (tmp_path / "m2").exists() and not (tmp_path / "m2.partial").exists()

        # --coordinator-key of another key: the signature does not verify; no directory, no staging left.
        wrong = tmp_path / "wrong.pub"
        wrong.write_bytes(pki.public_key_pem(pki.generate_private_key()))
        refused = barfed_pull(
            "r1", tmp_path / "m3", address.api, settings, token, tmp_path / "c3", "--coordinator-key", str(wrong)
        )
        assert refused.returncode == 2 and "SIGNATURE_" in refused.stderr, refused.stderr
        assert not (tmp_path / "m3").exists() and not (tmp_path / "m3.partial").exists()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    prompt = tokenizer("yes yes yes yes yes yes 12", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert type(model).__name__ == "FlexOlmoForCausalLM" and generated.shape[1] > prompt["input_ids"].shape[1]


class CountingGate:
    """ASGI wrapper around the real app: counts the body bytes served per path, and can hold one path's response
    once it has sent ``hold_after`` bytes, until released (so a test can kill a client mid-file). ``recount``
    starts the counts afresh: a response begun before it (the killed client's, which the server goes on
    streaming into a closed socket once released) is no longer counted."""

    def __init__(self, app) -> None:
        self.app = app
        self.sent: collections.Counter[str] = collections.Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self.hold_path: str | None = None
        self.hold_after = 0
        self.holding = threading.Event()
        self.release = threading.Event()
        self.epoch = 0

    def recount(self) -> None:
        self.epoch += 1
        self.sent.clear()
        self.ranges.clear()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, epoch = scope["path"], self.epoch
        headers = dict(scope["headers"])
        self.ranges.append((path, headers.get(b"range", b"").decode() or None))

        async def counting_send(message):
            if message["type"] == "http.response.body":
                if epoch == self.epoch:
                    self.sent[path] += len(message.get("body", b""))
                if path == self.hold_path and self.sent[path] >= self.hold_after and not self.release.is_set():
                    self.holding.set()
                    await anyio.to_thread.run_sync(self.release.wait)
            await send(message)

        await self.app(scope, receive, counting_send)


@contextlib.contextmanager
def serving(coordinator, app):
    """The REST API's own server (HTTPS, the federation's certificate) on a thread, serving ``app``."""
    server = ApiServer(coordinator, app)
    thread = threading.Thread(target=lambda: asyncio.run(server.server.serve(sockets=[server.socket])), daemon=True)
    thread.start()
    while not server.server.started:
        assert thread.is_alive(), "the API server did not start"
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{server.port}"
    finally:
        server.server.should_exit = True
        thread.join(timeout=30)
        server.socket.close()


def test_a_killed_pull_resumes_without_fetching_again_what_it_had(published, tmp_path):
    coordinator, token = published
    settings = coordinator.settings
    files = release_files(settings)
    largest = max(files, key=lambda name: len(files[name]))
    size = len(files[largest])
    assert size > 4 * 65536, "the test needs a file of several 64 KiB chunks"
    gate = CountingGate(create_app(coordinator))
    file_prefix = "/v1/releases/r1/files/"
    gate.hold_path, gate.hold_after = file_prefix + largest, size // 2
    target = tmp_path / "model"
    with serving(coordinator, gate) as api:
        puller = barfed_pull("stable", target, api, settings, token, tmp_path / "config", wait=False)
        try:
            assert gate.holding.wait(timeout=300), "the pull never reached the middle of " + largest
            # The server has sent half the file; on a loaded machine the client may not have written any of it yet.
            partial_file = tmp_path / "model.partial" / "release" / largest
            deadline = time.monotonic() + 60
            while not (partial_file.is_file() and partial_file.stat().st_size > 0) and time.monotonic() < deadline:
                time.sleep(0.05)
            puller.send_signal(signal.SIGKILL)
            puller.wait(timeout=60)
        finally:
            gate.release.set()
        staged = tmp_path / "model.partial" / "release"
        had = {p.name: p.stat().st_size for p in staged.iterdir()}
        assert not target.exists() and 0 < had.get(largest, 0) < size  # killed mid-file: not presented as a release
        before = sum(had.values())
        assert before > 0, "files before the largest one should have arrived"

        gate.recount()
        resumed = barfed_pull("stable", target, api, settings, token, tmp_path / "config")
        assert resumed.returncode == 0, resumed.stderr

    served = {path: n for path, n in gate.sent.items() if path.startswith(file_prefix)}
    assert sum(served.values()) == sum(len(b) for b in files.values()) - before  # only what was missing
    for name, length in had.items():
        if length == len(files[name]):
            assert file_prefix + name not in served, f"{name} was complete and was fetched again"
    assert (file_prefix + largest, f"bytes={had[largest]}-") in gate.ranges  # resumed where it stood
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files
    assert not (tmp_path / "model.partial").exists()


def test_a_tampered_file_on_the_server_fails_the_pull_and_leaves_nothing(published, tmp_path):
    coordinator, token = published
    settings = coordinator.settings
    victim = next(p for p in (settings.releases_dir / "r1").iterdir() if p.suffix == ".safetensors")
    original = victim.read_bytes()
    tampered = bytearray(original)
    tampered[-1] ^= 0xFF  # same size, one bit pattern changed: only the digest can tell
    victim.chmod(0o644)
    victim.unlink()  # the release links the build's file: replace the link, never write through it
    victim.write_bytes(bytes(tampered))
    try:
        with running_coordinator(settings) as address:
            result = barfed_pull("r1", tmp_path / "model", address.api, settings, token, tmp_path / "config")
    finally:
        victim.unlink()
        victim.write_bytes(original)
    assert result.returncode == 2, result.stderr
    assert "DIGEST_MISMATCH" in result.stderr and victim.name in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.partial").exists()
