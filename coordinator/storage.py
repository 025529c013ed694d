"""The coordinator's artifacts on an S3-compatible store, when ``artifact_store = "s3://bucket/prefix"`` is set (the
embedded default keeps everything under ``home``). Layout under the prefix:

- ``blobs/sha256/ab/cdef…``: every committed blob (coordinator.blobs mirrors to it, fetches from it);
- ``anchor/``: the published anchor, ``model.sig`` last;
- ``jobs/<id>/``: a running job's scratch (coordinator.tasks.scratch), gone when the job is done;
- ``releases/r<N>/``: every published release, uploaded object by object before its registry row is written,
  ``release.json`` and then ``model.sig`` last, so a release is visible (listed, downloadable) only once every
  object is there; objects a dead worker left are never listed and are cleared by whichever job claims the number.

Objects are created, never overwritten (a conditional put), except a job's scratch; one that exists already with
another sha256 (kept in its metadata) is refused. The API answers a download with a redirect to a short-lived
presigned URL, so the bytes flow from the store, not through it.

The client is obstore (Rust's object_store): bench/object_store_clients.py measured it against boto3 on a 1 GiB
upload and download (docs/PERFORMANCE.md, "The S3 client"). Credentials come from ``s3_credentials_file`` (JSON
with ``access_key_id`` and ``secret_access_key``) or the standard AWS variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from bar_model.durable import fsync_file
from protocol.errors import BarFedError
from protocol.package import SIGNATURE_FILE, file_sha256
from protocol.release import RELEASE_FILE
from protocol.signing import signed_digests

PART = 8 * 1024 * 1024  # multipart part size and streamed download chunk (bench/object_store_clients.py)
CONCURRENCY = 4  # parts in flight per upload
LAST = (RELEASE_FILE, SIGNATURE_FILE)  # uploaded after every other object of a release, in this order
OUTAGE_CODES = ("STORE_UNREACHABLE", "STORE_ACCESS_DENIED")  # the store's failures, not the work's: worth a retry
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: what an object's bytes hash to, so a retried put can compare
OCTETS, CONTENT_TYPES = "application/octet-stream", {".json": "application/json"}


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BarFedError(
                "BAD_ARTIFACT_STORE", f"artifact_store {url!r} is not s3://bucket[/prefix]; leave it empty for home."
            )
        return cls(parts.netloc, parts.path.strip("/"))


class ObjectStore:
    """One bucket and prefix on an S3-compatible server: create-only puts, verified gets, listings, presigned GETs.
    Every failure of the store is a `BarFedError`: STORE_ACCESS_DENIED (credentials) or STORE_UNREACHABLE (after
    obstore's own retries with backoff, for at most ``s3_retry_timeout_s``)."""

    def __init__(self, settings) -> None:
        from obstore.store import S3Store

        self.location = Location.parse(settings.artifact_store)
        self.endpoint = settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"
        retry = {"max_retries": 10, "retry_timeout": _seconds(settings.s3_retry_timeout_s)}
        options = {"region": settings.s3_region, "client_options": {"allow_http": True}, "retry_config": retry}
        credentials = _credentials(settings.s3_credentials_file)
        prefix, bucket = self.location.prefix or None, self.location.bucket
        self._store = S3Store(bucket, prefix=prefix, endpoint=settings.s3_endpoint_url, **credentials, **options)
        public = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        self._signer = S3Store(bucket, prefix=prefix, endpoint=public, **credentials, **options)
        self.expires_s = settings.presign_expires_s

    @contextlib.contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError

        try:
            yield
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise self._denied(what, exc) from None
        except BaseError as exc:
            if " 403 " in str(exc) or "AccessDenied" in str(exc) or "InvalidAccessKeyId" in str(exc):
                raise self._denied(what, exc) from None
            reason = str(exc).splitlines()[0][:300]
            raise BarFedError(
                "STORE_UNREACHABLE",
                f"the artifact store at {self.endpoint} did not complete {what} ({reason}); check s3_endpoint_url "
                f"and that bucket {self.location.bucket} exists and the server is up, then try again.",
            ) from None

    def _denied(self, what: str, exc: Exception) -> BarFedError:
        return BarFedError(
            "STORE_ACCESS_DENIED",
            f"the artifact store at {self.endpoint} refused {what} ({type(exc).__name__}); check "
            f"s3_credentials_file (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that the key may read, write "
            f"and list bucket {self.location.bucket}.",
        )

    def put_file(self, key: str, path: Path, sha256: str, scratch: bool = False, metadata: dict | None = None) -> None:
        """Create ``key`` from ``path`` (whose sha256 the caller knows), the digest kept in the object's metadata;
        an object already there with that digest is this one (the same job's earlier attempt), another is refused:
        objects are never overwritten, except a job's ``scratch`` files (its plan, its step times)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        attributes = {
            "Content-Type": CONTENT_TYPES.get(path.suffix, OCTETS),
            SHA256_METADATA: sha256,
            **(metadata or {}),
        }
        multipart = {"chunk_size": PART, "max_concurrency": CONCURRENCY}
        mode = "overwrite" if scratch else "create"
        with self._reaching(f"the upload of {key}"):
            try:
                obstore.put(self._store, key, path, mode=mode, attributes=attributes, **multipart)
                return
            except (AlreadyExistsError, PreconditionError):
                pass
        if self.sha256(key) != sha256:
            raise BarFedError(
                "STORE_OBJECT_CONFLICT",
                f"{key} exists on the artifact store with other content; objects are never overwritten. "
                "Remove the stray object (no release row points at it) and build again.",
            )

    def sha256(self, key: str) -> str | None:
        """The digest `put_file` recorded in the object's metadata (None: absent, or not written by us)."""
        return (self.metadata(key) or {}).get(SHA256_METADATA)

    def metadata(self, key: str) -> dict | None:
        """What `put_file` recorded with the object (None: absent)."""
        import obstore
        from obstore.exceptions import NotFoundError

        with self._reaching(f"a look at {key}"):
            try:
                return dict(obstore.get(self._store, key, options={"head": True}).attributes)
            except (NotFoundError, FileNotFoundError):  # obstore raises the built-in one for a missing object
                return None

    def sizes(self, prefix: str) -> dict[str, int]:
        """key (relative to ``prefix``) → size of every object under ``prefix/``."""
        import obstore

        found, start = {}, len(prefix.rstrip("/")) + 1
        with self._reaching(f"the listing of {prefix}/"):
            for batch in obstore.list(self._store, prefix.rstrip("/") + "/"):
                found.update({meta["path"][start:]: meta["size"] for meta in batch})
        return found

    def get_file(self, key: str, target: Path, sha256: str | None = None) -> Path:
        """Download ``key`` to ``target`` (streamed, written under a temporary name, renamed when complete and, with
        ``sha256``, only when the bytes hash to it)."""
        import obstore
        from obstore.exceptions import NotFoundError

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
        digest = hashlib.sha256()
        try:
            with self._reaching(f"the download of {key}"), open(partial, "wb") as out:
                try:
                    for chunk in obstore.get(self._store, key).stream(min_chunk_size=PART):
                        digest.update(chunk)
                        out.write(chunk)
                except (NotFoundError, FileNotFoundError):  # obstore raises the built-in one for a missing object
                    raise BarFedError("STORE_OBJECT_MISSING", f"{key} is not on the artifact store.") from None
            if sha256 is not None and digest.hexdigest() != sha256:
                raise BarFedError(
                    "STORE_OBJECT_CORRUPT",
                    f"{key} on the artifact store does not hash to its signed sha256; restore it from a backup.",
                )
            fsync_file(partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def delete(self, keys: list[str]) -> None:
        import obstore

        if keys:
            with self._reaching(f"the removal of {len(keys)} objects"):
                obstore.delete(self._store, keys)

    def presigned_get(self, key: str) -> str:
        import obstore

        with self._reaching(f"signing a URL for {key}"):
            return obstore.sign(self._signer, "GET", key, _seconds(self.expires_s))


def _seconds(value: float):
    from datetime import timedelta

    return timedelta(seconds=value)


def _credentials(path: Path | None) -> dict:
    """From the secret file when set; otherwise obstore reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY itself."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {"access_key_id": data["access_key_id"], "secret_access_key": data["secret_access_key"]}
    except (OSError, ValueError, KeyError, TypeError):
        raise BarFedError(
            "BAD_S3_CREDENTIALS",
            f"s3_credentials_file {path} must be readable JSON with access_key_id and secret_access_key.",
        ) from None


def release_prefix(number: int) -> str:
    return f"releases/r{number}"


ANCHOR_PREFIX = "anchor"


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest[:2]}/{digest[2:]}"


def upload_signed_tree(store: ObjectStore, directory: Path, prefix: str) -> None:
    """Every file of the signed ``directory`` (a release, the anchor) onto the store under ``prefix``, model.sig
    last (release.json just before it): the tree counts as there only once its signature is."""
    digests = {**signed_digests(directory / SIGNATURE_FILE), SIGNATURE_FILE: file_sha256(directory / SIGNATURE_FILE)}
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    ordered = [n for n in names if n not in LAST] + [n for n in LAST if n in names]
    for name in ordered:
        store.put_file(f"{prefix}/{name}", directory / name, digests[name])


def upload_release(store: ObjectStore, directory: Path, number: int) -> None:
    upload_signed_tree(store, directory, release_prefix(number))


def download_signed_tree(store: ObjectStore, prefix: str, target: Path, public_key: bytes) -> Path:
    """The signed tree under ``prefix`` into ``target`` (appearing in one rename, complete): every file checked
    against its signed sha256 and the signature against ``public_key``."""
    from bar_model.durable import atomic_directory
    from protocol.signing import verify_directory

    if store.sha256(f"{prefix}/{SIGNATURE_FILE}") is None:
        raise BarFedError(
            "STORE_OBJECT_MISSING",
            f"{prefix}/ on the artifact store has no {SIGNATURE_FILE}; publish it first "
            "(`barfed coordinator init --anchor` or `storage migrate`).",
        )
    with atomic_directory(target, replace=True) as staging:
        store.get_file(f"{prefix}/{SIGNATURE_FILE}", staging / SIGNATURE_FILE)
        signed = signed_digests(staging / SIGNATURE_FILE)
        for name, digest in signed.items():
            if name.startswith("/") or ".." in name.split("/"):
                raise BarFedError("RELEASE_UNVERIFIED", f"{prefix}/{SIGNATURE_FILE} names {name[:200]!r}, no file.")
            store.get_file(f"{prefix}/{name}", staging / name, digest)
        try:
            verify_directory(staging, public_key, known_digests=signed)
        except BarFedError as exc:
            raise BarFedError(
                exc.code,
                f"{prefix}/ on the artifact store does not verify with this machine's release.pub ({exc.message}); "
                "give every worker the coordinator's release key pair (home/pki/release.key and release.pub).",
            ) from None
    return target
