"""Background nodes for benchmarks: real agents in child `nigehbaan sim` processes.

`bench panic --background-nodes N` measures press-to-operator latency while
N other nodes are connected and sending telemetry. They run the real edge
agent, exactly like the measured nodes, but in separate OS processes of at
most `NODES_PER_PROCESS` nodes each: a node holds three file
descriptors (its MQTT socket and its SQLite outbox with its `-wal`), so
5,000 background nodes plus the measured ones in one process would crowd a
20,000 open-files hard limit, and sharing one outbox database between nodes would change what a
node's outbox promises. Separate processes also keep the background fleet's
event loop from delaying the measured presses, as separate pillars would.

Each child has a `--duration` bound and stops by itself; `stop()` ends it
sooner.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from simulators.bench_harness import stop_children

logger = logging.getLogger(__name__)

NODES_PER_PROCESS = 2_500
_STATUS_RE = re.compile(r"connected=(\d+)/(\d+)")


class BackgroundFleetError(RuntimeError):
    """The background nodes did not all connect."""


@dataclass
class _Child:
    process: subprocess.Popen[str]
    nodes: int
    connected: int = 0
    min_connected_after_up: int | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def up(self) -> bool:
        return self.min_connected_after_up is not None

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines = [*self.lines[-50:], line.rstrip()]
            match = _STATUS_RE.search(line)
            if match is None:
                continue
            self.connected = int(match.group(1))
            if self.up or self.connected == self.nodes:
                low = self.min_connected_after_up
                self.min_connected_after_up = (
                    self.connected if low is None else min(low, self.connected)
                )


class BackgroundFleet:
    """Simulated nodes in child processes, each sending telemetry every `telemetry_interval_s`."""

    def __init__(
        self,
        *,
        broker_url: str,
        data_dir: Path,
        nodes: int,
        duration_s: float,
        telemetry_interval_s: float = 30.0,
        per_process: int = NODES_PER_PROCESS,
        prefix: str = "bg",
    ) -> None:
        """`prefix` starts every node id (child `i`'s nodes are `<prefix><i>-…`): two fleets
        on different brokers of one deployment need different prefixes."""
        self.prefix = prefix
        self.broker_url = broker_url
        self.data_dir = data_dir
        self.nodes = nodes
        self.duration_s = duration_s
        self.telemetry_interval_s = telemetry_interval_s
        self.per_process = per_process
        self._children: list[_Child] = []

    def start(self, *, timeout: float) -> float:
        """Start the children and wait until every node is connected; returns seconds taken."""
        started = time.monotonic()
        remaining, index = self.nodes, 0
        while remaining > 0:
            count = min(self.per_process, remaining)
            self._children.append(self._spawn(index, count))
            remaining -= count
            index += 1
        deadline = started + timeout
        while not all(c.up for c in self._children):
            for child in self._children:
                if child.process.poll() is not None:
                    tail = "\n".join(child.lines[-20:])
                    raise BackgroundFleetError(f"background sim exited early:\n{tail}")
            if time.monotonic() > deadline:
                got = sum(c.connected for c in self._children)
                raise BackgroundFleetError(f"{got}/{self.nodes} background nodes connected")
            time.sleep(0.2)
        return time.monotonic() - started

    def _spawn(self, index: int, count: int) -> _Child:
        # fmt: off
        command = [
            sys.executable, "-m", "edge_agent.console", "sim",
            "--nodes", str(count), "--prefix", f"{self.prefix}{index}",
            "--broker-url", self.broker_url,
            "--data-dir", str(self.data_dir / f"{self.prefix}{index}"),
            "--duration", str(self.duration_s),
            "--telemetry-interval", str(self.telemetry_interval_s),
        ]
        # fmt: on
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = _Child(process=process, nodes=count)
        assert process.stderr is not None
        threading.Thread(target=child.read, args=(process.stderr,), daemon=True).start()
        return child

    def summary(self) -> dict[str, Any]:
        """How many processes ran and the fewest nodes seen connected once all were up."""
        lows = [c.min_connected_after_up for c in self._children]
        return {
            "nodes": self.nodes,
            "processes": len(self._children),
            "telemetry_interval_s": self.telemetry_interval_s,
            "min_connected": sum(x or 0 for x in lows),
        }

    def stop(self) -> None:
        """End every child (SIGTERM, then SIGKILL after 10 s)."""
        stop_children([child.process for child in self._children])
