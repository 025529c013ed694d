"""Organizations: invitation, enrollment by CSR, approval by the CA, revocation (DESIGN §3, trust model).

The operator invites an org id with the domains it may publish and hands the org a one-time token out
of band; the org's node enrolls with that token and a CSR for its own key; the operator approves, the
CA issues the client certificate and its public key becomes the org's pinned signing key. Revocation
marks the org and every certificate revoked at once, which both the transport check and the signature
check read on every use.

Enrollment is the one call anyone may make without a certificate, so everything it accepts is bounded
before any work is done: the request's size (the port's own message limit, then each field's), calls per
peer and calls in flight (`EnrollmentGate`). Pending enrollments are bounded by invitations: each token is
redeemed once. The registry's SQL for all of this is `coordinator.state.orgs`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator

from coordinator.keys import CoordinatorKeys
from coordinator.state import orgs
from coordinator.state.db import Registry
from coordinator.state.models import Enrollment
from protocol import pki
from protocol.errors import BarFedError
from protocol.text import is_plain

MAX_CSR_BYTES = 8 * 1024  # a P-256 CSR in PEM is about 500 bytes
MAX_TOKEN_CHARS = 128  # tokens are 43 characters
MAX_CONTACT_CHARS = 256
MAX_REASON_CHARS = 512


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


ANCHOR_DOMAIN = "general"  # the anchor's own slot: no organization publishes it


def known_domains() -> list[str]:
    """The domains an organization may be granted: bar_model's (`barfed model domains`), which a node can train
    and the coordinator can score, the anchor's own excepted."""
    from bar_model.domains import domain_names

    return [name for name in domain_names() if name != ANCHOR_DOMAIN]


def check_known_domains(domains: list[str]) -> None:
    """Refuse granting no domain, or one not `known_domains`: the operator's entry points (`orgs invite`, REST
    invite and assign) check this, so a typo fails there and not later on the organization's node."""
    if not domains:
        raise BarFedError(
            "NO_DOMAINS",
            "name at least one domain the organization may publish (--domains math,code); "
            "`barfed model domains` lists them.",
        )
    known = set(known_domains())
    unknown = sorted(set(domains) - known)
    if unknown:
        core = ", ".join(sorted(name for name in known if not name.startswith("p-")))
        named = ", ".join(repr(name[:64]) for name in unknown[:5])
        raise BarFedError(
            "UNKNOWN_DOMAIN",
            f"{named}: not a domain this coordinator knows; choose among {core} or a parametric p-* domain "
            "(`barfed model domains` lists them all).",
        )


def invite(registry: Registry, org_id: str, domains: list[str], actor: str = "admin") -> str:
    """Create (or extend) an organization and return a one-time enrollment token for it."""
    pki.check_org_id(org_id)
    token = secrets.token_urlsafe(32)
    orgs.invite(registry, org_id, domains, _token_hash(token), actor)
    return token


def check_request(org_id: str, csr_pem: str, token: str, contact: str) -> None:
    """Size and character checks of an enrollment request, before anything parses or stores it."""
    pki.check_org_id(org_id)
    if len(csr_pem) > MAX_CSR_BYTES or not csr_pem.isascii() or not is_plain(csr_pem, newlines=True):
        raise BarFedError(
            "CSR_INVALID",
            f"the certificate request must be PEM text of at most {MAX_CSR_BYTES} bytes; send the CSR the node made.",
        )
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise BarFedError("BAD_ENROLLMENT_TOKEN", "the enrollment token is not valid for this organization.")
    if len(contact) > MAX_CONTACT_CHARS or not is_plain(contact):
        raise BarFedError(
            "BAD_CONTACT", f"the contact must be at most {MAX_CONTACT_CHARS} printable characters on one line."
        )


def enroll(registry: Registry, org_id: str, csr_pem: str, token: str, contact: str = "") -> Enrollment:
    """A node's enrollment request; checked against its invitation and its CSR."""
    check_request(org_id, csr_pem, token, contact)
    pki.load_csr(csr_pem.encode(), org_id)  # a CSR for another org id is refused here
    return orgs.request_enrollment(registry, org_id, _token_hash(token), csr_pem, contact)


def approve(registry: Registry, keys: CoordinatorKeys, enrollment_id: str, actor: str = "admin") -> Enrollment:
    pending = orgs.pending_enrollment(registry, enrollment_id)
    ca_key, ca_cert = keys.ca()
    cert = pki.issue_client_certificate(ca_key, ca_cert, pending.csr_pem.encode(), pending.org_id)
    issued = orgs.IssuedCertificate(
        serial=str(cert.serial_number),
        fingerprint=pki.certificate_fingerprint(cert),
        public_key_pem=pki.public_key_pem(cert.public_key()).decode(),
        key_fingerprint=pki.public_key_fingerprint(cert.public_key()),
        not_after=cert.not_valid_after_utc,
        pem=pki.certificate_pem(cert).decode(),
    )
    return orgs.approve(registry, enrollment_id, issued, actor)  # unrecorded, a certificate is worthless


def reject(registry: Registry, enrollment_id: str, reason: str, actor: str = "admin") -> None:
    orgs.reject(registry, enrollment_id, reason[:MAX_REASON_CHARS], actor)


def revoke(registry: Registry, org_id: str, reason: str, actor: str = "admin") -> None:
    """Revoke an organization: its certificates stop working and its key stops verifying, immediately."""
    orgs.revoke(registry, org_id, reason[:MAX_REASON_CHARS], actor)


def get_enrollment(registry: Registry, enrollment_id: str) -> tuple[Enrollment, list[str]]:
    return orgs.get_enrollment(registry, enrollment_id)


def authenticate(registry: Registry, cert_pem: bytes) -> str:
    """The org behind a verified peer certificate, refused if the org or this certificate is revoked."""
    cert = pki.load_certificate(cert_pem)
    org_id = pki.org_id_of(cert)
    status, owner, revoked = orgs.certificate_standing(registry, org_id, str(cert.serial_number))
    if status is None or owner != org_id:
        raise BarFedError("CERT_UNKNOWN", "this certificate was not issued by this coordinator.")
    if status == "revoked" or revoked:
        raise BarFedError("CERT_REVOKED", f"{org_id} has been revoked; contact the federation operator.")
    return org_id


def pinned_keys(registry: Registry, org_id: str) -> list[bytes]:
    """Public keys that may sign for ``org_id``: its unrevoked certificates' keys (none once revoked)."""
    return orgs.active_public_keys(registry, org_id)


def authenticate_dev(registry: Registry, org_id: str) -> str:
    """Plaintext loopback development only: the org named by a header, if it is active."""
    if not pki.ORG_ID.match(org_id) or orgs.org_status(registry, org_id) != "active":
        raise BarFedError("CERT_REVOKED", f"{org_id[:63]!r} is not an active organization.")
    return org_id


class EnrollmentGate:
    """Bounds what anonymous callers can make the coordinator do: calls per peer (a token bucket each, for the
    few thousand most recent peers) and calls in flight. Refusals are immediate, never queued."""

    def __init__(self, calls_per_minute: int, burst: int, in_flight: int, peers: int = 4096) -> None:
        self.rate, self.burst, self.in_flight, self.peers = calls_per_minute / 60.0, burst, in_flight, peers
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._running = 0
        self._lock = threading.Lock()

    @staticmethod
    def peer_host(peer: str) -> str:
        """``ipv4:1.2.3.4:5678`` -> ``ipv4:1.2.3.4`` (a peer's ports are one peer)."""
        return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer

    @contextlib.contextmanager
    def admit(self, peer: str) -> Iterator[None]:
        host, now = self.peer_host(peer or "unknown"), time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(host, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            admitted = tokens >= 1 and self._running < self.in_flight
            self._buckets[host] = (tokens - 1 if admitted else tokens, now)
            while len(self._buckets) > self.peers:
                self._buckets.popitem(last=False)
            if tokens < 1:
                raise BarFedError(
                    "ENROLL_RATE_LIMITED",
                    f"too many enrollment calls from this address; wait {max(1, round((1 - tokens) / self.rate))} s "
                    "and try again.",
                )
            if self._running >= self.in_flight:
                raise BarFedError(
                    "ENROLL_BUSY", "the coordinator is handling many enrollments; retry in a few seconds."
                )
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
