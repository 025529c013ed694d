"""`barfed pull --api`: plain http only to a coordinator on loopback."""

from __future__ import annotations

import pytest

from barfed.pull_api import check_api
from protocol.errors import BarFedError


@pytest.mark.parametrize("api", ["https://coordinator.example:8443/", "http://127.0.0.1:8443", "http://[::1]:1"])
def test_https_anywhere_and_http_on_loopback_are_accepted(api):
    assert check_api(api) == api.rstrip("/")


@pytest.mark.parametrize(("api", "code"), [("http://10.0.0.5:8443", "INSECURE_API"), ("ftp://host", "BAD_API_URL")])
def test_plain_http_off_loopback_and_other_schemes_are_refused(api, code):
    with pytest.raises(BarFedError) as err:
        check_api(api)
    assert err.value.code == code
