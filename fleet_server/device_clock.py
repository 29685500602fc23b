"""A node's clock as the server sees it: implausible device times and the clock offset.

Nodes stamp everything with their own clock (`ts`), and a node's clock can
be anything: a Raspberry Pi has no real-time clock and says 1970 until NTP
answers, a node that lost its time source drifts. The server keeps the
device time as evidence but measures from its own receive time, and:

- flags an event whose device time cannot be true (`implausible`): before
  the node existed (its enrollment, or the first time the server heard of
  it), more than `future_s` ahead of the receive time, or more than
  `past_s` behind it. The event is stored and acted on as usual; response
  times leave its device time out, and the node's count of implausible
  device times goes up;
- keeps the node's clock offset (device time minus receive time) as the
  running median of its recent *fresh* messages (telemetry, birth, online
  status), which are stamped when sent. Events are not used: an event may
  have waited in the node's outbox for hours, so its stamp says when it
  happened, not what the clock says now.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet_server.models import Node

__all__ = ["CLOCK_WINDOW", "DeviceTimeRules", "record_clock_sample"]

# Fresh messages kept for the running median: a few minutes of telemetry, and
# enough that one stamp taken before NTP answered does not move the figure.
CLOCK_WINDOW = 9


@dataclass(frozen=True)
class DeviceTimeRules:
    """When a device time is implausible (see the module docstring); seconds."""

    future_s: float = 300.0
    past_s: float = 86_400.0

    def implausible(
        self, device_ts: datetime, *, received_at: datetime, node_since: datetime | None
    ) -> bool:
        """Whether `device_ts` cannot be true for an event received at `received_at`.

        `node_since` is when the node came to exist for the server (its
        enrollment, or its first message); a `future_s` slack allows for
        clocks a little ahead of the server's.
        """
        slack = timedelta(seconds=self.future_s)
        if device_ts > received_at + slack:
            return True
        if device_ts < received_at - timedelta(seconds=self.past_s):
            return True
        return node_since is not None and device_ts < node_since - slack


def record_clock_sample(*, node: Node, device_ts: datetime, received_at: datetime) -> None:
    """One fresh message's stamp: update the node's running-median clock offset."""
    sample = round((device_ts - received_at).total_seconds(), 3)
    samples = [*(node.clock_samples or [])[-(CLOCK_WINDOW - 1) :], sample]
    node.clock_samples = samples  # a new list, so the JSON column is written
    node.clock_offset_s = statistics.median(samples)
