"""One file as HTTP clients expect: Content-Length, ETag = its sha256, Range/If-Range/HEAD, If-None-Match → 304.

Starlette's FileResponse streams from disk in 64 KiB reads (never the whole file in memory) and does Range
(206, and 416 for a range outside the file), multiple ranges, If-Range and HEAD; it compares If-Range with the
ETag we hand it, so a stale ETag gets the whole file. ``X-Barfed-Sha256`` carries the digest too, for clients
that check what they got without parsing ETags. The digest comes from the caller (a release's signature), so
nothing is hashed per request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse

from protocol.errors import BarFedError

SHA256_HEADER = "x-barfed-sha256"
# Immutable content addressed by its digest, but behind a token unless releases are public: private caches only.
CACHE_CONTROL = "private, max-age=0, must-revalidate"


def etag_of(sha256: str) -> str:
    return f'"{sha256}"'


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison; ``*`` matches any current representation."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def file_response(request: Request, path: Path, sha256: str, size: int) -> Response:
    """The response for a GET or HEAD of ``path`` (``size`` bytes with digest ``sha256``)."""
    etag = etag_of(sha256)
    headers = {"etag": etag, SHA256_HEADER: sha256, "cache-control": CACHE_CONTROL}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    stat = path.stat()
    if stat.st_size != size:  # a file that changed since its release was signed: never serve it as that release
        raise BarFedError(
            "RELEASE_UNVERIFIED",
            f"{path.name} on this coordinator is not the size its release signed; the operator must restore it.",
        )
    return FileResponse(path, headers=headers, stat_result=stat)
