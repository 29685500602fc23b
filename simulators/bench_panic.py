"""`nigehbaan bench panic`: press-to-operator latency and delivery under chaos.

Everything is real and on loopback: a private Mosquitto, a `nigehbaan server`
process with its own SQLite database, and N simulated nodes in this process
running the real agent on mock pins. Latency is measured from the press on
the mock pin to the alert's arrival on the operator SSE feed (the same feed
the console reads). Delivery is judged from the server's database through
the API after the run: a press is delivered when its event id is stored, and
every node that pressed must have exactly one panic alert (presses on a node
while its alert is open join that alert).

Chaos: `broker-restart` kills Mosquitto with SIGKILL halfway through the
presses and starts it again; `server-restart` does the same to the server.
Presses made while a part is down wait in the nodes' outboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from fleet_server.broker import ManagedBroker
from simulators.bench_background import BackgroundFleet
from simulators.bench_harness import bench_result, bench_server, bench_work_dir, loopback_broker
from simulators.fleet import SimFleet
from simulators.server_process import ServerProcess
from simulators.sse import FeedItem, alert_feed

logger = logging.getLogger(__name__)

Chaos = Literal["none", "broker-restart", "server-restart"]
API = "/api/v1"


@dataclass(frozen=True)
class PanicBenchConfig:
    """What one run of the panic benchmark does."""

    nodes: int = 100
    presses: int = 100
    chaos: Chaos = "none"
    press_rate: float = 50.0
    settle_timeout_s: float = 90.0
    chaos_down_s: float = 2.0
    work_dir: Path | None = None
    # Other nodes connected and sending telemetry meanwhile (simulators.bench_background).
    background_nodes: int = 0
    background_telemetry_s: float = 30.0


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already-sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def latency_summary(samples_ms: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max of latency samples in milliseconds, rounded to 0.1 ms."""
    ordered = sorted(samples_ms)
    out: dict[str, float | None] = {}
    for name, pct in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("max", 100.0)):
        value = percentile(ordered, pct)
        out[name] = None if value is None else round(value, 1)
    return out


class _Operator:
    """The benchmark's operator account on the server under test."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.username = "bench-operator"
        self.password = secrets.token_urlsafe(16)

    def create(self) -> None:
        result = self.server.run_cli(
            "--create-user",
            self.username,
            "--role",
            "operator",
            "--password-env",
            "NB_BENCH_PASSWORD",
            env={"NB_BENCH_PASSWORD": self.password},
        )
        if result.returncode != 0:
            raise RuntimeError(f"could not create the bench operator: {result.stderr}")

    def token(self) -> str:
        return self.server.login(self.username, self.password, timeout=10)


async def run_panic_bench(config: PanicBenchConfig) -> dict[str, Any]:
    """Run the benchmark once and return its result record."""
    started_at = time.time()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(bench_work_dir(config.work_dir))
        broker = stack.enter_context(loopback_broker(work))
        server = bench_server(work=work, broker_url=broker.url)
        operator = _Operator(server)
        operator.create()
        server.start()
        stack.callback(server.stop)
        token = operator.token()
        background: BackgroundFleet | None = None
        if config.background_nodes:
            background = BackgroundFleet(
                broker_url=broker.url,
                data_dir=work / "background",
                nodes=config.background_nodes,
                # Bounded: connect + presses + settle, with room to spare.
                duration_s=600 + config.presses / config.press_rate + config.settle_timeout_s,
                telemetry_interval_s=config.background_telemetry_s,
            )
            stack.callback(background.stop)
            await asyncio.to_thread(
                background.start, timeout=max(120.0, config.background_nodes / 20)
            )
        figures = await _run(config, broker=broker, server=server, token=token, work=work)
        if background is not None:
            figures["background"] = background.summary()
        return bench_result("panic", figures, started_at=started_at)
    raise AssertionError("unreachable")  # pragma: no cover - for mypy


async def _run(
    config: PanicBenchConfig,
    *,
    broker: ManagedBroker,
    server: ServerProcess,
    token: str,
    work: Path,
) -> dict[str, Any]:
    fleet = SimFleet(broker_url=broker.url, data_dir=work / "nodes", count=config.nodes)
    started = time.monotonic()
    await fleet.start(connect_timeout=max(60.0, config.nodes / 20))
    connect_s = time.monotonic() - started
    # The agents live as long as the run: full collections walking them paused this
    # loop (and every press in it) for ~150 ms at 1,000 nodes, the p99 tail.
    gc.collect()
    gc.freeze()

    arrivals: dict[str, float] = {}
    feed_connected = asyncio.Event()

    async def watch() -> None:
        item: FeedItem
        async for item in alert_feed(server.base_url, token, connected=feed_connected):
            event_id = item.data.get("event_id")
            if item.data.get("op") in ("created", "joined") and event_id:
                arrivals.setdefault(str(event_id), item.received_at)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait_for(feed_connected.wait(), 30)
        chaos_at = config.presses // 2 if config.chaos != "none" else -1
        press_tasks = []
        begin = time.monotonic()
        for k in range(config.presses):
            delay = begin + k / config.press_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if k == chaos_at:
                await _inject_chaos(config, broker=broker, server=server)
            press_tasks.append(asyncio.ensure_future(fleet.press(k % config.nodes)))
        await asyncio.gather(*press_tasks)
        settled = await _settle(fleet, arrivals, timeout=config.settle_timeout_s)
        stored = await asyncio.to_thread(_stored_events, server, token)
        alerts_per_node = await asyncio.to_thread(
            _alert_counts, server, token, sorted({p.node_id for p in fleet.presses})
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await fleet.stop()

    presses = fleet.presses
    delivered = [p for p in presses if p.event_id is not None and p.event_id in stored]
    latencies = [
        (arrivals[p.event_id] - p.pressed_at) * 1000.0
        for p in delivered
        if p.event_id is not None and p.event_id in arrivals
    ]
    duplicate_alerts = sum(max(0, count - 1) for count in alerts_per_node.values())
    return {
        "nodes": config.nodes,
        "presses": config.presses,
        "chaos": config.chaos,
        "press_rate": config.press_rate,
        "background_nodes": config.background_nodes,
        "sent": len(presses),
        "delivered": len(delivered),
        "lost": len(presses) - len(delivered),
        "duplicate_alerts": duplicate_alerts,
        "nodes_without_alert": sum(1 for c in alerts_per_node.values() if c == 0),
        "latency_ms": latency_summary(latencies),
        "latency_samples": len(latencies),
        "settled": settled,
        "fleet_connect_s": round(connect_s, 2),
    }


async def _inject_chaos(
    config: PanicBenchConfig, *, broker: ManagedBroker, server: ServerProcess
) -> None:
    logger.info("chaos: %s", config.chaos)
    if config.chaos == "broker-restart":
        broker.kill()
        await asyncio.sleep(config.chaos_down_s)
        await asyncio.to_thread(broker.start)
    elif config.chaos == "server-restart":
        server.kill()
        await asyncio.sleep(config.chaos_down_s)
        await asyncio.to_thread(server.start)


async def _settle(
    fleet: SimFleet, arrivals: dict[str, float], *, timeout: float, feed_grace_s: float = 5.0
) -> bool:
    """Wait until every press is acknowledged and seen on the feed.

    Returns False when something is still missing at the deadline. A press
    whose alert was created while the feed was disconnected (server restart)
    is never announced on it; once every outbox is empty the wait for the
    feed is cut to `feed_grace_s`, and delivery is judged from the database.
    """
    deadline = time.monotonic() + timeout
    empty_since: float | None = None
    while True:
        ids = [p.event_id for p in fleet.presses]
        if fleet.outbox_depth() == 0:
            empty_since = empty_since or time.monotonic()
            if all(i is not None and i in arrivals for i in ids):
                return True
            if time.monotonic() - empty_since > feed_grace_s:
                return False
        else:
            empty_since = None
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


def _paged(fetch: Callable[[int], dict[str, Any]], page: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        data = fetch(len(rows))
        rows += data["data"]
        if len(rows) >= data["count"] or not data["data"]:
            return rows
        if len(data["data"]) < page:
            return rows


def _stored_events(server: ServerProcess, token: str) -> set[str]:
    """Event ids of panic events the server has committed."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:

        def fetch(offset: int) -> dict[str, Any]:
            params: dict[str, str | int] = {"type": "panic", "offset": offset, "limit": 10_000}
            response = client.get(f"{API}/events", params=params)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

        return {row["event_id"] for row in _paged(fetch, 10_000)}


def _alert_counts(server: ServerProcess, token: str, node_ids: list[str]) -> dict[str, int]:
    """How many panic alerts each node has on the server."""
    headers = {"Authorization": f"Bearer {token}"}
    counts: dict[str, int] = {}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        for node_id in node_ids:
            response = client.get(f"{API}/alerts", params={"node_id": node_id, "limit": 1000})
            response.raise_for_status()
            counts[node_id] = sum(1 for a in response.json()["data"] if a["type"] == "panic")
    return counts
