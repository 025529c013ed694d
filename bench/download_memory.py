"""Benchmark: the REST API server's RSS growth while it serves a 1 GiB release file, beside a 1 MiB one.

`barfed coordinator serve --no-worker` runs in its own process (HTTPS with the federation's certificate, as in
production) over a published release holding a 1 GiB sparse file and a 1 MiB one (signed with the release
key); each is downloaded with httpx streaming, and the server's RSS (psutil) is sampled throughout. Growth is
the highest sample minus the RSS just before that download. Target (issue 16): under 100 MB for 1 GiB.

    .venv/bin/python bench/download_memory.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench.report import machine_line, replace_section  # noqa: E402

MiB = 1024**2
BIG, SMALL = "big.safetensors", "small.safetensors"


def coordinator_env(root: Path, **settings) -> dict[str, str]:
    """A benchmark coordinator's environment: free loopback ports, no auto-build, no operator's config file, and
    ``settings`` as BARFED_COORD_* variables."""
    env = {
        **os.environ,
        "BARFED_COORD_LISTEN": "127.0.0.1:0",
        "BARFED_COORD_ENROLL_LISTEN": "127.0.0.1:0",
        "BARFED_COORD_API_LISTEN": "127.0.0.1:0",
        "BARFED_COORD_AUTO_BUILD": "false",
        "BARFED_COORDINATOR_CONFIG": str(root / "none.toml"),
    }
    env.update({f"BARFED_COORD_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def served_release(root: Path, size: int, database_url: str | None = None) -> Iterator[tuple[int, str, str, Path]]:
    """A `barfed coordinator serve` process over release r1 ({BIG}: ``size`` bytes, {SMALL}: 1 MiB); yields
    (server pid, API base URL, an auditor token, the CA certificate)."""
    from coordinator.runtime import Runtime
    from coordinator.settings import load_settings
    from coordinator.state import tokens
    from tests.integration.fake_release import publish_fake_release

    home = root / "coordinator"
    env = coordinator_env(root, **({"database_url": database_url} if database_url else {}))
    cli = [sys.executable, "-m", "barfed.cli", "coordinator"]
    subprocess.run([*cli, "init", "--home", str(home)], env=env, check=True, capture_output=True, timeout=120)
    runtime = Runtime.from_settings(load_settings(home=home, database_url=database_url))
    publish_fake_release(runtime, 1, {BIG: size, SMALL: MiB})
    token, _ = tokens.create(runtime.registry, "auditor", "bench")
    runtime.registry.dispose()
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*cli, "serve", "--no-worker", "--home", str(home)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 120
            while not (home / "api.port").is_file():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the coordinator did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            api = f"https://127.0.0.1:{(home / 'api.port').read_text().strip()}"
            yield process.pid, api, token, home / "pki" / "ca.pem"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def download(client: httpx.Client, pid: int, name: str) -> tuple[int, int, str, str]:
    """Stream r1's ``name``; returns (bytes received, the server's RSS growth, sha256 received, sha256 header)."""
    server = psutil.Process(pid)
    start = server.memory_info().rss
    peak = start
    done = threading.Event()

    def sample() -> None:  # a steady sampler, so a short download is watched as closely as a long one
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, server.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    digest, received = hashlib.sha256(), 0
    try:
        with client.stream("GET", f"/v1/releases/r1/files/{name}") as response:
            response.raise_for_status()
            header = response.headers["x-barfed-sha256"]
            for chunk in response.iter_bytes(MiB):
                digest.update(chunk)
                received += len(chunk)
    finally:
        done.set()
        sampler.join()
    peak = max(peak, server.memory_info().rss)
    return received, peak - start, digest.hexdigest(), header


def measure(root: Path, size: int, database_url: str | None = None) -> dict[str, dict]:
    """Both downloads against one server, the small one first (it also warms the server's allocator)."""
    with served_release(root, size, database_url) as (pid, api, token, ca):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=api, verify=str(ca), headers=headers, timeout=120) as client:
            download(client, pid, SMALL)  # warm-up: TLS, the release's verified file list, buffers
            results = {}
            for name in (SMALL, BIG):
                started = time.perf_counter()
                received, grown, got, header = download(client, pid, name)
                results[name] = {
                    "bytes": received,
                    "rss_growth": grown,
                    "sha256_ok": got == header,
                    "seconds": time.perf_counter() - started,
                    "server_rss": psutil.Process(pid).memory_info().rss,
                }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/PERFORMANCE.md as it is")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        results = measure(Path(tmp), args.size_mib * MiB)
    small, big = results[SMALL], results[BIG]
    grown = big["rss_growth"] / MiB
    rows = [
        f"| {label} | {r['bytes'] / MiB:.0f} | {r['seconds']:.1f} | {r['rss_growth'] / MiB:.1f} | "
        f"{r['server_rss'] / MiB:.0f} | {'yes' if r['sha256_ok'] else 'NO'} |"
        for label, r in (("baseline: 1 MiB file", small), (f"{args.size_mib} MiB file", big))
    ]
    report = "\n".join(
        [
            "Command: `.venv/bin/python bench/download_memory.py`  ",
            f"Machine: {machine_line()}.",
            "",
            "`barfed coordinator serve --no-worker` in its own process (HTTPS with the federation's certificate); one "
            "published release with a sparse file of each size, signed with the release key; each downloaded with "
            "httpx streaming; the server's RSS (psutil) sampled every 10 ms. Growth = highest sample - RSS before "
            "that download.",
            "",
            "| download | MiB | wall (s) | server RSS growth (MiB) | server RSS after (MiB) | sha256 = header |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Target (issue 16): growth < 100 MB for 1 GiB -> **{'met' if grown < 100 else 'NOT met'}** "
            f"({grown:.1f} MiB). Starlette's FileResponse reads 64 KiB at a time; the file list and digests come from "
            "the release's signature (verified once, cached), so nothing is hashed per request.",
        ]
    )
    print(report)
    if not args.no_write and args.size_mib == 1024:
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "download_memory", "Download memory (issue 16)", report)


if __name__ == "__main__":
    main()
