"""MQTT ingest: decode uplink messages, store them in batches, ack after commit.

- `decode`: raw `(topic, payload)` → validated envelopes; refusals tallied, never raised;
- `registry` and `handlers`: one handler per kind of message, looked up by class;
- `store`: the batch loop (`store_batch`) every message goes through;
- `writer`: the bulk SQL for events and node touches;
- `queue`: the bounded hand-over from the MQTT thread;
- `acks`: application acks, coalesced while the worker is behind;
- `worker`: the thread that runs it all (`IngestWorker`).

Malformed messages are refused by the decoder; each refusal is counted per
reason and node in the database (`IngestRejection`) and logged with the node
id, and the rest of the batch carries on. docs/fleet-server.md tells the
whole path.
"""

from __future__ import annotations

from fleet_server.ingest.acks import ACK_MAX_IDS, AckCoalescer, Publisher, publish_acks
from fleet_server.ingest.batch import Batch, BatchOutcome
from fleet_server.ingest.decode import Received, Rejections, decode_all
from fleet_server.ingest.queue import BatchQueue
from fleet_server.ingest.registry import (
    MessageHandler,
    handler_for,
    register_handler,
    unregister_handler,
)
from fleet_server.ingest.store import store_batch
from fleet_server.ingest.worker import IngestStats, IngestWorker
from fleet_server.ingest.writer import sqlite_datetime

__all__ = [
    "ACK_MAX_IDS",
    "AckCoalescer",
    "Batch",
    "BatchOutcome",
    "BatchQueue",
    "IngestStats",
    "IngestWorker",
    "MessageHandler",
    "Publisher",
    "Received",
    "Rejections",
    "decode_all",
    "handler_for",
    "publish_acks",
    "register_handler",
    "sqlite_datetime",
    "store_batch",
    "unregister_handler",
]
