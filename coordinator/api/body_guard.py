"""No request body is read before its caller is authenticated, and none beyond ``api_max_body_bytes`` or
``api_read_timeout_s``: an anonymous caller cannot make the API buffer or parse anything. A body is read here and
handed to the app whole; a request that frames its body two ways (Content-Length and Transfer-Encoding, a way to
smuggle requests, RFC 9112 §6.1) is refused. Every refusal here closes the connection, leaving the body unread."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api import deps
from coordinator.api.errors import error_response, status_of
from coordinator.runtime import Runtime
from coordinator.state.db import unavailable
from protocol.errors import BarFedError

HTTP_STATUS = {"AMBIGUOUS_FRAMING": 400, "BODY_TIMEOUT": 408, "BODY_TOO_LARGE": 413}  # refusals only REST makes


class BodyGuard:
    """ASGI middleware in front of everything that could read a body."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length, chunked = headers.get("content-length"), "transfer-encoding" in headers
        if not chunked and int(length or 0) == 0:  # no body: nothing to guard
            await self.app(scope, receive, send)
            return
        try:
            if length is not None and chunked:
                raise BarFedError(
                    "AMBIGUOUS_FRAMING", "frame a body with Content-Length or Transfer-Encoding, not both (RFC 9112)."
                )
            principal = await self._authenticate(headers.get("authorization"), None if chunked else int(length))
            body = await self._read(receive)
        except BarFedError as exc:
            response = error_response(HTTP_STATUS.get(exc.code) or status_of(exc.code), exc.code, exc.message)
            response.headers["connection"] = "close"  # the body is left unread: this connection cannot go on
            await response(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        scope.setdefault("state", {})[deps.PRINCIPAL] = principal
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, authorization: str | None, length: int | None) -> deps.Principal:
        """The caller, checked in the order that costs least: a token at all, the declared size, then the token."""
        if not authorization:
            deps.current_principal(None)  # NO_TOKEN, worded as every route words it
        if length is not None and length > self.limit:
            raise self._too_large()
        try:
            found = await run_in_threadpool(deps.authenticate, self.runtime, authorization)
        except SQLAlchemyError as exc:  # a database outage is 503 DATABASE_UNAVAILABLE here too, not a reset
            raise unavailable(exc) or exc from None
        return deps.current_principal(found)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client went away."""
        body, timeout = bytearray(), self.runtime.settings.api_read_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    if len(body) > self.limit:
                        raise self._too_large()
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            raise BarFedError(
                "BODY_TIMEOUT", f"the request body did not arrive within {timeout:g} s; send it without pauses."
            ) from None

    @property
    def limit(self) -> int:  # read per request: the app is also built without a runtime, for its OpenAPI document
        return self.runtime.settings.api_max_body_bytes

    def _too_large(self) -> BarFedError:
        return BarFedError(
            "BODY_TOO_LARGE",
            f"a request body may hold at most {self.limit} bytes (api_max_body_bytes); send less. "
            "Experts are uploaded over gRPC (barfed node submit), not here.",
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """The app's receive: the body read here, then the server's (which tells of a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
