"""The verification job: a committed submission becomes an accepted expert version or a rejection.

RECEIVED → VERIFYING → ACCEPTED | REJECTED(code, message). A rejected package leaves no expert version and
no bytes (its blobs are deleted unless an accepted expert shares them); only the rejection record
(code and message, so the node can be told why) and the audit trail remain. The job is keyed by the
submission id and idempotent, so a worker that dies mid-verification is simply followed by another
(coordinator.tasks runs it as the "verify" job).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from sqlalchemy import func, select

from coordinator.blobs import BlobStore
from coordinator.enrollment import pinned_keys
from coordinator.settings import CoordinatorSettings
from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Domain, Expert, Submission, UploadFile, UploadSession
from coordinator.verification.checks import Expectations, verify_package
from protocol.errors import BarFedError
from protocol.fingerprint import anchor_fingerprint

log = logging.getLogger(__name__)


class Verifier:
    def __init__(self, registry: Registry, settings: CoordinatorSettings, blobs: BlobStore) -> None:
        self.registry, self.settings, self.blobs = registry, settings, blobs
        self._anchor_fingerprint: str | None = None

    @property
    def anchor_fingerprint(self) -> str:
        if self._anchor_fingerprint is None:
            if not (self.settings.anchor_dir / "config.json").is_file():
                raise BarFedError("NO_ANCHOR", "the coordinator has no anchor; run `barfed coordinator init --anchor`.")
            self._anchor_fingerprint = anchor_fingerprint(self.settings.anchor_dir)
        return self._anchor_fingerprint

    def run(self, submission_id: str, workdir: Path | None = None) -> str:
        """Verify one submission (idempotent: a finished one is left as it is); returns its final state.

        The job row (coordinator.state.jobs) decides who runs it and how often; this only acts on the submission.
        """
        with self.registry.session() as session:
            submission = session.get(Submission, submission_id)
            if submission is None:
                raise BarFedError("UNKNOWN_SUBMISSION", f"there is no submission {submission_id}.")
            if submission.state not in ("RECEIVED", "VERIFYING"):
                return submission.state
            submission.state = "VERIFYING"
            audit.record(session, "coordinator", "submission.verify", submission_id)
            expect = Expectations(
                org_id=submission.org_id,
                domain=submission.domain,
                version=submission.version,
                public_keys=[],
                owned_domains=set(session.scalars(select(Domain.name).where(Domain.org_id == submission.org_id))),
                latest_version=session.scalar(
                    select(func.max(Expert.version)).where(Expert.domain == submission.domain)
                )
                or 0,
                anchor_dir=self.settings.anchor_dir,
                anchor_fingerprint=self.anchor_fingerprint,
                max_shared_drift=self.settings.max_shared_drift,
            )
            files = dict(submission.files)
        expect = Expectations(**{**expect.__dict__, "public_keys": pinned_keys(self.registry, expect.org_id)})
        # Its own directory per run: a run that took over from a lost lease must not share the old one's.
        workdir = workdir or self.settings.staging_dir / f"verify-{submission_id}-{uuid.uuid4().hex[:8]}"
        outcome = ("ACCEPTED", "", "")
        try:
            package = self.blobs.materialize(files, workdir)
            verify_package(package, expect, digests=files)
        except BarFedError as exc:
            outcome = ("REJECTED", exc.code, exc.message)
        except Exception:  # a bug must not leave the submission VERIFYING forever
            log.exception("verification of %s crashed", submission_id)
            message = "the package could not be verified; the operator has the details in the coordinator's log."
            outcome = ("REJECTED", "VERIFICATION_ERROR", message)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # before the outcome is visible: nothing stays behind
        return self._finish(submission_id, *outcome)

    def give_up(self, submission_id: str, code: str = "VERIFICATION_ERROR") -> str:
        """Its job ended failed: reject the submission (if nothing finished it meanwhile)."""
        message = f"the package could not be verified ({code}); the operator has the details in the coordinator's log."
        return self._finish(submission_id, "REJECTED", "VERIFICATION_ERROR", message)

    def _finish(self, submission_id: str, state: str, code: str, message: str) -> str:
        """Record the outcome unless another run already did (returns the state that stands); a rejected
        package's blobs are gone before anyone can see REJECTED."""
        with self.blobs.lock, self.registry.session() as session:
            submission = session.get(Submission, submission_id, with_for_update=True, populate_existing=True)
            if submission.state not in ("RECEIVED", "VERIFYING"):
                return submission.state  # two runs raced (a takeover after a lost lease): the first one counts
            submission.state, submission.error_code, submission.message = state, code, message
            if state == "ACCEPTED":
                session.add(
                    Expert(
                        submission_id=submission_id,
                        org_id=submission.org_id,
                        domain=submission.domain,
                        version=submission.version,
                        package_digest=submission.package_digest,
                        files=submission.files,
                    )
                )
            audit.record(
                session,
                "coordinator",
                f"submission.{state.lower()}",
                submission_id,
                code=code,
                domain=submission.domain,
                version=submission.version,
            )
            if state == "REJECTED":
                self._collect(session, submission)
        return state

    def _collect(self, session, rejected: Submission) -> None:
        """Delete the rejected package's blobs that nothing else refers to (accepted, pending or uploading).

        Runs under the blob store's lock, inside the transaction that records the rejection: a crash before
        that commits leaves the submission to be verified again, and it fails again on the missing blobs.
        """
        referenced: set[str] = set()
        for other in session.scalars(select(Submission).where(Submission.id != rejected.id)):
            if other.state != "REJECTED":
                referenced |= set(other.files.values())
        open_uploads = select(UploadSession.id).where(UploadSession.state == "open")
        referenced |= set(session.scalars(select(UploadFile.sha256).where(UploadFile.session_id.in_(open_uploads))))
        for digest in set(rejected.files.values()) - referenced:
            self.blobs.delete(digest)
