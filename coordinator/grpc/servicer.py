"""The gRPC submission service (grpc.aio): the org is whoever its verified client certificate names.

Every handler turns a `BarFedError` into a gRPC status with the stable code in the trailing metadata
``barfed-error-code``. Blocking work (files, database, hashing) runs in threads so one slow upload never
stalls the others. Verification is not done here: a commit dispatches the submission's "verify" job to the task
workers (coordinator.tasks) through the runtime's dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from coordinator import enrollment, metrics
from coordinator.grpc.errors import abort, reports_errors
from coordinator.grpc.release_messages import release_event, retention_message
from coordinator.grpc.streams import Holder, Holders
from coordinator.runtime import Runtime
from coordinator.state import experts as experts_state
from coordinator.state import jobs
from coordinator.state import orgs as orgs_state
from coordinator.state import releases as releases_state
from coordinator.state.models import Release
from coordinator.uploads.sessions import Declared, Uploads
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint
from protocol.package import file_sha256
from protocol.v1 import barfed_pb2 as pb
from protocol.v1 import barfed_pb2_grpc

log = logging.getLogger(__name__)
DEV_ORG_HEADER = "barfed-dev-org"
SUBMISSION_STATES = {name: getattr(pb, name) for name in pb.SubmissionState.keys()}  # noqa: SIM118
ENROLLMENT_STATES = {
    "invited": pb.ENROLLMENT_PENDING,
    "pending": pb.ENROLLMENT_PENDING,
    "approved": pb.ENROLLMENT_APPROVED,
    "rejected": pb.ENROLLMENT_REJECTED,
}


async def _settle(writing: asyncio.Future | None) -> None:
    """Let a chunk still being written finish, whatever its outcome: the caller already has an error to report."""
    if writing is not None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await writing


class FederationService(barfed_pb2_grpc.FederationServicer):
    def __init__(self, runtime: Runtime, uploads: Uploads) -> None:
        self.runtime, self.uploads = runtime, uploads
        self.settings, self.registry, self.keys = runtime.settings, runtime.registry, runtime.keys
        self.holders = Holders(self.settings.upload_read_timeout_s)
        self._anchor: asyncio.Future | None = None  # the manifest, computed once for every caller

    # -- identity ----------------------------------------------------------------------------

    async def _org(self, context: grpc.aio.ServicerContext) -> str:
        if self.settings.insecure_plaintext:
            metadata = dict(context.invocation_metadata() or ())
            if DEV_ORG_HEADER not in metadata:
                raise BarFedError(
                    "CLIENT_CERT_REQUIRED", f"plaintext development mode needs a {DEV_ORG_HEADER} header."
                )
            return await asyncio.to_thread(enrollment.authenticate_dev, self.registry, metadata[DEV_ORG_HEADER])
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            raise BarFedError("CLIENT_CERT_REQUIRED", "this call needs the client certificate your enrollment issued.")
        return await asyncio.to_thread(enrollment.authenticate, self.registry, pems[0])

    # -- enrollment --------------------------------------------------------------------------

    @reports_errors
    async def Enroll(self, request, context):
        record = await asyncio.to_thread(
            enrollment.enroll, self.registry, request.org_id, request.csr_pem, request.enrollment_token, request.contact
        )
        return await self._enrollment(record.id)

    @reports_errors
    async def GetEnrollment(self, request, context):
        return await self._enrollment(request.enrollment_id)

    async def _enrollment(self, enrollment_id: str) -> pb.Enrollment:
        record, domains = await asyncio.to_thread(enrollment.get_enrollment, self.registry, enrollment_id)
        return pb.Enrollment(
            enrollment_id=record.id,
            org_id=record.org_id,
            state=ENROLLMENT_STATES[record.state],
            certificate_pem=record.certificate_pem or "",
            ca_certificate_pem=self.keys.ca_cert_path.read_text() if record.certificate_pem else "",
            domains=domains if record.state == "approved" else [],
            reason=record.reason,
        )

    # -- anchor ------------------------------------------------------------------------------

    async def FetchAnchor(self, request, context):
        try:
            await self._org(context)
            manifest = await self._anchor_manifest()
            if request.fingerprint and request.fingerprint != manifest.fingerprint:
                raise BarFedError("ANCHOR_MISMATCH", f"the current anchor is {manifest.fingerprint}.")
        except BarFedError as exc:
            await abort(context, exc)
            return
        yield pb.AnchorPart(manifest=manifest)
        have = {f.path: f.offset for f in request.have}  # a resumed fetch: only what the node lacks is sent
        for declared in manifest.files:
            path = self.settings.anchor_dir / declared.path
            offset = have.get(declared.path, 0)
            if offset > declared.size:
                offset = 0  # the node holds more than the file: it has something else, so send it all
            if offset == declared.size:
                continue
            with open(path, "rb") as fh:
                fh.seek(offset)
                while data := await asyncio.to_thread(fh.read, self.settings.chunk_bytes):
                    yield pb.AnchorPart(chunk=pb.FileChunk(path=path.name, offset=offset, data=data))
                    offset += len(data)

    async def _anchor_manifest(self) -> pb.AnchorManifest:
        """Fingerprint, sizes and digests of the published anchor (it never changes in place), hashed once: the
        first caller starts the hashing and every caller, the first included, awaits that one computation, so
        concurrent first callers neither hash the anchor again nor hold the shared threads. A failure (no anchor
        yet) is not kept: the next caller tries again."""
        if self._anchor is None:
            self._anchor = asyncio.ensure_future(asyncio.to_thread(self._hash_anchor))
            self._anchor.add_done_callback(self._forget_failure)
        return await asyncio.shield(self._anchor)  # a caller that goes away leaves the hashing to the others

    def _forget_failure(self, computed: asyncio.Future) -> None:
        if (computed.cancelled() or computed.exception() is not None) and self._anchor is computed:
            self._anchor = None

    def _hash_anchor(self) -> pb.AnchorManifest:
        anchor = self.settings.anchor_dir
        if not (anchor / "config.json").is_file():
            raise BarFedError("NO_ANCHOR", "this coordinator publishes no anchor yet.")
        files = sorted(p for p in anchor.iterdir() if p.is_file())
        return pb.AnchorManifest(
            fingerprint=anchor_fingerprint(anchor),
            files=[pb.FileDeclaration(path=p.name, size=p.stat().st_size, sha256=file_sha256(p)) for p in files],
        )

    # -- uploads -----------------------------------------------------------------------------

    def _progress(self, upload, files) -> pb.UploadProgress:
        return pb.UploadProgress(
            session_id=upload.id,
            files=[pb.FileProgress(path=f.path, size=f.size, committed=f.committed) for f in files],
            complete=all(f.committed == f.size for f in files),
        )

    @reports_errors
    async def CreateUpload(self, request, context):
        org = await self._org(context)
        declared = [Declared(f.path, f.size, f.sha256) for f in request.files]
        session_id = await asyncio.to_thread(self.uploads.create, org, request.domain, request.version, declared)
        metrics.UPLOAD_SESSIONS.inc()
        upload, files = await asyncio.to_thread(self.uploads.progress, org, session_id)
        return pb.UploadSession(
            session_id=session_id,
            max_chunk_bytes=self.settings.chunk_bytes,
            expires_at_unix=int(upload.expires_at.timestamp()),
            files=[pb.FileProgress(path=f.path, size=f.size, committed=f.committed) for f in files],
        )

    async def WriteChunks(self, request_iterator, context):
        """Chunks are written in order, one at a time, while the next one is received (so the network and the
        disk and hash work overlap); a chunk's error surfaces when the next one arrives or the stream ends. A
        stream that goes silent, or that its organization's next stream takes over, ends (`streams`)."""
        writer = None
        writing: asyncio.Future | None = None
        holder = Holder()
        try:
            org = await self._org(context)
            received = 0
            while (chunk := await self.holders.next_chunk(request_iterator, holder)) is not None:
                if writer is None:
                    writer = await self._claim(org, chunk.session_id, holder)
                elif chunk.session_id != writer.session_id:
                    raise BarFedError("MIXED_SESSIONS", "one WriteChunks stream carries chunks of one session only.")
                data = chunk.data  # a view of the received message (chunk_wire), or a copy from a parsed Chunk
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(writer.write, chunk.path, chunk.offset, data))
                received += len(data)
                metrics.UPLOAD_BYTES.inc(len(data))
                if received >= self.settings.sync_every_bytes:  # a revocation also ends open streams
                    await self._org(context)
                    received = 0
            if writing is not None:
                await writing
        except BarFedError as exc:
            await self._let_go(writer, writing, holder)
            await abort(context, exc)
            return None
        except BaseException:
            await self._let_go(writer, writing, holder)  # the client vanished: keep what was received, durably
            raise
        if writer is None:
            return pb.UploadProgress()
        await self._let_go(writer, None, holder)
        upload, files = await asyncio.to_thread(self.uploads.progress, org, writer.session_id)
        return self._progress(upload, files)

    async def _claim(self, org: str, session_id: str, holder: Holder):
        """The session's writer; a session another stream holds is taken over from it (the same organization's,
        as the ownership check comes first)."""
        try:
            writer = await self._open_writer(org, session_id)
        except BarFedError as exc:
            if exc.code != "SESSION_BUSY" or not await self.holders.take_over(session_id):
                raise
            writer = await self._open_writer(org, session_id)  # from the offsets the holder made durable
        self.holders.hold(writer.session_id, holder)
        return writer

    async def _let_go(self, writer, writing: asyncio.Future | None, holder: Holder) -> None:
        """End a stream's work: the chunk being written settles, the rest is made durable, the session is freed."""
        await _settle(writing)
        if writer is not None:
            try:
                # Shielded: a stream cancelled again meanwhile must still close its writer, which makes what it
                # received durable and frees the session (a cancelled, not yet started thread job never would).
                await asyncio.shield(asyncio.to_thread(writer.close))
            finally:
                self.holders.release(writer.session_id, holder)

    async def _open_writer(self, org: str, session_id: str):
        """Claim the session in a thread; if this stream is cancelled meanwhile, release the claim when it lands."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self.uploads.writer, org, session_id)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:

            def orphaned(done: asyncio.Future) -> None:
                if not done.cancelled() and done.exception() is None:
                    loop.run_in_executor(None, done.result().close)

            future.add_done_callback(orphaned)
            raise

    @reports_errors
    async def GetUpload(self, request, context):
        org = await self._org(context)
        upload, files = await asyncio.to_thread(self.uploads.progress, org, request.session_id)
        return self._progress(upload, files)

    @reports_errors
    async def CommitUpload(self, request, context):
        org = await self._org(context)
        submission_id = await asyncio.to_thread(self.uploads.commit, org, request.session_id)
        metrics.UPLOADS_COMMITTED.inc()
        await asyncio.to_thread(self._dispatch_verification, submission_id)
        return await self._submission(org, submission_id)

    def _dispatch_verification(self, submission_id: str) -> None:
        """A repeated commit finds the job running or done and sends nothing; were it sent, only one claim wins."""
        job = jobs.find(self.registry, "verify", submission_id)
        if job is not None and job.state == "queued":
            self.runtime.dispatch(job.id)

    # -- submissions and releases ------------------------------------------------------------

    @reports_errors
    async def GetSubmission(self, request, context):
        org = await self._org(context)
        return await self._submission(org, request.submission_id)

    async def _submission(self, org: str, submission_id: str) -> pb.Submission:
        row = await asyncio.to_thread(experts_state.submission_of, self.registry, org, submission_id)
        accepted = row.state == "ACCEPTED"
        status = await asyncio.to_thread(experts_state.expert_status_of, self.registry, row.id) if accepted else ""
        holding = None
        if accepted:
            holding = await asyncio.to_thread(releases_state.newest_holding, self.registry, row.domain, row.version)
        return pb.Submission(
            submission_id=row.id,
            org_id=row.org_id,
            domain=row.domain,
            version=row.version,
            state=SUBMISSION_STATES[row.state],
            package_digest=row.package_digest,
            error_code=row.error_code,
            message=row.message,
            expert_status=status,
            release=f"r{holding.number}" if holding else "",
            retention=retention_message(holding, row.domain),
        )

    async def WatchReleases(self, request, context):
        try:
            await self._org(context)
        except BarFedError as exc:
            await abort(context, exc)
            return
        last, channel, pointed = request.after_release, request.channel, None
        while True:
            try:
                org = await self._org(context)  # a revoked organization stops hearing about releases
            except BarFedError as exc:
                await abort(context, exc)
                return
            for release, channels in await asyncio.to_thread(self._releases_to_announce, last, channel, pointed):
                last, pointed = max(last, release.number), release.number
                own = await asyncio.to_thread(orgs_state.domains_of, self.registry, org)
                yield release_event(release, channels, own)
            await asyncio.sleep(1.0)

    def _releases_to_announce(self, after: int, channel: str, pointed: int | None) -> list[tuple[Release, list[str]]]:
        """Every release newer than ``after``; with ``channel``, the release it points at whenever that changes
        (a promote, a rollback, or a publish moving ``latest``), newer than ``after`` the first time."""
        found, positions = releases_state.announcements(self.registry, after, channel)
        by_release: dict[int, list[str]] = {}
        for name, number in positions.items():
            by_release.setdefault(number, []).append(name)
        if channel:
            found = [r for r in found if r.number != pointed and (pointed is not None or r.number > after)]
        return [(release, sorted(by_release.get(release.number, []))) for release in found]
