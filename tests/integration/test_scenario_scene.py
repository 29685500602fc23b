"""Synthetic camera scenes: made-up vehicle passes become real PlateEvents through the outbox.

The camera/ANPR pipeline is not built; simulated camera nodes get their plate
reads from `simulators.synthetic_scene`. What matters is that those reads are
valid wire events and travel the real path: the node's durable outbox, MQTT,
and deletion only on the server's acknowledgement — and that the node says
it has cameras in its birth message.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path

from edge_agent.agent import Agent
from fleet_server.broker import ManagedBroker
from hardware import SimBackend
from proto.codec import decode_uplink
from proto.messages import Birth, Capability, PlateEvent
from simulators.synthetic_scene import SyntheticScene, plate_event_builder
from tests.support.fleet_standin import FleetStandIn, eventually, node_config, run, running


def test_a_scene_makes_valid_plate_reads_the_same_way_for_the_same_seed() -> None:
    def passes(seed: int) -> list[tuple[str, str, float, int]]:
        scene = SyntheticScene(node_id="lhr-cam-001", cameras=2)
        rng = random.Random(seed)
        return [
            (v.camera_id, v.plate, v.confidence, v.frames)
            for v in (scene.next_pass(rng) for _ in range(300))
        ]

    first = passes(5)
    assert first == passes(5)
    assert first != passes(6)
    assert {camera for camera, *_ in first} == {"cam-1", "cam-2"}
    scene = SyntheticScene(node_id="lhr-cam-001")
    rng = random.Random(1)
    for _ in range(300):
        vehicle = scene.next_pass(rng)
        build = plate_event_builder(
            node_id="lhr-cam-001", vehicle=vehicle, now=lambda: datetime.now(timezone.utc)
        )
        event = build("01J9Z8Q6V3M4N5P6Q7R8S9T0VW", 1)
        assert isinstance(event, PlateEvent)  # validated by the wire model on construction
        assert event.plate == vehicle.plate


def test_a_camera_node_sends_its_plate_reads_through_the_outbox_and_says_it_has_cameras(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path)
    server = FleetStandIn(broker, config["node_id"])
    agent = Agent.from_dict(config, backend=SimBackend())
    agent.capabilities = [Capability.CAMERA, Capability.ANPR]
    acked: list[str] = []
    agent.add_ack_listener(acked.extend)
    scene = SyntheticScene(node_id=agent.node_id, cameras=1)
    rng = random.Random(3)

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            written = []
            for _ in range(5):
                build = plate_event_builder(
                    node_id=agent.node_id, vehicle=scene.next_pass(rng), now=agent.clock.now
                )
                stored = agent.record_event(build)
                assert stored is not None
                assert isinstance(decode_uplink(stored.topic, stored.payload).message, PlateEvent)
                written.append(stored.event_id)
            await eventually(lambda: len(server.of_type(PlateEvent)) >= 5, "five plate events")
            await eventually(lambda: agent.outbox_depth == 0, "outbox emptied by acks")
            assert sorted(acked) == sorted(written)
            assert {e.event_id for e in server.of_type(PlateEvent)} == set(written)

    try:
        run(body)
    finally:
        server.close()
    (birth, *_) = server.of_type(Birth)
    assert birth.capabilities == [Capability.CAMERA, Capability.ANPR]
