"""The served OpenAPI document tells a generated client the truth about every answer.

Found by a property-based fuzzer (issue 11): error answers were missing from the
document, and a 422 could have a body the documented validation schema does not
describe. Here real error answers of each kind are checked against what the
document declares for their operation and status, and the document is found where
tools look for it (`/openapi.json`) as well as under `/api/v1`.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from fastapi.testclient import TestClient
from httpx import Response

from tests.support.api import API, login, make_alert

METHODS = {"get", "put", "post", "delete", "patch"}


def _document(client: TestClient) -> dict[str, Any]:
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The operation whose path template matches `path` (a concrete URL path)."""
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method in item:
            operation: dict[str, Any] = item[method]
            return operation
    raise AssertionError(f"{method.upper()} {path} is not in the document")


def _check_declared(document: dict[str, Any], response: Response) -> None:
    """The response's status is declared for its operation and its body fits the schema."""
    request = response.request
    operation = _operation(document, request.method.lower(), request.url.path)
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, (
        f"{request.method} {request.url.path} answered {response.status_code}, "
        f"which the document does not declare ({sorted(operation['responses'])})"
    )
    schema = declared["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(
        response.json()
    )


def test_every_api_operation_declares_its_error_answers(client: TestClient) -> None:
    document = _document(client)
    operations = [
        (method, path, op)
        for path, item in document["paths"].items()
        if path.startswith(API)
        for method, op in item.items()
        if method in METHODS
    ]
    assert len(operations) > 30
    for method, path, op in operations:
        missing = {"400", "401", "403", "404", "409", "422", "429", "503"} - set(op["responses"])
        assert not missing, f"{method.upper()} {path} does not declare {sorted(missing)}"
        for code in ("401", "404"):
            ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorBody"


def test_real_error_answers_fit_what_the_document_declares(client: TestClient) -> None:
    document = _document(client)
    admin, auditor = login(client, "admin"), login(client, "audit")
    alert_id = make_alert(client, node="lhr-openapi-01")
    answers = {
        401: [client.get(f"{API}/nodes")],
        403: [
            client.post(
                f"{API}/alerts/{alert_id}/transitions", json={"to": "acknowledged"}, headers=auditor
            ),
            client.post(f"{API}/enrollment-tokens", json={}, headers=auditor),
        ],
        404: [
            client.get(f"{API}/nodes/nobody-here", headers=admin),
            client.delete(f"{API}/enrollment-tokens/no-such-token", headers=admin),
            client.get(
                f"{API}/nodes/nobody-here/replies/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=admin
            ),
        ],
        409: [
            client.post(
                f"{API}/alerts/{alert_id}/transitions", json={"to": "closed"}, headers=admin
            ),
            client.post(
                f"{API}/users",
                json={"username": "op", "role": "operator", "password": "another-password"},
                headers=admin,
            ),
        ],
        422: [
            client.get(f"{API}/nodes", params={"offset": str(2**63)}, headers=admin),
            client.get(f"{API}/stream/alerts", params={"since": "not-a-cursor"}, headers=admin),
        ],
        # This test server has no MQTT link, so a command cannot be sent.
        503: [
            client.post(
                f"{API}/nodes/lhr-openapi-01/commands", json={"name": "ping"}, headers=admin
            )
        ],
    }
    for code, responses in answers.items():
        for response in responses:
            assert response.status_code == code, (response.request.url, response.text)
            _check_declared(document, response)


def test_a_rate_limited_sign_in_is_declared_with_its_retry_after(client: TestClient) -> None:
    document = _document(client)
    operation = _operation(document, "post", f"{API}/login/access-token")
    assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_the_document_is_also_at_the_root_where_tools_look(client: TestClient) -> None:
    root = client.get("/openapi.json")
    assert root.status_code == 200
    assert root.json() == _document(client)


def test_the_docs_page_loads_everything_from_this_server(client: TestClient) -> None:
    page = "/docs"
    html = client.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", html.text)
    assert urls
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url


def test_a_405_lists_every_method_the_path_supports(client: TestClient) -> None:
    # FastAPI has one route per method; Starlette's 405 named only the first one's.
    for method, path, allowed in (
        ("OPTIONS", f"{API}/nodes", "GET, POST"),
        ("DELETE", f"{API}/alerts/some-alert/transitions", "GET, POST"),
        ("PATCH", f"{API}/enrollment-tokens", "GET, POST"),
        ("POST", "/healthz", "GET"),
    ):
        response = client.request(method, path)
        assert response.status_code == 405
        assert response.headers["allow"] == allowed, path
