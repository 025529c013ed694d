"""Where a node keeps everything, and the small JSON records that make every `barfed node` command resumable.

    node.toml  org.key (0600)  org.pem  ca.pem  release.pub      identity and trust (settings, identity.py)
    enrollment.json                                              the pending or approved enrollment's id
                                                                 and, once approved, the domains granted
    anchor/  anchor.json                                         the verified anchor and its fingerprint
    experts/<domain>[-v<N>]/  evals/<domain>[-v<N>].json         trained experts and their local scores
    training.json                                                `train`'s progress, for whoever watches it:
        {"domain", "version", "stage" (mid|sft|rl), "step", "total" (the stage's steps), "stage_started_at",
         "updated_at" (unix seconds), "done"}; rewritten about once a second, done once the expert is written
    packages/<domain>-v<N>/  packages.json                       signed packages; what each was built from
    uploads/<domain>-v<N>.json                                   an upload session in flight (resumed by id)
    submissions.json  watch.json                                 submission ids; the last release seen

Records are replaced atomically (write beside, fsync, rename), so a crash leaves the old one or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import BarFedError


@dataclass(frozen=True)
class NodeHome:
    root: Path

    @property
    def anchor(self) -> Path:
        return self.root / "anchor"

    @property
    def training(self) -> Path:
        return self.root / "training.json"

    def expert(self, domain: str, version: int = 1) -> Path:
        """The expert trained for ``version`` (v1 at ``experts/<domain>``; an improved vN beside it)."""
        return self.root / "experts" / (domain if version == 1 else f"{domain}-v{version}")

    def expert_versions(self, domain: str) -> list[int]:
        return [v for v in range(1, 1000) if self.expert(domain, v).is_dir()] if self.expert(domain).is_dir() else []

    def scores(self, domain: str, version: int = 1) -> Path:
        return self.root / "evals" / (f"{domain}.json" if version == 1 else f"{domain}-v{version}.json")

    def package(self, domain: str, version: int) -> Path:
        return self.root / "packages" / f"{domain}-v{version}"

    def upload(self, domain: str, version: int) -> Path:
        return self.root / "uploads" / f"{domain}-v{version}.json"

    def record(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def granted_domain(self, domain: str | None) -> str:
        """``domain``, else the one domain this organization was granted (DOMAIN_REQUIRED when it has several)."""
        if domain:
            return domain
        granted = read_json(self.record("enrollment"), {}).get("domains", [])
        if len(granted) == 1:
            return granted[0]
        raise BarFedError(
            "DOMAIN_REQUIRED",
            f"this organization may publish {granted or 'no domain yet'}; name one with --domain.",
        )

    def package_versions(self, domain: str) -> list[int]:
        """Versions of the packages built here for ``domain``, ascending."""
        found = []
        for path in (self.root / "packages").glob(f"{domain}-v*"):
            suffix = path.name.removeprefix(f"{domain}-v")
            if suffix.isdigit() and path.is_dir():
                found.append(int(suffix))
        return sorted(found)


def read_json(path: Path, default=None):
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
