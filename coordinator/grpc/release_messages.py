"""Releases as gRPC messages: the event a watching node hears, and how much of a domain's expert a release keeps
(only the watching organization's own domains: what the node's operator needs to see)."""

from __future__ import annotations

from coordinator.state.models import Release
from protocol.v1 import barfed_pb2 as pb


def retention_message(release: Release | None, domain: str) -> pb.DomainRetention | None:
    entry = (release.retention or {}).get(domain) if release is not None else None
    if entry is None:
        return None
    return pb.DomainRetention(domain=domain, **{k: v for k, v in entry.items() if v is not None})


def release_event(release: Release, channels: list[str], own_domains: list[str]) -> pb.ReleaseEvent:
    kept = [retention_message(release, d) for d in own_domains]
    return pb.ReleaseEvent(
        release=release.number,
        name=f"r{release.number}",
        channels=channels,
        manifest_sha256=release.manifest_sha256,
        published_at_unix=int(release.published_at.timestamp()),
        domains=list(release.domains),
        retention=[k for k in kept if k is not None],
    )
