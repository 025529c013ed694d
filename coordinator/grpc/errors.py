"""gRPC error mapping: a `BarFedError` becomes a status whose stable code travels in the trailing metadata
``barfed-error-code``, so clients branch on the code, never on the message."""

from __future__ import annotations

from functools import wraps

import grpc

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
}
CODE_STATUS = {
    **dict.fromkeys(("CLIENT_CERT_REQUIRED", "CERT_UNKNOWN", "CERT_REVOKED", "CERT_NOT_AN_ORG"), "UNAUTHENTICATED"),
    **dict.fromkeys(("DOMAIN_NOT_OWNED", "ORG_REVOKED", "BAD_ENROLLMENT_TOKEN", "TOKEN_USED"), "PERMISSION_DENIED"),
    **dict.fromkeys(("UNKNOWN_SESSION", "UNKNOWN_SUBMISSION", "UNKNOWN_ENROLLMENT", "NO_ANCHOR"), "NOT_FOUND"),
    **dict.fromkeys(
        ("OFFSET_MISMATCH", "UPLOAD_INCOMPLETE", "SESSION_CLOSED", "SESSION_EXPIRED", "VERSION_NOT_NEWER"),
        "FAILED_PRECONDITION",
    ),
    **dict.fromkeys(
        (
            "TOO_MANY_SESSIONS",
            "TOO_MANY_PENDING",
            "FILE_TOO_LARGE",
            "PACKAGE_TOO_LARGE",
            "CHUNK_TOO_LARGE",
            "INSUFFICIENT_STORAGE",
            "SESSION_BUSY",
            "ENROLL_RATE_LIMITED",
            "ENROLL_BUSY",
        ),
        "RESOURCE_EXHAUSTED",
    ),
    "UNKNOWN_ORG": "NOT_FOUND",
    "INTERNAL_ERROR": "INTERNAL",  # a bug, logged with its traceback; everything else is INVALID_ARGUMENT
}


async def abort(context: grpc.aio.ServicerContext, error: BarFedError):
    status = STATUS.get(CODE_STATUS.get(error.code, ""), grpc.StatusCode.INVALID_ARGUMENT)
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
