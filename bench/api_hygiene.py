"""The REST API against hostile and plain clients, on a coordinator served in a child process (HTTPS, SQLite):
sequential keep-alive requests per second over one connection; the coordinator's RSS while ``--stalled`` anonymous
connections that never send a byte are held open, and after they are gone; and how long an anonymous 100 MiB JSON
POST takes to be refused, with the RSS it costs. Prints one JSON object.

    python bench/api_hygiene.py [--stalled 3000] [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit


def _serve(home: str, ready, stop) -> None:
    from coordinator.embedded import running_coordinator
    from coordinator.settings import load_settings
    from coordinator.setup import initialize

    root = Path(home)
    settings = load_settings(
        home=root / "coordinator",
        database_url=f"sqlite:///{root / 'registry.db'}",
        listen="127.0.0.1:0",
        enroll_listen="127.0.0.1:0",
        api_listen="127.0.0.1:0",
        min_free_bytes=0,
        auto_build=False,
    )
    initialize(settings)
    with running_coordinator(settings) as address:
        ready.send((address.api, str(settings.pki_dir / "ca.pem")))
        stop.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def read_response(sock: socket.socket) -> int:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1])


def _send_body(sock: socket.socket, blocks: int) -> None:
    """A JSON array of zeros: ``[``, ``blocks`` MiB of ``0,``, then ``0]``."""
    try:
        sock.sendall(b"[")
        for _ in range(blocks):
            sock.sendall(b"0," * (1024**2 // 2))
        sock.sendall(b"0]")
    except OSError:
        pass  # refused before the body was read: the server closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    ready_recv, ready_send = spawn.Pipe(duplex=False)
    stop = spawn.Event()
    with tempfile.TemporaryDirectory() as home:
        child = spawn.Process(target=_serve, args=(home, ready_send, stop), daemon=True)
        child.start()
        api, ca = ready_recv.recv()
        host, port = urlsplit(api).hostname, urlsplit(api).port
        context = ssl.create_default_context(cafile=ca)

        def connect() -> ssl.SSLSocket:
            return context.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname="localhost")

        figures: dict[str, object] = {}
        with connect() as sock:
            request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
            sock.sendall(request)
            read_response(sock)
            started = time.perf_counter()
            for _ in range(args.requests):
                sock.sendall(request)
                read_response(sock)
            figures["sequential_keep_alive_req_per_s"] = round(args.requests / (time.perf_counter() - started), 1)

        time.sleep(1)
        figures["rss_idle_mb"] = round(rss_mb(child.pid), 1)
        stalled = []
        for _ in range(args.stalled):
            try:
                stalled.append(socket.create_connection((host, port), timeout=5))
            except OSError:
                break
        time.sleep(3)
        figures["stalled_connections_opened"] = len(stalled)
        figures["rss_with_stalled_mb"] = round(rss_mb(child.pid), 1)
        for sock in stalled:
            sock.close()
        time.sleep(3)
        figures["rss_after_stalled_closed_mb"] = round(rss_mb(child.pid), 1)

        with connect() as sock:  # the body is sent on a thread, as a client would; the answer is read here
            blocks = 100
            head = b"POST /v1/orgs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            sock.sendall(head + b"Content-Length: %d\r\n\r\n" % (blocks * 1024**2 + 3))
            started = time.perf_counter()
            sender = threading.Thread(target=_send_body, args=(sock, blocks), daemon=True)
            sender.start()
            try:
                figures["anonymous_100MiB_post_status"] = read_response(sock)
            except OSError as exc:
                figures["anonymous_100MiB_post_status"] = f"connection ended: {exc.__class__.__name__}"
            figures["anonymous_100MiB_post_s"] = round(time.perf_counter() - started, 2)
            figures["rss_peak_during_post_mb"] = round(rss_mb(child.pid), 1)
            sender.join(30)
        figures["rss_after_100MiB_post_mb"] = round(rss_mb(child.pid), 1)
        stop.set()
        child.join(30)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
