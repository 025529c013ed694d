"""What the coordinator's work runs against, built once per process and passed in whole: its settings, registry,
blob store, keys, the dispatcher that sends a queued job to the workers at once, and the object store that
releases are published to."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.blobs import BlobStore
from coordinator.keys import CoordinatorKeys
from coordinator.settings import CoordinatorSettings
from coordinator.state.db import Registry
from coordinator.storage import ObjectStore
from coordinator.tasks.dispatch import Dispatcher


@dataclass
class Runtime:
    """The collaborators of the gRPC servicer, the REST API, the job handlers and the operator's commands; nothing
    builds its own. ``dispatcher`` is None where no broker is at hand: the coordinator's sweeper sends the job."""

    settings: CoordinatorSettings
    registry: Registry
    blobs: BlobStore
    keys: CoordinatorKeys
    dispatcher: Dispatcher | None = None
    store: ObjectStore | None = None  # where releases are published too: made from artifact_store when unset

    def __post_init__(self) -> None:
        if self.store is None and self.settings.artifact_store:
            self.store = ObjectStore(self.settings)
        if self.store is not None:  # home/blobs becomes a cache of the store's
            self.blobs.mirror_to(self.store, int(self.settings.cache_max_gb * 2**30))

    @classmethod
    def from_settings(cls, settings: CoordinatorSettings, dispatcher: Dispatcher | None = None) -> Runtime:
        return cls(
            settings,
            Registry(settings.db_url),
            BlobStore(settings.blob_dir),
            CoordinatorKeys(settings.pki_dir),
            dispatcher,
        )

    def dispatch(self, job_id: int) -> bool:
        """Send a queued job to the workers now; False when it could not (the sweeper sends it within
        ``sweep_interval_s``, since the job's row, not the message, is what counts)."""
        return self.dispatcher is not None and self.dispatcher.dispatch(job_id)

    def close(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.registry.dispose()
