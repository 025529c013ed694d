"""Benchmark: download throughput of the REST file route against static file servers, and `barfed pull` against curl.

One published release holding a sparse 1 GiB file (bench/download_memory.py's `served_release`: `barfed
coordinator serve --no-worker` in its own process, HTTPS with the federation's certificate). Pair by pair, in
alternating order within one run, curl (`-o /dev/null`) downloads the big file from

- the coordinator's REST file route (HTTPS),
- a TLS static reference: Python's `http.server` wrapped in `ssl` with the same server certificate and key,
- plain-HTTP `python -m http.server` over the same directory;

and `barfed pull` fetches the whole release beside curl fetching the same files to disk (each into a fresh
directory on the same disk). Wall time, and user+sys CPU of the client process (resource.getrusage of the
children), are compared. Targets (issue 29): REST ≥ 0.7× the TLS static server's throughput; pull ≤ 1.1× curl's
wall at ≤ 1.5× its CPU.

    .venv/bin/python bench/download_throughput.py [--size-mib 1024] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.download_memory import BIG, served_release  # noqa: E402
from bench.report import machine_line, replace_section  # noqa: E402

MiB = 1024**2
# http.server over TLS: the same certificate as the coordinator, so the handshake and cipher are the same
TLS_STATIC = """
import functools, http.server, socketserver, ssl, sys
port, directory, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
handler.log_message = lambda *a: None
class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
with Server(("127.0.0.1", port), handler) as server:
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def static_server(args: list[str], port: int) -> Iterator[None]:
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[:3]} did not start")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def timed(argv: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """(wall s, user+sys CPU s) of one client process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(argv, check=True, env=env, cwd=cwd, timeout=600, **quiet)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def curl(url: str, out: str, ca: Path | None = None, token: str | None = None) -> list[str]:
    argv = ["curl", "-sS", "--fail", "-o", out, url]
    if ca is not None:
        argv += ["--cacert", str(ca)]
    if token is not None:
        argv += ["-H", f"Authorization: Bearer {token}"]
    return argv


@contextlib.contextmanager
def in_directory(directory: Path | None) -> Iterator[None]:
    """Run `served_release`'s coordinator from ``directory``'s code (``python -m`` imports from the working dir)."""
    here = Path.cwd()
    os.chdir(directory or ROOT)
    try:
        yield
    finally:
        os.chdir(here)


def measure(root: Path, size: int, rounds: int, before: Path | None) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        for sub in ("now", "before"):
            (root / sub).mkdir()
        with in_directory(None):
            _pid, api, token, ca = stack.enter_context(served_release(root / "now", size))
        release_dir = next(p.parent for p in ca.parent.parent.rglob(BIG))
        files = sorted(p.name for p in release_dir.iterdir() if p.is_file())
        tls_port, plain_port = free_port(), free_port()
        tls_args = [sys.executable, "-c", TLS_STATIC, str(tls_port), str(release_dir)]
        tls_args += [str(ca.parent / "server.pem"), str(ca.parent / "server.key")]
        plain_args = [sys.executable, "-m", "http.server", str(plain_port), "--bind", "127.0.0.1"]
        plain_args += ["--directory", str(release_dir)]
        stack.enter_context(static_server(tls_args, tls_port))
        stack.enter_context(static_server(plain_args, plain_port))
        env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config")}
        contenders = {
            "rest": curl(f"{api}/v1/releases/r1/files/{BIG}", "/dev/null", ca, token),
            "tls_static": curl(f"https://127.0.0.1:{tls_port}/{BIG}", "/dev/null", ca),
            "plain_static": curl(f"http://127.0.0.1:{plain_port}/{BIG}", "/dev/null"),
        }
        pulls = {"pull": (pull_argv(api, ca, token), ROOT), "curl_files": (curl_files(api, ca, token, files), ROOT)}
        # what a user who checks digests does: curl, then sha256sum of the same files
        checked = " ".join(shlex.quote(a) for a in pulls["curl_files"][0])
        pulls["curl_sha256"] = (["sh", "-c", f"{checked} && cd {{out}} && sha256sum {' '.join(files)}"], ROOT)
        # the least a verifying client can cost here: curl's bytes hashed as they arrive, in C, without fsync
        streamed = " && ".join(
            f"{shlex.join(curl(f'{api}/v1/releases/r1/files/{f}', '-', ca, token))} | tee {{out}}/{f} | sha256sum"
            for f in files
        )
        pulls["curl_tee_sha256"] = (["bash", "-c", f"set -o pipefail; mkdir -p {{out}} && {streamed}"], ROOT)
        if before is not None:  # the same pairs against the code in ``before`` (git archive of the base commit)
            with in_directory(before):
                _pid, old_api, old_token, old_ca = stack.enter_context(served_release(root / "before", size))
            contenders["rest_before"] = curl(f"{old_api}/v1/releases/r1/files/{BIG}", "/dev/null", old_ca, old_token)
            pulls["pull_before"] = (pull_argv(old_api, old_ca, old_token), before)
            pulls["curl_files_before"] = (curl_files(old_api, old_ca, old_token, files), ROOT)
        for argv in contenders.values():  # warm-up: page cache, TLS, the release's verified file list
            timed(argv)
        for key, (argv, cwd) in pulls.items():
            timed(with_target(argv, root / f"warm-{key}"), env, cwd)
        for n in range(rounds):
            for key in contenders if n % 2 == 0 else reversed(contenders):
                results.setdefault(key, []).append(timed(contenders[key]))
            for key in pulls if n % 2 == 0 else reversed(pulls):  # pull beside curl writing the same files to disk
                out = root / f"{key}-{n}"
                argv, cwd = pulls[key]
                results.setdefault(key, []).append(timed(with_target(argv, out), env, cwd))
                shutil.rmtree(out, ignore_errors=True)
    return results


def pull_argv(api: str, ca: Path, token: str) -> list[str]:
    return [sys.executable, "-m", "barfed.cli", "pull", "r1", "--api", api, "--ca", str(ca), "--token", token]


def curl_files(api: str, ca: Path, token: str, files: list[str]) -> list[str]:
    """curl fetching every file of r1 into the directory `with_target` names ({out} in the argv)."""
    argv = ["curl", "-sS", "--fail", "--create-dirs", "--cacert", str(ca), "-H", f"Authorization: Bearer {token}"]
    return [*argv, *(a for f in files for a in ("-o", "{out}/" + f, f"{api}/v1/releases/r1/files/{f}"))]


def with_target(argv: list[str], out: Path) -> list[str]:
    if argv[0] in ("curl", "sh", "bash"):
        return [a.replace("{out}", str(out)) for a in argv]
    return [*argv, "--to", str(out)]


def report(results: dict[str, list[tuple[float, float]]], size: int, rounds: int) -> str:
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
    mbs = {k: size / MiB / w for k, (w, _) in med.items()}

    def rest(key: str) -> str:
        return f"{mbs[key] / mbs['tls_static']:.2f}× TLS static, {mbs[key] / mbs['plain_static']:.2f}× plain"

    def pull(key: str, curl: str) -> str:
        return f"wall {med[key][0] / med[curl][0]:.2f}×, CPU {med[key][1] / med[curl][1]:.2f}× curl"

    rows = [
        ("baseline: curl ← http.server + ssl (TLS static)", "tls_static", "1.00"),
        ("baseline: curl ← python -m http.server (plain HTTP)", "plain_static", ""),
        ("curl ← REST file route (HTTPS)", "rest", rest("rest")),
        ("baseline: curl, whole release to disk", "curl_files", "1.00"),
        ("barfed pull, whole release to disk", "pull", pull("pull", "curl_files")),
        ("curl, then sha256sum of every file", "curl_sha256", "pull: " + pull("pull", "curl_sha256")),
        ("curl \\| tee \\| sha256sum, every file", "curl_tee_sha256", pull("curl_tee_sha256", "curl_files")),
    ]
    if "rest_before" in med:
        rows[3:3] = [("before: curl ← REST file route", "rest_before", rest("rest_before"))]
        rows += [
            ("before: curl, whole release to disk", "curl_files_before", "1.00"),
            ("before: barfed pull, whole release to disk", "pull_before", pull("pull_before", "curl_files_before")),
        ]
    lines = [
        "| client ← server | wall (s) | MiB/s | client CPU user+sys (s) | ratio |",
        "|---|---|---|---|---|",
        *(f"| {label} | {med[k][0]:.2f} | {mbs[k]:.0f} | {med[k][1]:.2f} | {ratio} |" for label, k, ratio in rows),
    ]
    rest_ratio = mbs["rest"] / mbs["tls_static"]
    wall_ratio, cpu_ratio = med["pull"][0] / med["curl_files"][0], med["pull"][1] / med["curl_files"][1]
    rest_ok, pull_ok = rest_ratio >= 0.7, wall_ratio <= 1.1 and cpu_ratio <= 1.5
    return "\n".join(
        [
            "Command: `.venv/bin/python bench/download_throughput.py --before DIR --write` (DIR: `git archive` of "
            "the commit before)  ",
            f"Machine: {machine_line()}.",
            "",
            f"A {size // MiB} MiB sparse file in one published release; medians of {rounds} alternating rounds after "
            "a warm-up, every server and client on the same cores, loopback. TLS static reference: Python's "
            "`http.server` (threading) wrapped in `ssl` with the coordinator's own certificate and key; curl writes "
            "to /dev/null except in the whole-release pairs, where curl and `barfed pull` both write to the same "
            "disk (pull also fsyncs, checks sha256 and the signature, and starts a Python interpreter).",
            "",
            *lines,
            "",
            f"Targets (issue 29): REST ≥ 0.7× the TLS static server → **{'met' if rest_ok else 'NOT met'}** "
            f"({rest_ratio:.2f}×); `barfed pull` ≤ 1.1× curl's wall at ≤ 1.5× its CPU → "
            f"**{'met' if pull_ok else 'NOT met'}** ({wall_ratio:.3f}×, {cpu_ratio:.3f}×).",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="also measure this checkout's code (e.g. a git archive of main)")
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        results = measure(Path(tmp), args.size_mib * MiB, args.rounds, args.before)
    text = report(results, args.size_mib * MiB, args.rounds)
    print(text)
    if args.write:
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "download_throughput", "Download throughput (issue 29)", text)


if __name__ == "__main__":
    main()
