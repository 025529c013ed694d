"""Every redirect the API answers names a path on this server, never a host: Starlette builds the slash redirect
(``/v1/orgs/`` to ``/v1/orgs``) as an absolute URL from the request's Host header, so ``Host: evil.example`` would
send the client there, or poison a cache in front of the API."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RelativeRedirects:
    """ASGI middleware: a redirect's Location loses its scheme and host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = [
                    (name, relative(value) if name.lower() == b"location" else value)
                    for name, value in message["headers"]
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_relative)


def relative(location: bytes) -> bytes:
    """``https://any.host/v1/orgs?x=1`` as ``/v1/orgs?x=1``; one leading slash, so ``//host`` names no host either."""
    parts = urlsplit(location.decode("latin-1"))
    path = "/" + parts.path.lstrip("/")
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")
