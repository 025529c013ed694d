"""Every redirect the API answers names a path on this server, never a host: Starlette builds the slash redirect
(``/v1/orgs/`` to ``/v1/orgs``) as an absolute URL from the request's Host header, so ``Host: evil.example`` would
send the client there, or poison a cache in front of the API. The one exception is the origin of the object
store's presigned download URLs, which comes from the settings, never from the request."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RelativeRedirects:
    """ASGI middleware: a redirect's Location loses its scheme and host."""

    def __init__(self, app: ASGIApp, store_origin: str | None = None) -> None:
        self.app, self.store_origin = app, store_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = [
                    (name, self._checked(value) if name.lower() == b"location" else value)
                    for name, value in message["headers"]
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_relative)

    def _checked(self, location: bytes) -> bytes:
        if self.store_origin is not None and origin(location.decode("latin-1")) == self.store_origin:
            return location
        return relative(location)


def origin(url: str | None) -> str | None:
    """``scheme://host:port`` of an absolute URL, lower-cased; None for a relative one."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def relative(location: bytes) -> bytes:
    """``https://any.host/v1/orgs?x=1`` as ``/v1/orgs?x=1``; one leading slash, so ``//host`` names no host either."""
    parts = urlsplit(location.decode("latin-1"))
    path = "/" + parts.path.lstrip("/")
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")
