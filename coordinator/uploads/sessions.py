"""Resumable uploads: declared files, chunks at explicit offsets, durable progress, atomic hand-over.

The registry records each file's *durable* length (bytes fsynced to staging). A chunk must start exactly
there; after any crash (client or coordinator) the client asks for those offsets and continues. Bytes past
the durable length are cut off on resume, so nothing half-written is ever trusted. On commit every file is
checked against its declared size and sha256 (hashed as it streams in) and moved into the blob store; only
then does a submission exist.

One stream or commit works on a session at a time: a second one is told ``SESSION_BUSY`` at once rather
than made to wait, so no caller can pile threads up behind a stalled stream (a new stream of the organization
takes a session a stream holds over instead, `coordinator.grpc.streams`). This module is the session's
life (create, write, commit, fail, expire); what is declared, who may upload what, staged bytes and the
chunk writer each live in their own module, and every SQL statement in `coordinator.state.uploads`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import uuid

from coordinator.blobs import BlobStore
from coordinator.settings import CoordinatorSettings
from coordinator.state import uploads as records
from coordinator.state.db import Registry
from coordinator.state.models import UploadFile, UploadSession, utcnow
from coordinator.uploads import admission
from coordinator.uploads.declaration import Declared, check_declaration
from coordinator.uploads.staging import DISCARDED, Staging
from coordinator.uploads.writer import ChunkWriter
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE

PENDING_STATES = records.PENDING_STATES


class _SessionLocks:
    """At most one writer or committer per session; locks exist only for sessions someone owns."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._guard = threading.Lock()

    def try_acquire(self, session_id: str) -> bool:
        with self._guard:
            if session_id in self._held:
                return False
            self._held.add(session_id)
            return True

    def release(self, session_id: str) -> None:
        with self._guard:
            self._held.discard(session_id)


def _check_session_id(session_id: str) -> str:
    try:
        return str(uuid.UUID(session_id))
    except (ValueError, TypeError, AttributeError):
        raise BarFedError("UNKNOWN_SESSION", "that is not an upload session id; create an upload first.") from None


class Uploads:
    def __init__(self, registry: Registry, settings: CoordinatorSettings, blobs: BlobStore) -> None:
        self.registry, self.settings, self.blobs = registry, settings, blobs
        self.staging = Staging(settings.staging_dir)
        self._locks = _SessionLocks()

    def staged(self, session_id: str, path: str):
        return self.staging.path(session_id, path)

    def close(self) -> None:
        """Wait for the deletions under way."""
        self.staging.close()

    # -- create ------------------------------------------------------------------------------

    def create(self, org_id: str, domain: str, version: int, files: list[Declared]) -> str:
        """Open (or, for an identical declaration, reopen) an upload session; returns its id."""
        total = check_declaration(files, self.settings)
        admission.check_version(version)
        now = utcnow()
        with records.creating(self.registry, org_id, now) as tx:
            admission.check_domain(tx, domain, version)
            admission.check_pending(tx.pending_submissions(), org_id, self.settings)
            if (existing := admission.same_declaration(tx, domain, version, files)) is not None:
                return existing  # the node lost its session id; same declaration, same session
            admission.check_sessions(tx, self.settings)
            free = shutil.disk_usage(self.settings.staging_dir).free  # read under the disk lock
            admission.check_quota(tx, total, self.settings)
            admission.check_disk(tx, total, free, self.settings)
            session_id = str(uuid.uuid4())
            # an idle reservation lapses after upload_idle_s; each durable checkpoint extends it (up to the ttl)
            expires_at = now + dt.timedelta(seconds=min(self.settings.upload_idle_s, self.settings.session_ttl_s))
            tx.insert(session_id, domain, version, expires_at, [(f.path, f.size, f.sha256) for f in files])
        return session_id

    # -- progress ----------------------------------------------------------------------------

    def progress(self, org_id: str, session_id: str) -> tuple[UploadSession, list[UploadFile]]:
        session_id = _check_session_id(session_id)
        upload, files = records.load(self.registry, session_id)
        if upload is None or upload.org_id != org_id:
            raise BarFedError("UNKNOWN_SESSION", f"there is no upload session {session_id} for {org_id}.")
        return upload, files

    def _claim(self, org_id: str, session_id: str) -> tuple[UploadSession, list[UploadFile]]:
        """Ownership first, then the session's lock (never waited for)."""
        upload, files = self.progress(org_id, session_id)
        if not self._locks.try_acquire(upload.id):
            raise BarFedError(
                "SESSION_BUSY", "another stream or commit is working on this upload; retry when it has finished."
            )
        return upload, files

    @staticmethod
    def _check_open(upload: UploadSession) -> None:
        if upload.state != "open":
            raise BarFedError("SESSION_CLOSED", f"upload {upload.id} is {upload.state}; start a new upload.")
        if upload.expires_at < utcnow():
            raise BarFedError("SESSION_EXPIRED", f"upload {upload.id} expired; start a new upload.")

    # -- write -------------------------------------------------------------------------------

    def writer(self, org_id: str, session_id: str) -> ChunkWriter:
        upload, files = self._claim(org_id, session_id)
        try:
            self._check_open(upload)
        except BaseException:
            self._locks.release(upload.id)
            raise
        return ChunkWriter(
            upload.id,
            files,
            self.staging,
            chunk_bytes=self.settings.chunk_bytes,
            sync_every_bytes=self.settings.sync_every_bytes,
            record_durable=lambda lengths: records.record_durable(
                self.registry, upload.id, lengths, self.settings.upload_idle_s, self.settings.session_ttl_s
            ),
            discard=lambda code: self._fail(upload.id, org_id, code, ""),
            release=lambda: self._locks.release(upload.id),
        )

    # -- commit ------------------------------------------------------------------------------

    def commit(self, org_id: str, session_id: str) -> str:
        """Check every file, move it into the blob store, create the submission; idempotent."""
        upload, files = self._claim(org_id, session_id)
        session_id = upload.id
        try:
            if upload.state == "committed":
                return upload.submission_id
            self._check_open(upload)
            for f in files:
                if f.committed != f.size:
                    raise BarFedError(
                        "UPLOAD_INCOMPLETE",
                        f"{f.path} has {f.committed} of {f.size} bytes; send the rest from offset {f.committed}.",
                    )
            admission.check_pending(records.count_pending(self.registry, org_id), org_id, self.settings)
            self._check_digests(org_id, session_id, files)
            for f in files:  # onto the artifact store, if any, before the lock: the put under it then only checks
                if (staged := self.staged(session_id, f.path)).exists():
                    self.blobs.upload(staged, f.sha256)
            submission_id = str(uuid.uuid4())
            # No garbage collection may decide about these digests meanwhile; the pending limit is checked
            # again under the organization's lock, before a byte moves, in the transaction that inserts.
            with self.blobs.lock, records.committing(self.registry, org_id) as tx:
                admission.check_pending(tx.pending_submissions(), org_id, self.settings)
                for f in files:
                    staged = self.staged(session_id, f.path)
                    if staged.exists():
                        self.blobs.put(staged, f.sha256)
                digest = next(f.sha256 for f in files if f.path == MANIFEST_FILE)
                if not tx.insert(upload, submission_id, {f.path: f.sha256 for f in files}, digest):
                    raise BarFedError("SESSION_CLOSED", f"upload {session_id} was closed meanwhile.")
            self.staging.discard(session_id)
            return submission_id
        finally:
            self._locks.release(session_id)

    def _check_digests(self, org_id: str, session_id: str, files: list[UploadFile]) -> None:
        for f in files:
            staged = self.staged(session_id, f.path)
            if staged.exists():
                digest = self.staging.digest(session_id, f.path, f.committed)
                if digest != f.sha256:  # trust the disk, not a cache
                    digest = self.staging.digest_from_disk(session_id, f.path, f.committed)
            elif self.blobs.exists(f.sha256):
                digest = f.sha256  # moved by a commit that crashed before recording it
            else:
                digest = None
            if digest != f.sha256:
                self._fail(session_id, org_id, "DIGEST_MISMATCH" if digest else "STAGING_LOST", f.path)
                raise BarFedError(
                    "DIGEST_MISMATCH",
                    f"{f.path} does not match its declared sha256; the upload was discarded, upload it again.",
                )

    def _fail(self, session_id: str, org_id: str, code: str, path: str) -> None:
        """Discard an upload that cannot be trusted (the caller holds its lock)."""
        records.close(self.registry, session_id, "failed", org_id, "upload.fail", code=code, path=path)
        self.staging.discard(session_id)

    def expire(self, now: dt.datetime | None = None) -> int:
        """Remove abandoned sessions (past their expiry) and their staged bytes; returns how many."""
        expired = 0
        for session_id in records.expired_open(self.registry, now or utcnow()):
            if not self._locks.try_acquire(session_id):
                continue  # in use right now; the next sweep will see it
            try:
                if records.close(self.registry, session_id, "expired", "coordinator", "upload.expire"):
                    self.staging.discard(session_id)
                    expired += 1
            finally:
                self._locks.release(session_id)
        return expired

    def collect_orphans(self) -> int:
        """Delete blobs nothing references (e.g. kept for a session that then failed); returns how many. Runs
        under the store's lock, which commits and rejections also take, so no digest changes hands meanwhile."""
        with self.blobs.lock:
            return self.blobs.collect_orphans(records.referenced_digests(self.registry))


__all__ = ["DISCARDED", "PENDING_STATES", "ChunkWriter", "Declared", "Uploads"]
