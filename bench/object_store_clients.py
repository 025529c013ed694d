"""Benchmark: which S3 client the coordinator's object store uses, boto3 or obstore, by a 1 GiB upload and download.

A real SeaweedFS server on loopback (tests/seaweed.py) takes a 1 GiB file from each client and gives it back; each
transfer runs in a process of its own (wall, CPU seconds, peak RSS), the clients alternating round by round so that
a slower phase of the machine hits both. Both are configured as the coordinator would be: multipart in 8 MiB parts
(boto3's TransferConfig; obstore's put chunk size), at most 4 parts in flight, the download streamed to a file in
8 MiB parts. Issue 28 asks for bounded memory, throughput and checksums: boto3 sends a CRC checksum per part
(botocore's default), obstore none; both downloads include the sha256 of what arrived (obstore's as it streams,
boto3's after its threads wrote the file), which the coordinator checks against the signed digest.

    .venv/bin/python bench/object_store_clients.py [--size-mib 1024] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MiB = 1024**2
PART = 8 * MiB
CONCURRENCY = 4
CLIENTS = ("boto3", "obstore")


def _boto3(server: dict, op: str, path: Path, key: str) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server["endpoint"],
        aws_access_key_id=server["access_key"],
        aws_secret_access_key=server["secret_key"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )
    transfer = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY)
    if op == "upload":
        client.upload_file(str(path), server["bucket"], key, Config=transfer)
    else:
        client.download_file(server["bucket"], key, str(path), Config=transfer)
        sha256_of(path)  # what the store checks a download against, as obstore's streamed download does


def _obstore(server: dict, op: str, path: Path, key: str) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        server["bucket"],
        endpoint=server["endpoint"],
        access_key_id=server["access_key"],
        secret_access_key=server["secret_key"],
        region="us-east-1",
        client_options={"allow_http": True},
    )
    if op == "upload":
        obstore.put(store, key, path, chunk_size=PART, max_concurrency=CONCURRENCY)
    else:
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            for chunk in obstore.get(store, key).stream(min_chunk_size=PART):
                digest.update(chunk)
                out.write(chunk)


def child(args: argparse.Namespace) -> None:
    server = json.loads(args.server)
    start_wall, start = time.perf_counter(), os.times()
    {"boto3": _boto3, "obstore": _obstore}[args.client](server, args.op, Path(args.path), args.key)
    end = os.times()
    print(
        json.dumps(
            {
                "wall_s": time.perf_counter() - start_wall,
                "cpu_s": (end.user - start.user) + (end.system - start.system),
                "rss_mib": peak_rss_mib(),
            }
        )
    )


def peak_rss_mib() -> float:
    """VmHWM: this process's own peak (ru_maxrss would carry the parent's across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_child(server: dict, client: str, op: str, path: Path, key: str) -> dict:
    command = [sys.executable, __file__, "--child", client, op, str(path), key, "--server", json.dumps(server)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="record the table in docs/PERFORMANCE.md")
    parser.add_argument("--child", nargs=4, metavar=("CLIENT", "OP", "PATH", "KEY"))
    parser.add_argument("--server")
    args = parser.parse_args()
    if args.child:
        args.client, args.op, args.path, args.key = args.child
        return child(args)

    from bench.report import machine_line, replace_section
    from tests import seaweed

    with tempfile.TemporaryDirectory(prefix="barfed-s3-bench-") as tmp:
        tmp = Path(tmp)
        server = seaweed.start(tmp / "seaweed")
        try:
            source = tmp / "source.bin"
            with open(source, "wb") as out:
                for _ in range(args.size_mib):
                    out.write(os.urandom(MiB))
            expected = sha256_of(source)
            info = {k: getattr(server, k) for k in ("endpoint", "bucket", "access_key", "secret_key")}
            results: dict[tuple[str, str], list[dict]] = {}
            for round_ in range(args.rounds):
                for client in CLIENTS if round_ % 2 == 0 else reversed(CLIENTS):
                    key = f"{client}/{round_}.bin"
                    up = run_child(info, client, "upload", source, key)
                    target = tmp / f"{client}.bin"
                    down = run_child(info, client, "download", target, key)
                    if sha256_of(target) != expected:
                        raise SystemExit(f"{client} round {round_}: the downloaded bytes differ from the upload")
                    target.unlink()
                    server.client().delete_object(Bucket=server.bucket, Key=key)
                    results.setdefault((client, "upload"), []).append(up)
                    results.setdefault((client, "download"), []).append(down)
                    print(f"round {round_} {client}: up {up['wall_s']:.2f} s, down {down['wall_s']:.2f} s", flush=True)
        finally:
            server.stop()
    size = args.size_mib
    lines = [
        "| client | op | MiB/s | wall s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for (client, op), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        lines.append(f"| {client} | {op} | {size / wall:.0f} | {wall:.2f} | {cpu:.2f} | {rss:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        body = (
            f"{machine_line()}; SeaweedFS {server_version()} on loopback; {size} MiB of random bytes; median of "
            f"{args.rounds} rounds, the clients alternating; 8 MiB parts, 4 in flight.\n\n"
            f"    .venv/bin/python bench/object_store_clients.py --size-mib {size} --rounds {args.rounds} --write\n\n"
            f"{table}\n"
        )
        replace_section(ROOT / "docs" / "PERFORMANCE.md", "object_store_clients", "The S3 client (issue 28)", body)


def server_version() -> str:
    from tests import seaweed

    out = subprocess.run([seaweed.weed_binary(), "version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


if __name__ == "__main__":
    main()
