"""The demo operator's wait for a release: it names each step the build enters, once, and stops on a failed build."""

from __future__ import annotations

import httpx
import pytest

from barfed.demo import operator as operator_module
from barfed.demo.operator import Operator
from protocol.errors import BarFedError


def _operator(pages: list[tuple[list, list]]) -> Operator:
    """An Operator whose API answers ``pages`` in turn: (releases, build jobs) per poll."""
    polls = iter(pages)
    current: dict = {}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/releases":
            current["releases"], current["jobs"] = next(polls)
            return httpx.Response(200, json=current["releases"])
        assert request.url.path == "/v1/jobs" and request.url.params["kind"] == "build"
        return httpx.Response(200, json=current["jobs"])

    op = Operator.__new__(Operator)  # its client, without the CA and token a coordinator's API needs
    op.client = httpx.Client(base_url="https://coordinator.test", transport=httpx.MockTransport(answer))
    return op


def _job(state: str, step: str, **extra) -> dict:
    return {"state": state, "step": step, "error_code": "", "error_message": "", **extra}


def test_each_build_step_is_reported_once_until_the_release_is_out(monkeypatch):
    monkeypatch.setattr(operator_module.time, "sleep", lambda _s: None)
    pages = [
        ([], [_job("queued", "")]),
        ([], [_job("running", "merge")]),
        ([], [_job("running", "route")]),
        ([], [_job("running", "route")]),
        ([], [_job("running", "evaluate")]),
        ([{"number": 1, "name": "r1"}], [_job("done", "publish")]),
    ]
    steps: list[str] = []
    release = _operator(pages).wait_release(1, on_step=steps.append)
    assert release["name"] == "r1"
    assert steps == ["merge", "route", "evaluate"]


def test_a_gated_build_ends_the_wait_with_its_code(monkeypatch):
    monkeypatch.setattr(operator_module.time, "sleep", lambda _s: None)
    gated = _job("gated", "gate", error_code="GATE_REFUSED", error_message="math fell by 9 points.")
    pages = [([], [_job("running", "route")]), ([], [gated])]
    with pytest.raises(BarFedError) as refused:
        _operator(pages).wait_release(1)
    assert refused.value.code == "GATE_REFUSED"
