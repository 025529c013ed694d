"""The node's patience with a coordinator that answers UNAVAILABLE with a code (its database is restarting): waited
for with backoff like an unreachable one, for ``retry_for_s``; any other coded refusal is final at once."""

from __future__ import annotations

import time

import pytest

from contributor_node.retry import CoordinatorUnavailable, Retrying
from contributor_node.settings import NodeSettings
from protocol.errors import BarFedError

ADDRESS = "127.0.0.1:7001"


def _retrying(tmp_path, retry_for_s: float, waits: list[float]) -> Retrying:
    settings = NodeSettings(
        home=tmp_path, org_id="acme", service_address=ADDRESS, enroll_address=ADDRESS, retry_for_s=retry_for_s
    )
    return Retrying(settings, ADDRESS, on_wait=waits.append)


def _raising(error: BarFedError):
    def call():
        raise error

    return call


def test_a_database_outage_is_retried_until_it_ends(tmp_path):
    waits: list[float] = []
    answers = iter([CoordinatorUnavailable("DATABASE_UNAVAILABLE", "retry shortly."), None, None])

    def call():
        if (error := next(answers)) is not None:
            raise error
        return "answered"

    assert _retrying(tmp_path, 30, waits)(call) == "answered"
    assert len(waits) == 1


def test_an_outage_that_outlasts_retry_for_s_is_named_by_its_code(tmp_path):
    waits: list[float] = []
    started = time.monotonic()
    with pytest.raises(BarFedError) as refused:
        _retrying(tmp_path, 0.5, waits)(_raising(CoordinatorUnavailable("DATABASE_UNAVAILABLE", "x")))
    assert refused.value.code == "DATABASE_UNAVAILABLE" and ADDRESS in refused.value.message
    assert "tries in" in refused.value.message or "try in" in refused.value.message
    assert time.monotonic() - started < 0.5 + 1


def test_other_coded_refusals_are_not_retried(tmp_path):
    waits: list[float] = []
    with pytest.raises(BarFedError) as refused:
        _retrying(tmp_path, 30, waits)(_raising(BarFedError("DOMAIN_NOT_OWNED", "not yours")))
    assert refused.value.code == "DOMAIN_NOT_OWNED" and waits == []
