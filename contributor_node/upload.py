"""Sending a package so that no crash on either side loses or repeats work, then following it to a verdict.

Before any byte: the checks the coordinator would refuse the package for (another organization's, another
anchor's). The upload session is recorded in uploads/<domain>-v<N>.json as soon as the coordinator opens it, so a
rerun after any crash continues that session; once committed, the submission id goes to submissions.json and the
session record goes away, so a rerun commits nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from contributor_node.anchor import anchor_changed, check_current, our_anchor
from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings
from contributor_node.throttle import Throttle
from protocol.errors import BarFedError
from protocol.package import read_package
from protocol.v1 import barfed_pb2 as pb


def submitted(home: NodeHome, name: str) -> str | None:
    """The submission id package ``name`` was committed as, if this node submitted it."""
    record = read_json(home.record("submissions"), {}).get(name)
    return record["submission_id"] if record else None


def check_package(settings: NodeSettings, client, retry: Retrying, package_dir: Path) -> None:
    """Refuse a package signed for another organization, or built on another anchor than the one this node holds
    and the coordinator publishes."""
    manifest = read_package(package_dir, check_digests=False)
    if manifest.org != settings.org_id:
        raise BarFedError("PACKAGE_NOT_OURS", f"{package_dir} is signed for {manifest.org}, not this node's org.")
    ours = our_anchor(NodeHome(settings.home))
    if manifest.anchor_fingerprint != ours:
        raise anchor_changed(manifest.anchor_fingerprint, ours)
    check_current(ours, client, retry)


def package_bytes(package_dir: Path) -> int:
    return sum(p.stat().st_size for p in package_dir.iterdir() if p.is_file())


def upload(
    settings: NodeSettings,
    client,
    retry: Retrying,
    domain: str,
    version: int,
    on_sent: Callable[[int], None] | None = None,
) -> str:
    """Upload package ``domain`` v``version`` (in the recorded session if there is one, at most
    ``max_bytes_per_s``) and commit it: its submission id, recorded. ``on_sent(bytes)`` follows the upload."""
    home = NodeHome(settings.home)
    package_dir, session_record = home.package(domain, version), home.upload(domain, version)
    throttle = Throttle(settings.max_bytes_per_s)
    sent: dict[str, int] = {}

    def on_chunk(path: str, offset: int, nbytes: int) -> None:
        throttle.wait(nbytes)
        sent[path] = offset + nbytes
        if on_sent is not None:
            on_sent(sum(sent.values()))

    def send() -> str:
        saved = read_json(session_record)
        return client.submit(
            package_dir,
            chunk_bytes=settings.chunk_bytes,
            on_chunk=on_chunk,
            session=(saved["session_id"], saved["max_chunk_bytes"]) if saved else None,
            on_session=lambda sid, most: write_json(session_record, {"session_id": sid, "max_chunk_bytes": most}),
        )

    submission_id = retry(send)
    submissions = read_json(home.record("submissions"), {})
    submissions[f"{domain}-v{version}"] = {"submission_id": submission_id, "domain": domain, "version": version}
    write_json(home.record("submissions"), submissions)
    session_record.unlink(missing_ok=True)
    return submission_id


def verdict(client, retry: Retrying, name: str, submission_id: str, timeout: float) -> str:
    """The state the coordinator's verification ends in (ACCEPTED, …); a rejection is refused with its own code,
    and a verification still running after ``timeout`` seconds with STILL_VERIFYING."""
    status = retry(lambda: client.wait(submission_id, timeout=timeout))
    state = pb.SubmissionState.Name(status.state)
    if status.state == pb.REJECTED:
        raise BarFedError(
            status.error_code or "SUBMISSION_REJECTED",
            f"{name} was rejected: {status.message or 'no reason given'} Fix it, then package a new version "
            "(`barfed node package --version N`) and submit that.",
        )
    if status.state in (pb.RECEIVED, pb.VERIFYING):
        raise BarFedError(
            "STILL_VERIFYING",
            f"{name} is still {state} after {timeout:.0f}s; rerun `barfed node submit --wait` or check `barfed node "
            "status` later.",
        )
    return state
