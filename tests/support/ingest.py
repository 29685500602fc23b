"""What the ingest worker's tests share: a migrated database, a recording publisher, events.

The worker is tested in-process (no broker) against a real SQLite database
built by the real migrations, with the acks it publishes recorded instead of
sent, so a test can say which node got which event ids in which `Ack`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import ensure_default_policies
from fleet_server.db import make_engine
from fleet_server.schema import migrate
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import EventBase, PlateEvent

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=timezone.utc)


def migrated_engine(path: Path) -> Engine:
    """A SQLite database at `path`, migrated, with the default escalation policies."""
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with Session(engine) as session:
        ensure_default_policies(session=session)
    return engine


def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """Body of a module's `engine` fixture: `yield from sqlite_engine(tmp_path)`."""
    engine = migrated_engine(tmp_path / "fleet.db")
    yield engine
    engine.dispose()


class RecordedAcks:
    """A publisher that keeps what the worker publishes (acks and commands)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        assert qos == 1
        self.messages.append((topic, payload))

    def by_node(self) -> dict[str, list[list[str]]]:
        """Node → the event ids of each `Ack` it got, in order."""
        out: dict[str, list[list[str]]] = {}
        for _topic, payload in self.messages:
            body = json.loads(payload)
            out.setdefault(body["node_id"], []).append(body["event_ids"])
        return out

    def acked(self) -> list[str]:
        """Every event id acknowledged, in the order the acks went out."""
        return [i for _topic, payload in self.messages for i in json.loads(payload)["event_ids"]]


def wire(event: EventBase) -> tuple[str, bytes]:
    """`(topic, payload)` as the node publishes the event."""
    return topic_for(event), encode(event)


def plate_read(node: str, seq: int) -> EventBase:
    """An ANPR plate read from camera 1 of `node`."""
    return PlateEvent(
        node_id=node, ts=T0, event_id=new_event_id(), seq=seq, camera_id="cam-1",
        track_id=f"t{seq}", plate="LEA 1234", confidence=0.9, frames=5,
    )  # fmt: skip
