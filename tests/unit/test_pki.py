"""Federation PKI: keys stay with their owner, certificates bind org ids, revocation and expiry bite."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509

from protocol import pki
from protocol.errors import BarFedError


@pytest.fixture(scope="module")
def ca():
    return pki.create_ca("Test Federation CA")


def _expect(code: str, fn, *args, **kwargs) -> BarFedError:
    with pytest.raises(BarFedError) as err:
        fn(*args, **kwargs)
    assert err.value.code == code, err.value
    return err.value


def test_private_key_file_is_owner_only_and_never_overwritten(tmp_path):
    key = pki.generate_private_key()
    path = pki.write_private_key(tmp_path / "keys" / "org.key", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pki.public_key_fingerprint(pki.load_private_key(path)) == pki.public_key_fingerprint(key)
    _expect("KEY_EXISTS", pki.write_private_key, path, pki.generate_private_key())


def test_encrypted_private_key_needs_its_passphrase(tmp_path):
    key = pki.generate_private_key()
    path = pki.write_private_key(tmp_path / "org.key", key, passphrase="correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert pki.public_key_fingerprint(pki.load_private_key(path, "correct horse")) == pki.public_key_fingerprint(key)
    _expect("KEY_PASSPHRASE", pki.load_private_key, path)
    _expect("KEY_INVALID", pki.load_private_key, path, "wrong")


def test_enrollment_round_trip(ca):
    ca_key, ca_cert = ca
    key = pki.generate_private_key()
    cert = pki.issue_client_certificate(ca_key, ca_cert, pki.make_csr(key, "acme-labs"), "acme-labs")
    assert pki.verify_client_certificate(cert, ca_cert) == "acme-labs"
    assert pki.public_key_fingerprint(cert.public_key()) == pki.public_key_fingerprint(key)
    assert pki.load_certificate(pki.certificate_pem(cert)) == cert
    assert pki.certificate_fingerprint(cert).startswith("sha256:")


def test_csr_for_another_org_is_refused(ca):
    ca_key, ca_cert = ca
    csr = pki.make_csr(pki.generate_private_key(), "acme-labs")
    error = _expect("CSR_ORG_MISMATCH", pki.issue_client_certificate, ca_key, ca_cert, csr, "globex")
    assert "acme-labs" in error.message and "globex" in error.message


def test_garbage_csr_and_bad_org_id_are_refused(ca):
    ca_key, ca_cert = ca
    _expect("CSR_INVALID", pki.issue_client_certificate, ca_key, ca_cert, b"-----BEGIN nonsense", "acme-labs")
    _expect("BAD_ORG_ID", pki.make_csr, pki.generate_private_key(), "Acme Labs!")
    _expect("BAD_ORG_ID", pki.issue_client_certificate, ca_key, ca_cert, b"", "../etc")


def test_expired_and_not_yet_valid_certificates(ca):
    ca_key, ca_cert = ca
    csr = pki.make_csr(pki.generate_private_key(), "acme-labs")
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = pki.issue_client_certificate(ca_key, ca_cert, csr, "acme-labs", days=1, not_before=old)
    _expect("CERT_EXPIRED", pki.verify_client_certificate, expired, ca_cert)
    cert = pki.issue_client_certificate(ca_key, ca_cert, csr, "acme-labs")
    _expect("CERT_NOT_YET_VALID", pki.verify_client_certificate, cert, ca_cert, at=old)


def test_revoked_certificate_via_crl(ca):
    ca_key, ca_cert = ca
    cert = pki.issue_client_certificate(
        ca_key, ca_cert, pki.make_csr(pki.generate_private_key(), "acme-labs"), "acme-labs"
    )
    crl = pki.build_crl(ca_key, ca_cert, [(cert.serial_number, dt.datetime.now(dt.UTC))])
    revoked = pki.revoked_serials_from_crl(crl.public_bytes(pki.serialization.Encoding.PEM), ca_cert)
    _expect("CERT_REVOKED", pki.verify_client_certificate, cert, ca_cert, revoked)
    other_key, other_cert = pki.create_ca("Someone else")
    forged = pki.build_crl(other_key, other_cert, [])
    _expect(
        "CRL_UNTRUSTED",
        pki.revoked_serials_from_crl,
        forged.public_bytes(pki.serialization.Encoding.PEM),
        ca_cert,
    )


def test_certificate_from_another_ca_or_server_cert_is_refused(ca):
    _ca_key, ca_cert = ca
    other_key, other_cert = pki.create_ca("Rogue CA")
    rogue = pki.issue_client_certificate(
        other_key, other_cert, pki.make_csr(pki.generate_private_key(), "acme-labs"), "acme-labs"
    )
    _expect("CERT_UNTRUSTED", pki.verify_client_certificate, rogue, ca_cert)
    server = pki.issue_server_certificate(ca[0], ca_cert, pki.generate_private_key())
    _expect("CERT_NOT_AN_ORG", pki.verify_client_certificate, server, ca_cert)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
