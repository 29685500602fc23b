"""The technician's HTTP client for the fleet server (docs/provisioning.md endpoints).

Small and synchronous (httpx): a technician's laptop runs one command at a
time. Every refusal becomes a `TechApiError` carrying the server's reason
code and message, so the CLI can print something a technician can act on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from fleet_server.errors import FleetServerError

__all__ = ["TechApiError", "TechClient"]

API = "/api/v1"


class TechApiError(FleetServerError):
    """The server refused or could not be reached; `.reason` is its code when it gave one."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _detail(response: httpx.Response) -> tuple[str, str]:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return "", response.text[:300]
    if isinstance(detail, dict):
        return str(detail.get("reason") or ""), str(detail.get("message") or detail)
    return "", str(detail)[:300]


class TechClient:
    """Authenticated calls to one fleet server."""

    def __init__(
        self,
        server_url: str,
        *,
        token: str | None = None,
        verify: str | bool = True,
        timeout_s: float = 15.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server_url = server_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server_url, headers=headers, verify=verify, timeout=timeout_s
        )

    @classmethod
    def login(
        cls, server_url: str, *, user: str, password: str, verify: str | bool = True
    ) -> TechClient:
        """Log in with the OAuth2 password form and return a client holding the token."""
        try:
            response = httpx.post(
                f"{server_url.rstrip('/')}{API}/login/access-token",
                data={"username": user, "password": password},
                verify=verify,
                timeout=15.0,
            )
        except httpx.HTTPError as exc:
            raise TechApiError(f"cannot reach {server_url}: {exc}") from exc
        if response.status_code != 200:
            reason, message = _detail(response)
            raise TechApiError(
                f"login as {user} failed: {message}", status=response.status_code, reason=reason
            )
        token = str(response.json()["access_token"])
        return cls(server_url, token=token, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TechClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method, API + path, json=json, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TechApiError(f"cannot reach {self.server_url}: {exc}") from exc
        accepted = response.is_success if ok is None else response.status_code in ok
        if not accepted:
            reason, message = _detail(response)
            raise TechApiError(
                f"{method} {path}: {response.status_code} {reason + ': ' if reason else ''}"
                f"{message}",
                status=response.status_code,
                reason=reason,
            )
        return response

    # ----------------------------------------------------------- resources

    def create_enrollment_token(
        self,
        *,
        site_id: str | None,
        district: str | None,
        ttl_s: int = 86_400,
        note: str = "",
    ) -> dict[str, Any]:
        body = {"site_id": site_id, "district": district, "ttl_s": ttl_s, "note": note}
        data: dict[str, Any] = self.request("POST", "/enrollment-tokens", json=body).json()
        return data

    def import_preauthorized(self, csv_text: str) -> dict[str, Any]:
        response = self.request(
            "POST",
            "/preauthorized",
            content=csv_text.encode("utf-8"),
            headers={"Content-Type": "text/csv"},
        )
        data: dict[str, Any] = response.json()
        return data

    def register_node(
        self,
        *,
        node_id: str,
        serial: str,
        site_id: str | None,
        district: str | None,
        location: Mapping[str, float] | None,
    ) -> dict[str, Any]:
        body = {
            "node_id": node_id,
            "serial": serial,
            "site_id": site_id,
            "district": district,
            "location": dict(location) if location else None,
        }
        data: dict[str, Any] = self.request("POST", "/nodes", json=body).json()
        return data

    def node(self, node_id: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/nodes/{node_id}", ok=(200, 404))
        if response.status_code == 404:
            return None
        data: dict[str, Any] = response.json()
        return data

    def send_command(self, node_id: str, name: str, args: Mapping[str, Any]) -> str:
        response = self.request(
            "POST", f"/nodes/{node_id}/commands", json={"name": name, "args": dict(args)}
        )
        return str(response.json()["request_id"])

    def wait_reply(self, node_id: str, request_id: str, *, timeout_s: float) -> dict[str, Any]:
        """The node's Reply to `request_id`; TechApiError after `timeout_s` without one."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.request("GET", f"/nodes/{node_id}/replies/{request_id}", ok=(200, 404))
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                return data
            if time.monotonic() > deadline:
                raise TechApiError(f"{node_id} did not answer within {timeout_s:.0f}s")
            time.sleep(0.2)

    def command(
        self, node_id: str, name: str, args: Mapping[str, Any], *, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Send a command and wait for the node's reply."""
        return self.wait_reply(node_id, self.send_command(node_id, name, args), timeout_s=timeout_s)

    def events(self, node_id: str, *, event_type: str) -> list[dict[str, Any]]:
        params = {"node_id": node_id, "type": event_type, "limit": 10_000}
        rows: list[dict[str, Any]] = self.request("GET", "/events", params=params).json()["data"]
        return rows

    def alert(self, alert_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.request("GET", f"/alerts/{alert_id}").json()
        return data

    def escalations(self, alert_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.request("GET", f"/alerts/{alert_id}/escalations").json()
        return rows

    def set_lifecycle(self, node_id: str, to: str, *, note: str = "") -> dict[str, Any]:
        response = self.request(
            "POST", f"/nodes/{node_id}/lifecycle", json={"to": to, "note": note}
        )
        data: dict[str, Any] = response.json() if response.content else {}
        return data
