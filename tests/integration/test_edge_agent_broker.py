"""The edge agent against a real Mosquitto: a press reaches the server and the light answers.

A small stand-in for the fleet server lives in this file: a paho client that
decodes every uplink message with `proto` and, when told to, acknowledges
events with `proto.messages.Ack` the way the real server does after its
database commit. The agent runs on the simulated hardware backend, pressed
through gpiozero mock pins. Waits are bounded polls, never bare sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet_server.broker import ManagedBroker
from hardware import Pattern
from proto.ids import new_request_id
from proto.messages import (
    AlertStateCommand,
    Birth,
    CommandBase,
    PingCommand,
    Reply,
    SetConfigCommand,
    Status,
    TamperEvent,
    utc_now,
)
from proto.messages import (
    TestModeCommand as ModeCommand,  # renamed: pytest would try to collect Test*
)
from tests.support.fleet_standin import (
    FleetStandIn,
    eventually,
    kick,
    make_agent,
    node_config,
    panics,
    press_once,
    run,
    running,
)  # fmt: skip

pytestmark = pytest.mark.broker


def test_a_press_reaches_the_server_and_the_light_goes_sent_then_delivered(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path)
    server = FleetStandIn(broker, config["node_id"])
    agent, button = make_agent(config)

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            await press_once(button)
            await eventually(lambda: bool(panics(server)), "panic event at the server")
            await eventually(lambda: agent.outbox_depth == 0, "outbox emptied by the ack")
            await eventually(lambda: agent.indicator.pattern is Pattern.DELIVERED, "delivered")

    try:
        run(body)
    finally:
        server.close()
    event = panics(server)[0]
    assert event.event_id == agent.last_panic_event_id
    assert event.seq == 1
    assert event.test is False
    assert [c.pattern for c in agent.indicator_history] == [
        Pattern.IDLE,
        Pattern.SENT,
        Pattern.DELIVERED,
    ]
    birth = server.of_type(Birth)[0]
    online = next(s for s in server.of_type(Status) if s.state == "online")
    assert birth.bd_seq == online.bd_seq == 1
    assert birth.site_id == "gulberg-pillar-7"
    # Clean stop: the broker publishes the will, so the node shows offline.
    assert [s.state for s in server.of_type(Status)][-1] == "offline"


def test_operator_acknowledgement_turns_the_light_to_help_coming_then_idle(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path)
    server = FleetStandIn(broker, config["node_id"])
    agent, button = make_agent(config)
    node = config["node_id"]

    def alert(state: str) -> AlertStateCommand:
        return AlertStateCommand(
            node_id=node, ts=utc_now(), request_id=new_request_id(), alert_id="A-1", state=state
        )

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            await press_once(button)
            await eventually(lambda: agent.indicator.pattern is Pattern.DELIVERED, "delivered")
            ack = alert("acknowledged")
            server.send(ack)
            await eventually(lambda: agent.indicator.pattern is Pattern.HELP_COMING, "help")
            await eventually(lambda: server.reply_to(ack.request_id) is not None, "reply")
            done = alert("resolved")
            server.send(done)
            await eventually(lambda: agent.indicator.pattern is Pattern.IDLE, "idle again")
            await eventually(lambda: server.reply_to(done.request_id) is not None, "reply")

    try:
        run(body)
    finally:
        server.close()
    assert [c.pattern for c in agent.indicator_history] == [
        Pattern.IDLE,
        Pattern.SENT,
        Pattern.DELIVERED,
        Pattern.HELP_COMING,
        Pattern.IDLE,
    ]


def test_without_an_ack_the_press_is_resent_with_the_same_event_id(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path, resend_after_s=0.3)
    server = FleetStandIn(broker, config["node_id"], auto_ack=False)
    agent, button = make_agent(config)

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            await press_once(button)
            await eventually(lambda: len(panics(server)) >= 2, "a resend")
            assert agent.outbox_depth == 1  # a PUBACK is not a delivery
            assert agent.indicator.pattern is Pattern.SENT
            server.ack([panics(server)[0].event_id])
            await eventually(lambda: agent.outbox_depth == 0, "ack empties the outbox")

    try:
        run(body)
    finally:
        server.close()
    assert {p.event_id for p in panics(server)} == {agent.last_panic_event_id}
    assert {p.seq for p in panics(server)} == {1}


def test_an_unacked_press_is_resent_with_the_same_event_id_after_a_reconnect(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    # The resend timer is far away, so only the reconnect can resend. The
    # connection is cut by a session takeover rather than a broker crash, so
    # this test's stand-in server stays subscribed throughout.
    config = node_config(broker, tmp_path)
    server = FleetStandIn(broker, config["node_id"], auto_ack=False)
    agent, button = make_agent(config)

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            await press_once(button)
            await eventually(lambda: len(panics(server)) == 1, "first publish")
            await asyncio.to_thread(kick, broker, config["node_id"])
            await eventually(lambda: len(server.of_type(Birth)) >= 2, "reconnect and birth")
            await eventually(lambda: len(panics(server)) >= 2, "resend after reconnect")

    try:
        run(body)
    finally:
        server.close()
    assert {p.event_id for p in panics(server)} == {agent.last_panic_event_id}
    births = server.of_type(Birth)
    assert births[-1].bd_seq > births[0].bd_seq  # a new connect is a new birth
    assert agent.outbox_depth == 1


def test_a_press_during_a_broker_outage_is_delivered_when_it_returns(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    # The crash also drops the stand-in server's subscription, and it may
    # resubscribe after the node has already resent; the resend timer covers
    # that, as it covers a real broker losing its last seconds of messages.
    config = node_config(broker, tmp_path, resend_after_s=0.5)
    server = FleetStandIn(broker, config["node_id"])
    agent, button = make_agent(config)

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            broker.kill()
            try:
                await eventually(lambda: not agent.connected, "agent sees the broker go")
                await press_once(button)
                await press_once(button)
                await eventually(lambda: agent.outbox_depth == 2, "both presses on disk")
                assert agent.indicator.pattern is Pattern.OFFLINE
            finally:
                broker.start()
            await eventually(lambda: agent.outbox_depth == 0, "delivered and acked")
            await eventually(lambda: agent.indicator.pattern is Pattern.DELIVERED, "delivered")

    try:
        run(body)
    finally:
        server.close()
    first_seen = list(dict.fromkeys((p.seq, p.event_id) for p in panics(server)))
    assert [seq for seq, _ in first_seen] == [1, 2]  # resent in seq order
    assert [event_id for _, event_id in first_seen] == agent.panic_event_ids
    patterns = [c.pattern for c in agent.indicator_history]
    assert patterns[:2] == [Pattern.IDLE, Pattern.OFFLINE]
    assert patterns[-1] == Pattern.DELIVERED


def test_every_command_gets_a_reply_and_bad_config_changes_nothing(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path)
    node = config["node_id"]
    server = FleetStandIn(broker, node)
    agent, button = make_agent(config)
    sent: dict[str, CommandBase] = {}

    def command(cmd: CommandBase) -> str:
        sent[cmd.request_id] = cmd
        server.send(cmd)
        return cmd.request_id

    def common() -> dict[str, Any]:
        return {"node_id": node, "ts": utc_now(), "request_id": new_request_id()}

    async def reply(request_id: str) -> Reply:
        await eventually(lambda: server.reply_to(request_id) is not None, f"reply {request_id}")
        found = server.reply_to(request_id)
        assert found is not None
        return found

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            ping = await reply(command(PingCommand(**common())))
            assert ping.ok
            assert ping.result is not None
            assert ping.result["outbox_depth"] == 0
            assert ping.result["bd_seq"] == agent.bd_seq

            good = await reply(
                command(SetConfigCommand(**common(), changes={"panic.debounce_ms": 10}))
            )
            assert good.ok, good.error
            assert agent.config.panic.debounce_ms == 10
            assert agent.interpreter.debounce_s == pytest.approx(0.010)

            unknown = await reply(command(SetConfigCommand(**common(), changes={"mqtt.url": "x"})))
            assert not unknown.ok
            assert unknown.error is not None
            assert "mqtt.url" in unknown.error
            bad = await reply(
                command(
                    SetConfigCommand(
                        **common(),
                        changes={"telemetry.interval_s": 5.0, "panic.debounce_ms": -1},
                    )
                )
            )
            assert not bad.ok
            assert agent.config.telemetry.interval_s == 30.0  # all or nothing
            assert agent.config.panic.debounce_ms == 10

            test_on = await reply(command(ModeCommand(**common(), enabled=True)))
            assert test_on.ok
            await press_once(button)
            await eventually(lambda: bool(panics(server)), "test press")
            assert panics(server)[0].test is True

            expired_cmd = PingCommand(**common(), expires_at=utc_now() - timedelta(seconds=5))
            expired = await reply(command(expired_cmd))
            assert not expired.ok
            assert expired.error == "expired"

    try:
        run(body)
    finally:
        server.close()
    assert agent.counters["commands"] == len(sent)
    assert agent.counters["replies"] == len(sent)


def test_malformed_commands_are_rejected_counted_and_the_agent_carries_on(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path)
    node = config["node_id"]
    server = FleetStandIn(broker, node)
    agent, _button = make_agent(config)
    readable_id = new_request_id()
    wrong_fields = (
        b'{"kind":"oops","name":"ping","node_id":"' + node.encode() + b'","request_id":"'
        + readable_id.encode() + b'","ts":"2024-01-01T00:00:00.000000Z","v":1}'
    )  # fmt: skip

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            server.send_raw("ping", b"{not json")
            server.send_raw("ping", b"[]")
            server.send_raw("ping", b"x" * (17 * 1024))
            server.send_raw("reboot", b"{}")  # a command this node does not know
            server.send_raw("ping", wrong_fields)
            await eventually(lambda: agent.counters["rejected"] == 5, "five rejections")
            await eventually(lambda: server.reply_to(readable_id) is not None, "refusal reply")
            ping = PingCommand(node_id=node, ts=utc_now(), request_id=new_request_id())
            server.send(ping)
            await eventually(lambda: server.reply_to(ping.request_id) is not None, "ping reply")

    try:
        run(body)
    finally:
        server.close()
    refusal = server.reply_to(readable_id)
    assert refusal is not None
    assert not refusal.ok
    assert agent.rejections["malformed_json"] == 2
    assert agent.rejections["too_large"] == 1
    assert agent.rejections["bad_topic"] == 1
    assert agent.rejections["schema_violation"] == 1


def test_a_stuck_button_raises_one_tamper_and_shows_fault(
    broker: ManagedBroker, tmp_path: Path
) -> None:
    config = node_config(broker, tmp_path)
    config["panic"] = {"stuck_after_s": 1.0, "debounce_ms": 10}
    server = FleetStandIn(broker, config["node_id"])
    agent, button = make_agent(config)

    async def body() -> None:
        async with running(agent):
            await eventually(lambda: bool(server.of_type(Birth)), "birth")
            button.press()
            await eventually(lambda: agent.indicator.pattern is Pattern.FAULT, "fault")
            await asyncio.sleep(0.3)  # the timer keeps running; no second tamper may appear
            button.release()
            await eventually(lambda: len(server.of_type(TamperEvent)) == 2, "raised+cleared")
            await eventually(lambda: agent.outbox_depth == 0, "all acked")

    try:
        run(body)
    finally:
        server.close()
    tampers = server.of_type(TamperEvent)
    assert [(t.tamper, t.active) for t in tampers] == [
        ("button_stuck", True),
        ("button_stuck", False),
    ]
    assert len(panics(server)) == 1
    assert Pattern.FAULT in [c.pattern for c in agent.indicator_history]
    assert agent.indicator.pattern is not Pattern.FAULT
