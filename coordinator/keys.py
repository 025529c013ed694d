"""The coordinator's own keys and certificates, kept under ``home/pki`` (private keys mode 0600).

- ``ca.key`` / ``ca.pem``: the federation CA, which issues organizations' client certificates;
- ``server.key`` / ``server.pem``: the coordinator's TLS identity, issued by that CA, naming the hosts clients
  reach it by (``hostnames``) and loopback; `reissue_server` names others later, with the same key;
- ``release.key`` / ``release.pub``: the key that signs the anchor and every release (published).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from protocol import pki
from protocol.errors import BarFedError

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")
HOSTNAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9-]{1,63}$")


def server_names(hostnames: list[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a server certificate names: the given ones, then loopback's, each once; an IP
    address given as a hostname is named as an address, which is how TLS clients check one."""
    names: list[str] = []
    ips: list[str] = []
    for name in [*hostnames, *LOOPBACK_NAMES, *LOOPBACK_IPS]:
        try:
            address = str(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            if not HOSTNAME.fullmatch(name):
                raise BarFedError(
                    "BAD_HOSTNAME", f"{name[:64]!r} is not a host name or IP address; give one like coord.example."
                ) from None
            if name.lower() not in names:
                names.append(name.lower())
            continue
        if address not in ips:
            ips.append(address)
    return names, ips


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
        server_names(hostnames)  # a bad name is refused before any key is written
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = pki.create_ca()
        pki.write_private_key(self.ca_key_path, ca_key)
        self.ca_cert_path.write_bytes(pki.certificate_pem(ca_cert))
        pki.write_private_key(self.server_key_path, pki.generate_private_key())
        self.issue_server(hostnames)
        release_key = pki.generate_private_key()
        pki.write_private_key(self.release_key_path, release_key)
        self.release_public_path.write_bytes(pki.public_key_pem(release_key))

    def issue_server(self, hostnames: list[str]) -> x509.Certificate:
        """A server certificate for the server key from the CA, naming ``hostnames`` and loopback, written over
        ``server.pem`` atomically (a coordinator starting meanwhile reads the old one or the new one, whole). The
        one it replaces stays valid until it expires: clients trust the CA, not a certificate."""
        names, ips = server_names(hostnames)
        ca_key, ca_cert = self.ca()
        key = pki.load_private_key(self.server_key_path)
        cert = pki.issue_server_certificate(ca_key, ca_cert, key, names, ips)
        staged = self.server_cert_path.with_name(f".{self.server_cert_path.name}.tmp")
        with open(staged, "wb") as fh:
            fh.write(pki.certificate_pem(cert))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staged, self.server_cert_path)
        return cert

    def ca(self) -> tuple:
        if not self.exists():
            raise BarFedError("NOT_INITIALIZED", f"{self.directory} has no CA; run `barfed coordinator init` first.")
        return pki.load_private_key(self.ca_key_path), self.ca_certificate()

    def ca_certificate(self) -> x509.Certificate:
        return pki.load_certificate(self.ca_cert_path.read_bytes())
