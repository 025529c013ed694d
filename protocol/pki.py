"""The federation PKI, with `cryptography`: CA, organization keys and CSRs, mTLS certificates, revocation.

An organization's EC P-256 key is generated on its node and never leaves it: the node sends a CSR whose
subject names its org id; the coordinator's CA issues a client certificate bound to that org id (in the
subject CN and a ``barfed://org/<id>`` URI SAN) and pins the CSR's public key as the org's signing key.
Revocation is by serial number, published as a standard X.509 CRL signed by the CA.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import BarFedError

ORG_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
ORG_URI_PREFIX = "barfed://org/"
CLIENT_CERT_DAYS = 365
SERVER_CERT_DAYS = 365
CA_DAYS = 3650


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_org_id(org_id: str) -> str:
    if not isinstance(org_id, str) or not ORG_ID.match(org_id):
        raise BarFedError(
            "BAD_ORG_ID",
            f"organization id {org_id!r} is not valid; use 2-63 lowercase letters, digits and dashes.",
        )
    return org_id


# -- keys ------------------------------------------------------------------------------------


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey, passphrase: str | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_key_pem(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private_key(path: str | Path, key: ec.EllipticCurvePrivateKey, passphrase: str | None = None) -> Path:
    """Write a PKCS#8 PEM key readable by its owner only (mode 0600), never overwriting one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BarFedError("KEY_EXISTS", f"{path} already exists; refusing to overwrite a private key.") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key, passphrase))
    return path


def load_private_key(path: str | Path, passphrase: str | None = None) -> ec.EllipticCurvePrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), passphrase.encode() if passphrase else None)
    except FileNotFoundError:
        raise BarFedError("KEY_NOT_FOUND", f"no private key at {path}.") from None
    except TypeError:
        raise BarFedError(
            "KEY_PASSPHRASE", f"{path} is encrypted; give its passphrase (or none if it is not encrypted)."
        ) from None
    except ValueError:
        raise BarFedError("KEY_INVALID", f"{path} is not a PEM private key or the passphrase is wrong.") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BarFedError("KEY_INVALID", f"{path} is not an EC P-256 key; the federation uses P-256 only.")
    return key


def load_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BarFedError("KEY_INVALID", "the public key is not valid PEM.") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BarFedError("KEY_INVALID", "the public key is not an EC P-256 key.")
    return key


def public_key_fingerprint(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: the identity a signature is pinned to."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def certificate_fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


# -- certificates ----------------------------------------------------------------------------


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise BarFedError("CERT_INVALID", "the certificate is not valid PEM.") from None


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_ca(
    name: str = "BAR Federation CA", days: int = CA_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = generate_private_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_csr(key: ec.EllipticCurvePrivateKey, org_id: str) -> bytes:
    """The certificate request an organization's node sends at enrollment."""
    check_org_id(org_id)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, org_id)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ORG_URI_PREFIX + org_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes, org_id: str) -> x509.CertificateSigningRequest:
    """Parse and check a CSR: well-formed, self-signed by its key, P-256, and for exactly ``org_id``."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise BarFedError(
            "CSR_INVALID", "the certificate request is not valid PEM; send the CSR the node made."
        ) from None
    if not csr.is_signature_valid:
        raise BarFedError("CSR_BAD_SIGNATURE", "the certificate request is not signed by its own key.")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BarFedError("CSR_WRONG_KEY_TYPE", "the certificate request's key is not EC P-256.")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or names[0].value != org_id:
        found = names[0].value if names else "nothing"
        raise BarFedError(
            "CSR_ORG_MISMATCH",
            f"the certificate request names {found!r}, but it was submitted for organization {org_id!r}; "
            "make the CSR with the org id you are enrolling.",
        )
    return csr


def issue_client_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    csr_pem: bytes,
    org_id: str,
    days: int = CLIENT_CERT_DAYS,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """Approve an enrollment: an mTLS client certificate bound to ``org_id``."""
    csr = load_csr(csr_pem, check_org_id(org_id))
    start = not_before or _now() - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, org_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ORG_URI_PREFIX + org_id)]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    hostnames: Iterable[str] = ("localhost",),
    ips: Iterable[str] = ("127.0.0.1", "::1"),
    days: int = SERVER_CERT_DAYS,
) -> x509.Certificate:
    """The coordinator's TLS server certificate."""
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, next(iter(hostnames), "coordinator"))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def org_id_of(cert: x509.Certificate) -> str:
    """The org id a client certificate is bound to (its URI SAN, which must agree with its CN)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(ORG_URI_PREFIX)]
    except x509.ExtensionNotFound:
        uris = []
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(uris) != 1 or len(cns) != 1 or uris[0].removeprefix(ORG_URI_PREFIX) != cns[0].value:
        raise BarFedError("CERT_NOT_AN_ORG", "the certificate does not name exactly one organization.")
    return check_org_id(uris[0].removeprefix(ORG_URI_PREFIX))


def verify_client_certificate(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    revoked_serials: Iterable[int] = (),
    at: dt.datetime | None = None,
) -> str:
    """Check a client certificate against the CA, its validity window and revocations; return its org id."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise BarFedError("CERT_UNTRUSTED", "the certificate was not issued by this federation's CA.") from None
    moment = at or _now()
    if moment < cert.not_valid_before_utc:
        raise BarFedError("CERT_NOT_YET_VALID", "the certificate is not valid yet; check the machine's clock.")
    if moment > cert.not_valid_after_utc:
        raise BarFedError("CERT_EXPIRED", "the certificate has expired; enroll again to get a new one.")
    if cert.serial_number in set(revoked_serials):
        raise BarFedError("CERT_REVOKED", "the certificate has been revoked; contact the federation operator.")
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = []
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise BarFedError("CERT_NOT_AN_ORG", "the certificate is not a client certificate.")
    return org_id_of(cert)


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, revoked: Iterable[tuple[int, dt.datetime]]
) -> x509.CertificateRevocationList:
    """A CRL listing ``(serial, revoked_at)`` pairs, signed by the CA, for anyone to check offline."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def revoked_serials_from_crl(crl_pem: bytes, ca_cert: x509.Certificate) -> set[int]:
    crl = x509.load_pem_x509_crl(crl_pem)
    if not crl.is_signature_valid(ca_cert.public_key()):
        raise BarFedError("CRL_UNTRUSTED", "the revocation list is not signed by this federation's CA.")
    return {entry.serial_number for entry in crl}
