"""Each district's uplink bridge state, as the district broker itself publishes it.

A district Mosquitto publishes its bridge's state, retained and on itself
only (`notifications_local_only`), at
`$SYS/broker/connection/nb-cluster-<district>/state`: `1` while the bridge
to the RabbitMQ cluster is up, `0` while it is down (docs/cluster.md). While
it is down the district's nodes still publish and get nothing lost (the
broker queues up to `max_queued_messages`), but nothing from them reaches a
worker: no alert, no ack. That is what an operator must see ("district X:
uplink bridge down"), and what a worker knows because it already holds an
MQTT link to each district broker for the downlink (`DistrictLink`).

`UplinkState` is fed by that link: its connection state and the retained
state message. It answers three things per district: whether the worker
reaches the district broker, the bridge state, and `degraded` (either is
not known to be fine).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["DistrictUplink", "UplinkState", "state_topic"]

Uplink = Literal["up", "down", "unknown"]


def state_topic(district: str) -> str:
    """The topic a district broker publishes its cluster bridge's state on."""
    return f"$SYS/broker/connection/nb-cluster-{district}/state"


@dataclass(frozen=True)
class DistrictUplink:
    """One district as a worker sees it."""

    district: str
    broker: Literal["connected", "unreachable"]
    uplink: Uplink
    since: datetime | None  # when `uplink` last changed, as this worker saw it

    @property
    def degraded(self) -> bool:
        return self.broker != "connected" or self.uplink != "up"

    def public(self) -> dict[str, Any]:
        return {
            "district": self.district,
            "broker": self.broker,
            "uplink": self.uplink,
            "degraded": self.degraded,
            "since": self.since.isoformat() if self.since else None,
        }


class UplinkState:
    """Thread-safe: paho's thread writes, /healthz and the API read."""

    def __init__(self, district: str) -> None:
        self.district = district
        self._lock = threading.Lock()
        self._connected = False
        self._uplink: Uplink = "unknown"
        self._since: datetime | None = None

    def link_connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected
            if not connected:  # the retained state is re-read on reconnect
                self._set("unknown")

    def message(self, payload: bytes) -> None:
        """The broker's retained `1`/`0`; anything else counts as unknown."""
        text = payload.strip()
        with self._lock:
            self._set("up" if text == b"1" else "down" if text == b"0" else "unknown")

    def _set(self, uplink: Uplink) -> None:
        if uplink != self._uplink:
            self._uplink = uplink
            self._since = datetime.now(UTC)

    def snapshot(self) -> DistrictUplink:
        with self._lock:
            return DistrictUplink(
                district=self.district,
                broker="connected" if self._connected else "unreachable",
                uplink=self._uplink,
                since=self._since,
            )
