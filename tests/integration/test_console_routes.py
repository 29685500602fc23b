"""The console's page shells and static files, checked without a browser.

These need only the console router, so they run before (and without) the rest
of the fleet server: the shells are public, carry a strict CSP, name their
assets relative to the app's root path, and the static route serves only the
console's own files.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleet_server.alerting import TRANSITIONS
from fleet_server.console import routes
from fleet_server.console.routes import router

STATIC_DIR = Path(routes.__file__).parent / "static"
TEMPLATE_DIR = Path(routes.__file__).parent / "templates"


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_console_root_redirects_to_the_queue(client: TestClient) -> None:
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/console/"


@pytest.mark.parametrize(
    ("path", "script"), [("/console/", "queue.js"), ("/console/login", "login.js")]
)
def test_page_shells_are_public_and_locked_down(client: TestClient, path: str, script: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert f'src="/console/static/{script}"' in response.text
    assert 'data-api-base="/api/v1"' in response.text


def test_the_queue_offers_exactly_the_servers_lifecycle(client: TestClient) -> None:
    page = client.get("/console/").text
    match = re.search(r'data-transitions="([^"]*)"', page)
    assert match is not None
    offered = json.loads(html.unescape(match.group(1)))
    assert offered == {
        str(k): sorted(str(v) for v in targets) for k, targets in TRANSITIONS.items()
    }


def test_page_shells_follow_the_root_path_behind_a_proxy() -> None:
    app = FastAPI()
    app.include_router(router)
    page = TestClient(app, root_path="/fleet").get("/console/login")
    assert 'data-api-base="/fleet/api/v1"' in page.text
    assert 'href="/fleet/console/static/console.css"' in page.text


def test_templates_have_no_inline_script_or_foreign_assets() -> None:
    for template in TEMPLATE_DIR.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<script[^>]*>", text):
            assert "src=" in tag, f"inline script in {template.name}"
        assert "http://" not in text
        assert "https://" not in text
        assert not re.search(r"\son[a-z]+=", text), f"inline handler in {template.name}"


# Files only: vendor/ holds the vendored libraries (test_console_map_api.py checks them).
@pytest.mark.parametrize("name", sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file()))
def test_static_files_are_served_with_their_type(client: TestClient, name: str) -> None:
    response = client.get(f"/console/static/{name}")
    assert response.status_code == 200
    expected = "text/css" if name.endswith(".css") else "text/javascript"
    assert response.headers["content-type"].startswith(expected)


@pytest.mark.parametrize(
    "name",
    ["routes.py", "..%2Froutes.py", "..%2F..%2F__init__.py", "missing.js", "%2Fetc%2Fpasswd"],
)
def test_static_route_serves_nothing_but_console_assets(client: TestClient, name: str) -> None:
    assert client.get(f"/console/static/{name}").status_code == 404


def test_the_queue_offers_enrollment_to_exactly_the_roles_the_enrollment_api_admits(
    client: TestClient,
) -> None:
    # Imported here: the rest of this module needs only the console router.
    from typing import get_args

    from fastapi import HTTPException

    from fleet_server.api.routes.enrollment import EnrollerUser
    from fleet_server.models import Role, User

    # The enrollment routes' own role check, called with a user of each role.
    check = get_args(EnrollerUser)[1].dependency
    admitted = set()
    for role in Role:
        try:
            check(User(username="u", role=role, password_hash="x"))
        except HTTPException:
            continue
        admitted.add(str(role))
    page = client.get("/console/").text
    match = re.search(r'data-enrollment-roles="([^"]*)"', page)
    assert match is not None
    assert set(json.loads(html.unescape(match.group(1)))) == admitted
