"""Which broker gives a task back after its worker is killed with SIGKILL (acks_late, reject_on_worker_lost)?

For each broker: a `celery worker` subprocess takes a task that sleeps, is killed with SIGKILL while it runs,
a second worker starts, and we watch for --wait seconds whether the task starts again (redelivered) and how
long that took. Plain Celery, no job rows: this is what the broker alone does, and why the coordinator does
not rely on it (coordinator/tasks/broker.py). Run: `.venv/bin/python bench/broker_redelivery.py`.

Measured on the CI machine (celery 5.7, kombu 5.7), --wait 20: no broker redelivered the task, neither
embedded transport (they keep unacknowledged messages in the dead worker's memory) nor Redis within 20 s
of a 5 s visibility timeout (kombu's Redis transport scans for expired unacknowledged messages about every
unacked_restore_interval × unacked_restore_throttle = 100 s by default, after the visibility timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery

REPO = Path(__file__).resolve().parents[1]


def make_app(url: str, transport: str | None, options: dict, queue: str) -> Celery:
    app = Celery("redelivery", broker=url, set_as_current=False)
    app.conf.update(
        broker_transport=transport,
        broker_transport_options=options,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=queue,
        worker_hijack_root_logger=False,
        worker_enable_remote_control=False,
    )

    @app.task(name="sleep", shared=False)
    def sleep(log: str, seconds: float) -> None:
        with open(log, "a") as fh:
            fh.write(f"start {os.getpid()} {time.time()}\n")
        time.sleep(seconds)
        with open(log, "a") as fh:
            fh.write(f"end {os.getpid()} {time.time()}\n")

    return app


if "REDELIVERY_CONFIG" in os.environ:  # the worker subprocess: `celery -A bench.broker_redelivery worker`
    _config = json.loads(os.environ["REDELIVERY_CONFIG"])
    app = make_app(_config["url"], _config["transport"], _config["options"], _config["queue"])


def _worker(config: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "bench.broker_redelivery", "worker", "--pool", "threads"]
    command += ["--concurrency", "1", "--loglevel", "WARNING", "--without-mingle", "--without-gossip"]
    env = {**os.environ, "REDELIVERY_CONFIG": json.dumps(config), "PYTHONPATH": str(REPO)}
    output = open(log, "ab")  # noqa: SIM115 (the child keeps it)
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)


def _starts(path: Path) -> list[float]:
    if not path.is_file():
        return []
    return [float(line.split()[2]) for line in path.read_text().splitlines() if line.startswith("start")]


def measure(name: str, config: dict, directory: Path, wait_s: float) -> dict:
    runs = directory / f"{name}.runs"
    app = make_app(config["url"], config["transport"], config["options"], config["queue"])
    first = _worker(config, directory / f"{name}.log")
    app.send_task("sleep", args=(str(runs), 8.0), queue=config["queue"])
    deadline = time.monotonic() + 60
    while not _starts(runs):
        assert time.monotonic() < deadline, f"{name}: the first worker never started the task"
        time.sleep(0.05)
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    killed_at = time.time()
    first.wait()
    second = _worker(config, directory / f"{name}.log")
    deadline = time.monotonic() + wait_s
    while len(_starts(runs)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    second.terminate()
    second.wait(timeout=30)
    app.close()
    starts = _starts(runs)
    again = len(starts) >= 2
    return {"broker": name, "redelivered": again, "after_s": round(starts[1] - killed_at, 1) if again else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to watch for a redelivery")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "fs").mkdir()
        (directory / "control").mkdir()
        queue = f"redelivery-{uuid.uuid4().hex[:8]}"
        brokers = {
            "sqlalchemy (embedded default)": {
                "url": f"sqlite:///{directory / 'broker.db'}",
                "transport": "coordinator.tasks.broker:Transport",
                "options": {},
            },
            "filesystem": {
                "url": "filesystem://",
                "transport": None,
                "options": {
                    "data_folder_in": str(directory / "fs"),
                    "data_folder_out": str(directory / "fs"),
                    "control_folder": str(directory / "control"),
                    "polling_interval": 0.1,
                },
            },
            "redis, visibility_timeout 5 s": {
                "url": args.redis,
                "transport": None,
                "options": {"visibility_timeout": 5},
            },
        }
        for name, config in brokers.items():
            result = measure(name.split()[0].strip(","), {**config, "queue": queue}, directory, args.wait)
            after = f"after {result['after_s']} s" if result["redelivered"] else f"not within {args.wait:.0f} s"
            print(f"{name:32s} redelivered after SIGKILL: {'yes' if result['redelivered'] else 'no'} ({after})")


if __name__ == "__main__":
    main()
