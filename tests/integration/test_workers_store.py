"""What lets a worker on another machine do a job, on a real S3 server (SeaweedFS): blobs fetched by digest into a
bounded cache, the anchor fetched and checked, a job's scratch kept on the store and restored, orphan blobs removed
from the store, and release numbers claimed in the registry (a failed job's claim taken over, its unsigned objects
cleared)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from coordinator.release.build import BuildRequest, _record
from coordinator.release.numbering import ReleaseNumber
from coordinator.runtime import Runtime
from coordinator.setup import fetch_anchor, initialize
from coordinator.state import jobs
from coordinator.state import releases as state
from coordinator.storage import ANCHOR_PREFIX, blob_key
from coordinator.tasks.scratch import CHECKPOINTS, COMPLETE, JobScratch, scratch_key
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint
from protocol.package import file_sha256
from protocol.release import read_manifest

from .conftest import make_settings

pytestmark = pytest.mark.integration


def runtime_at(root, db_url, s3_settings, **overrides) -> Runtime:
    settings = make_settings(root, db_url, **s3_settings, **overrides)
    initialize(settings)
    return Runtime.from_settings(settings)


@pytest.fixture
def registry_url(request, tmp_path):
    """SQLite, except for a test that asks for ``db_url`` too (the claims: SQL both databases must agree on)."""
    if "db_url" in request.fixturenames:
        return request.getfixturevalue("db_url")
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def two_machines(tmp_path, registry_url, s3_settings):
    """The coordinator's runtime and a worker's: one registry and one store, homes with nothing in common but the
    release key pair."""
    coordinator = runtime_at(tmp_path / "c", registry_url, s3_settings)
    worker_settings = make_settings(tmp_path / "w", registry_url, **s3_settings)
    (worker_settings.pki_dir).mkdir(parents=True)
    for name in ("release.key", "release.pub"):
        shutil.copy2(coordinator.settings.pki_dir / name, worker_settings.pki_dir / name)
    worker = Runtime.from_settings(worker_settings)
    yield coordinator, worker
    coordinator.registry.dispose()
    worker.registry.dispose()


def blob(runtime: Runtime, tmp_path, content: bytes) -> str:
    source = runtime.settings.staging_dir / f"t-{len(content)}-{content[:8].hex()}"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    digest = file_sha256(source)
    runtime.blobs.put(source, digest)
    source.unlink(missing_ok=True)
    return digest


def test_a_worker_fetches_blobs_by_digest_into_a_bounded_cache(two_machines, tmp_path, s3_server):
    coordinator, worker = two_machines
    digests = [blob(coordinator, tmp_path, bytes([i]) * 1000) for i in range(3)]
    for digest in digests:  # on the store before any commit could record it
        assert coordinator.store.sha256(blob_key(digest)) == digest
    assert not any(worker.blobs.exists(d) and worker.blobs.path(d).is_file() for d in digests)

    package = worker.blobs.materialize({f"f{i}": d for i, d in enumerate(digests)}, tmp_path / "package")
    assert [(package / f"f{i}").read_bytes()[:1] for i in range(3)] == [b"\0", b"\1", b"\2"]

    # a cache of 2500 bytes keeps the two used last; the links already made keep their bytes
    worker.blobs.cache_bytes = 2500
    for when, digest in enumerate(digests):
        os.utime(worker.blobs.path(digest), (1000 + when, 1000 + when))
    assert worker.blobs.trim() == 1
    assert not worker.blobs.path(digests[0]).is_file() and worker.blobs.path(digests[2]).is_file()
    assert (package / "f0").read_bytes() == bytes([0]) * 1000
    again, fetched = worker.blobs.local(digests[0])
    assert fetched and again.read_bytes() == bytes([0]) * 1000  # fetched again on demand
    assert worker.blobs.local(digests[0])[1] is False  # and then kept

    # bytes on the store that are not their digest are refused; nothing of them stays in the cache
    worker.blobs.path(digests[1]).unlink()
    bucket_key = f"{coordinator.store.location.prefix}/{blob_key(digests[1])}"
    s3_server.client().put_object(Bucket=s3_server.bucket, Key=bucket_key, Body=b"tampered")
    with pytest.raises(BarFedError) as corrupt:
        worker.blobs.local(digests[1])
    assert corrupt.value.code == "STORE_OBJECT_CORRUPT" and not worker.blobs.path(digests[1]).exists()


def test_orphan_blobs_leave_the_store_only_by_collection(two_machines, tmp_path):
    coordinator, worker = two_machines
    kept, orphan = blob(coordinator, tmp_path, b"kept" * 100), blob(coordinator, tmp_path, b"orphan" * 100)
    worker.blobs.local(orphan)
    worker.blobs.delete(orphan)  # a worker's rejection: its cache only
    assert coordinator.store.sha256(blob_key(orphan)) == orphan
    with coordinator.blobs.lock:
        assert coordinator.blobs.collect_orphans({kept}) == 1
    assert coordinator.store.sha256(blob_key(orphan)) is None and coordinator.store.sha256(blob_key(kept)) == kept
    assert not coordinator.blobs.path(orphan).exists() and coordinator.blobs.path(kept).is_file()


def test_the_anchor_is_published_to_the_store_and_fetched_checked(micro, tmp_path, registry_url, s3_settings):
    coordinator = runtime_at(tmp_path / "c", registry_url, s3_settings)
    try:
        initialize(coordinator.settings, micro["branch"])
        assert "config.json" in coordinator.store.sizes(ANCHOR_PREFIX)
        worker_settings = make_settings(tmp_path / "w", registry_url, **s3_settings)
        shutil.copytree(coordinator.settings.pki_dir, worker_settings.pki_dir)
        worker = Runtime.from_settings(worker_settings)
        fetch_anchor(worker)
        assert anchor_fingerprint(worker.settings.anchor_dir) == anchor_fingerprint(coordinator.settings.anchor_dir)

        # an anchor on the store signed by another key is refused, and leaves no anchor behind
        shutil.rmtree(worker.settings.anchor_dir)
        other = make_settings(tmp_path / "o", registry_url, **s3_settings)
        initialize(other)  # a key pair of its own
        shutil.copy2(other.pki_dir / "release.pub", worker.settings.pki_dir / "release.pub")
        with pytest.raises(BarFedError) as refused:
            fetch_anchor(worker)
        assert refused.value.code == "SIGNATURE_WRONG_KEY" and "release key pair" in refused.value.message
        assert not worker.settings.anchor_dir.exists()
        worker.registry.dispose()
    finally:
        coordinator.registry.dispose()


def test_a_jobs_scratch_survives_its_worker_and_goes_with_the_job(two_machines, tmp_path):
    coordinator, worker = two_machines
    first = tmp_path / "first" / "7"
    first.mkdir(parents=True)
    (first / "plan.json").write_text('{"experts": []}')
    done = first / CHECKPOINTS / "checkpoint-20"
    partial = first / CHECKPOINTS / "checkpoint-40"  # being written when the worker died: no trainer_state.json
    for checkpoint in (done, partial):
        checkpoint.mkdir(parents=True)
        (checkpoint / "model.safetensors").write_bytes(b"weights")
    (done / COMPLETE).write_text("{}")
    (first / "merged").mkdir()
    (first / "merged" / "model.safetensors").write_bytes(b"made again from blobs")
    key = scratch_key(coordinator.keys.release_key_path)
    scratch = JobScratch(coordinator.store, 7, first, key)
    scratch.save()
    (first / "plan.json").write_text('{"experts": ["changed"]}')
    scratch.save()  # top-level files are put again at every step

    second = tmp_path / "second" / "7"
    assert JobScratch(worker.store, 7, second, key).restore() == 3
    assert (second / "plan.json").read_text() == '{"experts": ["changed"]}'
    assert (second / CHECKPOINTS / "checkpoint-20" / COMPLETE).is_file()
    assert not (second / CHECKPOINTS / "checkpoint-40").exists() and not (second / "merged").exists()

    # a newer checkpoint, once whole on the store, replaces the older one there (the trainer keeps one too)
    (partial / COMPLETE).write_text("{}")
    scratch.save()
    stored = {name.split("/")[0] for name in coordinator.store.sizes(f"jobs/7/{CHECKPOINTS}")}
    assert stored == {"checkpoint-40"}

    JobScratch(worker.store, 7, second, key).discard()
    assert worker.store.sizes("jobs/7") == {}


def test_a_jobs_scratch_written_by_anyone_but_a_worker_is_not_taken(two_machines, tmp_path, s3_server):
    """Someone with the bucket's keys rewrites a job's eval table (with a fresh sha256 in its metadata): the MAC,
    keyed from the release key the bucket never sees, does not match, and the job starts over from nothing."""
    coordinator, worker = two_machines
    key = scratch_key(coordinator.keys.release_key_path)
    work = tmp_path / "first" / "8"
    work.mkdir(parents=True)
    (work / "eval.json").write_text('{"math": {"score": 20}}')
    (work / "plan.json").write_text("{}")
    JobScratch(coordinator.store, 8, work, key).save()
    forged = b'{"math": {"score": 99}}'
    bucket_key = f"{coordinator.store.location.prefix}/jobs/8/eval.json"
    import hashlib

    s3_server.client().put_object(
        Bucket=s3_server.bucket, Key=bucket_key, Body=forged, Metadata={"sha256": hashlib.sha256(forged).hexdigest()}
    )
    second = tmp_path / "second" / "8"
    assert JobScratch(worker.store, 8, second, key).restore() == 0
    assert not second.exists() or list(second.iterdir()) == []
    other = scratch_key(tmp_path / "first" / "8" / "plan.json")  # any key but the release key's
    assert JobScratch(worker.store, 8, second, other).restore() == 0


def test_a_release_number_is_held_by_one_job_and_a_failed_jobs_claim_is_taken_over(two_machines, db_url, tmp_path):
    coordinator, worker = two_machines
    registry = coordinator.registry
    first, second = (jobs.queue(registry, "build", f"k{i}").id for i in range(2))
    jobs.claim(registry, first, "w1", 60)
    assert state.claim_number(registry, 1, first) and state.claim_number(registry, 1, first)
    assert not state.claim_number(registry, 1, second)  # its holder is still running

    # the first job uploaded part of r1 and then failed for good: its claim and its unsigned objects are taken over
    stray = tmp_path / "shard"
    stray.write_bytes(b"half a release")
    coordinator.store.put_file("releases/r1/model.safetensors", stray, file_sha256(stray))
    jobs.finish(registry, first, "w1", "failed", code="JOB_CRASHED", message="gone")
    number = ReleaseNumber(worker, tmp_path / "work", second)

    def stage(n: int):
        staging = worker.settings.releases_dir / f".r{n}.staging"
        staging.mkdir(parents=True)
        (staging / "release.json").write_text("{}")
        return staging

    assert number.publish(stage).name == "r1"
    assert coordinator.store.sizes("releases/r1") == {}
    assert not state.claim_number(registry, 1, first)


def test_a_worker_with_its_own_home_verifies_a_submission_from_the_store(
    micro, packages, registry_url, s3_settings, tmp_path
):
    """The coordinator commits the upload (its blobs onto the store first); a verification worker that shares no
    directory with it fetches the anchor and every blob, checks them and accepts the expert."""
    from contributor_node.package import build_package
    from coordinator.embedded import running_coordinator
    from coordinator.keys import CoordinatorKeys
    from coordinator.state.models import Submission
    from coordinator.uploads.sessions import Declared, Uploads
    from coordinator.verification.job import Verifier

    from .conftest import Federation
    from .test_submission import _write_all

    settings = make_settings(tmp_path, registry_url, **s3_settings)
    initialize(settings, micro["branch"])
    coordinator = Runtime.from_settings(settings)
    with running_coordinator(settings) as address:
        federation = Federation(settings, coordinator.registry, CoordinatorKeys(settings.pki_dir), address, tmp_path)
        acme = federation.enroll("acme-labs", ["test-vowels"])
    package = tmp_path / "pkg"
    build_package(packages["test-vowels"], package, org="acme-labs", version=1, private_key=acme.key_path)
    uploads = Uploads(coordinator.registry, settings, coordinator.blobs)
    files = sorted(package.iterdir())
    declared = [Declared(p.name, p.stat().st_size, file_sha256(p)) for p in files]
    session_id = uploads.create("acme-labs", "test-vowels", 1, declared)
    _write_all(uploads, session_id, files, settings.chunk_bytes)
    submission_id = uploads.commit("acme-labs", session_id)  # outside the server: only the worker below verifies
    uploads.close()
    for d in declared:
        assert coordinator.store.sha256(blob_key(d.sha256)) == d.sha256

    # a worker that cannot reach the store gives no verdict: the job is retried, the submission stays pending
    away = {**s3_settings, "s3_endpoint_url": "http://127.0.0.1:9", "s3_retry_timeout_s": 1}
    cut_off = Runtime.from_settings(make_settings(tmp_path / "cut-off", registry_url, **away))
    shutil.copytree(settings.anchor_dir, cut_off.settings.anchor_dir)
    with pytest.raises(BarFedError) as away_error:
        Verifier(cut_off.registry, cut_off.settings, cut_off.blobs).run(submission_id)
    assert away_error.value.code == "STORE_UNREACHABLE"
    with coordinator.registry.session() as session:
        assert session.get(Submission, submission_id).state == "VERIFYING"
    cut_off.registry.dispose()

    worker_settings = make_settings(tmp_path / "worker", registry_url, **s3_settings)
    worker_settings.pki_dir.mkdir(parents=True)
    for name in ("release.key", "release.pub"):
        shutil.copy2(settings.pki_dir / name, worker_settings.pki_dir / name)
    worker = Runtime.from_settings(worker_settings)
    try:
        fetch_anchor(worker)
        assert Verifier(worker.registry, worker_settings, worker.blobs).run(submission_id) == "ACCEPTED"
        assert {d.sha256 for d in declared} <= worker.blobs.digests()  # fetched into its own cache
    finally:
        worker.registry.dispose()
        coordinator.registry.dispose()


def test_the_release_cache_keeps_what_was_used_last_within_its_size(two_machines):
    from coordinator.release.signed_files import cached_dir, trim_cache

    _, worker = two_machines
    for number, when in ((1, 1000), (2, 3000), (3, 2000)):
        directory = cached_dir(worker, number)
        directory.mkdir(parents=True)
        (directory / "model.safetensors").write_bytes(b"w" * 600)
        os.utime(directory, (when, when))
    worker.settings = worker.settings.model_copy(update={"cache_max_gb": 1300 / 2**30})
    assert trim_cache(worker, keep=cached_dir(worker, 1)) == 1  # r1 is in use: the oldest other one goes
    assert [cached_dir(worker, n).exists() for n in (1, 2, 3)] == [True, True, False]


def test_a_job_taken_over_after_its_release_reached_the_store_only_records_it(two_machines, tmp_path):
    """The first worker uploaded r1 whole (model.sig last) and died before the row: the job's next attempt, on
    another machine, finds r1 on the store by its signed job id and publishes nothing new."""
    from coordinator.storage import upload_release
    from protocol.release import write_manifest
    from protocol.signing import sign_directory

    from .fake_release import stub_manifest

    coordinator, worker = two_machines
    job = jobs.queue(coordinator.registry, "build", "taken-over").id
    built = tmp_path / "built" / "r1"
    built.mkdir(parents=True)
    (built / "model.safetensors").write_bytes(b"weights")
    write_manifest(built, stub_manifest(1, []).model_copy(update={"job_id": job}))
    sign_directory(built, coordinator.keys.release_key_path)
    upload_release(coordinator.store, built, 1)
    work = tmp_path / "second" / str(job)
    work.mkdir(parents=True)
    (work / "number.json").write_text("1")

    assert ReleaseNumber(worker, work, job + 1).published() is None  # r1 is another job's
    found = ReleaseNumber(worker, work, job).published()
    assert found is not None and read_manifest(found).job_id == job
    recorded = _record(worker, BuildRequest({}, False, "operator", job_id=job), found)
    assert recorded["release"] == 1 and state.latest_release(coordinator.registry).job_id == job
    assert coordinator.store.sha256("releases/r1/model.safetensors") == file_sha256(built / "model.safetensors")


def test_the_runner_restores_a_jobs_scratch_and_removes_it_when_the_job_ends(two_machines, monkeypatch):
    from coordinator.tasks import handlers, runner

    coordinator, worker = two_machines
    seen = []

    def resumable(ctx):
        seen.append((ctx.work_dir / "plan.json").read_text() if (ctx.work_dir / "plan.json").exists() else None)
        (ctx.work_dir / "plan.json").write_text("planned")
        ctx.step("next")  # what the steps before kept goes onto the store
        raise RuntimeError("the worker's machine dies here")

    monkeypatch.setitem(handlers.HANDLERS, "t-resume", resumable)
    job = jobs.queue(coordinator.registry, "t-resume", "k").id
    assert runner.run_job(coordinator, job) == "crashed"
    assert "plan.json" in coordinator.store.sizes(f"jobs/{job}")

    def finish(ctx):
        seen.append((ctx.work_dir / "plan.json").read_text())
        return {}

    monkeypatch.setitem(handlers.HANDLERS, "t-resume", finish)
    assert runner.run_job(worker, job) == "done"  # another machine: its home never saw the job
    assert seen == [None, "planned"]
    assert coordinator.store.sizes(f"jobs/{job}") == {}


def test_a_commit_while_the_store_is_down_is_refused_and_succeeds_once_it_is_back(tmp_path, registry_url, s3_settings):
    """Every blob must be on the store before a commit records it: with the store away the commit is refused
    (STORE_UNREACHABLE), no submission exists and the staged bytes stay; the same commit goes through later."""
    from coordinator.state.models import Domain, Organization, Submission
    from coordinator.storage import ObjectStore
    from coordinator.uploads.sessions import Declared, Uploads
    from protocol.package import MANIFEST_FILE

    from .test_submission import _write_all

    away = {**s3_settings, "s3_endpoint_url": "http://127.0.0.1:9", "s3_retry_timeout_s": 1}
    runtime = runtime_at(tmp_path, registry_url, away)
    uploads = Uploads(runtime.registry, runtime.settings, runtime.blobs)
    try:
        with runtime.registry.session() as session:
            session.add(Organization(id="acme-labs", status="active"))
            session.flush()
            session.add(Domain(name="test-vowels", org_id="acme-labs"))
        package = tmp_path / "package"
        package.mkdir()
        (package / MANIFEST_FILE).write_text('{"domain": "test-vowels"}')
        (package / "model.safetensors").write_bytes(b"weights" * 1000)
        (package / "model.sig").write_text("{}")  # what a commit checks is the bytes, not the signature yet
        files = sorted(package.iterdir())
        declared = [Declared(p.name, p.stat().st_size, file_sha256(p)) for p in files]
        session_id = uploads.create("acme-labs", "test-vowels", 1, declared)
        _write_all(uploads, session_id, files, runtime.settings.chunk_bytes)
        with pytest.raises(BarFedError) as refused:
            uploads.commit("acme-labs", session_id)
        assert refused.value.code == "STORE_UNREACHABLE"
        with runtime.registry.session() as session:
            assert session.query(Submission).count() == 0
        assert runtime.blobs.digests() == set()

        back = ObjectStore(runtime.settings.model_copy(update=s3_settings))
        runtime.blobs.mirror_to(back, 2**30)
        submission_id = uploads.commit("acme-labs", session_id)
        assert all(back.sha256(blob_key(d.sha256)) == d.sha256 for d in declared)
        with runtime.registry.session() as session:
            assert session.get(Submission, submission_id) is not None
    finally:
        uploads.close()
        runtime.registry.dispose()


def test_while_another_job_holds_a_number_a_build_takes_the_next(two_machines, db_url, tmp_path):
    coordinator, worker = two_machines
    registry = coordinator.registry
    first, second = (jobs.queue(registry, "build", f"n{i}").id for i in range(2))
    jobs.claim(registry, first, "w1", 60)
    assert state.claim_number(registry, 1, first)  # the first build is signing r1 on another machine

    def stage(n: int):
        staging = worker.settings.releases_dir / f".r{n}.staging"
        staging.mkdir(parents=True)
        (staging / "release.json").write_text("{}")
        return staging

    assert ReleaseNumber(worker, tmp_path / "work", second).publish(stage).name == "r2"
    assert json.loads((tmp_path / "work" / "number.json").read_text()) == 2  # what a retry of it takes again


def test_a_store_that_is_away_releases_the_job_for_another_attempt_instead_of_failing_it(two_machines, monkeypatch):
    from coordinator.tasks import handlers, runner

    coordinator, _ = two_machines

    def needs_the_store(ctx):
        raise BarFedError("STORE_UNREACHABLE", "the artifact store did not answer.")

    monkeypatch.setitem(handlers.HANDLERS, "t-store", needs_the_store)
    job = jobs.queue(coordinator.registry, "t-store", "k").id
    assert runner.run_job(coordinator, job) == "released"
    row = jobs.get(coordinator.registry, job)
    assert (row.state, row.error_code) == ("queued", "STORE_UNREACHABLE")
