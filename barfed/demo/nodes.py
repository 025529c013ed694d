"""The organizations' machines: every `barfed node` command runs as its own process, as on a real node, with its
output in the node's ``logs/<command>.log``; the board shows what each organization is running."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from barfed.demo.commands import barfed, failure
from barfed.demo.profiles import ORGS, Profile
from barfed.demo.progress import Board


@dataclass
class Running:
    """A node command in flight, and the log its output goes to."""

    org: str
    process: subprocess.Popen
    log_path: Path
    log: BinaryIO

    def poll(self) -> int | None:
        return self.process.poll()


class Nodes:
    def __init__(self, homes: dict[str, Path], profile: Profile, board: Board) -> None:
        self.homes = homes  # org -> its node home
        self.profile = profile
        self.board = board

    def run(self, org: str, *args: str, threads: int | None = None) -> None:
        """Run `barfed node --home <org's home> ARGS` and wait for it; a failure raises what it printed."""
        self.finish(self.start(org, *args, threads=threads))

    def start(self, org: str, *args: str, threads: int | None = None) -> Running:
        """Start `barfed node --home <org's home> ARGS` as its own process, its output in the node's log."""
        home = self.homes[org]
        (home / "logs").mkdir(parents=True, exist_ok=True)
        log_path = home / "logs" / f"{args[0]}.log"
        env = {**os.environ, "BARFED_NODE_RECIPE": self.profile.expert_recipes[ORGS[org]]}
        env["BARFED_NODE_ROUTER_RECIPE"] = self.profile.router_recipe
        if threads:
            env["BARFED_NUM_THREADS"] = str(threads)
        log = open(log_path, "ab")  # noqa: SIM115 (closed by finish)
        self.board.began(org, args[0])
        process = subprocess.Popen(
            barfed("node", "--home", str(home), *args), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        return Running(org, process, log_path, log)

    def finish(self, running: Running) -> None:
        code = running.process.wait()
        running.log.close()
        if code:
            text = running.log_path.read_text(errors="replace")
            raise failure(running.org, text, code, "NODE_COMMAND_FAILED", running.log_path)

    def steps(self, org: str, *commands: str, threads: int | None = None) -> None:
        """Several `barfed node` commands in a row for one organization (its own machine, in a real federation)."""
        for command in commands:
            self.run(org, command, threads=threads)

    def each(self, work: Callable[[str], None], parallel: int = len(ORGS)) -> None:
        """``work(org)`` for every organization, ``parallel`` at a time, as separate machines would."""

        def one(org: str) -> None:
            work(org)
            self.board.finished(org)

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            for future in [pool.submit(one, org) for org in ORGS]:
                future.result()

    def all(self, *args: str) -> None:
        """The same `barfed node` command for every organization."""
        self.each(lambda org: self.run(org, *args))
