"""Ingest dispatches by message class through an open registry, not an `isinstance` chain.

A new rule for a kind of message is a handler registered for its class: the
batch loop calls it with the node row it asked for, and the event row it may
annotate, without being edited. Classes without their own handler fall back
to their nearest base's (every event is at least stored and acked).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.alerting import PolicyCache
from fleet_server.ingest import (
    Batch,
    decode_all,
    handler_for,
    register_handler,
    store_batch,
    unregister_handler,
)
from fleet_server.ingest.handlers import AlertEventHandler, PlainEventHandler
from fleet_server.models import Event, Node
from fleet_server.privacy.ingest import PrivateCameraGate
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import FaceEvent, PanicEvent, PlateEvent
from tests.support.ingest import T0, migrated_engine

NOW = datetime(2025, 3, 1, 9, 0, 5, tzinfo=timezone.utc)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = migrated_engine(tmp_path / "fleet.db")
    yield eng
    eng.dispose()


def _plate(node: str, seq: int) -> PlateEvent:
    return PlateEvent(
        node_id=node, ts=T0 + timedelta(seconds=seq), event_id=new_event_id(), seq=seq,
        camera_id="cam-1", track_id=f"t{seq}", plate=f"LE{seq:04d}", confidence=0.9, frames=3,
    )  # fmt: skip


class WatchlistHits:
    """A stand-in rule for plate reads: notes each read with the node row it was given."""

    is_event = True
    urgent_ack = False

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.preloaded: list[set[str]] = []

    def _preload(self, batch: Batch, node_ids: set[str]) -> None:
        self.preloaded.append(set(node_ids))

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        batch.want(self._preload, node_id)
        return True  # this rule reads the node's row

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        assert node is not None
        assert event is not None
        self.seen.append((node.node_id, message.plate))


def test_every_event_class_has_a_handler_and_the_lookup_is_by_class() -> None:
    assert isinstance(handler_for(PanicEvent), AlertEventHandler)
    # Face and plate events pass the private-camera gate first (fleet_server.privacy.ingest).
    face, plate = handler_for(FaceEvent), handler_for(PlateEvent)
    assert isinstance(face, PrivateCameraGate)
    assert isinstance(face.inner, PlainEventHandler)  # through EventBase
    assert isinstance(plate, PrivateCameraGate)
    assert isinstance(plate.inner, PlainEventHandler)  # its own: a plate read too
    assert handler_for(PlateEvent).urgent_ack is False
    assert handler_for(PanicEvent).urgent_ack is True


def test_a_registered_handler_runs_for_its_messages_without_editing_the_batch_loop(
    engine: Engine,
) -> None:
    rule = WatchlistHits()
    plate_reads = handler_for(PlateEvent)
    register_handler(PlateEvent, rule)
    try:
        raw = [(topic_for(m), encode(m)) for m in (_plate("cam-0001", 1), _plate("cam-0002", 1))]
        envelopes, _ = decode_all(raw)
        with Session(engine, expire_on_commit=False) as session:
            policies = PolicyCache(ack_timeout_s=120.0).get(session)
            out = store_batch(session=session, envelopes=envelopes, now=NOW, policies=policies)
            session.commit()
    finally:
        unregister_handler(PlateEvent)
        assert isinstance(handler_for(PlateEvent), PlainEventHandler)  # back to the default
        register_handler(PlateEvent, plate_reads)

    assert rule.seen == [("cam-0001", "LE0001"), ("cam-0002", "LE0001")]
    assert rule.preloaded == [{"cam-0001", "cam-0002"}]  # one preload for the whole batch
    assert out.inserted == 2
    with Session(engine) as session:
        assert len(session.exec(select(Event)).all()) == 2  # still stored and acked as events
    assert handler_for(PlateEvent) is plate_reads
