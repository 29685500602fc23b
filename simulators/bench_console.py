"""`nigehbaan bench console`: the fleet map's cost with a city's fleet, in a real Chromium.

A real server (and Mosquitto) on loopback, its database seeded with `--nodes`
nodes around Lahore's towns (`simulators.console_fleet`); then:

- the API: ms and bytes of ``GET /fleet-map`` (whole fleet) and
  ``GET /fleet-map/states`` (the periodic refresh), `--repeats` times each;
- the page, `--repeats` fresh loads in Debian's Chromium: fetch, JSON parse,
  map build (markers made and handed to the clusterer), first paint after the
  build, and the clusterer done with every marker (``clusters_ms``; it works in
  chunks between frames so the page stays responsive), from the page's own
  `performance.now()` since the script started (``window.nbMapMetrics``), and
  the JS heap;
- an update: `--changed` nodes flipped offline in the database, then one
  state refresh on the page (ms to apply, nodes changed), `--repeats` times;
- a live press: a panic published over MQTT (one open connection) for a node
  on the map, and the ms from publishing it until the page has turned that
  node red (broker, ingest, commit, SSE, map), `--repeats` presses.

Figures are medians with their min and max, with the machine's load average
beside them. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulators.bench_harness import add_output_options, bench_result, publish

if TYPE_CHECKING:
    from fleet_server.broker import ManagedBroker
    from simulators.server_process import ServerProcess

logger = logging.getLogger(__name__)

__all__ = ["register_console", "run_console_bench"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--enable-precise-memory-info",
]
USER, ROLE = "bench-console", "operator"
UI_TIMEOUT_MS = 120_000


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _api_figures(base: str, token: str, repeats: int) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for name, path in (
            ("fleet_map", "/api/v1/fleet-map"),
            ("states", "/api/v1/fleet-map/states"),
        ):
            times, size = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                size = len(response.content)
            out[name] = {"ms": _summary(times), "bytes": size}
    return out


class _Pillar:
    """One MQTT connection that publishes panics for any node (the broker allows it on loopback)."""

    def __init__(self, broker: ManagedBroker) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-console-presses", protocol=mqtt.MQTTv5
        )
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def press(self, node_id: str) -> None:
        from proto.codec import encode
        from proto.ids import new_event_id
        from proto.messages import PanicEvent
        from proto.topics import event_topic

        event = PanicEvent(
            node_id=node_id, ts=datetime.now(timezone.utc), event_id=new_event_id(), seq=1
        )
        self._client.publish(event_topic(node_id, "panic"), encode(event), qos=1)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _page_figures(
    server: ServerProcess,
    broker: ManagedBroker,
    token: str,
    quiet: list[str],
    *,
    repeats: int,
    changed: int,
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright
    from sqlalchemy import update
    from sqlmodel import Session, col

    from fleet_server.db import make_engine
    from fleet_server.models import Node

    loads: dict[str, list[float]] = {
        k: [] for k in ("fetch_ms", "parse_ms", "build_ms", "ready_ms", "clusters_ms")
    }
    heap: list[float] = []
    updates: list[float] = []
    update_changed: list[int] = []
    presses: list[float] = []
    engine = make_engine(server.db_url)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(repeats):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                page.goto(f"{server.base_url}/console/login")
                page.evaluate(
                    "([t, u]) => { sessionStorage.setItem('nigehbaan.token', t);"
                    " sessionStorage.setItem('nigehbaan.user', u); }",
                    [token, USER],
                )
                page.goto(f"{server.base_url}/console/map")
                page.wait_for_selector('[data-testid="fleet-map"][data-state="ready"]')
                page.wait_for_function(
                    "() => window.nbMapMetrics.ready_ms > 0 && window.nbMapMetrics.clusters_ms > 0"
                )
                metrics = page.evaluate("() => window.nbMapMetrics")
                for key in loads:
                    loads[key].append(float(metrics[key]))
                heap.append(
                    page.evaluate(
                        "() => performance.memory ? performance.memory.usedJSHeapSize : 0"
                    )
                    / 1e6
                )
                context.close()
            # Updates and presses on one open page, as a control room keeps it.
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{server.base_url}/console/login")
            page.evaluate(
                "([t, u]) => { sessionStorage.setItem('nigehbaan.token', t);"
                " sessionStorage.setItem('nigehbaan.user', u); }",
                [token, USER],
            )
            page.goto(f"{server.base_url}/console/map")
            page.wait_for_selector('[data-testid="fleet-map"][data-state="ready"]')
            page.wait_for_selector('[data-testid="stream-status"][data-state="live"]')
            for n in range(repeats):
                flip = quiet[n * changed : (n + 1) * changed]
                with Session(engine) as session:
                    session.execute(
                        update(Node).where(col(Node.node_id).in_(flip)).values(online=False)
                    )
                    session.commit()
                page.evaluate("() => window.nbMapDebug.refreshStates()")
                metrics = page.evaluate("() => window.nbMapMetrics")
                updates.append(float(metrics["last_update_ms"]))
                update_changed.append(int(metrics["last_update_changed"]))
            pillar = _Pillar(broker)
            try:
                for n in range(repeats):
                    node_id = quiet[-(n + 1)]
                    started = time.perf_counter()
                    pillar.press(node_id)
                    page.wait_for_selector(
                        f'[data-testid="fleet-map"][data-last-alert-node="{node_id}"]'
                    )
                    presses.append((time.perf_counter() - started) * 1000)
            finally:
                pillar.close()
            context.close()
        finally:
            browser.close()
            engine.dispose()
    return {
        "load": {key: _summary(values) for key, values in loads.items()},
        "js_heap_mb": _summary(heap),
        "state_refresh_ms": _summary(updates),
        "state_refresh_changed": update_changed,
        "press_to_red_marker_ms": _summary(presses),
    }


def run_console_bench(
    *, nodes: int, repeats: int, changed: int, work_dir: Path | None
) -> dict[str, Any]:
    """Seed, start, measure (module docstring); the figures as a dict."""
    # Imported here: `nigehbaan` registers every bench at start-up, and these are heavy.
    from fleet_server.broker import ManagedBroker
    from fleet_server.db import make_engine
    from simulators.console_fleet import seed_fleet
    from simulators.server_process import ServerProcess

    started_at = time.time()
    root = work_dir or Path(tempfile.mkdtemp(prefix="bench-console-"))
    broker = ManagedBroker.loopback(root / "mosquitto")
    broker.start()
    password = secrets.token_hex(12)
    server = ServerProcess(
        data_dir=root / "server", broker_url=broker.url, env={"BENCH_CONSOLE_PW": password}
    )
    try:
        made = server.run_cli(
            "--create-user", USER, "--role", ROLE, "--password-env", "BENCH_CONSOLE_PW"
        )
        if made.returncode != 0:
            raise RuntimeError(f"could not create the bench user: {made.stderr[-2000:]}")
        engine = make_engine(server.db_url)
        seeding = time.perf_counter()
        fleet = seed_fleet(engine, nodes=nodes, closed_alerts=min(nodes, 5000), prefix="bench")
        seed_s = time.perf_counter() - seeding
        engine.dispose()
        server.start()
        token = server.login(USER, password)
        busy = {*fleet.offline, *fleet.alerting, *fleet.power_risk, *fleet.lagging}
        quiet = [n for n in fleet.node_ids if n not in busy]
        load_before = _load()
        api = _api_figures(server.base_url, token, repeats)
        page = _page_figures(
            server, broker, token, quiet, repeats=repeats, changed=min(changed, len(quiet) // 2)
        )
        figures = {
            "nodes": nodes,
            "seed_s": round(seed_s, 1),
            "repeats": repeats,
            "changed_per_update": changed,
            "api": api,
            "page": page,
            "load_avg_before": load_before,
            "load_avg_after": _load(),
        }
    finally:
        server.stop()
        broker.stop()
    return bench_result("console", figures, started_at=started_at)


def register_console(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench console` to the bench subcommands."""
    parser = sub.add_parser("console", help="fleet map load and update cost in Chromium")
    parser.add_argument("--nodes", type=int, default=8333, help="nodes on the map (1-20000)")
    parser.add_argument("--repeats", type=int, default=3, help="loads, updates, presses (1-20)")
    parser.add_argument("--changed", type=int, default=100, help="nodes flipped per update")
    parser.add_argument("--work-dir", type=Path, help="keep broker/server state here")
    add_output_options(parser)
    parser.set_defaults(func=_console)


def _console(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 20_000 or not 1 <= args.repeats <= 20 or args.changed < 1:
        sys.stderr.write("bench console: --nodes 1-20000, --repeats 1-20, --changed >= 1\n")
        return 2
    if not CHROMIUM.exists():
        sys.stderr.write(f"bench console: Chromium not found at {CHROMIUM}\n")
        return 2
    result = run_console_bench(
        nodes=args.nodes, repeats=args.repeats, changed=args.changed, work_dir=args.work_dir
    )
    publish(result, args)
    return 0
