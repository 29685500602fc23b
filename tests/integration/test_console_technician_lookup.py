"""A technician at a pole finds the node by what is in front of them: its id, serial or QR label.

The QR label holds the technician page's URL with `?node=<id>`; pasting that
text (what a scanner app hands over) finds the node just like typing its id.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Node
from fleet_server.tech import commission as cli
from tests.support.api import API, login, runtime_of


def _nodes(client: TestClient) -> None:
    with Session(runtime_of(client).engine) as session:
        for node_id, serial in (
            ("lhr-gulberg-0101", "PI-A1B2C3"),
            ("lhr-gulberg-0102", "PI-A1B2C4"),
            ("lhr-model-0201", "PI_Z%9"),
        ):
            if session.get(Node, node_id) is None:
                session.add(Node(node_id=node_id, serial=serial, district="lahore-gulberg"))
        session.commit()


def _found(client: TestClient, text: str, user: str = "op") -> list[str]:
    response = client.get(
        f"{API}/technician/nodes", params={"q": text}, headers=login(client, user)
    )
    assert response.status_code == 200, response.text
    return [n["node_id"] for n in response.json()["data"]]


def test_a_node_is_found_by_id_serial_label_url_or_the_start_of_either(
    client: TestClient,
) -> None:
    _nodes(client)
    assert _found(client, "lhr-gulberg-0101") == ["lhr-gulberg-0101"]
    assert _found(client, "  pi-a1b2c4 ") == ["lhr-gulberg-0102"]
    label = "https://fleet.example/console/technician?node=lhr-gulberg-0102"
    assert _found(client, label) == ["lhr-gulberg-0102"]
    assert _found(client, "nigehbaan:node:lhr-model-0201") == ["lhr-model-0201"]
    assert _found(client, "lhr-gulberg-01") == ["lhr-gulberg-0101", "lhr-gulberg-0102"]
    assert _found(client, "PI-A1B2") == ["lhr-gulberg-0101", "lhr-gulberg-0102"]


def test_wildcards_typed_by_a_technician_match_only_themselves(client: TestClient) -> None:
    _nodes(client)
    assert _found(client, "%") == []
    assert _found(client, "PI_Z%") == ["lhr-model-0201"]
    assert _found(client, "no-such-node") == []


def test_finding_a_node_needs_a_signed_in_user_and_some_text(client: TestClient) -> None:
    assert client.get(f"{API}/technician/nodes", params={"q": "lhr"}).status_code == 401
    empty = client.get(f"{API}/technician/nodes", params={"q": ""}, headers=login(client, "op"))
    assert empty.status_code == 422


def test_a_node_that_never_reported_power_has_an_empty_reading_and_an_unknown_node_is_404(
    client: TestClient,
) -> None:
    _nodes(client)
    headers = login(client, "op")
    empty = client.get(f"{API}/technician/nodes/lhr-gulberg-0101/power", headers=headers)
    assert empty.status_code == 200, empty.text
    assert empty.json()["node_id"] == "lhr-gulberg-0101"
    assert empty.json()["panel_w"] is None
    missing = client.get(f"{API}/technician/nodes/no-such-node/power", headers=headers)
    assert missing.status_code == 404


def test_the_phone_checklist_keeps_the_clis_limits() -> None:
    """technician.js re-states tech commission's limits; a change to one must reach the other."""
    script = (
        Path(cli.__file__).resolve().parents[1] / "console" / "static" / "technician.js"
    ).read_text(encoding="utf-8")

    def js(name: str) -> float:
        found = re.search(rf"const {name} = ([0-9.]+);", script)
        assert found, name
        return float(found.group(1))

    defaults = inspect.signature(cli.commission).parameters
    assert js("PRESS_TIMEOUT_S") == defaults["press_timeout_s"].default
    assert js("REPLY_TIMEOUT_S") == defaults["reply_timeout_s"].default
    assert js("TEST_MODE_S") == defaults["test_mode_s"].default
    assert js("SETTLE_MS") == defaults["settle_s"].default * 1000
    assert js("LAST_SEEN_MAX_S") == cli._LAST_SEEN_MAX_S
    assert js("OUTBOX_SANE_MAX") == cli._OUTBOX_SANE_MAX
