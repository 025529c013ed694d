"""`barfed node init`: a node home with its settings, the CA and release key pinned as the operator handed them
over, and the organization's private key (0600), made here and never sent. Rerunning it for the same organization
only updates the addresses; an enrolled node keeps the pins it enrolled under."""

from __future__ import annotations

import tomllib
from pathlib import Path

from contributor_node.anchor import fetched
from contributor_node.home import NodeHome, read_json
from contributor_node.identity import NodeIdentity
from contributor_node.settings import CONFIG_FILE, write_config
from protocol import pki
from protocol.errors import BarFedError


def initialize(home: Path, org: str, service: str, enroll: str, ca: Path, release_key: Path) -> tuple[Path, str, bool]:
    """Create or update the node at ``home``: its key's path and fingerprint, and whether the key is new."""
    pki.check_org_id(org)
    pins = {}
    checks = (
        ("ca.pem", ca, pki.load_certificate, "BAD_CA", "--ca", "CA certificate"),
        ("release.pub", release_key, pki.load_public_key, "BAD_RELEASE_KEY", "--release-key", "release public key"),
    )
    for name, path, load, code, option, what in checks:
        if not path.is_file():
            raise BarFedError("FILE_NOT_FOUND", f"{path} does not exist; give the file the operator handed over.")
        try:
            load(path.read_bytes())
        except BarFedError as exc:  # pki's message says what is wrong, not which file: name it, and what to give
            raise BarFedError(
                code, f"{option} {path} is not a PEM {what} ({exc.message}); give the {name} the operator handed over."
            ) from None
        pins[name] = path.read_bytes()
    config = home / CONFIG_FILE
    if config.is_file():
        existing = tomllib.loads(config.read_text()).get("org_id")
        if existing != org:
            raise BarFedError("NODE_EXISTS", f"{home} is the node of {existing!r}; give another --home for {org!r}.")
    enrolled = (home / "org.pem").is_file()
    for name, content in pins.items():
        pinned = home / name
        if enrolled and pinned.is_file() and pinned.read_bytes().strip() != content.strip():
            raise BarFedError(
                "PIN_CHANGED",
                f"{pinned} differs from {name} given; this node is enrolled under the one it has. Use another --home "
                "to join another federation.",
            )
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, content in pins.items():
        (home / name).write_bytes(content)
    write_config(home, {"org_id": org, "service_address": service, "enroll_address": enroll})
    identity = NodeIdentity(home, org)
    created = not identity.key_path.is_file()
    identity.ensure_key()
    return identity.key_path, pki.public_key_fingerprint(pki.load_private_key(identity.key_path)), created


def next_step(root: Path) -> str:
    """The command to run next, judged from what the node holds: a rerun of `init` on an enrolled node must not
    send its operator back to `enroll`."""
    home = NodeHome(root)
    enrollment = read_json(home.record("enrollment"))
    if not (root / "org.pem").is_file():
        if enrollment:
            return "barfed node enroll --wait (its enrollment request waits for an operator's approval)"
        return "barfed node enroll --token TOKEN --wait"
    if not fetched(home):
        return "barfed node fetch-anchor"
    domains = enrollment.get("domains", []) if enrollment else []
    if not any(home.expert_versions(domain) for domain in domains):
        return "barfed node train"
    submitted = read_json(home.record("submissions"), {})
    packages = [f"{d}-v{v}" for d in domains for v in home.package_versions(d)]
    if not packages:
        return "barfed node eval, then barfed node package"
    if any(name not in submitted for name in packages):
        return "barfed node submit --wait"
    return "barfed node status, or train a new version (barfed node train --version N --from-version N-1)"
