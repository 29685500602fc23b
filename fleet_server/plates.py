"""Plate reads and camera health on the server: writing, searching, expiring.

Camera nodes send one `plate` event per vehicle pass; ingest keeps the event
row (evidence of what the node sent) and adds a `PlateRead` row in the same
batch (`fleet_server.ingest.plate_reads`), written here in bulk once per
batch (on PostgreSQL by `COPY`, like the events). A search matches the
canonical key (the node's plate rules corrected look-alikes and left out
attributes such as the year):

- ``exact``: the key equals the query (normalised: upper case, no separators);
- ``prefix``: the key starts with the query (``LIKE 'KEY%'``: the key has
  only A–Z and 0–9, so nothing needs escaping; a range on the index would
  depend on the database's collation);
- ``fuzzy``: the key equals the query with at most one character swapped for
  a look-alike (O/0/D/Q, I/1/L, Z/2, S/5, B/8, G/6 — `proto.plates`, the
  table the node's rules agree with), sent as one ``IN`` list.

Narrowed by node, district (the node's) and receive-time range, newest
first, paginated. Retention: `PlateRetentionJob` deletes reads older than
the configured days in bounded chunks, so a long backlog never holds one
huge transaction; on PostgreSQL, where `plateread` is partitioned by month,
a month whose reads are all past retention is dropped whole
(`fleet_server.partitions`, the same `plate_retention_days`). `NodeCamera`
rows are each camera's latest health from telemetry, replaced per node in one
statement pair per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Table, delete, func, insert
from sqlalchemy import case as sa_case
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.alerting import AlertNotice
from fleet_server.errors import FleetServerError
from fleet_server.models import Node
from fleet_server.models.common import UtcDateTime
from fleet_server.models.plate import (
    CameraSummary,
    NodeCamera,
    NodeCameraPublic,
    PlateRead,
    PlateReadPublic,
)
from proto.plates import MAX_PLATE_KEY, normalise_plate, one_confusion_variants

__all__ = [
    "PlateMatch",
    "PlateRetentionJob",
    "PlateSearchError",
    "camera_health",
    "camera_summaries",
    "delete_expired_plate_reads",
    "insert_plate_reads",
    "replace_node_cameras",
    "search_plate_reads",
    "update_node_cameras",
]

logger = logging.getLogger(__name__)

_PLATE_TABLE: Table = PlateRead.__table__  # type: ignore[attr-defined]
_CAMERA_TABLE: Table = NodeCamera.__table__  # type: ignore[attr-defined]
RETENTION_CHUNK = 5_000
PLATE_COLUMNS = tuple(str(c.name) for c in _PLATE_TABLE.columns)  # the bulk write's order
_PLATE_TIMES = frozenset(
    str(c.name) for c in _PLATE_TABLE.columns if isinstance(c.type, UtcDateTime)
)


class PlateSearchError(FleetServerError):
    """A plate search that cannot be answered (a query with no letters or digits)."""


class PlateMatch(StrEnum):
    """How a search compares the query with a read's canonical key."""

    EXACT = "exact"
    PREFIX = "prefix"
    FUZZY = "fuzzy"


# ------------------------------------------------------------------ writing


def insert_plate_reads(session: Session, rows: list[dict[str, object]]) -> None:
    """Write a batch's plate reads in bulk.

    Event ids are new (ingest deduplicated them). On PostgreSQL the rows go
    by `COPY` and one `INSERT … SELECT … ON CONFLICT (event_id) DO NOTHING`,
    the path the batch's events take (`fleet_server.ingest.writer`): an
    executemany there is still one INSERT per read, and a read another
    worker stored first (a redelivery racing a handover) is left out rather
    than failing the batch. Elsewhere one SQLAlchemy executemany (on SQLite,
    in-process, that is already fast).
    """
    if not rows:
        return
    # Imported here: `fleet_server.ingest` imports this module while it loads.
    from fleet_server.ingest import writer

    if (
        session.get_bind().dialect.name == "postgresql"
        and writer.MULTI_ROW_WRITES
        and writer.COPY_WRITES
    ):
        stored = [
            tuple(
                writer.naive_utc(row[name]) if name in _PLATE_TIMES else row.get(name)  # type: ignore[arg-type]
                for name in PLATE_COLUMNS
            )
            for row in rows
        ]
        table = _PLATE_TABLE.name
        writer.copy_insert(session.connection(), table=table, columns=PLATE_COLUMNS, rows=stored)
        return
    session.execute(insert(_PLATE_TABLE), rows)


def replace_node_cameras(session: Session, rows: list[dict[str, object]]) -> None:
    """Each node's cameras as its latest telemetry in the batch lists them (old rows go)."""
    if not rows:
        return
    latest: dict[tuple[object, object], dict[str, object]] = {}
    for row in rows:  # a node's later report in the batch wins
        latest[(row["node_id"], row["camera_id"])] = row
    nodes = sorted({str(row["node_id"]) for row in rows})
    session.execute(delete(_CAMERA_TABLE).where(_CAMERA_TABLE.c.node_id.in_(nodes)))
    session.execute(insert(_CAMERA_TABLE), list(latest.values()))


def update_node_cameras(session: Session, rows: list[dict[str, object]]) -> None:
    """The cameras a node's report lists when it takes turns (more than fit in one).

    A node with more cameras than `MAX_TELEMETRY_CAMERAS` lists a share of
    them per report (`Telemetry.cameras_total` says how many it runs): only
    the listed cameras' rows are replaced; the others keep their last figures.
    """
    if not rows:
        return
    latest: dict[tuple[object, object], dict[str, object]] = {}
    for row in rows:
        latest[(row["node_id"], row["camera_id"])] = row
    by_node: dict[str, list[str]] = {}
    for node_id, camera_id in latest:
        by_node.setdefault(str(node_id), []).append(str(camera_id))
    for node_id, camera_ids in sorted(by_node.items()):
        session.execute(
            delete(_CAMERA_TABLE).where(
                _CAMERA_TABLE.c.node_id == node_id, _CAMERA_TABLE.c.camera_id.in_(camera_ids)
            )
        )
    session.execute(insert(_CAMERA_TABLE), list(latest.values()))


# ---------------------------------------------------------------- searching


def search_plate_reads(
    *,
    session: Session,
    query: str | None,
    match: PlateMatch = PlateMatch.EXACT,
    node_id: str | None = None,
    district: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    scope: Any = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[PlateReadPublic], int]:
    """Plate reads matching the query and filters, newest first, and how many match.

    `scope` (a `fleet_server.scope.Scope`, when given) narrows to its nodes.
    No `query`: every read in the filters (a node's or district's recent reads).
    """
    stmt = select(PlateRead, Node.district).join(
        Node, col(Node.node_id) == col(PlateRead.node_id), isouter=True
    )
    count = select(func.count()).select_from(PlateRead)
    conditions: list[Any] = []
    if query is not None and query.strip():
        key = normalise_plate(query)[:MAX_PLATE_KEY]
        if not key:
            raise PlateSearchError("a plate search needs letters or digits")
        canonical = col(PlateRead.canonical)
        if match is PlateMatch.PREFIX:
            conditions.append(canonical.like(key + "%"))  # key: A-Z and 0-9 only
        elif match is PlateMatch.FUZZY:
            conditions.append(canonical.in_(one_confusion_variants(key)))
        else:
            conditions.append(canonical == key)
    if node_id is not None:
        conditions.append(col(PlateRead.node_id) == node_id)
    if district is not None:
        in_district = select(Node.node_id).where(col(Node.district) == district)
        conditions.append(col(PlateRead.node_id).in_(in_district))
    if since is not None:
        conditions.append(col(PlateRead.received_at) >= since)
    if until is not None:
        conditions.append(col(PlateRead.received_at) < until)
    for condition in conditions:
        stmt = stmt.where(condition)
        count = count.where(condition)
    if scope is not None:
        stmt = scope.filter_nodes(stmt, PlateRead.node_id)
        count = scope.filter_nodes(count, PlateRead.node_id)
    ordered = stmt.order_by(col(PlateRead.received_at).desc(), col(PlateRead.event_id).desc())
    rows = session.exec(ordered.offset(offset).limit(limit)).all()
    total = int(session.exec(count).one())
    data = [
        PlateReadPublic.model_validate({**read.model_dump(), "district": district_of})
        for read, district_of in rows
    ]
    return data, total


def camera_health(
    *, session: Session, node_id: str | None = None, scope: Any = None, limit: int = 1000
) -> list[NodeCameraPublic]:
    """The cameras' latest health, by node then camera, with each node's district."""
    stmt = select(NodeCamera, Node.district).join(
        Node, col(Node.node_id) == col(NodeCamera.node_id), isouter=True
    )
    if node_id is not None:
        stmt = stmt.where(col(NodeCamera.node_id) == node_id)
    if scope is not None:
        stmt = scope.filter_nodes(stmt, NodeCamera.node_id)
    stmt = stmt.order_by(col(NodeCamera.node_id), col(NodeCamera.camera_id)).limit(limit)
    return [
        NodeCameraPublic.model_validate({**camera.model_dump(), "district": district})
        for camera, district in session.exec(stmt).all()
    ]


def camera_summaries(
    *, session: Session, scope: Any = None, limit: int = 10_000
) -> list[CameraSummary]:
    """Per node: how many cameras are ok, stalled (an open fault) or shed (slowed, stopped).

    One grouped query over ``nodecamera`` (a row per camera, replaced by each
    telemetry), so the node list of a city costs one round trip, not one per
    node.
    """
    faulted = col(NodeCamera.fault).is_not(None)
    shed = col(NodeCamera.shed).in_(("slowed", "stopped")) & ~faulted
    stmt = sa_select(
        col(NodeCamera.node_id),
        func.count(),
        func.sum(sa_case((faulted, 1), else_=0)),
        func.sum(sa_case((shed, 1), else_=0)),
        func.max(col(NodeCamera.updated_at)),
    ).group_by(col(NodeCamera.node_id))
    if scope is not None:
        stmt = scope.filter_nodes(stmt, NodeCamera.node_id)
    stmt = stmt.order_by(col(NodeCamera.node_id)).limit(limit)
    rows = list(session.execute(stmt).all())
    faults: dict[str, list[str]] = {}
    if any(row[2] for row in rows):
        fault_stmt = select(NodeCamera.node_id, NodeCamera.camera_id, NodeCamera.fault).where(
            faulted
        )
        if scope is not None:
            fault_stmt = scope.filter_nodes(fault_stmt, NodeCamera.node_id)
        for node_id, camera_id, fault in session.exec(fault_stmt).all():
            faults.setdefault(node_id, []).append(f"{camera_id}: {fault}")
    summaries = []
    for node_id, cameras, stalled, shed_count, updated_at in rows:
        stalled, shed_count = int(stalled or 0), int(shed_count or 0)
        summaries.append(
            CameraSummary(
                node_id=node_id,
                cameras=int(cameras),
                ok=int(cameras) - stalled - shed_count,
                stalled=stalled,
                shed=shed_count,
                faults=sorted(faults.get(node_id, [])),
                updated_at=updated_at,
            )
        )
    return summaries


# ---------------------------------------------------------------- retention


def delete_expired_plate_reads(
    *, session: Session, before: datetime, chunk: int = RETENTION_CHUNK
) -> int:
    """Delete up to `chunk` plate reads received before `before`; how many went.

    Oldest first by the receive-time index; the event rows stay (they are the
    node's record and follow the events' own retention).
    """
    ids = list(
        session.exec(
            select(PlateRead.event_id)
            .where(col(PlateRead.received_at) < before)
            .order_by(col(PlateRead.received_at))
            .limit(chunk)
        )
    )
    if ids:
        session.execute(delete(_PLATE_TABLE).where(_PLATE_TABLE.c.event_id.in_(ids)))
    return len(ids)


@dataclass
class PlateRetentionJob:
    """Plate reads older than `days` are deleted, a chunk per tick (`fleet_server.timers`).

    The database is looked at every `every_s`, or at once again while a chunk
    came back full (a backlog drains a chunk per tick without one long
    transaction).
    """

    days: float
    chunk: int = RETENTION_CHUNK
    every_s: float = 60.0
    name: str = "plate_retention"
    deleted: int = field(default=0, init=False)
    _next_at: datetime | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        if self._next_at is not None and now < self._next_at:
            return []
        before = now - timedelta(days=self.days)
        gone = delete_expired_plate_reads(session=session, before=before, chunk=self.chunk)
        if gone:
            self.deleted += gone
            logger.info("plate retention: %s reads older than %s days deleted", gone, self.days)
            # In the deletion's own transaction: expiry is audited (issue 15), once per run.
            audit.record(
                session, actor="system", action="retention.plate_reads_expired",
                object="data-class:plate_read", now=now,
                detail={"received_before": audit.format_time(before), "days": self.days,
                        "count": gone},
            )  # fmt: skip
        full = gone >= self.chunk
        self._next_at = None if full else now + timedelta(seconds=self.every_s)
        return []
