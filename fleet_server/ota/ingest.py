"""The ingest handler for `ota` events: each node's campaign progress, in the batch.

Registered on import of `fleet_server.ota` (`register_handler(OtaEvent, …)`),
so an OTA report is stored, deduplicated and acked by the batch loop like
every event (the node's outbox keeps it until then), and also moves its
node's state in the campaign it belongs to (`record_ota_event`).
"""

from __future__ import annotations

from typing import Any

from fleet_server.ingest.batch import Batch
from fleet_server.ingest.registry import register_handler
from fleet_server.models import Node
from fleet_server.ota.campaigns import record_ota_event
from proto.messages import OtaEvent

__all__ = ["OtaEventHandler", "register"]


class OtaEventHandler:
    """An `ota` event: stored like any event, and applied to the node's campaign."""

    is_event = True
    urgent_ack = False

    def scan(self, batch: Batch, node_id: str, message: Any) -> bool:
        return True  # `handle` runs only for messages that ask for their node's row

    def handle(
        self, batch: Batch, node: Node | None, message: Any, event: dict[str, object] | None
    ) -> None:
        if event is None or not isinstance(message, OtaEvent):
            return  # a duplicate: applied when it first came
        record_ota_event(
            session=batch.session, node_id=message.node_id, phase=message.phase,
            artifact=message.artifact, version=message.version,
            campaign_id=message.campaign_id, detail=message.detail,
            reported_at=message.ts, now=batch.now, reason=message.reason,
            bytes_done=message.bytes_done, bytes_total=message.bytes_total,
            artifact_kind=message.artifact_kind,
        )  # fmt: skip


def register() -> None:
    """Make the batch loop hand `ota` events to `OtaEventHandler` (idempotent)."""
    register_handler(OtaEvent, OtaEventHandler())
