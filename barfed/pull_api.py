"""A coordinator's REST API as `barfed pull` reads it: https (plain http on loopback only), answers bounded in size
and checked before they are believed, and every failure a code and what to do."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from coordinator.settings import is_loopback_host
from protocol.errors import BarFedError
from protocol.package import check_file_name

MAX_LISTING_BYTES = 4 * 1024 * 1024
MAX_FILES = 10_000
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
TIMEOUT = httpx.Timeout(30.0, read=300.0)


@dataclass(frozen=True)
class Listed:
    path: str
    size: int
    sha256: str


def check_api(api: str) -> str:
    parts = urlsplit(api)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BarFedError("BAD_API_URL", f"--api must look like https://host:8443, not {api[:200]!r}.")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise BarFedError(
            "INSECURE_API", "plain http is only for a coordinator on loopback; use https:// (and --ca) for this host."
        )
    return api.rstrip("/")


class ReleaseApi:
    """The coordinator at ``api``: its release key, a release's file list, and a client to stream files with."""

    def __init__(self, api: str, *, ca: Path | None = None, token: str | None = None) -> None:
        self.api = check_api(api)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.verify = trusting(ca)  # also for the file bodies `barfed.pull_body` reads
        self.client = httpx.Client(
            base_url=self.api, verify=self.verify, headers=headers, timeout=TIMEOUT, follow_redirects=False
        )

    def close(self) -> None:
        self.client.close()

    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            return self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise transport_error(self.api, exc) from None

    def _json(self, url: str) -> dict:
        response = self._request("GET", url)
        raise_for(response)
        if len(response.content) > MAX_LISTING_BYTES:
            raise BarFedError("BAD_RESPONSE", f"{url} answered {len(response.content)} bytes; that is no file list.")
        try:
            return response.json()
        except ValueError:
            raise BarFedError("BAD_RESPONSE", f"{self.api}{url} did not answer JSON; is --api a coordinator?") from None

    def release_key(self) -> bytes:
        """The release public key (PEM) the coordinator serves: to pin on first use, or to compare with the pin."""
        return str(self._json("/v1/keys/release").get("public_key_pem", "")).encode()

    def listing(self, name: str) -> tuple[str, int, str, list[Listed]]:
        data = self._json(f"/v1/releases/{quote(name, safe='')}/files")
        try:
            release, number, commit = str(data["release"]), int(data["number"]), str(data["commit"])
            files = [Listed(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"]]
        except (KeyError, TypeError, ValueError):
            raise BarFedError("BAD_RESPONSE", f"{self.api} answered a file list this client cannot read.") from None
        if len(files) > MAX_FILES or release != f"r{number}" or not COMMIT_ID.fullmatch(commit):
            raise BarFedError("BAD_RESPONSE", f"{self.api} answered an implausible file list for {name!r}.")
        for entry in files:
            try:
                check_file_name(entry.path)
            except ValueError as exc:
                raise BarFedError("BAD_RESPONSE", f"the file list names an unsafe path: {exc}") from None
            if entry.size < 0 or not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
                raise BarFedError("BAD_RESPONSE", f"the file list gives {entry.path} no valid size and sha256.")
        if COMMIT_ID.fullmatch(name) and name != commit:
            raise BarFedError("RELEASE_MISMATCH", f"asked for commit {name}, the coordinator listed {commit}.")
        return release, number, commit, files


def trusting(ca: Path | None) -> ssl.SSLContext | bool:
    """TLS that trusts the federation's CA certificate only (``--ca``), or the usual authorities without one."""
    if ca is None:
        return True
    if not Path(ca).is_file():
        raise BarFedError("BAD_CA", f"--ca {ca} is not a file; pass the federation's CA certificate (ca.pem).")
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, ValueError) as exc:
        raise BarFedError(
            "BAD_CA",
            f"--ca {ca} is not a PEM CA certificate ({exc}); pass the federation's ca.pem as the operator handed "
            "it over.",
        ) from None


def raise_for(response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    try:
        body = response.json()
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code = "UNAUTHENTICATED" if response.status_code == 401 else "BAD_RESPONSE"
        message = f"{response.request.url} answered HTTP {response.status_code}."
    if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", code):
        code = "BAD_RESPONSE"
    raise BarFedError(code, message[:1000])


def transport_error(api: str, exc: httpx.HTTPError) -> BarFedError:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return BarFedError("TLS_FAILED", f"{api}'s certificate is not trusted: pass the federation's CA with --ca.")
    return BarFedError(
        "COORDINATOR_UNREACHABLE",
        f"cannot reach the coordinator at {api} ({type(exc).__name__}: {text[:200]}); rerun to resume.",
    )
