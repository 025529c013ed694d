"""Schemathesis against the REST API's own OpenAPI document, with an admin token, on every route: no 5xx, every
status documented, every response body as its schema says; and, from the document's coverage cases, both valid and
invalid: what it forbids is refused (`since=0.5`, `"force": 0`), what it allows is not refused with a 400/422 (a pin
key, a channel, a domain it lists), a method it does not list is 405 with an ``Allow`` that names the path's
documented methods. Bounded (10 examples an operation), on SQLite and PostgreSQL, in the matrix's world (two
orgs, experts, submissions, two releases, a job)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from coordinator.api.app import create_app

from .api_matrix import make_world
from .conftest import fresh_database

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONTRACT = [negative_data_rejection, positive_data_acceptance, allow_header_conformance, unsupported_method]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with fresh_database(request.param, root) as url:
        world = make_world(root, url)
        yield world
        world.registry.dispose()


# The document does not depend on the registry, so it is read once from an app without one; every call goes to the
# world's app. (schemathesis.pytest.from_fixture would do the same, but needs pytest < 9.)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(None))
# Valid and invalid cases from the document's coverage phase (no random fuzzing: that is the test above).
both_ways = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(None),
    config=SchemathesisConfig.from_dict({"generation": {"mode": "all"}, "phases": {"fuzzing": {"enabled": False}}}),
)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, fuzz_world):
    # /readyz answers a documented 503 when no worker is reachable (none runs here); any other 5xx is a bug
    checks = [c for c in CHECKS if c is not not_a_server_error] if case.operation.path == "/readyz" else CHECKS
    case.call_and_validate(headers=fuzz_world.headers["admin"], checks=checks, app=fuzz_world.app)


@both_ways.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_refuses_what_its_schema_forbids_and_takes_what_it_allows(case, fuzz_world):
    case.call_and_validate(headers=fuzz_world.headers["admin"], checks=CONTRACT, app=fuzz_world.app)
