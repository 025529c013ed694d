"""The federation PKI works for real mTLS with grpcio on loopback: the right org gets through, others do not."""

from __future__ import annotations

import datetime as dt
from concurrent import futures

import grpc
import pytest

from protocol import pki
from protocol.v1 import barfed_pb2, barfed_pb2_grpc

pytestmark = pytest.mark.integration


class WhoAmI(barfed_pb2_grpc.FederationServicer):
    """Answers GetSubmission with the org named by the caller's verified client certificate."""

    def GetSubmission(self, request, context):
        names = context.auth_context().get("x509_common_name", [b""])
        return barfed_pb2.Submission(submission_id=request.submission_id, org_id=names[0].decode())


def _pem_key(key) -> bytes:
    return pki.private_key_pem(key)


@pytest.fixture(scope="module")
def federation():
    ca_key, ca_cert = pki.create_ca()
    server_key = pki.generate_private_key()
    server_cert = pki.issue_server_certificate(ca_key, ca_cert, server_key)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    barfed_pb2_grpc.add_FederationServicer_to_server(WhoAmI(), server)
    credentials = grpc.ssl_server_credentials(
        [(_pem_key(server_key), pki.certificate_pem(server_cert))],
        root_certificates=pki.certificate_pem(ca_cert),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield {"ca": (ca_key, ca_cert), "port": port}
    server.stop(None)


def _call(federation, key=None, cert=None) -> barfed_pb2.Submission:
    _ca_key, ca_cert = federation["ca"]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.certificate_pem(ca_cert),
        private_key=_pem_key(key) if key else None,
        certificate_chain=pki.certificate_pem(cert) if cert else None,
    )
    with grpc.secure_channel(f"localhost:{federation['port']}", credentials) as channel:
        stub = barfed_pb2_grpc.FederationStub(channel)
        return stub.GetSubmission(barfed_pb2.GetSubmissionRequest(submission_id="s1"), timeout=10)


def _org_cert(ca, org_id, **kwargs):
    key = pki.generate_private_key()
    return key, pki.issue_client_certificate(*ca, pki.make_csr(key, org_id), org_id, **kwargs)


def test_enrolled_org_is_identified_by_its_certificate(federation):
    key, cert = _org_cert(federation["ca"], "acme-labs")
    assert _call(federation, key, cert).org_id == "acme-labs"


def test_no_client_certificate_is_refused(federation):
    with pytest.raises(grpc.RpcError) as err:
        _call(federation)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(federation):
    rogue_ca = pki.create_ca("Rogue")
    key, cert = _org_cert(rogue_ca, "acme-labs")
    with pytest.raises(grpc.RpcError) as err:
        _call(federation, key, cert)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_expired_certificate_is_refused(federation):
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    key, cert = _org_cert(federation["ca"], "acme-labs", days=1, not_before=old)
    with pytest.raises(grpc.RpcError) as err:
        _call(federation, key, cert)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
