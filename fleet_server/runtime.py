"""What a running server holds: engine, MQTT link, ingest, live feed, notifier.

Created in the FastAPI lifespan (`fleet_server.app`), stored on `app.state`,
and handed to routes through `api.deps.RuntimeDep`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from fleet_server.alerting import AlertNotice
from fleet_server.broker import ManagedBroker
from fleet_server.feed_notify import FeedFanout
from fleet_server.ingest import IngestWorker, Publisher
from fleet_server.mqtt import MqttLink
from fleet_server.pki.runtime import PkiRuntime
from fleet_server.ratelimit import TokenBucketLimiter
from fleet_server.settings import Settings
from fleet_server.stream import Broadcaster, alert_frame
from proto.codec import encode, topic_for

if TYPE_CHECKING:
    from fleet_server.cluster.consumer import ClusterIngest

logger = logging.getLogger(__name__)


class LiveNotifier:
    """Announces committed alert changes: SSE first (operators), then the node's command.

    With `fanout` (N workers on PostgreSQL, `fleet_server.feed_notify`) the
    other workers' SSE clients are told too.
    """

    def __init__(
        self,
        *,
        broadcaster: Broadcaster,
        publisher: Publisher | None,
        fanout: FeedFanout | None = None,
    ) -> None:
        self.broadcaster = broadcaster
        self.publisher = publisher
        self.fanout = fanout
        # Told after the feed, e.g. the panic snapshot pull (fleet_server.alerting.snapshots).
        self.listeners: list[Callable[[Sequence[AlertNotice]], None]] = []

    def __call__(self, notices: Sequence[AlertNotice]) -> None:
        self.announce(notices)
        if self.publisher is None:
            return
        for n in notices:
            if n.command is not None:
                self.publisher.publish(topic_for(n.command), encode(n.command), qos=1)

    def announce(self, notices: Sequence[AlertNotice]) -> None:
        """The feed, the other workers' feeds and the listeners; no node command.

        A cluster worker's ingest calls this: it sends its batches' commands
        down the partition's district itself, after the broker ack
        (`fleet_server.cluster.consumer`), so they are not sent twice.
        """
        self.broadcaster.publish_threadsafe([alert_frame(n) for n in notices])
        if self.fanout is not None:
            self.fanout.announce(notices)
        for listener in self.listeners:
            listener(notices)


@dataclass
class Runtime:
    """The live parts of one server process."""

    settings: Settings
    engine: Engine
    signing_key: bytes
    broadcaster: Broadcaster
    notify: LiveNotifier
    mqtt: MqttLink | None = None
    ingest: IngestWorker | None = None
    broker: ManagedBroker | None = None
    pki: PkiRuntime | None = None
    enroll_limiter: TokenBucketLimiter | None = None
    cluster: ClusterIngest | None = None  # a cluster worker's ingest (docs/cluster.md)

    @property
    def node_publisher(self) -> Publisher | None:
        """Where a route sends a node a command: the MQTT link, or a cluster worker's
        downlink (`fleet_server.cluster.downlink`, which is `notify.publisher` there);
        None: this server cannot reach nodes."""
        return self.mqtt if self.mqtt is not None else self.notify.publisher
