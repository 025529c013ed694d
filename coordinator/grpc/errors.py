"""gRPC error mapping: a `BarFedError` becomes a status whose stable code travels in the trailing metadata
``barfed-error-code``, so clients branch on the code, never on the message."""

from __future__ import annotations

from functools import wraps

import grpc

from coordinator.errors import kind_of
from protocol.errors import BarFedError

ERROR_KEY = "barfed-error-code"

STATUS = {
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "INTERNAL": grpc.StatusCode.INTERNAL,
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
}


async def abort(context: grpc.aio.ServicerContext, error: BarFedError):
    status = STATUS[kind_of(error.code)]
    await context.abort(status, error.message[:2000], trailing_metadata=((ERROR_KEY, error.code),))


def reports_errors(handler):
    """Unary handlers: a BarFedError becomes a status with its code; anything else an INTERNAL error."""

    @wraps(handler)
    async def wrapper(self, request, context):
        try:
            return await handler(self, request, context)
        except BarFedError as exc:
            await abort(context, exc)

    return wrapper
