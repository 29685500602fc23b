"""What one batch's handlers share while it is stored: the session, the time, the outcome.

A `Batch` lives for one transaction of the ingest worker. Handlers read and
write through it: the policies loaded once for the batch, the open alerts and
other state preloaded for all its nodes in one query each (`want`), the
history rows and other handlers' rows (`bulk`) collected for multi-row
inserts, and the `BatchOutcome` that
says what to acknowledge and announce after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from fleet_server.alerting import AlertNotice, AlertRows, Policies
from fleet_server.device_clock import DeviceTimeRules
from fleet_server.models import Alert

__all__ = ["Batch", "BatchOutcome", "BulkWriter", "Preload"]


@dataclass
class BatchOutcome:
    """What one committed batch means for the outside world."""

    acks: dict[str, list[str]] = field(default_factory=dict)
    urgent: set[str] = field(default_factory=set)  # nodes to ack at once (a panic press)
    notices: list[AlertNotice] = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0
    implausible: int = 0  # events whose device time could not be true (still stored)
    late: int = 0  # events below their node's highest seq, stored late (a gap closes)


Preload = Callable[["Batch", set[str]], None]
BulkWriter = Callable[[Session, list[dict[str, object]]], None]


@dataclass
class Batch:
    """One batch in progress (see the module docstring); made by `store_batch`."""

    session: Session
    now: datetime
    policies: Policies
    device_time: DeviceTimeRules = field(default_factory=DeviceTimeRules)
    out: BatchOutcome = field(default_factory=BatchOutcome)
    # Each node's highest seq so far, written back to `node.last_seq` at the end.
    seqs: dict[str, int | None] = field(default_factory=dict)
    # Nodes whose row was made in this batch (their first status is not a reconnect).
    fresh: set[str] = field(default_factory=set)
    # Nodes not known to be online (offline, or an outage pending): the next
    # message that only a live connection sends brings them back.
    absent: set[str] = field(default_factory=set)
    # When each node already known came to exist (enrollment or first message).
    node_since: dict[str, datetime] = field(default_factory=dict)
    # Events per node whose device time is implausible, added to its count.
    implausible: dict[str, int] = field(default_factory=dict)
    # Events that arrived after a higher seq of their node: (node_id, seq, event_id).
    late: list[tuple[str, int, str]] = field(default_factory=list)
    # Open panic/tamper alerts of the batch's alerting nodes, by (node_id, type).
    open_alerts: dict[tuple[str, str], Alert] = field(default_factory=dict)
    alert_rows: AlertRows = field(default_factory=AlertRows)
    preloads: dict[Preload, set[str]] = field(default_factory=dict)
    # Rows handlers collected for one bulk write each after the events are written
    # (a plate read per plate event, camera health per telemetry), by their writer.
    bulk_rows: dict[BulkWriter, list[dict[str, object]]] = field(default_factory=dict)

    def bulk(self, writer: BulkWriter, row: dict[str, object]) -> None:
        """Collect `row` for `writer`, which `write_bulk` calls once with all its rows."""
        rows = self.bulk_rows.get(writer)
        if rows is None:
            self.bulk_rows[writer] = [row]
        else:
            rows.append(row)

    def write_bulk(self) -> None:
        """Run each writer once over its rows (after the batch's events are written)."""
        for writer, rows in self.bulk_rows.items():
            writer(self.session, rows)
        self.bulk_rows = {}

    def want(self, preload: Preload, node_id: str) -> None:
        """Ask for `preload` to run once for this batch, over every node that asked."""
        nodes = self.preloads.get(preload)
        if nodes is None:
            self.preloads[preload] = {node_id}
        else:
            nodes.add(node_id)
