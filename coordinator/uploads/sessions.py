"""Resumable uploads: declared files, chunks at explicit offsets, durable progress, atomic hand-over.

The registry records each file's *durable* length (bytes fsynced to staging). A chunk must start exactly
there; after any crash (client or coordinator) the client asks for those offsets and continues. Bytes past
the durable length are cut off on resume, so nothing half-written is ever trusted. On commit every file is
checked against its declared size and sha256 (hashed as it streams in) and moved into the blob store; only
then does a submission exist.

One stream or commit works on a session at a time: a second one is told ``SESSION_BUSY`` at once rather
than made to wait, so no caller can pile threads up behind a stalled stream.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update

from coordinator.blobs import BlobStore
from coordinator.settings import CoordinatorSettings
from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Domain, Expert, Job, Submission, UploadFile, UploadSession, utcnow
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, OPTIONAL_FILES, SIGNATURE_FILE, check_file_name

HASH_BLOCK = 4 * 1024**2
PENDING_STATES = ("RECEIVED", "VERIFYING")
DISCARDED = ".discarded"  # staging/.discarded/<session>: staged files on their way out


@dataclass(frozen=True)
class Declared:
    path: str
    size: int
    sha256: str


def _allowed_name(path: str) -> bool:
    return path in (MANIFEST_FILE, SIGNATURE_FILE, "model.safetensors.index.json", *OPTIONAL_FILES) or path.endswith(
        ".safetensors"
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _hash_prefix(path: Path, length: int):
    hasher = hashlib.sha256()
    if length and path.exists():
        with open(path, "rb") as fh:
            remaining = length
            while remaining > 0 and (block := fh.read(min(HASH_BLOCK, remaining))):
                hasher.update(block)
                remaining -= len(block)
    return hasher


class _Hashers:
    """sha256 state of each staged file's durable prefix, kept while this process lives (copies in, copies out)."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], tuple[int, object]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str, path: str, staged: Path, length: int):
        with self._lock:
            position, hasher = self._state.get((session_id, path), (-1, None))
            if position == length:
                return hasher.copy()
        return _hash_prefix(staged, length)

    def put(self, session_id: str, path: str, length: int, hasher) -> None:
        with self._lock:
            self._state[(session_id, path)] = (length, hasher.copy())

    def drop(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == session_id]:
                del self._state[key]


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
        self._discarded = self.settings.staging_dir / DISCARDED
        shutil.rmtree(self._discarded, ignore_errors=True)  # left by a process that stopped before deleting them
        self._discarded.mkdir(parents=True, exist_ok=True)
        self._hashers = _Hashers()
        self._locks = _SessionLocks()
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-delete")

    def staged(self, session_id: str, path: str) -> Path:
        return self.settings.staging_dir / session_id / path

    def _discard_staging(self, session_id: str) -> None:
        """Take a session's staged files out of the way at once and delete them on a thread of their own.

        Freeing a GiB just written takes ext4 most of a second (0.4-0.8 s measured), which a commit's caller
        need not wait for; the bytes are garbage from the moment the rename lands, and a process stopped
        before deleting them leaves them in ``.discarded``, emptied at the next start.
        """
        target = self._discarded / session_id
        try:
            os.replace(self.settings.staging_dir / session_id, target)
        except FileNotFoundError:
            return
        except OSError:  # the way out is blocked: delete in place, as before
            shutil.rmtree(self.settings.staging_dir / session_id, ignore_errors=True)
            return
        self._deleter.submit(shutil.rmtree, target, ignore_errors=True)

    def close(self) -> None:
        """Wait for the deletions under way."""
        self._deleter.shutdown(wait=True)

    # -- create ------------------------------------------------------------------------------

    def _check_declaration(self, files: list[Declared]) -> None:
        limits = self.settings
        if not files or len(files) > limits.max_files:
            raise BarFedError("BAD_FILE_LIST", f"declare between 1 and {limits.max_files} files.")
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise BarFedError("BAD_FILE_LIST", "a file is declared twice; declare each file once.")
        for f in files:
            try:
                check_file_name(f.path)
            except ValueError as exc:
                raise BarFedError("BAD_PATH", f"{exc}.") from None
            if not _allowed_name(f.path):
                raise BarFedError("FILE_NOT_ALLOWED", f"{f.path} is not a file an expert package may hold.")
            if f.size <= 0 or f.size > limits.max_file_bytes:
                raise BarFedError(
                    "FILE_TOO_LARGE" if f.size > 0 else "BAD_FILE_LIST",
                    f"{f.path} declares {f.size} bytes; files must hold 1 to {limits.max_file_bytes} bytes.",
                )
            if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
                raise BarFedError("BAD_DIGEST", f"{f.path}: sha256 must be 64 lowercase hex characters.")
        total = sum(f.size for f in files)
        if total > limits.max_package_bytes:
            raise BarFedError("PACKAGE_TOO_LARGE", f"the package exceeds {limits.max_package_bytes} bytes.")
        if (
            MANIFEST_FILE not in paths
            or SIGNATURE_FILE not in paths
            or not any(p.endswith(".safetensors") for p in paths)
        ):
            raise BarFedError(
                "PACKAGE_INCOMPLETE",
                f"a package holds {MANIFEST_FILE}, {SIGNATURE_FILE} and at least one .safetensors.",
            )
        free = shutil.disk_usage(self.settings.staging_dir).free
        if free < total + limits.min_free_bytes:
            raise BarFedError(
                "INSUFFICIENT_STORAGE", "the coordinator lacks the disk space for this upload now; try again later."
            )

    def create(self, org_id: str, domain: str, version: int, files: list[Declared]) -> str:
        """Open (or, for an identical declaration, reopen) an upload session; returns its id."""
        self._check_declaration(files)
        if version < 1:
            raise BarFedError("BAD_VERSION", "versions start at 1.")
        now = utcnow()
        with self.registry.session() as session:
            owner = session.get(Domain, domain)
            if owner is None or owner.org_id != org_id:
                raise BarFedError(
                    "DOMAIN_NOT_OWNED",
                    f"organization {org_id} may not publish domain {domain[:64]!r}; ask the operator.",
                )
            latest = session.scalar(select(func.max(Expert.version)).where(Expert.domain == domain)) or 0
            if version <= latest:
                raise BarFedError(
                    "VERSION_NOT_NEWER",
                    f"{domain} is already at version {latest}; submit version {latest + 1} or later.",
                )
            self._check_pending(session, org_id)
            declared = {f.path: (f.size, f.sha256) for f in files}
            open_sessions = [
                s
                for s in session.scalars(
                    select(UploadSession).where(UploadSession.org_id == org_id, UploadSession.state == "open")
                )
                if _aware(s.expires_at) > now
            ]
            for existing in open_sessions:
                rows = session.scalars(select(UploadFile).where(UploadFile.session_id == existing.id)).all()
                if (existing.domain, existing.version) == (domain, version) and {
                    r.path: (r.size, r.sha256) for r in rows
                } == declared:
                    return existing.id  # the node lost its session id; same declaration, same session
            if len(open_sessions) >= self.settings.max_open_sessions_per_org:
                raise BarFedError(
                    "TOO_MANY_SESSIONS",
                    f"organization {org_id} already has {len(open_sessions)} open uploads; finish or wait for them.",
                )
            session_id = str(uuid.uuid4())
            session.add(
                UploadSession(
                    id=session_id,
                    org_id=org_id,
                    domain=domain,
                    version=version,
                    expires_at=now + dt.timedelta(seconds=self.settings.session_ttl_s),
                )
            )
            session.flush()
            for f in files:
                session.add(UploadFile(session_id=session_id, path=f.path, size=f.size, sha256=f.sha256))
            audit.record(
                session,
                org_id,
                "upload.create",
                session_id,
                domain=domain,
                version=version,
                files=len(files),
                bytes=sum(f.size for f in files),
            )
        return session_id

    def _check_pending(self, session, org_id: str) -> None:
        pending = session.scalar(
            select(func.count())
            .select_from(Submission)
            .where(Submission.org_id == org_id, Submission.state.in_(PENDING_STATES))
        )
        if pending >= self.settings.max_pending_submissions_per_org:
            raise BarFedError(
                "TOO_MANY_PENDING",
                f"organization {org_id} has {pending} submissions awaiting verification; wait for their outcome.",
            )

    # -- progress ----------------------------------------------------------------------------

    def progress(self, org_id: str, session_id: str) -> tuple[UploadSession, list[UploadFile]]:
        session_id = _check_session_id(session_id)
        with self.registry.session() as session:
            upload = session.get(UploadSession, session_id)
            if upload is None or upload.org_id != org_id:
                raise BarFedError("UNKNOWN_SESSION", f"there is no upload session {session_id} for {org_id}.")
            files = session.scalars(
                select(UploadFile).where(UploadFile.session_id == session_id).order_by(UploadFile.path)
            ).all()
            return upload, list(files)

    def _claim(self, org_id: str, session_id: str) -> tuple[UploadSession, list[UploadFile]]:
        """Ownership first, then the session's lock (never waited for)."""
        upload, files = self.progress(org_id, session_id)
        if not self._locks.try_acquire(upload.id):
            raise BarFedError(
                "SESSION_BUSY", "another stream or commit is working on this upload; retry when it has finished."
            )
        return upload, files

    # -- write -------------------------------------------------------------------------------

    def writer(self, org_id: str, session_id: str) -> ChunkWriter:
        upload, files = self._claim(org_id, session_id)
        try:
            if upload.state != "open":
                raise BarFedError("SESSION_CLOSED", f"upload {upload.id} is {upload.state}; start a new upload.")
            if _aware(upload.expires_at) < utcnow():
                raise BarFedError("SESSION_EXPIRED", f"upload {upload.id} expired; start a new upload.")
        except BaseException:
            self._locks.release(upload.id)
            raise
        return ChunkWriter(self, org_id, upload.id, files)

    # -- commit ------------------------------------------------------------------------------

    def commit(self, org_id: str, session_id: str) -> str:
        """Check every file, move it into the blob store, create the submission; idempotent."""
        upload, files = self._claim(org_id, session_id)
        session_id = upload.id
        try:
            if upload.state == "committed":
                return upload.submission_id
            if upload.state != "open":
                raise BarFedError("SESSION_CLOSED", f"upload {session_id} is {upload.state}; start a new upload.")
            if _aware(upload.expires_at) < utcnow():
                raise BarFedError("SESSION_EXPIRED", f"upload {session_id} expired; start a new upload.")
            for f in files:
                if f.committed != f.size:
                    raise BarFedError(
                        "UPLOAD_INCOMPLETE",
                        f"{f.path} has {f.committed} of {f.size} bytes; send the rest from offset {f.committed}.",
                    )
            with self.registry.session() as session:
                self._check_pending(session, org_id)
            for f in files:
                staged = self.staged(session_id, f.path)
                if staged.exists():
                    digest = self._hashers.get(session_id, f.path, staged, f.committed).hexdigest()
                    if digest != f.sha256:
                        digest = _hash_prefix(staged, f.committed).hexdigest()  # trust the disk, not a cache
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
            submission_id = str(uuid.uuid4())
            with self.blobs.lock:  # no garbage collection may decide about these digests meanwhile
                for f in files:
                    staged = self.staged(session_id, f.path)
                    if staged.exists():
                        self.blobs.put(staged, f.sha256)
                with self.registry.session() as session:
                    session.add(
                        Submission(
                            id=submission_id,
                            org_id=org_id,
                            domain=upload.domain,
                            version=upload.version,
                            files={f.path: f.sha256 for f in files},
                            package_digest=next(f.sha256 for f in files if f.path == MANIFEST_FILE),
                        )
                    )
                    session.flush()
                    changed = session.execute(
                        update(UploadSession)
                        .where(UploadSession.id == session_id, UploadSession.state == "open")
                        .values(state="committed", submission_id=submission_id)
                    ).rowcount
                    if changed != 1:
                        raise BarFedError("SESSION_CLOSED", f"upload {session_id} was closed meanwhile.")
                    session.add(Job(kind="verify", key=submission_id))
                    audit.record(
                        session,
                        org_id,
                        "upload.commit",
                        session_id,
                        submission=submission_id,
                        domain=upload.domain,
                        version=upload.version,
                    )
            self._discard_staging(session_id)
            self._hashers.drop(session_id)
            return submission_id
        finally:
            self._locks.release(session_id)

    def _fail(self, session_id: str, org_id: str, code: str, path: str) -> None:
        """Discard an upload that cannot be trusted (the caller holds its lock)."""
        self._close(session_id, "failed", org_id, "upload.fail", code=code, path=path)
        self._discard_staging(session_id)
        self._hashers.drop(session_id)

    def _close(self, session_id: str, state: str, actor: str, action: str, **details) -> bool:
        """Move an open session to ``state`` and audit it; False when it was no longer open."""
        with self.registry.session() as session:
            changed = session.execute(
                update(UploadSession)
                .where(UploadSession.id == session_id, UploadSession.state == "open")
                .values(state=state)
            ).rowcount
            if changed:
                audit.record(session, actor, action, session_id, **details)
        return bool(changed)

    def expire(self, now: dt.datetime | None = None) -> int:
        """Remove abandoned sessions (past their expiry) and their staged bytes; returns how many."""
        now = now or utcnow()
        with self.registry.session() as session:
            candidates = [
                s.id
                for s in session.scalars(select(UploadSession).where(UploadSession.state == "open"))
                if _aware(s.expires_at) < now
            ]
        expired = 0
        for session_id in candidates:
            if not self._locks.try_acquire(session_id):
                continue  # in use right now; the next sweep will see it
            try:
                if self._close(session_id, "expired", "coordinator", "upload.expire"):
                    self._discard_staging(session_id)
                    self._hashers.drop(session_id)
                    expired += 1
            finally:
                self._locks.release(session_id)
        return expired


class ChunkWriter:
    """Writes one stream of chunks to staging; progress becomes durable at checkpoints and at close.

    A checkpoint fsyncs what was written and only then records those lengths (and hash states) as durable.
    It runs on its own thread while the next chunks arrive, so the disk works while the network does; the
    next checkpoint waits for the previous one, so durable progress trails the stream by at most two
    intervals. ``write`` and ``close`` are serialised, so closing a stream whose client vanished waits for
    the chunk being written and records it together with its hash.
    """

    def __init__(self, uploads: Uploads, org_id: str, session_id: str, files: list[UploadFile]) -> None:
        self.uploads, self.org_id, self.session_id = uploads, org_id, session_id
        self.files = {f.path: f for f in files}
        self.length = {f.path: f.committed for f in files}  # bytes written (durable or not)
        self.durable = dict(self.length)
        self._handles: dict[str, object] = {}
        self._hash: dict[str, object] = {}
        self._unsynced = 0
        self._io = threading.Lock()
        self._closed = False
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-sync")
        self._checkpointing: Future | None = None
        self.failed: str | None = None  # set when the upload must be discarded rather than resumed

    def _handle(self, path: str):
        if path not in self._handles:
            staged = self.uploads.staged(self.session_id, path)
            staged.parent.mkdir(parents=True, exist_ok=True)
            fh = open(staged, "r+b" if staged.exists() else "w+b")  # noqa: SIM115 (closed in close())
            fh.truncate(self.durable[path])  # bytes past the durable length were never acknowledged
            fh.seek(self.durable[path])
            self._handles[path] = fh
            self._hash[path] = self.uploads._hashers.get(self.session_id, path, staged, self.durable[path])
        return self._handles[path]

    def write(self, path: str, offset: int, data: bytes) -> None:
        with self._io:
            if self._closed:
                raise BarFedError("SESSION_CLOSED", "this stream is closed.")
            if path not in self.files:
                raise BarFedError("UNKNOWN_FILE", f"{path[:200]!r} was not declared in this upload.")
            if not data or len(data) > self.uploads.settings.chunk_bytes:
                raise BarFedError(
                    "CHUNK_TOO_LARGE" if data else "EMPTY_CHUNK",
                    f"chunks carry 1 to {self.uploads.settings.chunk_bytes} bytes; this one has {len(data)}.",
                )
            if offset != self.length[path]:
                raise BarFedError(
                    "OFFSET_MISMATCH",
                    f"{path} continues at offset {self.length[path]}, not {offset}; ask for the upload's progress "
                    "and resume from there.",
                )
            if offset + len(data) > self.files[path].size:
                self.failed = "SIZE_EXCEEDED"
                raise BarFedError(
                    "SIZE_EXCEEDED",
                    f"{path} would grow past its declared {self.files[path].size} bytes; the upload was discarded, "
                    "declare the true sizes in a new upload.",
                )
            fh = self._handle(path)
            fh.write(data)
            self._hash[path].update(data)
            self.length[path] += len(data)
            self._unsynced += len(data)
            if self._unsynced >= self.uploads.settings.sync_every_bytes:
                self._wait_for_checkpoint()
                self._checkpointing = self._syncer.submit(self._checkpoint, self._written())
                self._unsynced = 0

    def _written(self) -> dict[str, tuple[int, int, object]]:
        """path -> (file descriptor, length, hash state) of what was written since the last checkpoint."""
        written = {}
        for path, length in self.length.items():
            if length != self.durable[path]:
                fh = self._handles[path]
                fh.flush()  # handed to the OS, so an fsync covers it
                written[path] = (fh.fileno(), length, self._hash[path].copy())
        return written

    def _checkpoint(self, written: dict[str, tuple[int, int, object]]) -> None:
        """fsync ``written`` and only then record it as durable (what a resuming client may rely on)."""
        if not written:
            return
        for fd, _length, _hasher in written.values():
            os.fsync(fd)
        with self.uploads.registry.session() as session:
            for path, (_fd, length, _hasher) in written.items():
                session.get(UploadFile, (self.session_id, path)).committed = length
        for path, (_fd, length, hasher) in written.items():
            self.durable[path] = length
            self.uploads._hashers.put(self.session_id, path, length, hasher)

    def _wait_for_checkpoint(self) -> None:
        """Let the checkpoint in flight finish (raising its error, if it failed)."""
        checkpointing, self._checkpointing = self._checkpointing, None
        if checkpointing is not None:
            checkpointing.result()

    def close(self) -> dict[str, int]:
        with self._io:
            if self._closed:
                return dict(self.durable)
            self._closed = True
            try:
                self._wait_for_checkpoint()
                if self.failed is None:
                    self._checkpoint(self._written())
                else:  # a lying upload is discarded, not kept for resumption
                    self.uploads._fail(self.session_id, self.org_id, self.failed, "")
            finally:
                self._syncer.shutdown(wait=True)  # no fsync may still be using a handle
                for fh in self._handles.values():
                    fh.close()
                self.uploads._locks.release(self.session_id)
        return dict(self.durable)


__all__ = ["ChunkWriter", "Declared", "Uploads"]
