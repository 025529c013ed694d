"""``/docs`` and ``/redoc`` work where there is no internet: every script, style, icon and document the two pages
reference is a path on the coordinator itself, served by it, and no other host appears anywhere in them."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from coordinator.api.app import create_app

pytestmark = pytest.mark.integration

# src="…", href="…", ReDoc's spec-url="…", and Swagger UI's url: '…' and oauth2RedirectUrl: origin + '…'
REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'|origin \+ '([^']+)'""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_nothing_from_another_host(page):
    client = TestClient(create_app(None))  # the pages need no registry, and no token
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"(?i)\b(?:https?:|wss?:)?//[a-z0-9]", html), "a page names another host"
    references = {next(filter(None, groups)) for groups in REFERENCE.findall(html)}
    assert len(references) >= 3, references  # at least the script, the icon and the OpenAPI document
    for reference in sorted(references):
        assert reference.startswith("/") and not reference.startswith("//"), reference
        assert client.get(reference).status_code == 200, reference
