"""`barfed coordinator certs reissue-server`: a coordinator set up for localhost serves, from its next start, a
certificate from the same CA naming its public name, which clients that trust only the CA accept in a real TLS
handshake (HTTPS and gRPC), with nothing else changed and nobody enrolling again."""

from __future__ import annotations

import grpc
import httpx
import pytest
from typer.testing import CliRunner

from coordinator.cli import app
from coordinator.embedded import running_coordinator
from coordinator.setup import initialize

from .conftest import make_settings

pytestmark = pytest.mark.integration


def test_a_reissued_server_certificate_names_the_new_host_for_clients_that_pin_the_ca(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'coordinator' / 'registry.db'}")
    initialize(settings)  # hostnames: the default, localhost
    pki = settings.pki_dir
    kept = {name: (pki / name).read_bytes() for name in ("ca.pem", "ca.key", "server.key", "release.key")}
    old = (pki / "server.pem").read_bytes()
    monkeypatch.setenv("BARFED_COORD_DATABASE_URL", settings.db_url)
    runner = CliRunner()

    bad = runner.invoke(app, ["certs", "reissue-server", "--hostname", "not a name", "--home", str(settings.home)])
    assert getattr(bad.exception, "code", None) == "BAD_HOSTNAME" and (pki / "server.pem").read_bytes() == old
    done = runner.invoke(
        app,
        [
            "certs",
            "reissue-server",
            "--hostname",
            "coord.example",
            "--hostname",
            "10.9.8.7",
            "--home",
            str(settings.home),
        ],
    )
    assert done.exit_code == 0, (done.output, done.exception)
    assert "coord.example, localhost, 10.9.8.7, 127.0.0.1, ::1" in done.stdout and "restart" in done.stdout
    assert (pki / "server.pem").read_bytes() != old
    assert {name: (pki / name).read_bytes() for name in kept} == kept  # same CA and keys: nobody enrolls again
    assert not list(pki.glob(".*tmp"))

    ca = (pki / "ca.pem").read_bytes()
    with running_coordinator(settings) as address:

        def https(name: str) -> httpx.Response:
            """/healthz at https://127.0.0.1:port, checked as ``name`` (a new client: a new handshake)."""
            with httpx.Client(verify=str(pki / "ca.pem")) as client:
                return client.get(f"{address.api}/healthz", extensions={"sni_hostname": name})

        assert https("coord.example").status_code == 200
        with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|[Hh]ostname"):
            https("elsewhere.example")

        def grpc_ready(name: str, wait_s: float) -> bool:
            options = [("grpc.ssl_target_name_override", name)]
            credentials = grpc.ssl_channel_credentials(root_certificates=ca)
            with grpc.secure_channel(address.enroll, credentials, options=options) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=wait_s)
                except grpc.FutureTimeoutError:
                    return False
                return True

        assert grpc_ready("coord.example", 10) and not grpc_ready("elsewhere.example", 1)
