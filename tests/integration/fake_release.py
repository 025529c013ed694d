"""A published release without a build: chosen files (bytes, or a size for a sparse file), ``release.json``, signed
with the coordinator's release key and recorded as the build's publish step records it. For download tests and
benchmarks, where what matters is how the server serves a release's files, not how they were made."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from coordinator.runtime import Runtime
from coordinator.state import releases as state
from coordinator.state.models import Release
from protocol.package import file_sha256
from protocol.release import RELEASE_FILE, ReleaseExpert, ReleaseManifest, RouterRun, write_manifest
from protocol.signing import sign_directory


def stub_score(score: float, expert: float) -> dict:
    """An eval entry with its expert's own score and its routing shares beside it, as a release build records it."""
    kept = {"expert_score": expert, "retention": round(score / expert, 3), "difference": score - expert}
    return {"score": score, **kept, "own_share": 0.6, "anchor_share": 0.3, "load": 0.4}


def stub_manifest(number: int, experts: list[dict]) -> ReleaseManifest:
    """A valid release.json for ``experts`` (domain, version, org, package_digest), with nothing built."""
    return ReleaseManifest(
        name=f"r{number}",
        number=number,
        parent=number - 1 or None,
        anchor_fingerprint="sha256:" + "0" * 64,
        experts=[ReleaseExpert(**e, files={"expert.json": "0" * 64}) for e in experts],
        router=RouterRun(
            recipe={},
            seed=0,
            steps=0,
            threads=1,
            incremental=number > 1,
            trained_rows=[],
            frozen_rows=[],
            kept_rows=[],
            examples=0,
        ),
        eval={e["domain"]: stub_score(50.0 + number, expert=60.0) for e in experts},
        eval_examples=8,
        gate={"tolerances": {}, "regressions": [], "forced_by": None},
        project_version="test",
        job_id=None,
        built_at=dt.datetime.now(dt.UTC),
        wall_s={},
    )


def publish_fake_release(runtime: Runtime, number: int, files: dict[str, bytes | int]) -> Path:
    """``releases/r<number>`` holding ``files`` (an int is the size of a sparse file of zeros), signed, published."""
    directory = runtime.settings.releases_dir / f"r{number}"
    directory.mkdir(parents=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as fh:
                fh.truncate(content)
        else:
            path.write_bytes(content)
    write_manifest(directory, stub_manifest(number, []))
    sign_directory(directory, runtime.keys.release_key_path)
    release = Release(number=number, manifest_sha256=file_sha256(directory / RELEASE_FILE), domains=[], experts=[])
    state.insert_release(runtime.registry, release, "test")
    return directory
