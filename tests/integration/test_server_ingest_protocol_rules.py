"""What the server does with payloads that bend the contract (issue 11, item 11).

Decided and documented in docs/protocol.md:
- a payload without ``v`` is schema version 1: accepted (a panic is never lost
  over a constant the committed schemas make optional), counted
  (`missing_version` in the worker's stats and /healthz) and logged per node;
- a reply to a request id the server never sent to that node is refused, not
  stored, and counted as `unknown_request` for the node; replies to operator
  commands (`NodeCommand` rows) and to the server's own `alert_state`
  commands (remembered as they are published) are kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.ingest import IngestWorker
from fleet_server.models import Event, IngestRejection, NodeReply
from fleet_server.node_commands import RecordingPublisher, SentCommands, make_command
from proto.codec import encode, topic_for
from proto.ids import new_event_id, new_request_id
from proto.messages import AlertStateCommand, PanicEvent, Reply
from tests.support.ingest import T0, RecordedAcks, sqlite_engine

WORKER_LOG = "fleet_server.ingest.worker"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    yield from sqlite_engine(tmp_path)


@pytest.fixture
def sent() -> SentCommands:
    return SentCommands()


@pytest.fixture
def worker(engine: Engine, sent: SentCommands) -> IngestWorker:
    return IngestWorker(
        engine=engine,
        publisher=RecordedAcks(),
        notify=lambda _n: None,
        ack_timeout_s=120.0,
        sent_commands=sent,
    )


def _reply(node: str, request_id: str) -> tuple[str, bytes]:
    reply = Reply(node_id=node, ts=T0, request_id=request_id, ok=True, result={"pong": True})
    return topic_for(reply), encode(reply)


def _rejections(engine: Engine) -> dict[tuple[str, str], int]:
    with Session(engine) as session:
        return {(r.reason, r.node_id): r.count for r in session.exec(select(IngestRejection))}


def _replies(engine: Engine) -> set[tuple[str, str]]:
    with Session(engine) as session:
        return {(r.node_id, r.request_id) for r in session.exec(select(NodeReply))}


def test_a_press_without_v_is_accepted_as_version_1_counted_and_logged_once(
    engine: Engine, worker: IngestWorker, caplog: pytest.LogCaptureFixture
) -> None:
    presses = [
        PanicEvent(node_id="lhr-pillar-0101", ts=T0, event_id=new_event_id(), seq=seq)
        for seq in (1, 2)
    ]
    raw = []
    for press in presses:
        body = json.loads(encode(press))
        del body["v"]
        raw.append((topic_for(press), json.dumps(body).encode()))
    with caplog.at_level(logging.WARNING, logger=WORKER_LOG):
        worker.process(raw[:1])
        worker.process(raw[1:])
    with Session(engine) as session:
        assert len(session.exec(select(Event)).all()) == 2
    assert worker.stats.missing_version == 2
    assert worker.stats.rejected == 0
    assert _rejections(engine) == {}
    lines = [r.getMessage() for r in caplog.records if r.name == WORKER_LOG]
    assert len(lines) == 1
    assert "lhr-pillar-0101" in lines[0]
    assert "without 'v'" in lines[0]


def test_a_reply_to_a_request_nobody_sent_is_refused_and_counted(
    engine: Engine, worker: IngestWorker, sent: SentCommands
) -> None:
    with Session(engine) as session:
        ping = make_command(
            session=session, node_id="lhr-pillar-0102", name="ping", args={},
            sent_by="ayesha", now=T0, ttl_s=60,
        )  # fmt: skip
        session.commit()
    # The server's own alert_state command, as the live notifier publishes it.
    published = RecordedAcks()
    state = AlertStateCommand(
        node_id="lhr-pillar-0102", ts=T0 + timedelta(seconds=1), request_id=new_request_id(),
        alert_id=new_event_id(), state="acknowledged",
    )  # fmt: skip
    RecordingPublisher(published, sent).publish(topic_for(state), encode(state))
    assert published.messages == [(topic_for(state), encode(state))]

    stranger = new_request_id()
    worker.process(
        [
            _reply("lhr-pillar-0102", ping.request_id),  # an operator's ping: kept
            _reply("lhr-pillar-0102", state.request_id),  # the server's alert_state: kept
            _reply("lhr-pillar-0102", stranger),  # nobody sent it
            _reply("lhr-pillar-0103", ping.request_id),  # sent to another node
        ]
    )
    assert _replies(engine) == {
        ("lhr-pillar-0102", ping.request_id),
        ("lhr-pillar-0102", state.request_id),
    }
    assert _rejections(engine) == {
        ("unknown_request", "lhr-pillar-0102"): 1,
        ("unknown_request", "lhr-pillar-0103"): 1,
    }
    assert worker.stats.rejected == 2
