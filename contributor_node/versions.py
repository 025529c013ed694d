"""Which expert and package a command works on when the user names none, from what this node has trained, built
and recorded: the newest expert, the package already built from the same expert and data (else the next version
no package or submission of the domain has used), the newest package."""

from __future__ import annotations

from pathlib import Path

from contributor_node.home import NodeHome, read_json
from protocol.errors import BarFedError


def training_start(home: NodeHome, domain: str, version: int, from_version: int | None) -> Path:
    """Where training v``version`` starts: the anchor, or the earlier expert ``from_version`` it improves."""
    if from_version is None:
        return home.anchor
    start = home.expert(domain, from_version)
    if from_version >= version or not start.is_dir():
        raise BarFedError(
            "BAD_VERSION",
            f"--from-version must name an earlier expert this node trained (have: "
            f"{home.expert_versions(domain) or 'none'}); train v{version} from one of them.",
        )
    return start


def expert_to_package(home: NodeHome, domain: str, expert_version: int | None) -> int:
    """``expert_version`` if this node trained it, else the newest expert (NO_EXPERT when there is none)."""
    trained = home.expert_versions(domain)
    if not trained or (expert_version is not None and expert_version not in trained):
        raise BarFedError(
            "NO_EXPERT",
            f"no {domain} expert {f'v{expert_version} ' if expert_version else ''}on this node; "
            "run `barfed node train` first.",
        )
    return expert_version or trained[-1]


def package_version(home: NodeHome, domain: str, made: dict, version: int | None) -> int:
    """``version``, else the newest package built from what ``made`` describes (so a rerun finds it built), else
    one past every package and submission of ``domain``: a version the coordinator has not seen from us."""
    if version is not None:
        return version
    built = read_json(home.record("packages"), {})
    mine = [v for v in home.package_versions(domain) if built.get(f"{domain}-v{v}") == made]
    submitted = [s["version"] for s in read_json(home.record("submissions"), {}).values() if s["domain"] == domain]
    return mine[-1] if mine else max([*home.package_versions(domain), *submitted], default=0) + 1


def package_to_submit(home: NodeHome, domain: str, version: int | None) -> int:
    """``version`` if that package is built here, else the newest package (NO_PACKAGE when there is none)."""
    versions = home.package_versions(domain)
    if not versions:
        raise BarFedError("NO_PACKAGE", f"no {domain} package on this node; run `barfed node package`.")
    version = version or versions[-1]
    if not home.package(domain, version).is_dir():
        raise BarFedError(
            "NO_PACKAGE",
            f"no package {domain}-v{version} on this node; run `barfed node package --version {version}`.",
        )
    return version
