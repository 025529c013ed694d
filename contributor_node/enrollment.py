"""Enrolling this node: a certificate request for its key, sent once per invitation and then asked about until an
operator decides.

enrollment.json records the request's id and the token's sha256 as soon as the coordinator has the request, so a
rerun (or `enroll --wait` after a crash) follows the same request instead of spending the one-time token again;
only another token starts another request. An approved certificate is stored only if it comes with the CA pinned
at `init`, and the record then gains the domains granted, the other commands' default --domain.
"""

from __future__ import annotations

import hashlib
import time

from cryptography import x509

from contributor_node.client import CoordinatorClient
from contributor_node.home import NodeHome, read_json, write_json
from contributor_node.identity import NodeIdentity
from contributor_node.retry import Retrying
from contributor_node.settings import NodeSettings
from protocol import pki
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb


def pending(answer: pb.Enrollment) -> bool:
    return answer.state == pb.ENROLLMENT_PENDING


class Enrollment:
    """This node's enrollment with the invitation ``token`` (None: the recorded request's)."""

    def __init__(self, settings: NodeSettings, retry: Retrying, token: str | None = None, contact: str = "") -> None:
        self.settings, self.retry, self.token, self.contact = settings, retry, token, contact
        self.home = NodeHome(settings.home)
        self.identity = NodeIdentity(settings.home, settings.org_id)
        self.token_sha = hashlib.sha256(token.encode()).hexdigest() if token else None
        self.record = read_json(self.home.record("enrollment"))

    def certificate(self) -> x509.Certificate | None:
        """The certificate of an enrolled node, None when there is none or it expired (enroll again)."""
        try:
            return self.identity.check_certificate()
        except BarFedError as exc:
            if exc.code not in ("NOT_ENROLLED", "CERT_EXPIRED"):
                raise
            return None

    def ask(self) -> pb.Enrollment:
        """The recorded request's state, or a new request when there is none for this token."""
        return self.retry(self._ask_once)

    def _ask_once(self) -> pb.Enrollment:
        settings = self.settings
        ca_pem = settings.ca_path.read_bytes()
        with CoordinatorClient(settings.enroll_address, ca_pem=ca_pem, **self.retry.client_options()) as anonymous:
            if self.record is not None and self.token_sha in (None, self.record["token_sha256"]):
                return anonymous.enrollment(self.record["enrollment_id"])
            if self.token is None:
                raise BarFedError("TOKEN_REQUIRED", "give the invitation's one-time token: enroll --token TOKEN.")
            answer = anonymous.enroll(self.settings.org_id, self.identity.csr(), self.token, self.contact)
            self.record = {"enrollment_id": answer.enrollment_id, "token_sha256": self.token_sha, "domains": []}
            write_json(self.home.record("enrollment"), self.record)
            return answer

    def wait(self, answer: pb.Enrollment, timeout: float) -> pb.Enrollment:
        """Ask every ``poll_s`` while ``answer`` is pending, for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while pending(answer) and time.monotonic() < deadline:
            time.sleep(self.settings.poll_s)
            answer = self.ask()
        return answer

    def settle(self, answer: pb.Enrollment) -> x509.Certificate | None:
        """Approved: the certificate, now stored, and the domains recorded. Pending: None. Rejected or revoked:
        refused, with what to do."""
        if answer.state == pb.ENROLLMENT_APPROVED:
            issued_ca = pki.load_certificate(answer.ca_certificate_pem.encode())
            pinned_ca = pki.load_certificate(self.settings.ca_path.read_bytes())
            if pki.certificate_fingerprint(issued_ca) != pki.certificate_fingerprint(pinned_ca):
                raise BarFedError("PIN_CHANGED", "the enrollment answer names another CA than the one pinned at init.")
            self.identity.save_enrollment(answer)
            write_json(self.home.record("enrollment"), {**self.record, "domains": list(answer.domains)})
            return self.identity.check_certificate()
        if pending(answer):
            return None
        if answer.state == pb.ENROLLMENT_REJECTED:
            raise BarFedError(
                "ENROLLMENT_REJECTED",
                f"the operator rejected enrollment {answer.enrollment_id}: {answer.reason or 'no reason given'}; "
                "ask for a new invitation and run `barfed node enroll --token NEW`.",
            )
        raise BarFedError(
            "ENROLLMENT_REVOKED",
            f"enrollment {answer.enrollment_id} was revoked: {answer.reason or 'no reason given'}; "
            "contact the federation operator.",
        )
