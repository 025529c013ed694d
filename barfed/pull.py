"""`barfed pull`: download a release over the REST API, resumably, and present it only once it is proven.

    DIR.partial/release/<files>   what has arrived so far (kept across interruptions; Range resumes each file)
    DIR.partial/pull.json         the release and digests those files belong to
    DIR                           appears in one rename, after every file matched its sha256 and the release's
                                  signature verified with the pinned release key

The release key is pinned by ``--coordinator-key`` or, on first use, fetched from ``/v1/keys/release`` and stored
under ``$XDG_CONFIG_HOME/barfed/coordinators/`` with its fingerprint printed; a later pull refuses a coordinator
whose key changed (`barfed.pull_keys`). What the API answers is bounded and checked first (`barfed.pull_api`).
Files are fetched by the release's number (a channel that moves mid-pull changes nothing), each checked against
the digest the file list gives, then the whole directory against the signature, which also binds release.json and
so the release's name. Any mismatch removes the staging directory: nothing half-written or unproven is ever left
where a release would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from rich.console import Console

from barfed.pull_api import Listed, ReleaseApi, raise_for, transport_error
from barfed.pull_body import get
from barfed.pull_keys import given_key, pin_on_first_use
from barfed.pull_sink import HashingSink
from contributor_node.progress import TransferProgress, make_console
from protocol.errors import BarFedError
from protocol.release import RELEASE_FILE
from protocol.signing import verify_directory

CHUNK = 1024 * 1024
STATE_FILE = "pull.json"


@dataclass(frozen=True)
class Pulled:
    release: str
    commit: str
    target: Path
    fingerprint: str
    downloaded_bytes: int
    already: bool = False  # the target held this very release


class Pull:
    """One pull of one release into ``target``; every step may be interrupted and rerun."""

    def __init__(
        self,
        api: str,
        *,
        ca: Path | None = None,
        token: str | None = None,
        coordinator_key: Path | None = None,
        console: Console | None = None,
    ) -> None:
        self.server = ReleaseApi(api, ca=ca, token=token)
        self.api = self.server.api
        self.coordinator_key = coordinator_key
        self.console = console or make_console()
        self.progress_console = make_console(stderr=True)  # bars on a terminal, a plain line now and then in a log

    def close(self) -> None:
        self.server.close()

    def pinned_key(self) -> tuple[bytes, str]:
        """(PEM, fingerprint) of the release key to verify with: --coordinator-key, the stored pin, or a new pin."""
        if self.coordinator_key is not None:
            return given_key(self.coordinator_key)
        return pin_on_first_use(self.api, self.server.release_key(), self.console)

    # -- one file ---------------------------------------------------------------------------------

    def fetch(self, number: int, entry: Listed, part: Path, progress: TransferProgress) -> int:
        """Bring ``part`` to ``entry``'s bytes, resuming what is there; returns the bytes downloaded."""
        have = part.stat().st_size if part.exists() else 0
        if have > entry.size:
            part.unlink()
            have = 0
        digest = hashlib.sha256()
        if have:
            with open(part, "rb") as fh:
                while block := fh.read(CHUNK):
                    digest.update(block)
            if have == entry.size:
                if digest.hexdigest() == entry.sha256:
                    return 0
                part.unlink()  # complete but wrong: fetched again once, from the start
                have, digest = 0, hashlib.sha256()
        task = progress.add_task(entry.path, total=entry.size, completed=have)
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{entry.sha256}"'} if have else {}
        url = f"/v1/releases/r{number}/files/{quote(entry.path)}"
        received = 0
        try:
            with get(self.server.client, self.server.verify, self.api, url, headers) as response:
                if response.status_code == 416:  # our partial is no prefix of the file: start over
                    part.unlink(missing_ok=True)
                    return self.fetch(number, entry, part, progress)
                if response.status_code not in (200, 206):
                    raise_for(response.refused())
                mode = "ab" if response.status_code == 206 else "wb"
                if mode == "wb":
                    have, digest = 0, hashlib.sha256()
                    progress.update(task, completed=0)
                with open(part, mode) as out, HashingSink(out, digest) as sink:
                    shown = 0  # the bar moves once per CHUNK: rich per 16 KiB record took 0.3 CPU-s a GiB
                    for block in response.blocks():
                        if have + received + len(block) > entry.size:
                            raise _mismatch(entry, "more bytes than its size")
                        sink.put(block)
                        received += len(block)
                        if received - shown >= CHUNK:
                            progress.update(task, advance=received - shown)
                            shown = received
                    sink.finish()
                    progress.update(task, advance=received - shown)
        except httpx.HTTPError as exc:
            raise transport_error(self.api, exc) from None
        finally:
            progress.remove_task(task)
        if have + received != entry.size:
            raise _mismatch(entry, f"{have + received} bytes instead of {entry.size}")
        if digest.hexdigest() != entry.sha256:
            raise _mismatch(entry, f"sha256 {digest.hexdigest()} instead of {entry.sha256}")
        return received

    # -- the whole release ------------------------------------------------------------------------

    def run(self, name: str, target: Path) -> Pulled:
        target = Path(target)
        pem, fingerprint = self.pinned_key()
        release, number, commit, files = self.server.listing(name)
        if target.exists():
            return self._already(target, release, commit, pem, fingerprint)
        staging = target.with_name(target.name + ".partial")
        release_dir = staging / "release"
        release_dir.mkdir(parents=True, exist_ok=True)
        self._forget_stale(staging, release_dir, files)
        (staging / STATE_FILE).write_text(
            json.dumps(
                {"api": self.api, "release": release, "commit": commit, "files": {f.path: f.sha256 for f in files}}
            )
        )
        downloaded = 0
        try:
            with TransferProgress(self.progress_console) as progress:
                for entry in files:
                    downloaded += self.fetch(number, entry, release_dir / entry.path, progress)
            self._verify(release_dir, release, commit, files, pem)
        except BarFedError as exc:
            if exc.code in PROOF_FAILURES:  # what arrived is not the release: keep none of it
                shutil.rmtree(staging, ignore_errors=True)
            raise
        os.replace(release_dir, target)
        shutil.rmtree(staging, ignore_errors=True)
        return Pulled(release, commit, target, fingerprint, downloaded)

    def _forget_stale(self, staging: Path, release_dir: Path, files: list[Listed]) -> None:
        """Drop partial files that belonged to another release's version of them (or to no file now listed)."""
        try:
            earlier = json.loads((staging / STATE_FILE).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            earlier = {}
        wanted = {f.path: f.sha256 for f in files}
        for path in release_dir.iterdir():
            if not path.is_file() or path.name not in wanted or earlier.get(path.name) != wanted[path.name]:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    def _verify(self, directory: Path, release: str, commit: str, files: list[Listed], pem: bytes) -> None:
        """The signature over every file with the pinned key; release.json (signed) must name this release."""
        try:
            verify_directory(directory, pem, known_digests={f.path: f.sha256 for f in files})
        except BarFedError as exc:
            code = (
                exc.code
                if exc.code in ("SIGNATURE_WRONG_KEY", "SIGNATURE_MALFORMED", "SIGNATURE_MISSING")
                else ("SIGNATURE_INVALID")
            )
            raise BarFedError(
                code, f"{release} from {self.api} does not verify with the pinned release key: {exc.message}"
            ) from None
        manifest = directory / RELEASE_FILE
        if not manifest.is_file():
            raise BarFedError("RELEASE_MISMATCH", f"{release} has no {RELEASE_FILE}; this is not a federation release.")
        data = manifest.read_bytes()
        try:
            named = json.loads(data).get("name")
        except (ValueError, AttributeError):
            named = None
        if named != release or hashlib.sha256(data).hexdigest()[:40] != commit:
            raise BarFedError(
                "RELEASE_MISMATCH", f"the signed {RELEASE_FILE} is {named!r}, not the {release} ({commit}) listed."
            )

    def _already(self, target: Path, release: str, commit: str, pem: bytes, fingerprint: str) -> Pulled:
        """A target that already holds exactly this release (verified again) is done; anything else is refused."""
        manifest = target / RELEASE_FILE
        if manifest.is_file() and hashlib.sha256(manifest.read_bytes()).hexdigest()[:40] == commit:
            try:
                verify_directory(target, pem)
            except BarFedError:
                pass
            else:
                return Pulled(release, commit, target, fingerprint, 0, already=True)
        raise BarFedError(
            "TARGET_EXISTS", f"{target} already exists and is not a verified copy of {release}; choose another --to."
        )


PROOF_FAILURES = {
    "DIGEST_MISMATCH",
    "SIGNATURE_INVALID",
    "SIGNATURE_WRONG_KEY",
    "SIGNATURE_MALFORMED",
    "SIGNATURE_MISSING",
    "RELEASE_MISMATCH",
}


def _mismatch(entry: Listed, what: str) -> BarFedError:
    return BarFedError(
        "DIGEST_MISMATCH",
        f"{entry.path} arrived with {what}; the coordinator's copy is not what its release lists. Nothing was kept; "
        "tell the coordinator's operator.",
    )


def pull(
    name: str,
    target: Path,
    *,
    api: str,
    ca: Path | None = None,
    token: str | None = None,
    coordinator_key: Path | None = None,
    console: Console | None = None,
) -> Pulled:
    """Download release ``name`` (rN, a channel or a commit id) into ``target`` and say how to load it."""
    console = console or make_console()
    puller = Pull(api, ca=ca, token=token, coordinator_key=coordinator_key, console=console)
    try:
        result = puller.run(name, target)
    finally:
        puller.close()
    verb = "was already" if result.already else "verified and saved"
    console.print(
        f"{result.release} (commit {result.commit}) {verb} in {result.target}: every file matched its sha256 and "
        f"the signature verified with release key {result.fingerprint}.",
        highlight=False,
    )
    console.print(
        "Load it with transformers:\n"
        "  from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f'  model = AutoModelForCausalLM.from_pretrained("{result.target}")\n'
        f'  tokenizer = AutoTokenizer.from_pretrained("{result.target}")',
        highlight=False,
    )
    return result
