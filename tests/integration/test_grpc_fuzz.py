"""Property-based fuzz of the whole gRPC surface from a raw client built on the committed stubs.

Every request message of protocol/v1 is generated from its descriptor (so a new field is fuzzed the day it
is added): extreme integers of each wire type, empty, long, NUL-carrying and other odd strings, real ids
mixed in so the handlers get past their first check, repeated fields up to past their bounds; a quarter of the
examples go as bytes, the serialised request truncated, with a byte changed or with bytes spliced in, so the
decoder meets what is no message at all. Every call
ends in a status that is not UNKNOWN and, unless the transport itself refused it, carries a code in the
``barfed-error-code`` trailer; nothing is logged with a traceback; and after each example the coordinator
still answers on both ports. SQLite and PostgreSQL (PostgreSQL refuses NUL in text and 64-bit numbers in
32-bit columns, which is where UNKNOWN used to come from).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.grpc.bounds import BOUNDS
from protocol import pki
from protocol.v1 import barfed_pb2 as pb
from protocol.v1 import barfed_pb2_grpc
from tests.integration.conftest import Federation, fresh_database, make_settings

pytestmark = [pytest.mark.integration]
ERROR_KEY = "barfed-error-code"
SERVICE = pb.DESCRIPTOR.services_by_name["Federation"]
ENROLL_METHODS = ("Enroll", "GetEnrollment")
TRANSIENT = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
INTEGERS = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}
ODD_STRINGS = (
    "",
    "\x00",
    "test-vowels\x00",
    "../../etc/passwd",
    "/abs/model.safetensors",
    ".hidden",
    "é" * 40,
    "\u202emodel.safetensors",
    "\U0001f600" * 10,
    "x" * 300,
    "x" * 5000,
    "y" * 100_000,
    "line\nbreak",
    "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 8200 + "\n-----END CERTIFICATE REQUEST-----\n",
)


@dataclass
class Surface:
    federation: Federation
    service: object  # stub, mutual TLS as fuzz-org
    anonymous: object  # stub, enrollment port, no certificate
    enrollment_id: str
    valid: list  # real values the strategies mix in
    problems: list  # log records with a traceback or at ERROR
    channels: dict  # "service" and "anonymous": raw channels for requests sent as bytes


class _Recorder(logging.Handler):
    def __init__(self, sink: list) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.sink.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def surface(request, micro, tmp_path_factory):
    from coordinator.embedded import running_coordinator
    from coordinator.keys import CoordinatorKeys
    from coordinator.setup import initialize
    from coordinator.state.db import Registry

    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    problems: list[str] = []
    recorder = _Recorder(problems)
    logging.getLogger().addHandler(recorder)
    with fresh_database(request.param, root) as url:
        settings_ = make_settings(root, url, enroll_calls_per_minute=10**6, enroll_burst=10**6, max_files=8)
        initialize(settings_, micro["branch"])
        registry = Registry(settings_.db_url)
        with running_coordinator(settings_) as address:
            federation = Federation(settings_, registry, CoordinatorKeys(settings_.pki_dir), address, root)
            identity = federation.enroll("fuzz-org", ["test-vowels"])
            from coordinator.enrollment import invite

            token = invite(registry, "fuzz-two", ["math"])
            csr = pki.make_csr(pki.generate_private_key(), "fuzz-two").decode()
            with identity.client(address.service) as client:
                files = [
                    pb.FileDeclaration(path=name, size=10, sha256="0" * 64)
                    for name in ("expert.json", "model.sig", "model.safetensors")
                ]
                session = client.stub.CreateUpload(pb.CreateUploadRequest(domain="test-vowels", version=1, files=files))
                enroll_channel = grpc.secure_channel(address.enroll, grpc.ssl_channel_credentials(federation.ca_pem))
                anonymous = barfed_pb2_grpc.FederationStub(enroll_channel)
                approved = next(r.id for r in _enrollments(registry) if r.org_id == "fuzz-org")
                valid = [
                    "test-vowels",
                    "math",
                    "fuzz-org",
                    "fuzz-two",
                    token,
                    csr,
                    approved,
                    session.session_id,
                    str(uuid.uuid4()),
                    "expert.json",
                    "model.sig",
                    "model.safetensors",
                    hashlib.sha256(b"x").hexdigest(),
                    "latest",
                ]
                try:
                    channels = {"service": client.channel, "anonymous": enroll_channel}
                    yield Surface(federation, client.stub, anonymous, approved, valid, problems, channels)
                finally:
                    enroll_channel.close()
        registry.dispose()
    logging.getLogger().removeHandler(recorder)


def _enrollments(registry):
    from sqlalchemy import select

    from coordinator.state.models import Enrollment

    with registry.session() as session:
        return list(session.scalars(select(Enrollment)))


# -- strategies, from the descriptors -------------------------------------------------------------


def _scalar(field: FieldDescriptor, valid: list) -> st.SearchStrategy:
    if field.type in INTEGERS:
        low, high = INTEGERS[field.type]
        edges = [v for v in (low, high, 0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63) if low <= v <= high]
        return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(0, 5))
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(valid), st.sampled_from(ODD_STRINGS), st.text(max_size=40))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from((b"", b"\x00" * 70_000)))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise AssertionError(f"no strategy for {field.full_name}")


def messages(descriptor: Descriptor, valid: list) -> st.SearchStrategy:
    """Any message of ``descriptor``'s type: each field absent or drawn from its strategy."""
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = messages(field.message_type, valid)
            value = st.lists(inner, max_size=10) if field.is_repeated else inner
        else:
            scalar = _scalar(field, valid)
            value = st.lists(scalar, max_size=10) if field.is_repeated else scalar
        fields[field.name] = st.one_of(st.none(), value)
    cls = getattr(pb, descriptor.name)

    def build(values: dict):
        message = cls()
        for name, value in values.items():
            if value is None:
                continue
            target = getattr(message, name)
            if isinstance(value, list):
                target.extend(value)  # repeated scalars and repeated messages alike
            elif hasattr(value, "DESCRIPTOR"):
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(fields).map(build)


# -- calling --------------------------------------------------------------------------------------


def _call(surface: Surface, method: str, request) -> None:
    stub = surface.anonymous if method in ENROLL_METHODS else surface.service
    rpc = getattr(stub, method)
    if method == "WriteChunks":
        rpc(iter(request), timeout=10)
    elif method == "FetchAnchor":
        stream = rpc(request, timeout=10)
        next(stream, None)
        stream.cancel()
    elif method == "WatchReleases":
        for _event in rpc(request, timeout=0.5):
            pass
    else:
        rpc(request, timeout=10)


def _call_raw(surface: Surface, method: str, payloads: list[bytes]) -> None:
    """``payloads`` as the request bytes of ``method``, with no serializer in between."""
    channel = surface.channels["anonymous" if method in ENROLL_METHODS else "service"]
    descriptor = SERVICE.methods_by_name[method]
    path, raw = f"/barfed.v1.Federation/{method}", {"request_serializer": None, "response_deserializer": None}
    if descriptor.client_streaming:
        channel.stream_unary(path, **raw)(iter(payloads), timeout=10)
    elif descriptor.server_streaming:
        stream = channel.unary_stream(path, **raw)(payloads[0], timeout=2)
        next(stream, None)
        stream.cancel()
    else:
        channel.unary_unary(path, **raw)(payloads[0], timeout=10)


@st.composite
def _mangled(draw, request) -> list[bytes]:
    """The request's bytes, truncated, with one byte changed, or with bytes spliced in (b"\\x0a\\xff" among them)."""
    payloads = [m.SerializeToString() for m in (request if isinstance(request, list) else [request])]
    mangled = []
    for data in payloads:
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(("truncate", "change", "splice")))
        if how == "truncate":
            data = data[:at]
        elif how == "change" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        else:
            data = data[:at] + draw(st.one_of(st.just(b"\x0a\xff"), st.binary(min_size=1, max_size=8))) + data[at:]
        mangled.append(data)
    return mangled


def _judge(exc: grpc.RpcError) -> None:
    code, details = exc.code(), exc.details() or ""
    assert code != grpc.StatusCode.UNKNOWN, f"UNKNOWN: {details[:300]}"
    assert code != grpc.StatusCode.INTERNAL, f"INTERNAL: {details[:300]}"
    if code in TRANSIENT:
        return
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return  # the transport's own message limit: refused before any handler runs
    assert ERROR_KEY in dict(exc.trailing_metadata() or ()), f"{code.name} without a code: {details[:300]}"


def _healthy(surface: Surface) -> None:
    enrollment = surface.anonymous.GetEnrollment(
        pb.GetEnrollmentRequest(enrollment_id=surface.enrollment_id), timeout=10
    )
    assert enrollment.state == pb.ENROLLMENT_APPROVED
    with pytest.raises(grpc.RpcError) as err:
        surface.service.GetUpload(pb.GetUploadRequest(session_id=str(uuid.uuid4())), timeout=10)
    assert dict(err.value.trailing_metadata())[ERROR_KEY] == "UNKNOWN_SESSION"


def _requests(method: str, valid: list) -> st.SearchStrategy:
    descriptor = SERVICE.methods_by_name[method].input_type
    if method == "WriteChunks":
        return st.lists(messages(descriptor, valid), min_size=1, max_size=3)
    return messages(descriptor, valid)


EXAMPLES = {"WatchReleases": 8, "FetchAnchor": 10}


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_no_request_ends_in_unknown_or_a_traceback(surface, method):
    @settings(
        max_examples=EXAMPLES.get(method, 30),
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def run(data):
        request = data.draw(_requests(method, surface.valid))
        try:
            if data.draw(st.integers(0, 3)) == 0:
                _call_raw(surface, method, data.draw(_mangled(request)))
            else:
                _call(surface, method, request)
        except grpc.RpcError as exc:
            _judge(exc)
        _healthy(surface)
        assert not surface.problems, f"logged with a traceback: {surface.problems[:3]}"

    run()


def test_every_field_of_every_request_has_a_checked_range():
    """The fuzz generates from the descriptors; this says the bounds table keeps up with them."""

    def walk(descriptor: Descriptor) -> None:
        assert descriptor.name in BOUNDS, f"{descriptor.name} has no bounds"
        for field in descriptor.fields:
            assert field.name in BOUNDS[descriptor.name], f"{descriptor.name}.{field.name} has no checked range"
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                walk(field.message_type)

    for method in SERVICE.methods:
        walk(method.input_type)
