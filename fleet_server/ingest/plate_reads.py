"""The ingest handlers for camera nodes: a plate read row per plate event, camera health.

Registered on import (`fleet_server.ingest.store` imports this module after
the built-in handlers):

- `PlateReadHandler` for `PlateEvent`: the event is stored, deduplicated and
  acked like every event (its row stays), and a `PlateRead` row is collected
  for the batch's one multi-row INSERT (`fleet_server.plates`). It needs no
  node row (``rowless``): a busy camera fleet costs ingest one extra
  statement per batch, not an ORM load per node.
- `CameraTelemetryHandler` for `Telemetry`: the built-in telemetry rules,
  and a telemetry that lists cameras replaces its node's `NodeCamera` rows
  (one DELETE and one INSERT per batch for all such nodes); one that lists
  a turn's share (``cameras_total`` more than it lists: a node with more
  than eight cameras) replaces only the listed cameras' rows.
"""

from __future__ import annotations

from typing import Any

from fleet_server.ingest.batch import Batch
from fleet_server.ingest.handlers import PlainEventHandler, TelemetryHandler
from fleet_server.ingest.registry import register_handler
from fleet_server.models import Node
from fleet_server.plates import insert_plate_reads, replace_node_cameras, update_node_cameras
from proto.messages import PlateEvent, Telemetry
from proto.plates import MAX_PLATE_KEY, normalise_plate

__all__ = ["CameraTelemetryHandler", "PlateReadHandler", "plate_read_row", "register"]


def plate_read_row(message: PlateEvent, *, node_id: str, received_at: Any) -> dict[str, object]:
    """The `plateread` row for one plate event (the key from the node's rules, else its text)."""
    canonical = normalise_plate(message.canonical or message.plate)[:MAX_PLATE_KEY]
    return {
        "event_id": message.event_id,
        "node_id": node_id,
        "camera_id": message.camera_id,
        "received_at": received_at,
        "ts": message.ts,
        "plate": message.plate,
        "canonical": canonical,
        "country": message.country,
        "province": message.province,
        "layout": message.layout,
        "confidence": message.confidence,
        "frames": message.frames,
        "crop_sha256": message.snapshot_sha256,
    }


class PlateReadHandler(PlainEventHandler):
    """A `plate` event: stored as an event, and as a plate read in the same batch."""

    rowless = True  # `handle` runs for every new event, with node None

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        if event is None or not isinstance(message, PlateEvent):
            return  # a duplicate: its read was stored when it first came
        row = plate_read_row(message, node_id=str(event["node_id"]), received_at=batch.now)
        batch.bulk(insert_plate_reads, row)


class CameraTelemetryHandler(TelemetryHandler):
    """Telemetry as the built-in handler applies it, plus the node's per-camera health."""

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        super().handle(batch, node, message, event)
        telemetry: Telemetry = message
        if node is None or not telemetry.cameras:
            return
        # A node with more cameras than one report holds lists them in turns:
        # then the listed ones are updated, not the node's whole list replaced.
        total = telemetry.cameras_total
        writer = replace_node_cameras
        if total is not None and total > len(telemetry.cameras):
            writer = update_node_cameras
        for camera in telemetry.cameras:
            detector, reader = camera.detector_ms, camera.reader_ms
            batch.bulk(
                writer,
                {
                    "node_id": node.node_id,
                    "camera_id": camera.camera_id,
                    "updated_at": batch.now,
                    "frames_in": camera.frames_in,
                    "frames_dropped": camera.frames_dropped,
                    "motion_ratio": camera.motion_ratio,
                    "detector_ms_p50": detector.p50 if detector is not None else None,
                    "detector_ms_p95": detector.p95 if detector is not None else None,
                    "reader_ms_p50": reader.p50 if reader is not None else None,
                    "reader_ms_p95": reader.p95 if reader is not None else None,
                    "plates_per_hour": camera.plates_per_hour,
                    "shed": camera.shed,
                    "analytics_rate": camera.analytics_rate,
                    "fault": camera.fault,
                },
            )


def register() -> None:
    """Make the batch loop use these handlers (idempotent)."""
    register_handler(PlateEvent, PlateReadHandler())
    register_handler(Telemetry, CameraTelemetryHandler())


register()
