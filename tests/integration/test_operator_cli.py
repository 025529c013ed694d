"""`barfed coordinator …` on a real registry as scripts and newcomers use it: --json on every list and show, whole ids
through a pipe, `--home` on the group, an unknown enrollment named as such, promote and build when nothing would
change, and a PostgreSQL registry that `init` never migrated or that cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.keys import CoordinatorKeys
from coordinator.state import jobs

from .api_matrix import DOMAIN, ORG, OTHER, OTHER_DOMAIN, add_release, make_world, request_enrollment
from .conftest import PG_DSN, fresh_database

pytestmark = pytest.mark.integration


def test_json_whole_ids_group_home_and_refusals(tmp_path, monkeypatch):
    world = make_world(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    home = world.runtime.settings.home
    monkeypatch.setenv("BARFED_COORD_DATABASE_URL", world.runtime.settings.db_url)
    pending = request_enrollment(world.registry, "org-waiting", ["waiting"]).id
    runner = CliRunner()

    def ok(*args: str):
        result = runner.invoke(app, ["--home", str(home), *args])  # the group's --home
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def document(*args: str):
        return json.loads(ok(*args, "--json").stdout)

    assert pending in [e["id"] for e in document("enrollments", "list")]
    experts = document("experts", "list")
    assert {(e["domain"], e["org"]) for e in experts["experts"]} == {(DOMAIN, ORG), (OTHER_DOMAIN, OTHER)}
    assert [r["id"] for r in experts["rejected"]] == [world.rejected]
    releases = document("releases", "list")
    assert [(r["name"], r["channels"]) for r in releases] == [("r1", ["stable"]), ("r2", ["latest"])]
    assert releases[1]["retention"][DOMAIN] == {"expert": 60.0, "release": 52.0, "retention": 0.867, "difference": -8.0}
    shown = document("releases", "show", "latest")
    assert shown["name"] == "r2" and shown["eval"][DOMAIN]["retention"] == 0.867
    differences = document("releases", "diff", "r1", "r2")
    assert differences["added"] == {OTHER_DOMAIN: 1}
    assert differences["retention"][DOMAIN] == {"from": 0.85, "to": 0.867}
    table = ok("releases", "diff", "r1", "r2").stdout
    assert "85% → 87%" in table, table
    assert world.job in [j["id"] for j in document("jobs", "list")]
    assert document("jobs", "show", str(world.job))["state"] == "queued"
    made = document("tokens", "create", "--role", "auditor", "--label", "script")
    assert made["token"].startswith("bft_") and made["role"] == "auditor"
    assert made["id"] in [t["id"] for t in document("tokens", "list")]
    # The command's own --home wins over the group's.
    assert (
        runner.invoke(app, ["--home", str(tmp_path / "nowhere"), "tokens", "list", "--home", str(home)]).exit_code == 0
    )

    # Through a pipe, a table carries every id whole (Rich would cut them to 80 columns).
    env = {**os.environ, "BARFED_COORD_DATABASE_URL": world.runtime.settings.db_url, "COLUMNS": "80"}
    for group, whole in (("tokens", made["id"]), ("enrollments", pending)):
        piped = subprocess.run(
            [sys.executable, "-m", "barfed.cli", "coordinator", group, "list", "--home", str(home)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert piped.returncode == 0 and whole in piped.stdout and "…" not in piped.stdout, piped.stdout

    for args in (("approve", "zzz"), ("reject", "zzz", "--reason", "no")):
        refused = runner.invoke(app, ["--home", str(home), "enrollments", *args])
        assert getattr(refused.exception, "code", None) == "UNKNOWN_ENROLLMENT", refused.output

    # Promoting where the channel already points changes nothing, so the next rollback has nothing to undo.
    assert (
        "stable already points at r1; nothing changed" in ok("releases", "promote", "r1", "--channel", "stable").stdout
    )
    rollback = runner.invoke(app, ["--home", str(home), "releases", "rollback", "stable"])
    assert getattr(rollback.exception, "code", None) == "NOTHING_TO_ROLL_BACK"

    # r3 holds exactly what a build would take: the build is refused and no job is queued, unless forced.
    planned = [(DOMAIN, ORG), (OTHER_DOMAIN, OTHER)]
    add_release(
        world.runtime, 3, [{"domain": d, "version": 1, "org": o, "package_digest": "0" * 64} for d, o in planned]
    )
    before = len(jobs.list_jobs(world.registry, kind="build"))
    refused = runner.invoke(app, ["--home", str(home), "releases", "build"])
    assert getattr(refused.exception, "code", None) == "NOTHING_CHANGED", refused.output
    assert "r3" in refused.exception.message and "--force" in refused.exception.message
    assert len(jobs.list_jobs(world.registry, kind="build")) == before
    assert "build queued as job" in ok("releases", "build", "--force").stdout
    world.registry.dispose()


def test_a_postgresql_registry_init_never_migrated_or_that_cannot_be_reached_is_one_line(tmp_path, monkeypatch):
    home = tmp_path / "coordinator"
    CoordinatorKeys(home / "pki").create(["localhost"])
    runner = CliRunner()

    def refusal(url: str):
        monkeypatch.setenv("BARFED_COORD_DATABASE_URL", url)
        result = runner.invoke(app, ["releases", "list", "--home", str(home)])
        assert "\n" not in result.exception.message, result.exception.message
        return result.exception

    with fresh_database("postgresql", tmp_path) as url:
        empty = refusal(url)
        assert empty.code == "NOT_INITIALIZED" and f"barfed coordinator init --home {home}" in empty.message
        schema = url.rsplit("%3D", 1)[1]
        with psycopg.connect(PG_DSN) as connection:
            tables = connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchone()[0]
        assert tables == 0  # the refusal migrated nothing
    away = refusal("postgresql+psycopg://barfed:hunter2@127.0.0.1:1/barfed")
    assert away.code == "DATABASE_UNREACHABLE" and "127.0.0.1:1/barfed" in away.message
    assert "hunter2" not in away.message
