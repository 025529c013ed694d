"""The operator's side: an admin token made with `barfed coordinator tokens create` on the coordinator's host, then
everything else through the REST API, as an operator of a real federation would."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from barfed.demo.commands import barfed, failure
from protocol.errors import BarFedError


def admin_token(coordinator_home: Path, path: Path) -> str:
    """The demo operator's admin token, made once and kept 0600 beside the demo's files."""
    if path.is_file():
        return path.read_text().strip()
    command = barfed("coordinator", "tokens", "create", "--role", "admin", "--label", "barfed demo")
    result = subprocess.run([*command, "--home", str(coordinator_home)], capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode or not lines:
        output = result.stdout + result.stderr
        raise failure("barfed coordinator tokens create", output, result.returncode, "TOKEN_FAILED")
    token = lines[-1].strip()  # the token is printed once, on the last line; what it is goes to stderr
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


class Operator:
    """The operator's side, through the REST API only."""

    def __init__(self, api: str, ca: Path, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        self.client = httpx.Client(base_url=api, verify=str(ca), headers=headers, timeout=60)

    def close(self) -> None:
        self.client.close()

    def _check(self, response):
        if response.status_code >= 400:
            try:
                body = response.json()
                raise BarFedError(body.get("code", "API_ERROR"), body.get("message", response.text))
            except ValueError:
                raise BarFedError("API_ERROR", f"{response.status_code}: {response.text[:300]}") from None
        return response.json()

    def get(self, path: str, **params):
        return self._check(self.client.get(path, params=params))

    def post(self, path: str, body: dict | None = None):
        return self._check(self.client.post(path, json=body or {}))

    def invite(self, org: str, domain: str) -> str:
        """Register ``org`` for ``domain``; the answer is the invitation token its node enrolls with."""
        return self.post("/v1/orgs", {"org": org, "domains": [domain]})["token"]

    def approve_pending(self, org: str) -> bool:
        """Approve ``org``'s pending enrollment request, if it has made one yet."""
        pending = [e for e in self.get("/v1/enrollments") if e["org"] == org and e["state"] == "pending"]
        if pending:
            self.post(f"/v1/enrollments/{pending[0]['id']}/approve")
        return bool(pending)

    def wait_release(
        self, number: int, timeout: float = 3600.0, on_step: Callable[[str], None] = lambda step: None
    ) -> dict:
        """Poll until release ``number`` is published; a build that ends gated or failed stops the wait.
        ``on_step(step)`` hears each step the running build job enters (merge, route, evaluate, …), once."""
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            releases = {r["number"]: r for r in self.get("/v1/releases")}
            if number in releases:
                return releases[number]
            builds = self.get("/v1/jobs", kind="build")
            for job in builds:
                if job["state"] in ("failed", "gated") and not any(r >= number for r in releases):
                    raise BarFedError(job["error_code"] or "BUILD_FAILED", job["error_message"] or "the build failed.")
            running = next((job["step"] for job in builds if job["state"] == "running" and job["step"]), "")
            if running and running != seen:
                seen = running
                on_step(running)
            time.sleep(1.0)
        raise BarFedError("BUILD_TIMEOUT", f"r{number} was not published within {timeout:.0f} s.")
