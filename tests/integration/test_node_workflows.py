"""The node's workflows called directly, without its command line: enrollment against a real coordinator on
loopback (SQLite is enough: the node's side is the subject), and retries against an address where nothing listens."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time

import pytest

from contributor_node.client import CoordinatorClient
from contributor_node.enrollment import Enrollment, pending
from contributor_node.home import NodeHome, read_json
from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings, write_config
from protocol.errors import BarFedError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _node(tmp_path, org_id: str, service: str, enroll: str, **tuning) -> NodeSettings:
    home = tmp_path / "nodes" / org_id
    home.mkdir(parents=True)
    write_config(home, {"org_id": org_id, "service_address": service, "enroll_address": enroll})
    return NodeSettings(home=home, **tuning)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_rerun_follows_the_recorded_enrollment_and_never_spends_the_token_twice(federation, tmp_path):
    from coordinator.enrollment import approve, invite

    address = federation.address
    settings = _node(tmp_path, "acme-labs", address.service, address.enroll, poll_s=0.1)
    shutil.copy(federation.settings.pki_dir / "ca.pem", settings.ca_path)
    retry = Retrying(settings, settings.enroll_address)
    with pytest.raises(BarFedError) as refused:
        Enrollment(settings, retry).ask()
    assert refused.value.code == "TOKEN_REQUIRED"  # raised within a retried call, and not retried

    token = invite(federation.registry, "acme-labs", ["math"])
    first = Enrollment(settings, retry, token)
    assert first.certificate() is None
    asked = first.ask()
    assert pending(asked) and first.settle(asked) is None
    record = NodeHome(settings.home).record("enrollment")
    token_sha = hashlib.sha256(token.encode()).hexdigest()
    assert read_json(record) == {"enrollment_id": asked.enrollment_id, "token_sha256": token_sha, "domains": []}

    for rerun in (Enrollment(settings, retry), Enrollment(settings, retry, token)):  # no new request either way
        assert rerun.ask().enrollment_id == asked.enrollment_id

    waiting = Enrollment(settings, retry)
    approving = threading.Timer(0.5, approve, (federation.registry, federation.keys, asked.enrollment_id))
    approving.start()
    started = time.monotonic()
    answer = waiting.wait(waiting.ask(), timeout=60)
    approving.join()
    assert not pending(answer) and time.monotonic() - started < 30
    cert = waiting.settle(answer)
    assert cert is not None and waiting.certificate() is not None
    assert read_json(record) == {"enrollment_id": asked.enrollment_id, "token_sha256": token_sha, "domains": ["math"]}
    assert NodeHome(settings.home).granted_domain(None) == "math"


def test_an_unreachable_coordinator_is_retried_with_backoff_then_named_with_its_address(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    settings = _node(tmp_path, "lost", address, address, retry_for_s=1.5, call_timeout_s=0.2)
    waits = []
    retry = Retrying(settings, address, on_wait=waits.append)
    started = time.monotonic()
    with CoordinatorClient(address, plaintext_org="lost", timeout=0.2) as client, pytest.raises(BarFedError) as refused:
        retry(client.anchor_manifest)
    assert refused.value.code == "COORDINATOR_UNREACHABLE"
    assert f"the coordinator at {address} did not answer" in refused.value.message
    assert str(settings.home / "node.toml") in refused.value.message
    assert waits and all(0 <= wait <= 30 for wait in waits)
    assert time.monotonic() - started < 1.5 + 0.2 + 5
