"""A cluster worker's way to a node for everything that is not an ingest batch's ack.

On one box `runtime.notify.publisher` is the server's MQTT link: the one
broker holds every node's session. A cluster worker has no such broker; it
holds a `DistrictLink` to every district Mosquitto (docs/cluster.md), and a
node is reachable only through the broker it is connected to. So an
operator's command from the REST API, an ``alert_state`` from a REST alert
change or an escalation, an OTA offer, a panic snapshot pull, a watchlist
bundle or a privacy ``set_config`` re-send goes through `ClusterDownlink`,
which has the publisher interface of the one-box link
(``publish(topic, payload, *, qos=1)``) and sends each ``nb/v1/<node_id>/…``
topic to that node's district broker.

Node → district, in this order (`route`):

1. the partition the node's messages arrived on, learned by `ClusterIngest`
   batch by batch (`NodeDistricts`): authoritative, since the district
   bridge that carried them is the broker the node is connected to now
   (a node moved to another broker is re-learned at its next message);
2. for a node not heard from since this worker started (another worker
   leads its partition, or it is quiet), ``Node.district`` in the database,
   read through `topology.district_key` (``South`` is the ``south``
   broker's node), cached for `db_ttl_s` with at most `db_cache_max` nodes.

A node whose district is unknown (``district_unknown``) or whose district
has no link on this worker (``district_unlinked``), or whose district broker
this worker cannot reach now (``district_broker_down``), is never a silent
drop:

- `reach` raises `NodeUnreachable` (a `CommandRefused` with the reason and
  the HTTP status a route answers with: 409 for an unknown district, 503
  otherwise), so a REST route refuses before it records a command and the
  OTA wave job leaves the node pending instead of counting it offered;
- `publish` keeps the one-box link's contract (it never raises: timers and
  the alert notifier call it on their own threads), logs the node and the
  reason and counts it (`/healthz` → ``cluster.downlink.unroutable``). To a
  district broker that is down for the moment it still publishes: paho
  queues QoS 1 messages and sends them on reconnect (counted as
  ``queued_broker_down``).

Replies: one box screens replies against the commands it sent
(`node_commands.SentCommands`, in memory). A cluster does not: a node's
reply arrives at whichever worker leads its district, not necessarily the
one that sent the command, so `ClusterIngest`'s pipelines keep every reply
and nothing needs recording here.

Exceptions: `NodeUnreachable` (from `reach` and `route`) only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.cluster.topology import TopologyError, district_key
from fleet_server.models import Node
from fleet_server.node_commands import NodeUnreachable
from proto.errors import ProtoError
from proto.topics import parse_topic

if TYPE_CHECKING:
    from fleet_server.cluster.consumer import ClusterIngest, DistrictLink

__all__ = ["ClusterDownlink", "NodeDistricts", "route"]

logger = logging.getLogger(__name__)

UNKNOWN = "district_unknown"
UNLINKED = "district_unlinked"
BROKER_DOWN = "district_broker_down"
BAD_TOPIC = "bad_topic"


def route(node_id: str, *, heard: str | None, recorded: str | None, linked: Collection[str]) -> str:
    """The district to send `node_id`'s messages to; raises `NodeUnreachable` with why not.

    `heard`: the partition its messages arrived on (already a district
    name); `recorded`: ``Node.district`` from the database (any case, or
    None); `linked`: the districts this worker has a broker link for.
    """
    if heard is not None:
        district = heard
        source = "its messages arrive"
    elif recorded is None or not recorded.strip():
        raise NodeUnreachable(
            UNKNOWN,
            f"node {node_id!r} has no known district: nothing heard from it since this "
            "worker started and no district in its node record, so no district broker to "
            "send it to",
            status_code=409,
        )
    else:
        try:
            district = district_key(recorded)
        except TopologyError:
            raise NodeUnreachable(
                UNKNOWN,
                f"node {node_id!r}'s recorded district {recorded!r} is no district broker "
                "name, and nothing was heard from it since this worker started",
                status_code=409,
            ) from None
        source = "its node record says"
    if district not in linked:
        raise NodeUnreachable(
            UNLINKED,
            f"node {node_id!r} is in district {district!r} ({source}), which this worker has "
            f"no broker link for (linked: {sorted(linked) or 'none'}; "
            "NIGEHBAAN_CLUSTER_DISTRICT_BROKERS)",
            status_code=503,
        )
    return district


class NodeDistricts:
    """Node → the district its messages last arrived on; bounded (oldest heard forgotten).

    Written by the ingest loop for every stored batch, read by REST and
    timer threads: thread-safe.
    """

    def __init__(self, *, max_nodes: int = 200_000) -> None:
        if max_nodes < 1:
            raise ValueError("NodeDistricts needs room for at least one node")
        self._max = max_nodes
        self._districts: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def heard(self, node_id: str, district: str) -> None:
        """`node_id`'s message arrived on `district`'s partition."""
        with self._lock:
            self._districts[node_id] = district
            self._districts.move_to_end(node_id)
            if len(self._districts) > self._max:
                self._districts.popitem(last=False)

    def get(self, node_id: str) -> str | None:
        with self._lock:
            return self._districts.get(node_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._districts)


class _RecordedDistricts:
    """``Node.district`` by node id, read from the database and kept `ttl_s` (bounded).

    A miss (no row, no district) is kept too, for the same time: a timer
    sending to an unregistered node every tick reads the database once per
    `ttl_s`, and a district set by an admin is seen within `ttl_s`.
    """

    def __init__(
        self, engine: Engine, *, ttl_s: float, max_nodes: int, clock: Callable[[], float]
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.max_nodes = max_nodes
        self.clock = clock
        self.reads = 0
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, node_id: str) -> str | None:
        now = self.clock()
        with self._lock:
            hit = self._cache.get(node_id)
            if hit is not None and now - hit[0] < self.ttl_s:
                return hit[1]
        with Session(self.engine) as session:
            district = session.exec(
                select(Node.district).where(col(Node.node_id) == node_id)
            ).first()
        self.reads += 1
        with self._lock:
            self._cache[node_id] = (now, district)
            self._cache.move_to_end(node_id)
            while len(self._cache) > self.max_nodes:
                self._cache.popitem(last=False)
        return district

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)


class ClusterDownlink:
    """`runtime.notify.publisher` of a cluster worker (module docstring)."""

    def __init__(
        self,
        ingest: ClusterIngest,
        *,
        engine: Engine,
        db_ttl_s: float = 60.0,
        db_cache_max: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ingest = ingest
        self.recorded = _RecordedDistricts(
            engine, ttl_s=db_ttl_s, max_nodes=db_cache_max, clock=clock
        )
        self.published = 0
        self.unroutable: dict[str, int] = {}  # by reason
        self.queued_broker_down = 0
        self._lock = threading.Lock()
        ingest.downlink_health = self.health

    def district_for(self, node_id: str) -> str:
        """`node_id`'s district (see `route`); raises `NodeUnreachable`."""
        heard = self.ingest.node_districts.get(node_id)
        recorded = None if heard is not None else self.recorded.get(node_id)
        return route(node_id, heard=heard, recorded=recorded, linked=self.ingest.linked_districts())

    def reach(self, node_id: str) -> DistrictLink:
        """The link to `node_id`'s district broker, connected; raises `NodeUnreachable`.

        For REST routes before they record a command (an operator is told
        now, rather than the command waiting in a queue for a broker that is
        down) and the OTA wave job before it offers (the node stays pending).
        A refusal is counted with the others (``unroutable``); the caller says it.
        """
        try:
            district = self.district_for(node_id)
            link = self.ingest.link(district)
            if link is None:  # linked a moment ago: the worker is stopping
                raise NodeUnreachable(
                    UNLINKED, f"district {district!r} has no broker link now", status_code=503
                )
            if not link.client.is_connected():
                raise NodeUnreachable(
                    BROKER_DOWN,
                    f"node {node_id!r}'s district broker ({district!r}, {link.url}) is not "
                    "reachable from this worker now; try again when it is",
                    status_code=503,
                )
        except NodeUnreachable as exc:
            self._count(exc.reason)
            raise
        return link

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Send to the node's district broker; what cannot go is logged and counted, not raised."""
        del qos  # DistrictLink publishes QoS 1, as the one-box link does for commands
        try:
            node_id = parse_topic(topic).node_id
        except ProtoError as exc:
            self._refused(BAD_TOPIC, f"not a node topic {topic!r}: {exc}")
            return
        try:
            district = self.district_for(node_id)
        except NodeUnreachable as exc:
            self._refused(exc.reason, f"{topic} not sent: {exc.message}")
            return
        link = self.ingest.link(district)
        if link is None:
            self._refused(UNLINKED, f"{topic} not sent: district {district!r} has no link now")
            return
        link.publish(topic, payload)
        with self._lock:
            self.published += 1
            if not link.client.is_connected():
                self.queued_broker_down += 1

    def _refused(self, reason: str, message: str) -> None:
        self._count(reason)
        logger.warning("downlink: %s", message)

    def _count(self, reason: str) -> None:
        with self._lock:
            self.unroutable[reason] = self.unroutable.get(reason, 0) + 1

    def link_up(self) -> bool:
        """Whether every node of the fleet can be heard now: the silence job's `link_up`.

        All or nothing, because the silence job scans the whole fleet (it
        takes no district): true only while this worker's AMQP session and
        database are up and every district has a connected broker link whose
        uplink bridge reports up. One district's bridge down pauses silence
        for every district (its nodes would all look silent while nothing of
        theirs reaches a worker); the degraded-district badge says why. A
        district without a link (no `district_brokers`): its bridge state is
        unknown, so silence does not run.
        """
        ingest = self.ingest
        if not (ingest.connected and ingest.database_up):
            return False
        uplinks = {u.district: u for u in ingest.uplinks()}
        return bool(ingest.districts) and all(
            d in uplinks and not uplinks[d].degraded for d in ingest.districts
        )

    def health(self) -> dict[str, Any]:
        """For /healthz (`ClusterIngest.health` → ``downlink``)."""
        with self._lock:
            return {
                "published": self.published,
                "unroutable": dict(self.unroutable),
                "queued_broker_down": self.queued_broker_down,
                "nodes_heard": len(self.ingest.node_districts),
                "nodes_recorded": len(self.recorded),
                "database_reads": self.recorded.reads,
                "link_up": self.link_up(),
            }
