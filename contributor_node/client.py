"""The node's side of the wire: enroll, fetch the anchor, submit a package resumably, follow its status.

Calls wait for the coordinator to be reachable (gRPC ``wait_for_ready``) unless told not to (the node's commands
do their own waiting, `retry.py`, and want the cause when a call fails), and unary calls are retried by gRPC's
own retry policy unless told not to; an upload interrupted by either side resumes from the offsets the
coordinator reports as durable, so a package crosses an unreliable network or a coordinator restart.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from contributor_node.partial_anchor import PartialAnchor
from contributor_node.retry import CoordinatorUnavailable, CoordinatorUnreachable, backoff_delays, unreachable_cause
from protocol.chunk_wire import encode_chunk, write_chunks
from protocol.errors import BarFedError
from protocol.package import MANIFEST_FILE, file_sha256, read_package
from protocol.signing import verify_directory
from protocol.v1 import barfed_pb2 as pb
from protocol.v1 import barfed_pb2_grpc

log = logging.getLogger(__name__)
ERROR_KEY = "barfed-error-code"
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
)
RESUMABLE = ("OFFSET_MISMATCH", "SESSION_BUSY", "UPLOAD_STALLED")  # the upload goes on from the durable offsets
KEEPALIVE_MS = 60_000  # during a call, ping a coordinator that sent nothing this long (it allows one per 10 s)
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "barfed.v1.Federation"}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
TERMINAL = {pb.ACCEPTED, pb.REJECTED, pb.QUARANTINED, pb.DEPRECATED, pb.OPTED_OUT}


def error_from(exc: grpc.RpcError, address: str, timeout: float | None) -> BarFedError:
    """The project error a coordinator's status carries (retryable when the status is UNAVAILABLE), or
    COORDINATOR_UNREACHABLE saying why."""
    code = dict(exc.trailing_metadata() or ()).get(ERROR_KEY)
    if code:
        coded = CoordinatorUnavailable if exc.code() == grpc.StatusCode.UNAVAILABLE else BarFedError
        return coded(code, exc.details() or "")
    return CoordinatorUnreachable(address, unreachable_cause(exc.code().name, exc.details() or "", timeout))


def _file_state(path: Path) -> tuple[int, int, int]:
    """Size, modification time and inode: what a rewrite of the file changes."""
    state = path.stat()
    return state.st_size, state.st_mtime_ns, state.st_ino


class CoordinatorClient:
    def __init__(
        self,
        address: str,
        *,
        ca_pem: bytes | None = None,
        key_pem: bytes | None = None,
        cert_pem: bytes | None = None,
        plaintext_org: str | None = None,
        timeout: float = 120.0,
        wait_for_ready: bool = True,
        retries: bool = True,
    ) -> None:
        options = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", int(retries)),
            ("grpc.max_reconnect_backoff_ms", 10_000),  # a coordinator back from a restart is found within 10 s
            ("grpc.max_receive_message_length", 8 * 1024**2),
            ("grpc.max_send_message_length", 8 * 1024**2),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),  # a coordinator gone without a word ends the call
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if plaintext_org is not None:
            self.channel = grpc.insecure_channel(address, options=options)
            self.metadata = (("barfed-dev-org", plaintext_org),)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
            )
            self.channel = grpc.secure_channel(address, credentials, options=options)
            self.metadata = ()
        self.stub = barfed_pb2_grpc.FederationStub(self.channel)
        self.address, self.timeout, self.wait_for_ready = address, timeout, wait_for_ready

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, **self._how(self.timeout))
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _how(self, timeout: float | None) -> dict:
        return {"timeout": timeout, "metadata": self.metadata, "wait_for_ready": self.wait_for_ready}

    def _error(self, exc: grpc.RpcError, timeout: float | None = None) -> BarFedError:
        return error_from(exc, self.address, timeout or self.timeout)

    # -- enrollment and anchor ---------------------------------------------------------------

    def enroll(self, org_id: str, csr_pem: bytes, token: str, contact: str = "") -> pb.Enrollment:
        request = pb.EnrollRequest(org_id=org_id, csr_pem=csr_pem.decode(), enrollment_token=token, contact=contact)
        return self._call(self.stub.Enroll, request)

    def enrollment(self, enrollment_id: str) -> pb.Enrollment:
        return self._call(self.stub.GetEnrollment, pb.GetEnrollmentRequest(enrollment_id=enrollment_id))

    def fetch_anchor(
        self,
        target: Path,
        release_public_pem: bytes,
        *,
        on_bytes: Callable[[str, int, int, int], None] | None = None,
    ) -> str:
        """Download the anchor, check sizes, digests and the coordinator's signature, then publish it.

        Bytes land in ``.<target>.partial/``; a rerun after an interruption sends what it already has and the
        coordinator streams only the rest (a completed file is not downloaded again). ``on_bytes(path, received, done,
        size)`` follows each chunk (progress display, rate limit). Nothing under ``target`` exists until every
        file matches the manifest and the signature verifies.
        """
        target = Path(target)
        fetch = PartialAnchor(target.parent / f".{target.name}.partial")
        try:
            try:
                manifest = self._stream_anchor(fetch, on_bytes)
            except BarFedError as exc:
                if exc.code != "ANCHOR_MISMATCH" or fetch.fingerprint is None:
                    raise
                log.warning("the anchor changed since this fetch began; starting over")
                fetch.reset()
                manifest = self._stream_anchor(fetch, on_bytes)
            fetch.check(manifest)
            try:
                verify_directory(fetch.files, release_public_pem)
            except BarFedError as exc:
                fetch.reset()  # intact bytes with a bad signature: the anchor itself is not the coordinator's
                raise BarFedError(
                    "ANCHOR_SIGNATURE_INVALID",
                    f"the anchor served is not signed by the pinned release key ({exc.code}: {exc.message}); "
                    "nothing was kept. Do not train on it: tell the federation operator.",
                ) from None
        except grpc.RpcError as exc:
            raise self._error(exc, 3600) from None
        fetch.publish(target)
        return manifest.fingerprint

    def _stream_anchor(self, fetch: PartialAnchor, on_bytes) -> pb.AnchorManifest:
        request = pb.FetchAnchorRequest(
            fingerprint=fetch.fingerprint or "",
            have=[pb.FileOffset(path=path, offset=size) for path, size in fetch.have().items()],
        )
        manifest = None
        try:
            parts = self.stub.FetchAnchor(request, **self._how(3600))
            for part in parts:
                if part.HasField("manifest"):
                    manifest = part.manifest
                    fetch.start(manifest)
                    continue
                if manifest is None:
                    raise BarFedError("BAD_ANCHOR_STREAM", "the coordinator sent anchor bytes before its manifest.")
                done = fetch.write(part.chunk)
                if on_bytes is not None:
                    on_bytes(part.chunk.path, len(part.chunk.data), done, fetch.size(part.chunk.path))
        finally:
            fetch.close()
        if manifest is None:
            raise BarFedError("BAD_ANCHOR_STREAM", "the coordinator sent no anchor manifest.")
        return manifest

    def anchor_manifest(self, fingerprint: str = "") -> pb.AnchorManifest:
        """The current anchor's manifest, no file bytes (every file is declared as held): ANCHOR_MISMATCH
        when ``fingerprint`` is given and the coordinator now publishes another anchor."""
        request = pb.FetchAnchorRequest(fingerprint=fingerprint)
        try:
            stream = self.stub.FetchAnchor(request, **self._how(self.timeout))
            first = next(stream, None)
            stream.cancel()
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        if first is None or not first.HasField("manifest"):
            raise BarFedError("BAD_ANCHOR_STREAM", "the coordinator sent no anchor manifest.")
        return first.manifest

    # -- submission --------------------------------------------------------------------------

    def submit(
        self,
        package: Path,
        *,
        max_attempts: int = 50,
        chunk_bytes: int | None = None,
        on_chunk: Callable[[str, int, int], None] | None = None,
        session: tuple[str, int] | None = None,
        on_session: Callable[[str, int], None] | None = None,
    ) -> str:
        """Upload and commit ``package``; resumes after interruptions; returns the submission id.

        ``on_chunk(path, offset, nbytes)`` is called before each chunk is sent (progress, speed cap). The package's
        structure and sizes are checked first. Its digests are left to the coordinator, which hashes every byte
        as it arrives and discards an upload that does not match (hashing here too cost the shared machine as
        much CPU as the TLS did); only when it reports ``DIGEST_MISMATCH`` does the node hash its own files, to
        say whether the package itself is at fault. A file touched while it is being sent stops the commit.
        ``session`` (id, max chunk bytes) continues an upload an earlier process began (a node that crashed
        mid-upload); ``on_session(id, max_chunk_bytes)`` hears of a new session before any byte is sent, so the
        caller can persist it.
        """
        package = Path(package)
        manifest = read_package(package, check_digests=False)
        paths = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
        unchanged = {p: _file_state(package / p) for p in paths}
        listed = {f.path: f.sha256 for f in manifest.files}  # the coordinator checks them on the bytes it receives
        declared = [
            pb.FileDeclaration(
                path=p, size=(package / p).stat().st_size, sha256=listed.get(p) or file_sha256(package / p)
            )
            for p in paths
        ]

        def create() -> tuple[str, int]:
            created = self._call(
                self.stub.CreateUpload,
                pb.CreateUploadRequest(domain=manifest.domain, version=manifest.version, files=declared),
            )
            if on_session is not None:
                on_session(created.session_id, created.max_chunk_bytes)
            return created.session_id, created.max_chunk_bytes

        if session is not None:
            try:
                self._call(self.stub.GetUpload, pb.GetUploadRequest(session_id=session[0]))
            except BarFedError as exc:
                if exc.code != "UNKNOWN_SESSION":
                    raise
                log.info("upload %s is gone; starting a new one", session[0])
                session = None
        session_id, max_chunk_bytes = session or create()
        chunk_bytes = min(chunk_bytes or max_chunk_bytes, max_chunk_bytes)
        delays = backoff_delays()
        for attempt in range(1, max_attempts + 1):
            progress = self._call(self.stub.GetUpload, pb.GetUploadRequest(session_id=session_id))
            if progress.complete:
                return self._commit(package, session_id, unchanged)
            try:
                write_chunks(self.channel)(  # the chunks go as bytes `encode_chunk` serialized
                    self._chunks(package, session_id, progress, chunk_bytes, on_chunk),
                    **self._how(24 * 3600),
                )
            except grpc.RpcError as exc:
                error = self._error(exc, 24 * 3600)
                if error.code in ("SESSION_CLOSED", "SESSION_EXPIRED"):
                    log.warning("upload %s ended (%s); starting a new one", session_id, error.code)
                    session_id, max_chunk_bytes = create()
                    continue
                if exc.code() not in RETRYABLE and error.code not in RESUMABLE:
                    raise error from None
                delay = next(delays)
                log.warning("upload interrupted (%s); resuming in %.1fs (attempt %d)", error.code, delay, attempt)
                time.sleep(delay)
        raise BarFedError("UPLOAD_GAVE_UP", f"the upload did not complete after {max_attempts} attempts; retry later.")

    def _commit(self, package: Path, session_id: str, unchanged: dict[str, tuple[int, int, int]]) -> str:
        for path, state in unchanged.items():
            if _file_state(package / path) != state:
                raise BarFedError(
                    "PACKAGE_CHANGED",
                    f"{path} changed while the package was being uploaded; rebuild it and submit again. "
                    "Nothing was committed.",
                )
        try:
            return self._call(self.stub.CommitUpload, pb.CommitUploadRequest(session_id=session_id)).submission_id
        except BarFedError as exc:
            if exc.code == "DIGEST_MISMATCH":
                read_package(package)  # PACKAGE_FILE_DIGEST when the package itself differs from its manifest
            raise

    @staticmethod
    def _chunks(
        package: Path, session_id: str, progress: pb.UploadProgress, chunk_bytes: int, on_chunk=None
    ) -> Iterator[bytes]:
        for entry in progress.files:
            if entry.committed >= entry.size:
                continue
            with open(package / entry.path, "rb") as fh:
                fh.seek(entry.committed)
                offset = entry.committed
                while data := fh.read(chunk_bytes):
                    if on_chunk is not None:
                        on_chunk(entry.path, offset, len(data))
                    yield encode_chunk(session_id, entry.path, offset, data)
                    offset += len(data)

    def submission(self, submission_id: str) -> pb.Submission:
        return self._call(self.stub.GetSubmission, pb.GetSubmissionRequest(submission_id=submission_id))

    def wait(self, submission_id: str, timeout: float = 600.0, poll: float = 0.25) -> pb.Submission:
        deadline = time.monotonic() + timeout
        while True:
            status = self.submission(submission_id)
            if status.state in TERMINAL or time.monotonic() > deadline:
                return status
            time.sleep(poll)

    def watch_releases(self, after_release: int = 0, channel: str = "", timeout: float | None = None):
        """Each release newer than ``after_release`` (or each move of ``channel``), as the coordinator publishes
        them; the stream ends after ``timeout`` seconds (None: never) without an error."""
        request = pb.WatchReleasesRequest(after_release=after_release, channel=channel)
        stream = self.stub.WatchReleases(request, **self._how(timeout))
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
                return
            raise self._error(exc) from None
        finally:
            stream.cancel()


__all__ = ["MANIFEST_FILE", "CoordinatorClient", "error_from"]
