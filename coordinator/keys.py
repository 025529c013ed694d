"""The coordinator's own keys and certificates, kept under ``home/pki`` (private keys mode 0600).

- ``ca.key`` / ``ca.pem``: the federation CA, which issues organizations' client certificates;
- ``server.key`` / ``server.pem``: the coordinator's TLS identity, issued by that CA;
- ``release.key`` / ``release.pub``: the key that signs the anchor and every release (published).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from protocol import pki
from protocol.errors import BarFedError


@dataclass
class CoordinatorKeys:
    directory: Path

    @property
    def ca_key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_key_path(self) -> Path:
        return self.directory / "server.key"

    @property
    def server_cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def release_key_path(self) -> Path:
        return self.directory / "release.key"

    @property
    def release_public_path(self) -> Path:
        return self.directory / "release.pub"

    def exists(self) -> bool:
        return self.ca_key_path.is_file()

    def create(self, hostnames: list[str]) -> None:
        """Generate the CA, the server certificate and the release key (refusing to overwrite any)."""
        if self.exists():
            raise BarFedError("ALREADY_INITIALIZED", f"{self.directory} already holds coordinator keys.")
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = pki.create_ca()
        pki.write_private_key(self.ca_key_path, ca_key)
        self.ca_cert_path.write_bytes(pki.certificate_pem(ca_cert))
        server_key = pki.generate_private_key()
        pki.write_private_key(self.server_key_path, server_key)
        self.server_cert_path.write_bytes(
            pki.certificate_pem(pki.issue_server_certificate(ca_key, ca_cert, server_key, hostnames))
        )
        release_key = pki.generate_private_key()
        pki.write_private_key(self.release_key_path, release_key)
        self.release_public_path.write_bytes(pki.public_key_pem(release_key))

    def ca(self) -> tuple:
        if not self.exists():
            raise BarFedError("NOT_INITIALIZED", f"{self.directory} has no CA; run `barfed coordinator init` first.")
        return pki.load_private_key(self.ca_key_path), self.ca_certificate()

    def ca_certificate(self) -> x509.Certificate:
        return pki.load_certificate(self.ca_cert_path.read_bytes())
