"""Which domain, expert and package a node's commands work on when the user names none, from the node home alone."""

from __future__ import annotations

import pytest

from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.versions import expert_to_package, package_to_submit, package_version, training_start
from protocol.errors import BarFedError

MADE = {"expert_created_at": "2025-06-01T12:00:00+00:00", "calibration": True}


def _built(home: NodeHome, domain: str, version: int, made: dict) -> None:
    home.package(domain, version).mkdir(parents=True)
    write_json(home.record("packages"), {**read_json(home.record("packages"), {}), f"{domain}-v{version}": made})


def _refused(code: str, call, *args) -> str:
    with pytest.raises(BarFedError) as refused:
        call(*args)
    assert refused.value.code == code
    return refused.value.message


def test_packaging_the_same_expert_and_data_again_is_the_package_already_built(tmp_path):
    home = NodeHome(tmp_path)
    assert package_version(home, "math", MADE, None) == 1
    _built(home, "math", 1, MADE)
    assert package_version(home, "math", MADE, None) == 1  # a rerun: `package` answers "already built"
    assert package_version(home, "math", {**MADE, "calibration": False}, None) == 2
    assert package_version(home, "math", {**MADE, "expert_created_at": "later"}, None) == 2
    assert package_version(home, "math", {**MADE, "calibration": False}, 7) == 7  # a version given is taken
    assert package_version(home, "code", MADE, None) == 1


def test_a_new_package_version_passes_every_version_submitted_even_when_its_package_is_gone(tmp_path):
    home = NodeHome(tmp_path)
    _built(home, "math", 1, MADE)
    submissions = {"math-v3": {"submission_id": "s3", "domain": "math", "version": 3}}
    write_json(
        home.record("submissions"), {**submissions, "code-v9": {"submission_id": "s9", "domain": "code", "version": 9}}
    )
    assert package_version(home, "math", {**MADE, "calibration": False}, None) == 4
    assert package_version(home, "math", MADE, None) == 1


def test_submit_takes_the_newest_package_and_refuses_one_not_built(tmp_path):
    home = NodeHome(tmp_path)
    assert "barfed node package`" in _refused("NO_PACKAGE", package_to_submit, home, "math", None)
    _built(home, "math", 1, MADE)
    _built(home, "math", 2, MADE)
    assert package_to_submit(home, "math", None) == 2
    assert package_to_submit(home, "math", 1) == 1
    assert "--version 5" in _refused("NO_PACKAGE", package_to_submit, home, "math", 5)


def test_package_takes_the_newest_expert_and_training_further_starts_from_an_earlier_one(tmp_path):
    home = NodeHome(tmp_path)
    _refused("NO_EXPERT", expert_to_package, home, "math", None)
    home.expert("math", 1).mkdir(parents=True)
    home.expert("math", 2).mkdir(parents=True)
    assert expert_to_package(home, "math", None) == 2
    assert expert_to_package(home, "math", 1) == 1
    assert "v3" in _refused("NO_EXPERT", expert_to_package, home, "math", 3)

    assert training_start(home, "math", 1, None) == home.anchor
    assert training_start(home, "math", 3, 2) == home.expert("math", 2)
    assert "have: [1, 2]" in _refused("BAD_VERSION", training_start, home, "math", 2, 2)
    _refused("BAD_VERSION", training_start, home, "math", 5, 4)


def test_the_one_domain_granted_is_the_default_and_several_need_naming(tmp_path):
    home = NodeHome(tmp_path)
    assert "no domain yet" in _refused("DOMAIN_REQUIRED", home.granted_domain, None)
    write_json(home.record("enrollment"), {"enrollment_id": "e1", "token_sha256": "x", "domains": ["math"]})
    assert home.granted_domain(None) == "math"
    assert home.granted_domain("code") == "code"
    write_json(home.record("enrollment"), {"enrollment_id": "e1", "token_sha256": "x", "domains": ["math", "code"]})
    assert "--domain" in _refused("DOMAIN_REQUIRED", home.granted_domain, None)
