"""`barfed pull --api`: plain http only to a coordinator on loopback; `--ca` must be a PEM certificate."""

from __future__ import annotations

import pytest

from barfed.pull_api import check_api, trusting
from protocol.errors import BarFedError


@pytest.mark.parametrize("api", ["https://coordinator.example:8443/", "http://127.0.0.1:8443", "http://[::1]:1"])
def test_https_anywhere_and_http_on_loopback_are_accepted(api):
    assert check_api(api) == api.rstrip("/")


@pytest.mark.parametrize(("api", "code"), [("http://10.0.0.5:8443", "INSECURE_API"), ("ftp://host", "BAD_API_URL")])
def test_plain_http_off_loopback_and_other_schemes_are_refused(api, code):
    with pytest.raises(BarFedError) as err:
        check_api(api)
    assert err.value.code == code


def test_a_ca_that_is_no_pem_certificate_is_bad_ca(tmp_path):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for ca in (tmp_path / "ca.pem", tmp_path / "missing.pem"):
        with pytest.raises(BarFedError) as err:
            trusting(ca)
        assert err.value.code == "BAD_CA" and str(ca) in err.value.message
    assert trusting(None) is True
