"""What the coordinator's work runs against: its settings, registry, blob store and keys, passed in whole."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.blobs import BlobStore
from coordinator.keys import CoordinatorKeys
from coordinator.settings import CoordinatorSettings
from coordinator.state.db import Registry


@dataclass
class Runtime:
    """What handlers work with, built once per process (or handed over by an embedded coordinator)."""

    settings: CoordinatorSettings
    registry: Registry
    blobs: BlobStore
    keys: CoordinatorKeys

    @classmethod
    def from_settings(cls, settings: CoordinatorSettings) -> Runtime:
        return cls(settings, Registry(settings.db_url), BlobStore(settings.blob_dir), CoordinatorKeys(settings.pki_dir))
