"""gRPC error mapping: a `BarFedError` becomes a status whose stable code travels in the trailing metadata
``barfed-error-code``, so clients branch on the code, never on the message. A database outage is no bug: it is
``UNAVAILABLE`` with ``DATABASE_UNAVAILABLE``, which a node retries with its backoff."""

from __future__ import annotations

import logging
from functools import wraps

import grpc

from coordinator.errors import kind_of
from coordinator.state.db import unavailable
from protocol.errors import BarFedError

log = logging.getLogger(__name__)

ERROR_KEY = "barfed-error-code"

STATUS = {
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
}


async def abort(context: grpc.aio.ServicerContext, error: BarFedError):
    status = STATUS[kind_of(error.code)]
    await context.abort(status, error.message[:2000], trailing_metadata=((ERROR_KEY, error.code),))


def outage(method: str, exc: BaseException) -> BarFedError | None:
    """The coded error for an unexpected exception that is a database outage (logged in one line), else None."""
    error = unavailable(exc)
    if error is not None:
        log.warning("%s: %s (%s)", method, error.code, " ".join(str(getattr(exc, "orig", None) or exc).split())[:300])
    return error


def reports_errors(handler):
    """Unary handlers: a BarFedError becomes a status with its code; anything else an INTERNAL error."""

    @wraps(handler)
    async def wrapper(self, request, context):
        try:
            return await handler(self, request, context)
        except BarFedError as exc:
            await abort(context, exc)

    return wrapper
