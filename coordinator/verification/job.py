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
import time
import uuid
from pathlib import Path

from coordinator.blobs import BlobStore
from coordinator.enrollment import pinned_keys
from coordinator.settings import CoordinatorSettings
from coordinator.state import submissions
from coordinator.state.db import Registry
from coordinator.storage import OUTAGE_CODES
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

    def run(self, submission_id: str, workdir: Path | None = None, wall_s: dict[str, float] | None = None) -> str:
        """Verify one submission (idempotent: a finished one is left as it is); returns its final state;
        ``wall_s`` receives the wall time of each step (materialize, then verify_package's).

        The job row (coordinator.state.jobs) decides who runs it and how often; this only acts on the submission.
        """
        facts = submissions.start(self.registry, submission_id)
        if isinstance(facts, str):
            return facts  # decided already
        expect = Expectations(
            org_id=facts.org_id,
            domain=facts.domain,
            version=facts.version,
            public_keys=[],
            owned_domains=facts.owned_domains,
            latest_version=facts.latest_version,
            anchor_dir=self.settings.anchor_dir,
            anchor_fingerprint=self.anchor_fingerprint,
            max_shared_drift=self.settings.max_shared_drift,
        )
        files = facts.files
        expect = Expectations(**{**expect.__dict__, "public_keys": pinned_keys(self.registry, expect.org_id)})
        # Its own directory per run: a run that took over from a lost lease must not share the old one's.
        workdir = workdir or self.settings.staging_dir / f"verify-{submission_id}-{uuid.uuid4().hex[:8]}"
        outcome = ("ACCEPTED", "", "")
        try:
            started = time.perf_counter()
            package = self.blobs.materialize(files, workdir)
            if wall_s is not None:
                wall_s["materialize"] = round(time.perf_counter() - started, 3)
            verify_package(package, expect, digests=files, wall_s=wall_s)
        except BarFedError as exc:
            if exc.code in OUTAGE_CODES:  # the artifact store is away: no verdict on the package, the job retries
                raise
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
        """Record the outcome (the state that stands is returned); under the blob store's lock, so a rejected
        package's blobs go while no commit can be deciding about the same digests."""
        with self.blobs.lock:
            return submissions.finish(self.registry, submission_id, state, code, message, self.blobs.delete)
