"""The release key `barfed pull` verifies with: the one the user passed (``--coordinator-key``) or the one pinned
for that coordinator on first use, under ``$XDG_CONFIG_HOME/barfed/coordinators/``, with its fingerprint printed;
a later pull refuses a coordinator whose key changed (``KEY_CHANGED``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from protocol import pki
from protocol.errors import BarFedError


def known_keys_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "barfed" / "coordinators"


def given_key(path: Path) -> tuple[bytes, str]:
    """(PEM, fingerprint) of the key file the user passed."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise BarFedError("KEY_INVALID", f"cannot read --coordinator-key {path}: {exc}") from None
    return pem, pki.public_key_fingerprint(pki.load_public_key(pem))


def pin_on_first_use(api: str, served: bytes, console: Console) -> tuple[bytes, str]:
    """(PEM, fingerprint) to verify with, given the key ``api`` serves: the pinned one when it still matches it,
    or, on the first pull from ``api``, the served one, pinned now."""
    fingerprint = pki.public_key_fingerprint(pki.load_public_key(served))
    parts = urlsplit(api)
    pin = known_keys_dir() / f"{parts.hostname}_{parts.port or 443}.pub"
    if pin.is_file():
        pinned = pin.read_bytes()
        pinned_fingerprint = pki.public_key_fingerprint(pki.load_public_key(pinned))
        if pinned_fingerprint != fingerprint:
            raise BarFedError(
                "KEY_CHANGED",
                f"the coordinator at {api} now presents release key {fingerprint}, not the "
                f"{pinned_fingerprint} pinned in {pin}. If its operator confirms a new key, delete that file "
                "or pass --coordinator-key.",
            )
        return pinned, pinned_fingerprint
    pin.parent.mkdir(parents=True, exist_ok=True)
    tmp = pin.with_suffix(".tmp")
    tmp.write_bytes(served)
    os.replace(tmp, pin)
    console.print(
        f"Pinned the release key of {api} on first use: {fingerprint}\n"
        f"  (stored in {pin}; compare the fingerprint with the one your operator publishes)",
        highlight=False,
    )
    return served, fingerprint
