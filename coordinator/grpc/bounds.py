"""One checked range for every field of every request message, enforced where the message enters.

The wire types allow more than any layer behind them can hold (a ``uint32`` version against the manifest's and
the registry's 2^31-1, a ``uint64`` release number against a 32-bit column, strings with NUL that PostgreSQL
cannot store), so each request, and each message of a request stream, is checked against `BOUNDS` before a
handler sees it. `RequestBounds` is a server interceptor doing that for every method, and turning anything a
handler lets escape into an ``INTERNAL`` status with a code (logged), never ``UNKNOWN``. Bytes that are no message
at all are decoded into `Undecodable` rather than raised inside gRPC (which would answer ``UNKNOWN`` with the
parser's text and log a traceback), so they too are refused with a code (``BAD_MESSAGE``, one log line), after the
enrollment port's gate has counted the call. The fuzz test checks that `BOUNDS` names every field of every
request message of the committed protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError, Message

from coordinator.grpc.errors import abort, outage
from protocol.chunk_wire import ChunkView, parse_chunk
from protocol.errors import BarFedError
from protocol.text import is_plain
from protocol.v1 import barfed_pb2 as pb

log = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Number:
    low: int
    high: int
    code: str


@dataclass(frozen=True)
class Text:
    max_chars: int
    code: str
    newlines: bool = False  # PEM spans lines; nothing else does


@dataclass(frozen=True)
class Blob:
    max_bytes: int
    code: str


@dataclass(frozen=True)
class Items:
    max_items: int
    code: str


BOUNDS: dict[str, dict[str, Number | Text | Blob | Items]] = {
    "EnrollRequest": {
        "org_id": Text(63, "BAD_ORG_ID"),
        "csr_pem": Text(8 * 1024, "CSR_INVALID", newlines=True),
        "enrollment_token": Text(128, "BAD_ENROLLMENT_TOKEN"),
        "contact": Text(256, "BAD_CONTACT"),
    },
    "GetEnrollmentRequest": {"enrollment_id": Text(36, "UNKNOWN_ENROLLMENT")},
    "FetchAnchorRequest": {"fingerprint": Text(71, "ANCHOR_MISMATCH"), "have": Items(4096, "BAD_FILE_LIST")},
    "FileOffset": {"path": Text(200, "BAD_PATH"), "offset": Number(0, INT64_MAX, "OFFSET_MISMATCH")},
    "CreateUploadRequest": {
        "domain": Text(64, "BAD_DOMAIN"),
        "version": Number(1, INT32_MAX, "BAD_VERSION"),
        "files": Items(4096, "BAD_FILE_LIST"),
    },
    "FileDeclaration": {
        "path": Text(200, "BAD_PATH"),
        "size": Number(0, INT64_MAX, "FILE_TOO_LARGE"),
        "sha256": Text(64, "BAD_DIGEST"),
    },
    "Chunk": {
        "session_id": Text(36, "UNKNOWN_SESSION"),
        "path": Text(200, "UNKNOWN_FILE"),
        "offset": Number(0, INT64_MAX, "OFFSET_MISMATCH"),
        "data": Blob(64 * 1024**2, "CHUNK_TOO_LARGE"),  # the message limit binds first; the settings after it
    },
    "GetUploadRequest": {"session_id": Text(36, "UNKNOWN_SESSION")},
    "CommitUploadRequest": {"session_id": Text(36, "UNKNOWN_SESSION")},
    "GetSubmissionRequest": {"submission_id": Text(36, "UNKNOWN_SUBMISSION")},
    "WatchReleasesRequest": {
        "after_release": Number(0, INT32_MAX, "BAD_RELEASE"),
        "channel": Text(32, "BAD_CHANNEL"),
    },
}


def _odd(text: str, newlines: bool) -> bool:
    return not is_plain(text, newlines=newlines)  # the same rule as the REST API's (protocol/text.py)


def check(message: Message | ChunkView) -> None:
    """Raise `BarFedError` (the field's code) for the first field outside its range, nested messages included."""
    if isinstance(message, ChunkView):
        name, fields = "Chunk", message.fields()
    else:
        name = message.DESCRIPTOR.name
        fields = [(field.name, value) for field, value in message.ListFields()]
    bounds = BOUNDS[name]
    for field_name, value in fields:
        bound = bounds[field_name]
        where = f"{name}.{field_name}"
        if isinstance(bound, Items):
            if len(value) > bound.max_items:
                raise BarFedError(
                    bound.code, f"{where} holds {len(value)} items; at most {bound.max_items} are allowed."
                )
            for item in value:
                check(item)
        elif isinstance(bound, Number) and not bound.low <= value <= bound.high:
            raise BarFedError(bound.code, f"{where} must be between {bound.low} and {bound.high}, not {value}.")
        elif isinstance(bound, Text) and (len(value) > bound.max_chars or _odd(value, bound.newlines)):
            raise BarFedError(
                bound.code, f"{where} must be at most {bound.max_chars} printable characters; correct it and retry."
            )
        elif isinstance(bound, Blob) and len(value) > bound.max_bytes:
            raise BarFedError(bound.code, f"{where} carries {len(value)} bytes; at most {bound.max_bytes} are allowed.")


DESERIALIZERS = {"WriteChunks": parse_chunk}  # read without protobuf's copies of the data (chunk_wire)
REQUEST_TYPES = {  # method -> request message, from the committed service descriptor
    method.name: method.input_type.name for method in pb.DESCRIPTOR.services_by_name["Federation"].methods
}


@dataclass(frozen=True)
class Undecodable:
    """What a request's bytes decode to when they are not a message of the method's type."""

    reason: str


def _tolerant(deserializer):
    """``deserializer`` returning `Undecodable` instead of raising, so the call reaches the interceptor."""

    def decode(raw: bytes):
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return Undecodable(" ".join(str(exc).split()))

    return decode


def admissible(request, method: str, peer: str) -> None:
    """Refuse an undecodable request (``BAD_MESSAGE``, logged in one line) or one outside `BOUNDS`."""
    if isinstance(request, Undecodable):
        log.warning("%s: BAD_MESSAGE from %s: %s", method, peer, request.reason)
        raise BarFedError(
            "BAD_MESSAGE",
            f"the request is not a well-formed barfed.v1.{REQUEST_TYPES.get(method, method)} message; send it with "
            "a barfed client of this protocol version.",
        )
    check(request)


async def _internal(context: grpc.aio.ServicerContext, method: str, exc: BaseException) -> None:
    if (error := outage(method, exc)) is not None:
        await abort(context, error)
    log.error("%s failed unexpectedly: %s: %s", method, type(exc).__name__, exc, exc_info=exc)
    await abort(
        context,
        BarFedError("INTERNAL_ERROR", "the coordinator failed on this call; the operator has the details in its log."),
    )


class RequestBounds(grpc.aio.ServerInterceptor):
    """Checks every request message against `BOUNDS` before the handler runs; anything a handler lets escape
    becomes ``INTERNAL`` with code ``INTERNAL_ERROR`` (and a log line), never ``UNKNOWN``.

    ``gate`` (the enrollment port's) admits each call first: calls per peer and in flight."""

    def __init__(self, gate=None) -> None:
        self.gate = gate

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        gate = self.gate
        if handler.request_deserializer is not None:
            deserializer = DESERIALIZERS.get(method, handler.request_deserializer)
            handler = handler._replace(request_deserializer=_tolerant(deserializer))

        def admitted(context):
            return gate.admit(context.peer()) if gate is not None else _NoGate()

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                try:
                    with admitted(context):
                        admissible(request, method, context.peer())
                        return await inner(request, context)
                except BarFedError as exc:
                    await abort(context, exc)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _internal(context, method, exc)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None:
            inner = handler.unary_stream

            async def unary_stream(request, context):
                try:
                    with admitted(context):
                        admissible(request, method, context.peer())
                        async for response in inner(request, context):
                            yield response
                except BarFedError as exc:
                    await abort(context, exc)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _internal(context, method, exc)

            return handler._replace(unary_stream=unary_stream)
        if handler.stream_unary is not None:
            inner = handler.stream_unary

            async def checked(requests, peer):
                async for request in requests:
                    admissible(request, method, peer)
                    yield request

            async def stream_unary(request_iterator, context):
                try:
                    with admitted(context):
                        return await inner(checked(request_iterator, context.peer()), context)
                except BarFedError as exc:
                    await abort(context, exc)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _internal(context, method, exc)

            return handler._replace(stream_unary=stream_unary)
        return handler


class _NoGate:
    def __enter__(self):
        return None

    def __exit__(self, *_exc):
        return False
