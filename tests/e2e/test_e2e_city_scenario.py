"""A small mixed city fleet through a network cut and a broker crash, end to end.

The story (`simulators/scenarios/smoke.yaml`): 13 nodes — panic pillars,
camera nodes with synthetic plate reads, pillars with a camera — in two
Lahore districts, each a real edge agent with its own MQTT session and
outbox, against a Mosquitto and a `nigehbaan server` process the scenario
owns. Gulberg's network is cut while people press its pillars; one pillar
is switched off with a press still on its disk; the broker is SIGKILLed and
presses come in while it is down; Model Town loses mains. Every press that a
pillar recorded must reach the operator exactly once — one stored event, one
alert per pillar counting its presses — the pillar that was off must come
back and empty its outbox, and the JSON report must say what the server
stored. No timing is asserted: this is a story, not a benchmark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.scenario import SCENARIO_DIR, ScenarioRunner, load_scenario
from simulators.scenario_stack import ScenarioStack, server_check

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]

API = "/api/v1"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ScenarioStack]:
    owned = ScenarioStack(work_dir=tmp_path / "run", broker_url=None, with_server=True)
    owned.start()
    try:
        yield owned
    except BaseException:
        if owned.server is not None:
            print("--- server log ---\n" + owned.server.log_text())
        if owned.broker is not None:
            print("--- broker log ---\n" + owned.broker.log_text())
        raise
    finally:
        owned.stop()


def _get(api: httpx.Client, path: str, **params: Any) -> Any:
    response = api.get(f"{API}{path}", params=params)
    response.raise_for_status()
    return response.json()


def test_every_press_through_a_network_cut_and_a_broker_crash_reaches_the_operator_once(
    stack: ScenarioStack,
) -> None:
    scenario = load_scenario(SCENARIO_DIR / "smoke.yaml")
    runner = ScenarioRunner(
        scenario,
        broker_url=stack.broker_url,
        data_dir=stack.work_dir / "nodes",
        broker=stack.broker,
        summary_every_s=2.0,
    )
    report = asyncio.run(runner.run(progress=print)).to_json()
    totals = report["totals"]
    steps = {s["action"]: s for s in report["steps"] if s["action"] != "press"}
    presses = report["presses"]
    recorded = [p for p in presses if p["sent"]]
    print("totals:", totals)

    # Nothing recorded at a pillar was lost; the whole fleet drained.
    assert totals["presses_recorded"] == totals["presses_delivered"] == len(recorded) >= 8
    assert totals["presses_lost"] == 0
    assert totals["outbox_depth_end"] == 0
    assert totals["events_acked"] == totals["events_written"]
    # A press only goes unrecorded when it met the pillar that was switched off.
    assert all(p["reason"] == "node offline" for p in presses if not p["sent"])

    # Presses were made during the cut and while the broker was down, and all arrived.
    cut, crash = steps["network_cut"], steps["broker_restart"]
    assert cut["presses_recorded"] >= 2
    assert cut["presses_delivered"] == cut["presses_recorded"]
    assert cut["refused_connects"] >= 1  # the district really was cut off
    assert cut["reconnected_after_s"] is not None
    assert crash["presses_recorded"] >= 1
    assert crash["presses_delivered"] == crash["presses_recorded"]
    assert crash["all_reconnected_after_s"] is not None

    # The pillar switched off with a press on its disk came back and emptied its outbox.
    offline = steps["node_offline"]
    assert offline["nodes"] == ["smoke-pillar-a-001"]
    assert offline["outbox_at_stop"] >= 1
    assert offline["drained"] is True
    assert offline["outbox_after"] == 0
    sites = {s["node_id"]: s for s in report["sites"]}
    assert sites["smoke-pillar-a-001"]["boots"] == 2

    with stack.api() as api:
        stored = _get(api, "/events", type="panic", limit=1000)["data"]
        plates = _get(api, "/events", type="plate", limit=10_000)
        alerts = _get(api, "/alerts", limit=1000)["data"]
        check = server_check(api, report)

        # Exactly once: one stored event per recorded press, nothing else.
        assert sorted(e["event_id"] for e in stored) == sorted(p["event_id"] for p in recorded)
        # One panic alert per pillar, counting every one of its presses.
        for node_id in {p["node_id"] for p in recorded}:
            mine = [a for a in alerts if a["node_id"] == node_id and a["type"] == "panic"]
            assert len(mine) == 1, (node_id, mine)
            assert mine[0]["press_count"] == sum(1 for p in recorded if p["node_id"] == node_id)
        # The pillar that was off: its press from before is there.
        before = [p for p in recorded if p["node_id"] == "smoke-pillar-a-001" and p["at_s"] < 5.5]
        assert before
        assert {p["event_id"] for p in before} <= {e["event_id"] for e in stored}

    # Camera nodes' synthetic plate reads went through their outboxes to the server.
    assert plates["count"] == totals["plate_events"] > 0
    cameras = {n for n, s in sites.items() if s["kind"] in ("camera_node", "mixed")}
    assert {e["node_id"] for e in plates["data"]} <= cameras

    # Model Town's power cut: every grid-tied site said so, and the server alerted.
    power = steps["power_loss"]
    assert power["mains_lost_reported"] == power["grid_tied"] == len(power["nodes"])
    mains_alerts = {
        a["node_id"]
        for a in alerts
        if a["type"] == "power" and str(a.get("detail") or "").startswith("mains_lost")
    }
    assert mains_alerts == set(power["nodes"])

    # The report's own check against the server agrees.
    assert check["matches"], check
    assert check["panic_events"] == len(recorded)
    assert check["alerts_press_count_mismatch"] == []
    assert check["plate_events"] == totals["plate_events"]
