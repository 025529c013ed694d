"""Organizations, their domains, enrollments and certificates: the registry's SQL for the trust side.

Every transaction that changes an organization first locks its row (`uploads.lock_org`), the same lock the
upload limits take, so an approval, a revocation and an upload of one organization happen one after another,
and in the same order of locks (organization, then audit chain) everywhere.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update

from coordinator.state import audit
from coordinator.state.db import Registry
from coordinator.state.models import ApiToken, Certificate, Domain, Enrollment, Organization, utcnow
from coordinator.state.uploads import lock_org
from protocol.errors import BarFedError

DOMAIN_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # as expert.json's domain field (protocol/package.py)
MAX_DOMAINS = 64  # per call


def invite(registry: Registry, org_id: str, domains: list[str], token_sha256: str, actor: str) -> None:
    """Create (or extend) an organization with ``domains`` and an invitation redeemable by the token's hash."""
    domains = check_domains(domains)  # each once: a repeated new name would be inserted twice
    with registry.session() as session:
        org = lock_org(session, org_id)
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
        session.add(Enrollment(id=str(uuid.uuid4()), org_id=org_id, token_sha256=token_sha256))
        audit.record(session, actor, "org.invite", org_id, domains=sorted(domains))


def request_enrollment(registry: Registry, org_id: str, token_sha256: str, csr_pem: str, contact: str) -> Enrollment:
    """Redeem an invitation: it becomes a pending enrollment carrying the node's CSR."""
    with registry.session() as session:
        lock_org(session, org_id)
        enrollment = session.scalar(select(Enrollment).where(Enrollment.token_sha256 == token_sha256))
        if enrollment is None or enrollment.org_id != org_id:
            raise BarFedError("BAD_ENROLLMENT_TOKEN", "the enrollment token is not valid for this organization.")
        if enrollment.state != "invited":
            raise BarFedError("TOKEN_USED", "this enrollment token was already used; ask the operator for a new one.")
        if session.get(Organization, org_id).status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{org_id} was revoked.")
        enrollment.state, enrollment.csr_pem, enrollment.contact = "pending", csr_pem, contact
        audit.record(session, org_id, "enrollment.request", enrollment.id)
        return enrollment


def _enrollment(session, enrollment_id: str) -> Enrollment:
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        raise BarFedError(
            "UNKNOWN_ENROLLMENT",
            f"there is no enrollment {enrollment_id[:64]!r}; check the id against the list of enrollments.",
        )
    return enrollment


def pending_enrollment(registry: Registry, enrollment_id: str) -> Enrollment:
    """An enrollment waiting for approval, of an organization that is not revoked."""
    with registry.session() as session:
        enrollment = _enrollment(session, enrollment_id)
        if enrollment.state != "pending":
            raise BarFedError("NOT_PENDING", f"enrollment {enrollment_id} is not waiting for approval.")
        if session.get(Organization, enrollment.org_id).status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{enrollment.org_id} was revoked; a revoked organization stays revoked.")
        return enrollment


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str
    fingerprint: str
    public_key_pem: str
    key_fingerprint: str
    not_after: dt.datetime
    pem: str


def approve(registry: Registry, enrollment_id: str, cert: IssuedCertificate, actor: str) -> Enrollment:
    """Record the certificate issued for a pending enrollment and activate its organization (checked again
    under the organization's lock: a revocation or rejection that came first wins)."""
    with registry.session() as session:
        enrollment = _enrollment(session, enrollment_id)
        org = lock_org(session, enrollment.org_id)
        session.refresh(enrollment)
        if enrollment.state != "pending":
            raise BarFedError("NOT_PENDING", f"enrollment {enrollment_id} is not waiting for approval.")
        if org.status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{enrollment.org_id} was revoked; a revoked organization stays revoked.")
        session.add(
            Certificate(
                serial=cert.serial,
                org_id=enrollment.org_id,
                fingerprint=cert.fingerprint,
                public_key_pem=cert.public_key_pem,
                key_fingerprint=cert.key_fingerprint,
                not_after=cert.not_after,
            )
        )
        enrollment.state, enrollment.certificate_pem = "approved", cert.pem
        org.status = "active"
        audit.record(
            session, actor, "enrollment.approve", enrollment.id, org=enrollment.org_id, certificate=cert.fingerprint
        )
        return enrollment


def reject(registry: Registry, enrollment_id: str, reason: str, actor: str) -> None:
    with registry.session() as session:
        enrollment = _enrollment(session, enrollment_id)
        lock_org(session, enrollment.org_id)
        session.refresh(enrollment)
        if enrollment.state != "pending":
            raise BarFedError("NOT_PENDING", f"enrollment {enrollment_id} is not waiting for approval.")
        enrollment.state, enrollment.reason = "rejected", reason
        audit.record(session, actor, "enrollment.reject", enrollment.id, reason=reason)


def revoke(registry: Registry, org_id: str, reason: str, actor: str) -> None:
    """The organization, every certificate of it and every open invitation or request, revoked at once."""
    with registry.session() as session:
        org = lock_org(session, org_id)
        if org is None:
            raise BarFedError("UNKNOWN_ORG", f"there is no organization {org_id}.")
        org.status, org.revoked_at = "revoked", utcnow()
        for cert in session.scalars(select(Certificate).where(Certificate.org_id == org_id)):
            cert.revoked_at = cert.revoked_at or utcnow()
        for enrollment in session.scalars(
            select(Enrollment).where(Enrollment.org_id == org_id, Enrollment.state.in_(("invited", "pending")))
        ):
            enrollment.state, enrollment.reason = "rejected", "organization revoked"
        tokens = session.execute(
            update(ApiToken)
            .where(ApiToken.org_id == org_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        audit.record(session, actor, "org.revoke", org_id, reason=reason, tokens=tokens)


def get_enrollment(registry: Registry, enrollment_id: str) -> tuple[Enrollment, list[str]]:
    with registry.session() as session:
        enrollment = _enrollment(session, enrollment_id)
        domains = sorted(session.scalars(select(Domain.name).where(Domain.org_id == enrollment.org_id)))
        return enrollment, domains


def count_pending_enrollments(registry: Registry) -> int:
    with registry.session() as session:
        return session.scalar(select(func.count()).select_from(Enrollment).where(Enrollment.state == "pending"))


def certificate_standing(registry: Registry, org_id: str, serial: str) -> tuple[str | None, str | None, bool]:
    """(organization status, the certificate's organization, whether the certificate is revoked)."""
    with registry.session() as session:
        org = session.get(Organization, org_id)
        record = session.get(Certificate, serial)
        return (
            org.status if org else None,
            record.org_id if record else None,
            record is not None and record.revoked_at is not None,
        )


def org_status(registry: Registry, org_id: str) -> str | None:
    with registry.session() as session:
        org = session.get(Organization, org_id)
        return org.status if org else None


def active_public_keys(registry: Registry, org_id: str) -> list[bytes]:
    """Public keys of the organization's unrevoked certificates; none unless it is active."""
    with registry.session() as session:
        org = session.get(Organization, org_id)
        if org is None or org.status != "active":
            return []
        certs = session.scalars(
            select(Certificate).where(Certificate.org_id == org_id, Certificate.revoked_at.is_(None))
        ).all()
        return [c.public_key_pem.encode() for c in certs]


def list_enrollments(registry: Registry) -> list[Enrollment]:
    with registry.session() as session:
        return list(session.scalars(select(Enrollment).order_by(Enrollment.created_at)))


def _domains_of(session, org_id: str) -> list[str]:
    return sorted(session.scalars(select(Domain.name).where(Domain.org_id == org_id)))


def domains_of(registry: Registry, org_id: str) -> list[str]:
    with registry.session() as session:
        return _domains_of(session, org_id)


def list_orgs(registry: Registry) -> list[tuple[Organization, list[str]]]:
    """Every organization with the domains it may publish, oldest first."""
    with registry.session() as session:
        owned: dict[str, list[str]] = {}
        for domain in session.scalars(select(Domain).order_by(Domain.name)):
            owned.setdefault(domain.org_id, []).append(domain.name)
        orgs = session.scalars(select(Organization).order_by(Organization.created_at, Organization.id))
        return [(org, owned.get(org.id, [])) for org in orgs]


def get_org(registry: Registry, org_id: str) -> tuple[Organization, list[str]]:
    with registry.session() as session:
        org = session.get(Organization, org_id)
        if org is None:
            raise BarFedError("UNKNOWN_ORG", f"there is no organization {org_id}; invite it first.")
        return org, _domains_of(session, org_id)


def check_domains(domains: list[str]) -> list[str]:
    """Domain names as expert packages spell them, at most MAX_DOMAINS, each once."""
    pattern = re.compile(DOMAIN_NAME)
    if len(domains) > MAX_DOMAINS:
        raise BarFedError("BAD_DOMAIN", f"at most {MAX_DOMAINS} domains at once.")
    for name in domains:
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise BarFedError(
                "BAD_DOMAIN", f"domain {name!r} is not valid; use 1-64 lowercase letters, digits, '_', '.' and '-'."
            )
    return sorted(set(domains))


def assign_domains(registry: Registry, org_id: str, domains: list[str], actor: str) -> list[str]:
    """Let an organization publish more domains; returns all it owns. A domain another org owns is refused, and
    then nothing is assigned."""
    wanted = check_domains(domains)
    with registry.session() as session:
        org = lock_org(session, org_id)
        if org is None:
            raise BarFedError("UNKNOWN_ORG", f"there is no organization {org_id}; invite it first.")
        if org.status == "revoked":
            raise BarFedError("ORG_REVOKED", f"{org_id} was revoked; a revoked organization gets no domains.")
        added = []
        for name in wanted:
            owner = session.get(Domain, name)
            if owner is not None and owner.org_id != org_id:
                raise BarFedError("DOMAIN_TAKEN", f"domain {name!r} belongs to {owner.org_id}; choose another name.")
            if owner is None:
                session.add(Domain(name=name, org_id=org_id))
                added.append(name)
        if added:
            session.flush()
            audit.record(session, actor, "org.domains", org_id, added=added)
        return _domains_of(session, org_id)
