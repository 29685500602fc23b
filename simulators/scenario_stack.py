"""What a scenario run owns: its Mosquitto, optionally a real fleet server, and the check.

`nigehbaan sim --scenario FILE` without ``--broker-url`` starts its own
loopback Mosquitto (generated config, `fleet_server.broker.ManagedBroker`) so
that a ``broker_restart`` step can SIGKILL it and start it again on the same
port; with ``--with-server`` it also runs a real ``nigehbaan server`` process
(`simulators.server_process.ServerProcess`, SQLite, a throw-away admin) on
that broker. After the run, `server_check` compares the JSON report with what
the server stored: every delivered press is a stored panic event, nothing the
report does not know about was stored, and each press joined exactly one
alert (reads the server answers with 5xx are retried for up to a minute, and
counted). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from fleet_server.broker import ManagedBroker
from simulators.server_process import ServerProcess

__all__ = ["ScenarioStack", "server_check"]

logger = logging.getLogger(__name__)

API = "/api/v1"
_PAGE = 10_000


class ScenarioStack:
    """A broker the scenario owns (unless given one) and, optionally, a server process."""

    def __init__(self, *, work_dir: Path, broker_url: str | None, with_server: bool) -> None:
        self.work_dir = work_dir
        self.broker: ManagedBroker | None = None
        self._broker_url = broker_url
        self.with_server = with_server
        self.server: ServerProcess | None = None
        self.token: str | None = None

    @property
    def broker_url(self) -> str:
        if self.broker is not None:
            return self.broker.url
        assert self._broker_url is not None, "start() first"
        return self._broker_url

    def start(self) -> None:
        """Start the broker (when we own it) and the server (when asked); blocking."""
        if self._broker_url is None:
            self.broker = ManagedBroker.loopback(self.work_dir / "broker")
            self.broker.start()
        if not self.with_server:
            return
        self.server = ServerProcess(
            data_dir=self.work_dir / "server",
            broker_url=self.broker_url,
            env={"NIGEHBAAN_MQTT_CLIENT_ID": f"fleet-server-{secrets.token_hex(4)}"},
        )
        password = secrets.token_urlsafe(16)
        made = self.server.run_cli(
            "--create-admin", "scenario", "--password-env", "NB_PW", env={"NB_PW": password}
        )
        if made.returncode != 0:
            raise RuntimeError(f"could not create the scenario's admin: {made.stderr[-2000:]}")
        self.server.start(timeout=60)
        self.token = self.server.login("scenario", password)

    def api(self) -> httpx.Client:
        """An authenticated client for the server's REST API."""
        if self.server is None or self.token is None:
            raise RuntimeError("no server in this run (use --with-server)")
        return httpx.Client(
            base_url=self.server.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the server and the broker (whichever were started)."""
        if self.server is not None:
            self.server.stop()
        if self.broker is not None:
            self.broker.stop()


class _Reader:
    """GETs for the check, retried (bounded) while the server answers 5xx, and counted.

    Right after a city-sized run the server is busy settling thousands of
    nodes that just went offline; on SQLite a read can then time out waiting
    for the database lock and answer 500. The check is read-only, so it waits
    that out — up to `attempts` tries `pause_s` apart — and says how often.
    """

    def __init__(self, api: httpx.Client, *, attempts: int, pause_s: float) -> None:
        self.api = api
        self.attempts = attempts
        self.pause_s = pause_s
        self.retried: list[str] = []

    def get(self, path: str, **params: Any) -> Any:
        """One API resource as JSON; `httpx.HTTPStatusError` (status and URL) at the end."""
        for attempt in range(1, self.attempts + 1):
            response = self.api.get(f"{API}{path}", params=params)
            if response.status_code < 500 or attempt == self.attempts:
                response.raise_for_status()
                return response.json()
            what = f"{response.status_code} for GET {response.request.url}"
            logger.warning("server check: %s; again in %.0f s", what, self.pause_s)
            self.retried.append(what)
            time.sleep(self.pause_s)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _all_events(reader: _Reader, event_type: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for page in range(100):  # bounded: a million events at most
        data = reader.get("/events", type=event_type, limit=_PAGE, offset=page * _PAGE)["data"]
        rows.extend(data)
        if len(data) < _PAGE:
            break
    return rows


def server_check(
    api: httpx.Client, report: dict[str, Any], *, attempts: int = 12, pause_s: float = 5.0
) -> dict[str, Any]:
    """Compare the report's presses with the server's panic events and alerts.

    Reads that the server answers with 5xx are tried again (`_Reader`);
    ``server_errors_retried`` says how many there were.
    """
    reader = _Reader(api, attempts=attempts, pause_s=pause_s)
    presses = report["presses"]
    delivered = {p["event_id"] for p in presses if p["acked"]}
    recorded = {p["event_id"] for p in presses if p["sent"]}
    stored_rows = _all_events(reader, "panic")
    stored = [r["event_id"] for r in stored_rows]
    stored_set = set(stored)
    plates = reader.get("/events", type="plate", limit=1)["count"]
    alerts = reader.get("/alerts", limit=1000)
    listed_all = alerts["count"] <= len(alerts["data"])
    if listed_all:
        panic_alerts = [a for a in alerts["data"] if a["type"] == "panic"]
    else:  # more alerts than one page (power, offline): ask per pressed pillar instead
        panic_alerts = []
        for node_id in sorted({p["node_id"] for p in presses if p["sent"]}):
            rows = reader.get("/alerts", node_id=node_id, limit=1000)
            panic_alerts += [a for a in rows["data"] if a["type"] == "panic"]
    by_alert: dict[str | None, int] = {}
    for row in stored_rows:
        by_alert[row.get("alert_id")] = by_alert.get(row.get("alert_id"), 0) + 1
    press_count_mismatch = [
        a["id"] for a in panic_alerts if by_alert.get(a["id"], 0) != a["press_count"]
    ]
    missing = sorted(delivered - stored_set)
    unexpected = sorted(stored_set - recorded)
    return {
        "panic_events": len(stored),
        "duplicate_panic_events": len(stored) - len(stored_set),
        "delivered_in_report": len(delivered),
        "missing_on_server": missing[:20],
        "missing_count": len(missing),
        "stored_but_unacked_at_node": len((stored_set & recorded) - delivered),
        "unexpected_on_server": unexpected[:20],
        "panic_events_without_alert": by_alert.get(None, 0),
        "panic_alerts": len(panic_alerts),
        "alerts": alerts["count"],
        "alerts_press_count_mismatch": press_count_mismatch[:20],
        "plate_events": plates,
        "server_errors_retried": len(reader.retried),
        "first_server_error": reader.retried[0] if reader.retried else None,
        "matches": not missing
        and not unexpected
        and len(stored) == len(stored_set)
        and not press_count_mismatch
        and not by_alert.get(None, 0),
    }
