"""The coordinator's two gRPC servers: the service port (mutual TLS: every call names its organization by its
client certificate) and the enrollment port (TLS without a client certificate, which a node does not have yet),
or plaintext on loopback when asked for by name. Both serve the same `FederationService`."""

from __future__ import annotations

import asyncio
import logging

import grpc

from coordinator.enrollment import EnrollmentGate
from coordinator.grpc.bounds import RequestBounds
from coordinator.grpc.servicer import FederationService
from coordinator.keys import CoordinatorKeys
from coordinator.settings import CoordinatorSettings
from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2_grpc

log = logging.getLogger(__name__)
MESSAGE_BYTES = 8 * 1024**2


def server_credentials(keys: CoordinatorKeys, *, client_auth: bool) -> grpc.ServerCredentials:
    """Mutual TLS for the service port; server-only TLS for the enrollment port (the node has no cert yet)."""
    if not keys.exists():
        raise BarFedError("NOT_INITIALIZED", f"{keys.directory} has no keys; run `barfed coordinator init` first.")
    return grpc.ssl_server_credentials(
        [(keys.server_key_path.read_bytes(), keys.server_cert_path.read_bytes())],
        root_certificates=keys.ca_cert_path.read_bytes() if client_auth else None,
        require_client_auth=client_auth,
    )


def keepalive(settings: CoordinatorSettings) -> list[tuple[str, int]]:
    """Ping every connection, with or without calls and however long no data flowed, so a peer that stopped
    answering (frozen, unplugged) is closed within ``grpc_keepalive_s + grpc_keepalive_timeout_s`` and its calls
    end (an upload stream then gives its session up). Clients may ping too: the nodes do every
    `contributor_node.client.KEEPALIVE_MS` during a call, and pings that come more often than the server allows
    would make it close the connection (``too_many_pings``), so it allows one every 10 s."""
    return [
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.grpc_keepalive_timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", round(settings.grpc_keepalive_timeout_s * 1000)),  # else a minute
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # a flow-control (BDP) ping in flight to a peer that froze must not hold the keepalive ping back: with
        # grpc's default of one ping in flight the keepalive never went out and the peer was never found
        ("grpc.http2.max_inflight_pings", 8),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def service_server(settings: CoordinatorSettings) -> grpc.aio.Server:
    """The authenticated port: messages up to 8 MiB, for upload chunks."""
    return grpc.aio.server(
        interceptors=[RequestBounds()],
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES),
            ("grpc.max_send_message_length", MESSAGE_BYTES),
            *keepalive(settings),
        ],
    )


def enrollment_server(settings: CoordinatorSettings) -> grpc.aio.Server:
    """The anonymous port's own server: its own small message limit, few streams and little metadata per
    connection, and a gate on calls per peer and in flight, so callers without a certificate cannot make
    the coordinator hold much memory (the service port's 8 MiB messages are for authenticated uploads)."""
    limit = settings.enroll_message_bytes
    gate = EnrollmentGate(settings.enroll_calls_per_minute, settings.enroll_burst, settings.enroll_in_flight)
    return grpc.aio.server(
        interceptors=[RequestBounds(gate)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", MESSAGE_BYTES),
            ("grpc.max_concurrent_streams", 16),
            ("grpc.max_metadata_size", 16 * 1024),
            *keepalive(settings),
        ],
    )


class GrpcPorts:
    """Both servers with the service added and their ports bound (port 0 picks a free one)."""

    def __init__(self, service: FederationService, settings: CoordinatorSettings, keys: CoordinatorKeys) -> None:
        self.server, self.enroll_server = service_server(settings), enrollment_server(settings)
        barfed_pb2_grpc.add_FederationServicer_to_server(service, self.server)
        barfed_pb2_grpc.add_FederationServicer_to_server(service, self.enroll_server)
        if settings.insecure_plaintext:
            log.warning("serving PLAINTEXT on %s (loopback development mode)", settings.listen)
            self.port = self.server.add_insecure_port(settings.listen)
            self.enroll_port = self.enroll_server.add_insecure_port(settings.enroll_listen)
        else:
            credentials = server_credentials(keys, client_auth=True)
            self.port = self.server.add_secure_port(settings.listen, credentials)
            anonymous = server_credentials(keys, client_auth=False)
            self.enroll_port = self.enroll_server.add_secure_port(settings.enroll_listen, anonymous)

    async def start(self) -> None:
        await self.server.start()
        await self.enroll_server.start()

    async def stop(self, grace_s: float) -> None:
        await asyncio.gather(self.server.stop(grace=grace_s), self.enroll_server.stop(grace=grace_s))
