"""The demo's pillars stand on solar sites, so the console's Power page has something to show.

The story: every pillar the demo builds has a position and a simulated
solar site (panel, battery, load), sites differ the way a roll-out does, and
a pillar started from that configuration — the real agent on the sim
backend, on a real broker — reports its power in its telemetry and its
position in its birth. The whole demo (server, enrollment) is not needed for
that: the configuration is the demo's, the agent is the one it runs.
"""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.broker import ManagedBroker
from proto.codec import decode
from proto.messages import Birth, Capability, Telemetry
from proto.topics import fleet_filter
from simulators.demo import demo_node_configs, on_solar
from simulators.fleet import SimFleet

pytestmark = [pytest.mark.broker]


def test_every_demo_pillar_is_on_a_solar_site_and_the_sites_differ(tmp_path: Path) -> None:
    configs = [on_solar(c, i) for i, c in enumerate(demo_node_configs(count=12, data_dir=tmp_path))]
    for config in configs:
        assert config["power"]["enabled"] is True
        assert config["power"]["monitor"]["type"] == "sim"
        assert config["location"]["lat"] == config["power"]["monitor"]["lat"]
    cities = {c["power"]["monitor"]["city"] for c in configs}
    assert cities == {"lahore", "karachi", "peshawar"}
    assert len({c["power"]["monitor"]["soc"] for c in configs}) > 3
    assert any(c["power"]["monitor"]["mains"] for c in configs)
    assert not all(c["power"]["monitor"]["mains"] for c in configs)
    assert min(c["power"]["monitor"]["soc"] for c in configs) >= 0.5, "no pillar goes dark"


def test_a_demo_pillar_reports_its_power_and_position(
    tmp_path: Path, broker: ManagedBroker
) -> None:
    configs = [
        on_solar({**c, "mqtt": {**c["mqtt"], "url": broker.url}}, i)
        for i, c in enumerate(demo_node_configs(count=2, data_dir=tmp_path))
    ]
    seen: queue.Queue[tuple[str, bytes]] = queue.Queue()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda _c, _u, msg: seen.put((msg.topic, bytes(msg.payload)))
    watcher.connect(broker.host, broker.port)
    watcher.subscribe(fleet_filter(), qos=1)
    watcher.loop_start()

    async def run() -> tuple[dict[str, Telemetry], dict[str, Birth]]:
        fleet = SimFleet(
            broker_url=broker.url, data_dir=tmp_path, count=len(configs), node_configs=configs
        )
        telemetry: dict[str, Telemetry] = {}
        births: dict[str, Birth] = {}
        await fleet.start()
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while len(telemetry) < len(configs) or len(births) < len(configs):
                assert asyncio.get_running_loop().time() < deadline, (telemetry, births)
                try:
                    topic, payload = seen.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.05)
                    continue
                message = decode(topic, payload)
                if isinstance(message, Telemetry) and message.power is not None:
                    telemetry[message.node_id] = message
                elif isinstance(message, Birth):
                    births[message.node_id] = message
        finally:
            await fleet.stop()
        return telemetry, births

    try:
        telemetry, births = asyncio.run(run())
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    for config in configs:
        power = telemetry[config["node_id"]].power
        assert power is not None
        assert power.battery_soc is not None
        assert power.battery_v is not None
        assert power.autonomy_h is not None
        assert power.load_w == pytest.approx(9.0, abs=1.5)
        assert Capability.POWER_MONITOR in births[config["node_id"]].capabilities
        location = births[config["node_id"]].location
        assert location is not None
        assert (location.lat, location.lon) == (
            config["location"]["lat"],
            config["location"]["lon"],
        )
