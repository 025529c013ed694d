"""An organization's identity on its node: its private key (generated here, never sent), CSR and certificate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from contributor_node.client import CoordinatorClient
from protocol import pki
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb


@dataclass
class NodeIdentity:
    home: Path
    org_id: str
    passphrase: str | None = None

    @property
    def key_path(self) -> Path:
        return self.home / "org.key"

    @property
    def cert_path(self) -> Path:
        return self.home / "org.pem"

    @property
    def ca_path(self) -> Path:
        return self.home / "ca.pem"

    def ensure_key(self) -> Path:
        pki.check_org_id(self.org_id)
        if not self.key_path.is_file():
            pki.write_private_key(self.key_path, pki.generate_private_key(), self.passphrase)
        return self.key_path

    def csr(self) -> bytes:
        return pki.make_csr(pki.load_private_key(self.ensure_key(), self.passphrase), self.org_id)

    def save_enrollment(self, enrollment: pb.Enrollment) -> None:
        if enrollment.state != pb.ENROLLMENT_APPROVED:
            raise BarFedError("NOT_APPROVED", f"enrollment {enrollment.enrollment_id} is not approved yet.")
        cert = pki.load_certificate(enrollment.certificate_pem.encode())
        key = pki.load_private_key(self.key_path, self.passphrase)
        if pki.public_key_fingerprint(cert.public_key()) != pki.public_key_fingerprint(key):
            raise BarFedError("CERT_KEY_MISMATCH", "the issued certificate is not for this node's key.")
        self.cert_path.write_text(enrollment.certificate_pem)
        self.ca_path.write_text(enrollment.ca_certificate_pem)

    def export_public_key(self, path: Path) -> tuple[Path, str]:
        """Write the organization's public key (PEM) to ``path`` for whoever checks its packages, with its
        fingerprint; only the public half is ever written out, the private key stays in org.key."""
        if not path.parent.is_dir():
            raise BarFedError("BAD_PATH", f"{path.parent} is not a directory; give --out a file in an existing one.")
        key = pki.load_private_key(self.key_path, self.passphrase)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(pki.public_key_pem(key))
        os.replace(tmp, path)
        return path, pki.public_key_fingerprint(key)

    def check_certificate(self, now: datetime | None = None) -> x509.Certificate:
        """This node's certificate, refused here when it cannot work (the TLS handshake would only say
        "unavailable"): missing, expired or not yet valid."""
        if not self.cert_path.is_file():
            raise BarFedError("NOT_ENROLLED", "this node has no certificate yet; run `barfed node enroll --token T`.")
        cert = pki.load_certificate(self.cert_path.read_bytes())
        now = now or datetime.now(UTC)
        if cert.not_valid_after_utc <= now:
            raise BarFedError(
                "CERT_EXPIRED",
                f"this node's certificate is valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC and this "
                f"machine's clock says {now:%Y-%m-%d %H:%M} UTC; if the clock is wrong, set it right (e.g. NTP); "
                "if it is right, ask the operator for a new invitation and run "
                "`barfed node enroll --token NEW --wait` (the key stays the same).",
            )
        if cert.not_valid_before_utc > now:
            raise BarFedError(
                "CERT_NOT_YET_VALID",
                f"this node's certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; "
                "check this machine's clock.",
            )
        return cert

    def client(self, address: str, **kwargs) -> CoordinatorClient:
        """An mTLS client as this organization (the key is read here, for the TLS stack, and stays here)."""
        key = pki.load_private_key(self.key_path, self.passphrase)
        return CoordinatorClient(
            address,
            ca_pem=self.ca_path.read_bytes(),
            key_pem=pki.private_key_pem(key),
            cert_pem=self.cert_path.read_bytes(),
            **kwargs,
        )
