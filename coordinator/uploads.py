"""Resumable uploads: declared files, chunks at explicit offsets, durable progress, atomic hand-over.

The registry records each file's *durable* length (bytes fsynced to staging). A chunk must start exactly
there; after any crash (client or coordinator) the client asks for those offsets and continues. Bytes past
the durable length are cut off on resume, so nothing half-written is ever trusted. On commit every file is
checked against its declared size and sha256 (hashed as it streams in) and moved into the blob store; only
then does a submission exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from coordinator import audit
from coordinator.blobs import BlobStore, fsync_file
from coordinator.db import Registry
from coordinator.models import Domain, Expert, Job, Submission, UploadFile, UploadSession, utcnow
from coordinator.settings import CoordinatorSettings
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, OPTIONAL_FILES, SIGNATURE_FILE, check_relative_path

HASH_BLOCK = 4 * 1024**2


@dataclass(frozen=True)
class Declared:
    path: str
    size: int
    sha256: str


def _allowed_name(path: str) -> bool:
    return path in (MANIFEST_FILE, SIGNATURE_FILE, "model.safetensors.index.json", *OPTIONAL_FILES) or path.endswith(
        ".safetensors"
    )


class _Hashers:
    """Running sha256 of each staged file, valid while this process lives; rebuilt from disk otherwise."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], tuple[int, object]] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str, path: str, staged: Path, length: int):
        with self._lock:
            position, hasher = self._state.get((session_id, path), (-1, None))
        if position != length:
            hasher = hashlib.sha256()
            with open(staged, "rb") if staged.exists() else open(os.devnull, "rb") as fh:
                remaining = length
                while remaining > 0:
                    block = fh.read(min(HASH_BLOCK, remaining))
                    if not block:
                        break
                    hasher.update(block)
                    remaining -= len(block)
        return hasher

    def put(self, session_id: str, path: str, length: int, hasher) -> None:
        with self._lock:
            self._state[(session_id, path)] = (length, hasher)

    def drop(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == session_id]:
                del self._state[key]


class Uploads:
    def __init__(self, registry: Registry, settings: CoordinatorSettings, blobs: BlobStore) -> None:
        self.registry, self.settings, self.blobs = registry, settings, blobs
        self.settings.staging_dir.mkdir(parents=True, exist_ok=True)
        self._hashers = _Hashers()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(session_id, threading.Lock())

    def staged(self, session_id: str, path: str) -> Path:
        return self.settings.staging_dir / session_id / path

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
                check_relative_path(f.path)
            except ValueError as exc:
                raise BarFedError("BAD_PATH", f"{f.path!r}: {exc}.") from None
            if not _allowed_name(f.path):
                raise BarFedError("FILE_NOT_ALLOWED", f"{f.path} is not a file an expert package may hold.")
            if f.size <= 0 or f.size > limits.max_file_bytes:
                raise BarFedError(
                    "FILE_TOO_LARGE" if f.size > 0 else "BAD_FILE_LIST",
                    f"{f.path} declares {f.size} bytes; files must hold 1 to {limits.max_file_bytes} bytes.",
                )
            if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
                raise BarFedError("BAD_DIGEST", f"{f.path}: sha256 must be 64 lowercase hex characters.")
        if sum(f.size for f in files) > limits.max_package_bytes:
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

    def create(self, org_id: str, domain: str, version: int, files: list[Declared]) -> str:
        """Open (or, for an identical declaration, reopen) an upload session; returns its id."""
        self._check_declaration(files)
        if version < 1:
            raise BarFedError("BAD_VERSION", "versions start at 1.")
        with self.registry.session() as session:
            owner = session.get(Domain, domain)
            if owner is None or owner.org_id != org_id:
                raise BarFedError(
                    "DOMAIN_NOT_OWNED", f"organization {org_id} may not publish domain {domain!r}; ask the operator."
                )
            latest = session.scalar(select(func.max(Expert.version)).where(Expert.domain == domain)) or 0
            if version <= latest:
                raise BarFedError(
                    "VERSION_NOT_NEWER",
                    f"{domain} is already at version {latest}; submit version {latest + 1} or later.",
                )
            declared = {f.path: (f.size, f.sha256) for f in files}
            open_sessions = session.scalars(
                select(UploadSession).where(UploadSession.org_id == org_id, UploadSession.state == "open")
            ).all()
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
                    expires_at=utcnow() + dt.timedelta(seconds=self.settings.session_ttl_s),
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

    # -- progress ----------------------------------------------------------------------------

    def _open_session(self, session, org_id: str, session_id: str) -> UploadSession:
        upload = session.get(UploadSession, session_id)
        if upload is None or upload.org_id != org_id:
            raise BarFedError("UNKNOWN_SESSION", f"there is no upload session {session_id} for {org_id}.")
        return upload

    def progress(self, org_id: str, session_id: str) -> tuple[UploadSession, list[UploadFile]]:
        with self.registry.session() as session:
            upload = self._open_session(session, org_id, session_id)
            files = session.scalars(
                select(UploadFile).where(UploadFile.session_id == session_id).order_by(UploadFile.path)
            ).all()
            return upload, list(files)

    # -- write -------------------------------------------------------------------------------

    def writer(self, org_id: str, session_id: str) -> ChunkWriter:
        return ChunkWriter(self, org_id, session_id)

    # -- commit ------------------------------------------------------------------------------

    def commit(self, org_id: str, session_id: str) -> str:
        """Check every file, move it into the blob store, create the submission; idempotent."""
        with self._lock(session_id):
            upload, files = self.progress(org_id, session_id)
            if upload.state == "committed":
                return upload.submission_id
            if upload.state != "open":
                raise BarFedError("SESSION_CLOSED", f"upload {session_id} is {upload.state}; start a new upload.")
            for f in files:
                if f.committed != f.size:
                    raise BarFedError(
                        "UPLOAD_INCOMPLETE",
                        f"{f.path} has {f.committed} of {f.size} bytes; send the rest from offset {f.committed}.",
                    )
            digests: dict[str, str] = {}
            for f in files:
                staged = self.staged(session_id, f.path)
                if not staged.exists() and self.blobs.exists(f.sha256):
                    digests[f.path] = f.sha256  # moved by a commit that crashed before recording it
                    continue
                digest = self._hashers.get(session_id, f.path, staged, f.committed).hexdigest()
                if digest != f.sha256:
                    self._fail(session_id, org_id, "DIGEST_MISMATCH", f.path)
                    raise BarFedError(
                        "DIGEST_MISMATCH",
                        f"{f.path} does not match its declared sha256; the upload was discarded, upload it again.",
                    )
                digests[f.path] = digest
            for f in files:
                staged = self.staged(session_id, f.path)
                if staged.exists():
                    self.blobs.put(staged, f.sha256)
            submission_id = str(uuid.uuid4())
            with self.registry.session() as session:
                upload = session.get(UploadSession, session_id)
                session.add(
                    Submission(
                        id=submission_id,
                        org_id=org_id,
                        domain=upload.domain,
                        version=upload.version,
                        files=digests,
                        package_digest=digests[MANIFEST_FILE],
                    )
                )
                session.flush()
                upload.state, upload.submission_id = "committed", submission_id
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
            shutil.rmtree(self.settings.staging_dir / session_id, ignore_errors=True)
            self._hashers.drop(session_id)
            return submission_id

    def _fail(self, session_id: str, org_id: str, code: str, path: str) -> None:
        with self.registry.session() as session:
            upload = session.get(UploadSession, session_id)
            upload.state = "failed"
            audit.record(session, org_id, "upload.fail", session_id, code=code, path=path)
        shutil.rmtree(self.settings.staging_dir / session_id, ignore_errors=True)
        self._hashers.drop(session_id)

    def expire(self, now: dt.datetime | None = None) -> int:
        """Remove abandoned sessions (past their expiry) and their staged bytes; returns how many."""
        now = now or utcnow()
        with self.registry.session() as session:
            stale = session.scalars(select(UploadSession).where(UploadSession.state == "open")).all()
            stale = [s for s in stale if _aware(s.expires_at) < now]
            for upload in stale:
                upload.state = "expired"
                audit.record(session, "coordinator", "upload.expire", upload.id, org=upload.org_id)
        for upload in stale:
            shutil.rmtree(self.settings.staging_dir / upload.id, ignore_errors=True)
            self._hashers.drop(upload.id)
        return len(stale)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class ChunkWriter:
    """Writes one stream of chunks to staging; progress becomes durable at checkpoints and at close."""

    def __init__(self, uploads: Uploads, org_id: str, session_id: str) -> None:
        self.uploads, self.org_id, self.session_id = uploads, org_id, session_id
        self._lock = uploads._lock(session_id)
        self._lock.acquire()
        try:
            upload, files = uploads.progress(org_id, session_id)
            if upload.state != "open":
                raise BarFedError("SESSION_CLOSED", f"upload {session_id} is {upload.state}; start a new upload.")
            if _aware(upload.expires_at) < utcnow():
                raise BarFedError("SESSION_EXPIRED", f"upload {session_id} expired; start a new upload.")
        except BaseException:
            self._lock.release()
            raise
        self.files = {f.path: f for f in files}
        self.length = {f.path: f.committed for f in files}  # bytes written (durable or not)
        self.durable = dict(self.length)
        self._handles: dict[str, object] = {}
        self._hash = {}
        self._unsynced = 0
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
        if path not in self.files:
            raise BarFedError("UNKNOWN_FILE", f"{path!r} was not declared in this upload.")
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
            self.checkpoint()

    def checkpoint(self) -> None:
        """fsync what was written and record it as durable (what a resuming client may rely on)."""
        changed = {p: n for p, n in self.length.items() if n != self.durable[p]}
        if not changed:
            return
        for path in changed:
            fh = self._handles[path]
            fh.flush()
            os.fsync(fh.fileno())
        with self.uploads.registry.session() as session:
            for path, length in changed.items():
                row = session.get(UploadFile, (self.session_id, path))
                row.committed = length
        for path, length in changed.items():
            self.durable[path] = length
            self.uploads._hashers.put(self.session_id, path, length, self._hash[path].copy())
        self._unsynced = 0

    def close(self) -> dict[str, int]:
        try:
            if self.failed is None:
                self.checkpoint()
        finally:
            for fh in self._handles.values():
                fh.close()
            self._lock.release()
        if self.failed is not None:  # a lying upload is discarded, not kept for resumption
            self.uploads._fail(self.session_id, self.org_id, self.failed, "")
        return dict(self.durable)


__all__ = ["ChunkWriter", "Declared", "Uploads", "fsync_file"]
