"""The least CPU a Python gRPC server spends taking in an upload here: the floor under the coordinator's figure.

A bare ``grpc.aio`` server with TLS on loopback receives 1 MiB ``Chunk`` messages (read in place by
`protocol.chunk_wire.parse_chunk`, as the coordinator does), and on a worker thread writes each to a new file,
hashes it with sha256 and fsyncs every 16 MiB: the coordinator's work on an upload without its sessions,
authentication, bounds, durable progress or database. Like the coordinator's store it keeps every file it
received (until it stops), so each upload lands on new page-cache pages as a submission does. Its CPU per
call, against the coordinator's CPU per submission of the same size, says how much of the coordinator's cost is
ours and how much the stack's and the machine's. `bench/submit_throughput.py` runs it beside the submissions;
on its own:

    .venv/bin/python bench/grpc_floor.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from protocol.chunk_wire import encode_chunk, parse_chunk, write_chunks  # noqa: E402
from protocol.pki import (  # noqa: E402
    certificate_pem,
    create_ca,
    generate_private_key,
    issue_server_certificate,
    private_key_pem,
)
from protocol.v1 import barfed_pb2 as pb  # noqa: E402

MiB = 1 << 20
SYNC_EVERY = 16 * MiB  # the coordinator's default (upload_sync_every_bytes)


def server_pki(directory: Path) -> tuple[Path, Path, Path]:
    """(key, certificate, CA certificate) PEM files: a server certificate like the coordinator's, for 127.0.0.1."""
    ca_key, ca = create_ca("grpc floor CA")
    key = generate_private_key()
    paths = directory / "floor.key", directory / "floor.pem", directory / "ca.pem"
    pems = private_key_pem(key), certificate_pem(issue_server_certificate(ca_key, ca, key)), certificate_pem(ca)
    for path, pem in zip(paths, pems, strict=True):
        path.write_bytes(pem)
    return paths


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(port: int, key: Path, cert: Path, directory: Path) -> None:
    """Take in ``WriteChunks`` calls until killed; print ``cpu SECONDS`` for each (all threads, user + system)."""

    async def write_chunks_call(chunks, _context):
        started = cpu_seconds()
        # a new file each time, kept (as the coordinator keeps every upload in its store): new page-cache pages
        target = directory / f"upload-{len(list(directory.glob('upload-*')))}.bin"
        with open(target, "wb") as fh:
            digest, unsynced = hashlib.sha256(), 0

            def write(data: memoryview) -> None:
                nonlocal unsynced
                fh.write(data)
                digest.update(data)
                unsynced += len(data)
                if unsynced >= SYNC_EVERY:
                    fh.flush()
                    os.fsync(fh.fileno())
                    unsynced = 0

            async for chunk in chunks:
                await asyncio.to_thread(write, chunk.data)
            fh.flush()
            os.fsync(fh.fileno())
        print(f"cpu {cpu_seconds() - started:.3f}", flush=True)
        return pb.UploadProgress()

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 * MiB)])
    method = grpc.stream_unary_rpc_method_handler(
        write_chunks_call, request_deserializer=parse_chunk, response_serializer=pb.UploadProgress.SerializeToString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("barfed.v1.Federation", {"WriteChunks": method}),)
    )
    server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    await server.start()
    await server.wait_for_termination()


@contextlib.contextmanager
def floor_server() -> Iterator[Callable[[int], float]]:
    """A running floor server, as a function: upload ``size`` bytes to it and get its CPU seconds for them."""
    with tempfile.TemporaryDirectory(prefix="bench-grpc-floor-") as tmp:
        directory = Path(tmp)
        key, cert, ca = server_pki(directory)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = [sys.executable, __file__, "--serve", str(port), str(key), str(cert), str(directory)]
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            options = [("grpc.max_send_message_length", 8 * MiB)]
            credentials = grpc.ssl_channel_credentials(ca.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
                call, data = write_chunks(channel), os.urandom(MiB)

                def upload(size: int) -> float:
                    call(encode_chunk("floor", "upload.bin", i * MiB, data) for i in range(size // MiB))
                    return float(server.stdout.readline().split()[1])

                yield upload
        finally:
            server.kill()
            server.wait()


def measure(size: int, rounds: int) -> list[float]:
    """The floor server's CPU seconds for each of ``rounds`` uploads of ``size`` bytes, after one warm-up."""
    with floor_server() as upload:
        upload(size)
        figures = []
        for _ in range(rounds):
            time.sleep(1)
            figures.append(upload(size))
        return figures


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        port, key, cert, directory = sys.argv[2:6]
        asyncio.run(serve(int(port), Path(key), Path(cert), Path(directory)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures = measure(args.size_mib * MiB, args.rounds)
    runs = ", ".join(f"{f:.2f}" for f in figures)
    print(f"bare grpc.aio TLS server, {args.size_mib} MiB: median {statistics.median(figures):.2f} CPU-s ({runs})")


if __name__ == "__main__":
    main()
