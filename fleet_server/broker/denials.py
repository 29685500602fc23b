"""Broker ACL denials: who the managed Mosquitto refused, counted per client, with a threshold.

A node that publishes under another node's topics (a probe, a stolen or
mis-flashed identity, a bug) is refused by the broker's ACL, and until now
nobody noticed. Mosquitto 2.0.11 says so only at its ``debug`` log level, as
``Denied PUBLISH from <client id> (d0, q1, r0, m3, '<topic>', ... (N bytes))``;
the managed broker reads that level from the broker's output
(`fleet_server.broker.process`), keeps the packet traces out of
``mosquitto.log``, and hands each denial line to `parse_denial` and a
`DenialCounter`. On the node listener the client id is the certificate's CN,
so it is the node id.

A refused *subscription* cannot be counted this way: Mosquitto 2.0 grants
the SUBACK and silently withholds what the ACL does not let the client read.

The counter keeps a total per client (for ``/healthz``) and a sliding window;
when one client's denials in the window reach the threshold it reports a
`DenialBurst` to ``on_burst`` (the server opens an ``acl_denied`` alert,
`fleet_server.broker.denial_alerts`) and starts the window afresh, so a
client that keeps probing raises one burst per threshold's worth, not one
per packet. Only the first denial of a window is logged, for the same reason.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Denial", "DenialBurst", "DenialCounter", "parse_denial"]

logger = logging.getLogger(__name__)

_DENIED_PUBLISH = re.compile(
    r"Denied PUBLISH from (?P<client>\S+) \(d\d, q\d, r\d, m\d+, '(?P<topic>.*)', "
    r"\.\.\. \(\d+ bytes\)\)\s*$"
)
# Topics kept per burst, for the alert's detail.
_BURST_TOPICS = 5


@dataclass(frozen=True)
class Denial:
    """One publish the broker's ACL refused."""

    client_id: str
    topic: str


@dataclass(frozen=True)
class DenialBurst:
    """A client reached the threshold within the window."""

    client_id: str
    count: int
    total: int
    window_s: float
    topics: tuple[str, ...]


def parse_denial(line: str) -> Denial | None:
    """The denial a Mosquitto log line reports, or None for any other line."""
    if "Denied PUBLISH" not in line:
        return None
    match = _DENIED_PUBLISH.search(line)
    if match is None:
        return None
    return Denial(client_id=match["client"], topic=match["topic"])


class DenialCounter:
    """Per-client denial totals and a sliding window with a threshold (thread-safe)."""

    def __init__(
        self,
        *,
        threshold: int = 10,
        window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self.on_burst: Callable[[DenialBurst], object] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}
        self._recent: dict[str, deque[tuple[float, str]]] = {}

    def configure(self, *, threshold: int, window_s: float) -> None:
        """Set the threshold and window (from settings, once the server has them)."""
        with self._lock:
            self.threshold = threshold
            self.window_s = window_s

    def record(self, denial: Denial) -> DenialBurst | None:
        """Count one denial; the burst when this one reaches the threshold (also to `on_burst`)."""
        now = self._clock()
        burst: DenialBurst | None = None
        with self._lock:
            total = self._totals[denial.client_id] = self._totals.get(denial.client_id, 0) + 1
            recent = self._recent.setdefault(denial.client_id, deque())
            while recent and recent[0][0] <= now - self.window_s:
                recent.popleft()
            recent.append((now, denial.topic))
            first = len(recent) == 1
            if len(recent) >= self.threshold:
                topics = tuple(dict.fromkeys(t for _, t in recent))[:_BURST_TOPICS]
                burst = DenialBurst(
                    client_id=denial.client_id,
                    count=len(recent),
                    total=total,
                    window_s=self.window_s,
                    topics=topics,
                )
                recent.clear()
        if first:
            logger.warning(
                "broker refused %s publishing to %s (ACL; %s refusals from it so far)",
                denial.client_id,
                denial.topic,
                total,
            )
        if burst is not None:
            logger.warning(
                "broker refused %s %s times within %ss (%s in all): %s",
                burst.client_id,
                burst.count,
                burst.window_s,
                burst.total,
                ", ".join(burst.topics),
            )
            if self.on_burst is not None:
                try:
                    self.on_burst(burst)
                except Exception:
                    logger.exception("acting on ACL denials of %s failed", burst.client_id)
        return burst

    def totals(self) -> dict[str, int]:
        """Denials per client id since the server started."""
        with self._lock:
            return dict(self._totals)
