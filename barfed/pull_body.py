"""A release file's bytes for `barfed pull`, read with the standard library's http.client into 1 MiB buffers.

httpx hands a body over one TLS record (16 KiB) at a time, each through h11's event machinery: about 2 CPU-s per
GiB of Python, more than curl spends on the whole download (bench/download_throughput.py). Here the buffer takes
every record already received (waiting only for the first), read from the TLS socket itself once http.client has
parsed the headers (its buffered reader and response add three Python layers to every 16 KiB record, about 1 CPU-s
a GiB), so what is left is TLS, sha256 and the write, once per block instead of once per record. Every other
request stays on httpx, and so does a file when a proxy from the environment applies (http.client here speaks to
the coordinator directly; httpx honours HTTPS_PROXY, NO_PROXY).
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import urllib.request
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx

BUFFER = 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024  # a refusal is a short JSON body; never read more of one than this


class Body:
    """One response: its status, its body in blocks, or an httpx.Response to refuse.

    Blocks are views of two buffers used in turn: a block stays valid until the block after the next is read, so
    the caller may hash and write one on a thread while the next one arrives."""

    def __init__(self, url: str, response: http.client.HTTPResponse | httpx.Response, sock=None) -> None:
        self.url, self._response, self.sock = url, response, sock
        self.status_code = response.status if isinstance(response, http.client.HTTPResponse) else response.status_code

    def blocks(self) -> Iterator[memoryview | bytes]:
        response = self._response
        if isinstance(response, httpx.Response):
            yield from response.iter_bytes()
            return
        if response.length is None:  # no Content-Length: http.client reads the framing
            yield from iter(lambda: response.read1(BUFFER), b"")
            return
        views = (memoryview(bytearray(BUFFER)), memoryview(bytearray(BUFFER)))
        turn, remaining = 0, response.length
        try:
            # what http.client buffered with the headers first (at most one read; read1 allocates what it is
            # asked for, so never the whole body), then the socket itself
            leftover = response.fp.read1(min(remaining, BUFFER)) if remaining else b""
            remaining -= len(leftover)
            if leftover:
                yield leftover
            while remaining and (block := self._available(views[turn], remaining)):
                remaining -= len(block)
                yield block
                turn ^= 1
        except (OSError, http.client.HTTPException) as exc:
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from None
        if remaining:  # the connection ended inside the body: a transport error (rerun resumes), not a digest
            raise httpx.RemoteProtocolError(f"the connection closed with {remaining} bytes of the body unread")

    def _available(self, view: memoryview, remaining: int) -> memoryview:
        """Waits for the first bytes only, then adds records while more are already here (a server that pauses
        mid-file still gets what it sent written); empty when the connection has closed. Straight from the
        socket, without http.client's three layers per 16 KiB record, and without asking select() about each:
        a non-blocking read says when nothing more is here."""
        sock, wanted = self.sock, min(len(view), remaining)
        filled = sock.recv_into(view, wanted)
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            while filled and filled < wanted:
                n = sock.recv_into(view[filled:], wanted - filled)
                if not n:
                    break
                filled += n
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass
        finally:
            sock.settimeout(timeout)
        return view[:filled]

    def refused(self) -> httpx.Response:
        """The response as httpx's, for `raise_for` to read its code and message."""
        response = self._response
        if isinstance(response, httpx.Response):
            response.read()
            return response
        return httpx.Response(
            response.status,
            headers=response.getheaders(),
            content=response.read(MAX_ERROR_BYTES),
            request=httpx.Request("GET", self.url),
        )


def _proxied(api: str) -> bool:
    parts = urlsplit(api)
    proxies = urllib.request.getproxies()
    wanted = parts.scheme in proxies or "all" in proxies
    return wanted and not urllib.request.proxy_bypass(parts.hostname or "")


REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 3


@contextlib.contextmanager
def get(client: httpx.Client, verify: ssl.SSLContext | bool, api: str, url: str, headers: dict) -> Iterator[Body]:
    """GET ``url`` (a path under ``api``) with ``client``'s Authorization, trusting what ``verify`` trusts (httpx's
    own setting); http.client's errors come out as httpx's, so callers map one family of transport errors.

    A redirect (a coordinator whose releases live on an object store answers with a presigned URL) is followed to
    another host without the Authorization header (the URL carries its own) and without If-Range (the store's ETag
    is not the sha256; the object behind a release path never changes), trusting the system's certificates there."""
    if _proxied(api):
        with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
            yield Body(api + url, response)
        return
    auth = {"Authorization": client.headers["authorization"]} if "authorization" in client.headers else {}
    target, context = api + url, verify if isinstance(verify, ssl.SSLContext) else None
    timeout = client.timeout.read or 300.0
    for _ in range(MAX_REDIRECTS + 1):
        connection, response = _open(target, {**auth, **headers}, context, timeout)
        location = response.getheader("location") if response.status in REDIRECTS else None
        if location is None:
            try:
                yield Body(target, response, connection.sock)
            finally:
                connection.close()
            return
        connection.close()
        following = urljoin(target, location)
        if urlsplit(following).netloc != urlsplit(target).netloc:
            auth, context = {}, None
            headers = {k: v for k, v in headers.items() if k.lower() != "if-range"}
        target = following
    raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects from {api + url}")


def _open(url: str, headers: dict, context: ssl.SSLContext | None, timeout: float):
    parts = urlsplit(url)
    if parts.scheme == "https":
        context = context or httpx.create_ssl_context()
        connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("GET", path, headers=headers)
        return connection, connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
