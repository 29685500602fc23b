"""The check of a run against its server waits out a busy server, and says it did.

Right after a city-sized run the server marks thousands of nodes offline in
one transaction; on SQLite a read then times out on the lock and answers 500.
The check only reads, so it tries again (bounded) and reports how often; a
server that keeps failing still fails the check, naming the request.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulators.scenario_stack import server_check

PRESS = {"node_id": "lhr-pillar-005", "event_id": "01JPRESS", "sent": True, "acked": True}


def _server(failures: int) -> tuple[httpx.Client, list[str]]:
    """A fake fleet server API: the first `failures` reads answer 500, then one stored press."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if len(seen) <= failures:
            return httpx.Response(500, text="Internal Server Error")
        if request.url.path.endswith("/events"):
            if request.url.params.get("type") == "panic":
                row = {"event_id": PRESS["event_id"], "alert_id": "A1"}
                return httpx.Response(200, json={"data": [row], "count": 1})
            return httpx.Response(200, json={"data": [], "count": 0})
        alert = {"id": "A1", "type": "panic", "press_count": 1, "node_id": PRESS["node_id"]}
        return httpx.Response(200, json={"data": [alert], "count": 1})

    client = httpx.Client(base_url="http://fleet.test", transport=httpx.MockTransport(answer))
    return client, seen


def test_a_server_busy_for_a_moment_still_passes_the_check_and_the_retry_is_counted() -> None:
    api, seen = _server(failures=2)
    report: dict[str, Any] = {"presses": [PRESS]}
    check = server_check(api, report, attempts=4, pause_s=0.0)
    assert check["matches"] is True
    assert check["server_errors_retried"] == 2
    assert check["first_server_error"].startswith("500 for GET http://fleet.test/api/v1/events")
    assert len(seen) == 2 + 3  # two failures, then panic events, plates, alerts


def test_a_server_that_keeps_failing_fails_the_check_naming_the_request() -> None:
    api, _ = _server(failures=100)
    with pytest.raises(httpx.HTTPStatusError, match="500 Internal Server Error"):
        server_check(api, {"presses": [PRESS]}, attempts=3, pause_s=0.0)
