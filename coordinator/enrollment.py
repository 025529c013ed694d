"""Organizations: invitation, enrollment by CSR, approval by the CA, revocation (DESIGN §3, trust model).

The operator invites an org id with the domains it may publish and hands the org a one-time token out
of band; the org's node enrolls with that token and a CSR for its own key; the operator approves, the
CA issues the client certificate and its public key becomes the org's pinned signing key. Revocation
marks the org and every certificate revoked at once, which both the transport check and the signature
check read on every use.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import select

from coordinator.keys import CoordinatorKeys
from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import Certificate, Domain, Enrollment, Organization, utcnow
from protocol import pki
from protocol.errors import BarFedError


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite(registry: Registry, org_id: str, domains: list[str], actor: str = "admin") -> str:
    """Create (or extend) an organization and return a one-time enrollment token for it."""
    pki.check_org_id(org_id)
    token = secrets.token_urlsafe(32)
    with registry.session() as session:
        org = session.get(Organization, org_id)
        if org is None:
            org = Organization(id=org_id)
            session.add(org)
            session.flush()
        elif org.status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{org_id} was revoked; a revoked id is never reused.")
        for name in domains:
            owner = session.get(Domain, name)
            if owner is not None and owner.org_id != org_id:
                raise BarFedError("DOMAIN_TAKEN", f"domain {name!r} belongs to {owner.org_id}.")
            if owner is None:
                session.add(Domain(name=name, org_id=org_id))
        session.add(Enrollment(id=str(uuid.uuid4()), org_id=org_id, token_sha256=_token_hash(token)))
        audit.record(session, actor, "org.invite", org_id, domains=sorted(domains))
    return token


def enroll(registry: Registry, org_id: str, csr_pem: str, token: str, contact: str = "") -> Enrollment:
    """A node's enrollment request; checked against its invitation and its CSR."""
    pki.check_org_id(org_id)
    pki.load_csr(csr_pem.encode(), org_id)  # a CSR for another org id is refused here
    with registry.session() as session:
        enrollment = session.scalar(select(Enrollment).where(Enrollment.token_sha256 == _token_hash(token)))
        if enrollment is None or enrollment.org_id != org_id:
            raise BarFedError("BAD_ENROLLMENT_TOKEN", "the enrollment token is not valid for this organization.")
        if enrollment.state != "invited":
            raise BarFedError("TOKEN_USED", "this enrollment token was already used; ask the operator for a new one.")
        org = session.get(Organization, org_id)
        if org.status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{org_id} was revoked.")
        enrollment.state, enrollment.csr_pem, enrollment.contact = "pending", csr_pem, contact[:256]
        audit.record(session, org_id, "enrollment.request", enrollment.id)
        return enrollment


def approve(registry: Registry, keys: CoordinatorKeys, enrollment_id: str, actor: str = "admin") -> Enrollment:
    ca_key, ca_cert = keys.ca()
    with registry.session() as session:
        enrollment = session.get(Enrollment, enrollment_id)
        if enrollment is None or enrollment.state != "pending":
            raise BarFedError("NOT_PENDING", f"enrollment {enrollment_id} is not waiting for approval.")
        if session.get(Organization, enrollment.org_id).status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{enrollment.org_id} was revoked; a revoked organization stays revoked.")
        cert = pki.issue_client_certificate(ca_key, ca_cert, enrollment.csr_pem.encode(), enrollment.org_id)
        public_pem = pki.public_key_pem(cert.public_key()).decode()
        session.add(
            Certificate(
                serial=str(cert.serial_number),
                org_id=enrollment.org_id,
                fingerprint=pki.certificate_fingerprint(cert),
                public_key_pem=public_pem,
                key_fingerprint=pki.public_key_fingerprint(cert.public_key()),
                not_after=cert.not_valid_after_utc,
            )
        )
        enrollment.state, enrollment.certificate_pem = "approved", pki.certificate_pem(cert).decode()
        session.get(Organization, enrollment.org_id).status = "active"
        audit.record(
            session,
            actor,
            "enrollment.approve",
            enrollment.id,
            org=enrollment.org_id,
            certificate=pki.certificate_fingerprint(cert),
        )
        return enrollment


def reject(registry: Registry, enrollment_id: str, reason: str, actor: str = "admin") -> None:
    with registry.session() as session:
        enrollment = session.get(Enrollment, enrollment_id)
        if enrollment is None or enrollment.state != "pending":
            raise BarFedError("NOT_PENDING", f"enrollment {enrollment_id} is not waiting for approval.")
        enrollment.state, enrollment.reason = "rejected", reason[:512]
        audit.record(session, actor, "enrollment.reject", enrollment.id, reason=reason[:512])


def revoke(registry: Registry, org_id: str, reason: str, actor: str = "admin") -> None:
    """Revoke an organization: its certificates stop working and its key stops verifying, immediately."""
    with registry.session() as session:
        org = session.get(Organization, org_id)
        if org is None:
            raise BarFedError("UNKNOWN_ORG", f"there is no organization {org_id}.")
        org.status, org.revoked_at = "revoked", utcnow()
        for cert in session.scalars(select(Certificate).where(Certificate.org_id == org_id)):
            cert.revoked_at = cert.revoked_at or utcnow()
        for enrollment in session.scalars(
            select(Enrollment).where(Enrollment.org_id == org_id, Enrollment.state.in_(("invited", "pending")))
        ):
            enrollment.state, enrollment.reason = "rejected", "organization revoked"
        audit.record(session, actor, "org.revoke", org_id, reason=reason[:512])


def get_enrollment(registry: Registry, enrollment_id: str) -> tuple[Enrollment, list[str]]:
    with registry.session() as session:
        enrollment = session.get(Enrollment, enrollment_id)
        if enrollment is None:
            raise BarFedError("UNKNOWN_ENROLLMENT", f"there is no enrollment {enrollment_id}.")
        domains = sorted(session.scalars(select(Domain.name).where(Domain.org_id == enrollment.org_id)))
        return enrollment, domains


def authenticate(registry: Registry, cert_pem: bytes) -> str:
    """The org behind a verified peer certificate, refused if the org or this certificate is revoked."""
    cert = pki.load_certificate(cert_pem)
    org_id = pki.org_id_of(cert)
    with registry.session() as session:
        org = session.get(Organization, org_id)
        record = session.get(Certificate, str(cert.serial_number))
        if org is None or record is None or record.org_id != org_id:
            raise BarFedError("CERT_UNKNOWN", "this certificate was not issued by this coordinator.")
        if org.status == "revoked" or record.revoked_at is not None:
            raise BarFedError("CERT_REVOKED", f"{org_id} has been revoked; contact the federation operator.")
    return org_id


def pinned_keys(registry: Registry, org_id: str) -> list[bytes]:
    """Public keys that may sign for ``org_id``: its unrevoked certificates' keys (none once revoked)."""
    with registry.session() as session:
        org = session.get(Organization, org_id)
        if org is None or org.status != "active":
            return []
        certs = session.scalars(
            select(Certificate).where(Certificate.org_id == org_id, Certificate.revoked_at.is_(None))
        ).all()
        return [c.public_key_pem.encode() for c in certs]


def authenticate_dev(registry: Registry, org_id: str) -> str:
    """Plaintext loopback development only: the org named by a header, if it is active."""
    with registry.session() as session:
        org = session.get(Organization, org_id)
        if org is None or org.status != "active":
            raise BarFedError("CERT_REVOKED", f"{org_id} is not an active organization.")
    return org_id
