"""The balena backend's call mapping, against a local fake of balena's HTTP API.

Only the requests are checked (which resource, which method, which body):
the fake answers with just enough JSON for balena-sdk to go on. It is not
balena, and nothing here says the real API accepts these requests beyond
what the SDK itself sends (docs/ota-server.md).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("balena", reason="balena-sdk is not installed (the balena extra)")

from fleet_server.ota.balena import BalenaBackend

FLEET = "nigehbaan/pillars"
RELEASE = "4b1f0c7e2d9a4b1f0c7e2d9a4b1f0c7e"
DEVICES = [
    {
        "id": 101,
        "uuid": "a" * 32,
        "device_name": "lhr-0001",
        "belongs_to__application": {"__id": 7},
    },
    {
        "id": 102,
        "uuid": "b" * 32,
        "device_name": "lhr-0002",
        "belongs_to__application": {"__id": 7},
    },
]


class FakeBalena(BaseHTTPRequestHandler):
    """Records every request; answers GETs from small tables, anything else with OK."""

    requests: ClassVar[list[tuple[str, str, str, Any]]] = []

    def log_message(self, *_: Any) -> None:
        return

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> tuple[str, str]:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        resource = parts.path.rstrip("/").split("/")[-1].split("(")[0]
        where = unquote(parts.path + "?" + parts.query)
        self.requests.append((self.command, resource, where, body))
        return resource, where

    def do_GET(self) -> None:
        resource, query = self._record()
        if resource == "device":
            named = {d["uuid"]: d for d in DEVICES}
            asked = dict.fromkeys(re.findall(r"[0-9a-f]{32}", query))
            rows = [named.get(u) or {"id": 1000 + i, "uuid": u, "device_name": f"dev-{u[:6]}",
                                     "belongs_to__application": {"__id": 7}}
                    for i, u in enumerate(asked)] or DEVICES  # fmt: skip
            self._answer(200, {"d": rows})
        elif resource == "release":
            self._answer(200, {"d": [{"id": 55, "commit": RELEASE}]})
        elif resource == "application":
            self._answer(200, {"d": [{"id": 7, "slug": FLEET, "app_name": "pillars"}]})
        elif resource == "whoami":
            self._answer(200, {"id": 1, "actorType": "user", "actorTypeId": 1, "username": "ci"})
        else:
            self._answer(200, {"d": []})

    def do_PATCH(self) -> None:
        self._record()
        self._answer(200, b"OK")

    def do_POST(self) -> None:
        self._record()
        self._answer(201, {"id": 9})


@pytest.fixture
def fake() -> Iterator[str]:
    FakeBalena.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeBalena)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def changes() -> list[tuple[str, str, Any]]:
    return [(m, r, b) for m, r, _, b in FakeBalena.requests if m in ("PATCH", "POST")]


def test_a_canary_wave_pins_its_devices_to_the_release_by_name(fake: str) -> None:
    backend = BalenaBackend.connect(token="test-token", fleet=FLEET, api_url=fake,
                                    min_interval_s=0)  # fmt: skip
    offered = backend.offer(node_ids=["lhr-0001", "lhr-9999"], release=RELEASE, whole_fleet=False)
    assert offered == 1  # the unknown name is skipped
    assert changes() == [("PATCH", "device", {"is_pinned_on__release": 55})]
    patch = next(q for m, _, q, _ in FakeBalena.requests if m == "PATCH")
    assert "101" in patch
    assert "102" not in patch  # only the canary device


def test_the_last_wave_pins_the_whole_fleet(fake: str) -> None:
    backend = BalenaBackend.connect(token="test-token", fleet=FLEET, api_url=fake,
                                    min_interval_s=0)  # fmt: skip
    backend.offer(node_ids=["lhr-0001", "lhr-0002"], release=RELEASE, whole_fleet=True)
    assert changes() == [
        ("PATCH", "application",
         {"should_be_running__release": 55, "should_track_latest_release": False}),
    ]  # fmt: skip


def test_a_device_environment_variable_is_set(fake: str) -> None:
    backend = BalenaBackend.connect(token="test-token", fleet=FLEET, api_url=fake,
                                    min_interval_s=0)  # fmt: skip
    backend.set_env("a" * 32, "NIGEHBAAN_OTA_CHANNEL", "canary")
    posted = [b for m, r, b in changes() if r == "device_environment_variable"]
    assert posted
    assert posted[0]["name"] == "NIGEHBAAN_OTA_CHANNEL"
    assert posted[0]["value"] == "canary"


def test_calls_are_throttled(fake: str) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    backend = BalenaBackend.connect(token="test-token", fleet=FLEET, api_url=fake)
    backend = BalenaBackend(backend.sdk, fleet=FLEET, min_interval_s=0.5,
                            clock=lambda: now[0], sleep=sleep)  # fmt: skip
    uuids = [f"{i:032x}" for i in range(120)]
    backend.pin_devices(uuids, RELEASE, batch=50)
    assert backend.calls == 3  # 50 + 50 + 20 devices
    assert slept == [0.5, 0.5]
