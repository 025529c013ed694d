"""One file as HTTP clients expect: Content-Length, ETag = its sha256, Range/If-Range/HEAD, If-None-Match → 304.

Starlette's FileResponse streams from disk (never the whole file in memory) and does Range
(206, and 416 for a range outside the file), multiple ranges, If-Range and HEAD; it compares If-Range with the
ETag we hand it, so a stale ETag gets the whole file. ``X-Barfed-Sha256`` carries the digest too, for clients
that check what they got without parsing ETags. The digest comes from the caller (a release's signature), so
nothing is hashed per request.

A Range that is malformed (400 ``BAD_RANGE``) or outside the file (416 ``RANGE_NOT_SATISFIABLE``, with
``Content-Range: bytes */size``) is refused here as the JSON every other refusal is (Starlette answers text/plain),
and `FILE_RESPONSES` documents every content type and status a file route answers.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from coordinator.api.errors import ErrorBody, error_response
from protocol.errors import BarFedError

SHA256_HEADER = "x-barfed-sha256"
# Immutable content addressed by its digest, but behind a token unless releases are public: private caches only.
CACHE_CONTROL = "private, max-age=0, must-revalidate"
# JSON files as JSON; every other file as bytes, whatever its name suggests to mimetypes (.sig, .txt, .safetensors)
MEDIA_TYPES = {".json": "application/json"}
OCTETS = "application/octet-stream"
_FILE = {media: {} for media in (OCTETS, *MEDIA_TYPES.values())}
FILE_RESPONSES = {
    200: {"content": _FILE, "description": "the file (ETag and X-Barfed-Sha256: sha256)"},
    206: {"content": {**_FILE, "multipart/byteranges": {}}, "description": "the requested range (several: multipart)"},
    302: {
        "description": "with an object store: Location is a short-lived presigned URL of the file (X-Linked-Etag, "
        "X-Linked-Size)"
    },
    304: {"description": "If-None-Match matched the file's ETag"},
    400: {"model": ErrorBody, "description": "BAD_RANGE: the Range header is malformed; or another bad request"},
    409: {
        "model": ErrorBody,
        "description": "RELEASE_UNVERIFIED: the release's files on this coordinator no longer match its signature; "
        "nothing is served until the operator restores them",
    },
    416: {"model": ErrorBody, "description": "RANGE_NOT_SATISFIABLE: the range is outside the file"},
}


LARGE_CHUNK = 1024 * 1024


class _FileResponse(FileResponse):
    """Starlette's FileResponse, in 1 MiB reads for a file of 16 MiB or more. Each read is a hop to a worker thread
    and each chunk one pass through uvicorn's h11 and asyncio's TLS transport: at Starlette's 64 KiB that overhead,
    not encryption, took most of a 1 GiB download's server CPU (bench/download_throughput.py). Smaller files keep
    64 KiB, so a client sees them arrive in parts. Memory stays bounded by the chunk and the transport's buffer.
    `os.sendfile` cannot serve it: the bytes are encrypted in this process (no kernel TLS here)."""

    def __init__(self, *args, size: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if size >= 16 * LARGE_CHUNK:
            self.chunk_size = LARGE_CHUNK


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
    response = _FileResponse(
        path, size=size, headers=headers, stat_result=stat, media_type=MEDIA_TYPES.get(path.suffix, OCTETS)
    )
    return _range_refusal(request, response, size) or response


def redirect_response(request: Request, url: str, sha256: str, size: int) -> Response:
    """A file kept on the object store: 302 to a presigned URL, with what a client checks before following (the
    Hub's protocol: ETag, X-Linked-Etag, X-Linked-Size; huggingface_hub reads them from this answer on HEAD). The
    URL expires, so the answer is never cached."""
    etag = etag_of(sha256)
    headers = {"etag": etag, SHA256_HEADER: sha256, "cache-control": "no-store"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers={**headers, "cache-control": CACHE_CONTROL})
    headers.update({"location": url, "x-linked-etag": etag, "x-linked-size": str(size)})
    return Response(status_code=302, headers=headers)


def _range_refusal(request: Request, response: FileResponse, size: int) -> Response | None:
    """The JSON refusal of a Range that ``response`` would refuse, with the same conditions as Starlette's."""
    http_range, if_range = request.headers.get("range"), request.headers.get("if-range")
    if http_range is None or request.method not in ("GET", "HEAD"):
        return None
    if if_range is not None and not response._should_use_range(if_range):
        return None  # a stale copy: the whole file comes back, the Range is not looked at
    try:
        FileResponse._parse_range_header(http_range, size)
    except MalformedRangeHeader as exc:
        return error_response(400, "BAD_RANGE", f"{exc.content.rstrip('.')}; send `Range: bytes=START-END` or none.")
    except RangeNotSatisfiable:
        refused = error_response(
            416, "RANGE_NOT_SATISFIABLE", f"the range is outside the file's {size} bytes; ask for a range within it."
        )
        refused.headers["content-range"] = f"bytes */{size}"
        return refused
    return None
