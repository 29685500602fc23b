"""A cluster worker reaches a node through its district broker for everything that is not an ack.

First the routing on its own (`fleet_server.cluster.downlink`): the
partition a node's messages arrive on wins over its node record, a record's
district is compared as the topology names districts (``South`` is
``south``), and a node with no known district or a district without a link
is a clear refusal (REST) or a logged, counted miss (timers) — never a
silent drop. Then the real thing: a loopback cluster (one RabbitMQ node,
districts north and south, two workers on a PostgreSQL schema), where an
operator's command reaches a node on south through either worker, a node
with no district is refused with the reason, a panic press on south pulls a
still from the camera on the pillar's site through south's broker, and an
operator's acknowledgement reaches the pillar as ``alert_state`` once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.cluster.downlink import ClusterDownlink, NodeDistricts, route
from fleet_server.cluster.supervisor import Supervisor
from fleet_server.cluster.topology import TopologyError, district_key
from fleet_server.cluster.uplink import DistrictUplink
from fleet_server.db import make_engine
from fleet_server.models import Node, NodeCommand, utcnow
from fleet_server.models.plate import NodeCamera
from fleet_server.node_commands import NodeUnreachable, check_reachable
from fleet_server.ota.job import OtaWaveJob
from fleet_server.timers import run_jobs_once
from proto.codec import encode
from proto.ids import new_event_id
from proto.messages import Birth, Firmware, PanicEvent, Reply, Status
from proto.topics import birth_topic, parse_topic, reply_topic, status_topic
from tests.support.api import login, runtime_of
from tests.support.cluster import admin_token, two_district_cluster
from tests.support.ingest import migrated_engine, wire
from tests.support.polling import wait_for

API = "/api/v1"

# -- routing, no sockets ------------------------------------------------------------------


def test_the_partition_a_node_is_heard_on_wins_over_its_node_record() -> None:
    assert route("n1", heard="south", recorded="north", linked={"north", "south"}) == "south"
    assert route("n1", heard=None, recorded="north", linked={"north", "south"}) == "north"


def test_a_recorded_district_is_compared_as_the_topology_names_districts() -> None:
    assert district_key(" South ") == "south"
    assert route("n1", heard=None, recorded="South", linked={"south"}) == "south"
    with pytest.raises(TopologyError, match="invalid district name"):
        district_key("north.zone")


@pytest.mark.parametrize("recorded", [None, "", "  ", "North Zone"])
def test_a_node_with_no_usable_district_is_refused_as_unknown_with_409(
    recorded: str | None,
) -> None:
    with pytest.raises(NodeUnreachable) as caught:
        route("n-lost", heard=None, recorded=recorded, linked={"north", "south"})
    assert caught.value.reason == "district_unknown"
    assert caught.value.status_code == 409
    assert "n-lost" in caught.value.message


def test_a_district_this_worker_has_no_link_for_is_refused_with_503_naming_the_setting() -> None:
    with pytest.raises(NodeUnreachable) as caught:
        route("n1", heard=None, recorded="east", linked={"north", "south"})
    assert caught.value.reason == "district_unlinked"
    assert caught.value.status_code == 503
    assert "'east'" in caught.value.message
    assert "NIGEHBAAN_CLUSTER_DISTRICT_BROKERS" in caught.value.message


def test_heard_districts_are_bounded_oldest_heard_forgotten_first() -> None:
    heard = NodeDistricts(max_nodes=2)
    heard.heard("a", "north")
    heard.heard("b", "north")
    heard.heard("a", "south")  # heard again: now the newest, and moved
    heard.heard("c", "south")
    assert (heard.get("a"), heard.get("b"), heard.get("c")) == ("south", None, "south")
    assert len(heard) == 2
    with pytest.raises(ValueError, match="at least one"):
        NodeDistricts(max_nodes=0)


def test_a_one_box_publisher_is_always_reachable() -> None:
    check_reachable(object(), "any-node")  # no `reach`: the broker queues for the node
    check_reachable(None, "any-node")


class _Client:
    def __init__(self) -> None:
        self.connected = True

    def is_connected(self) -> bool:
        return self.connected


class _Link:
    """Stands in for a `DistrictLink` (its MQTT side is tested in the cluster test below)."""

    def __init__(self, district: str) -> None:
        self.url = f"mqtt://{district}.example:1883"
        self.client = _Client()
        self.sent: list[str] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append(topic)


class _Ingest:
    """The parts of `ClusterIngest` the downlink reads."""

    def __init__(self, links: dict[str, _Link]) -> None:
        self.links = links
        self.node_districts = NodeDistricts()
        self.districts = ["north", "south"]
        self.connected = True
        self.database_up = True
        self.downlink_health: Any = None
        self.bridges = {"north": "up", "south": "up"}

    def link(self, district: str) -> _Link | None:
        return self.links.get(district)

    def linked_districts(self) -> list[str]:
        return sorted(self.links)

    def uplinks(self) -> list[DistrictUplink]:
        return [
            DistrictUplink(d, "connected" if link.client.connected else "unreachable",
                           self.bridges[d], None)  # type: ignore[arg-type]
            for d, link in sorted(self.links.items())
        ]  # fmt: skip


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Engine]:
    engine = migrated_engine(tmp_path / "db.sqlite")
    with Session(engine) as session:
        session.add(Node(node_id="rec-south", district="South"))
        session.add(Node(node_id="rec-none", district=None))
        session.add(Node(node_id="rec-east", district="east"))
        session.commit()
    try:
        yield engine
    finally:
        engine.dispose()


def test_publish_sends_by_district_and_counts_what_cannot_go(records: Engine) -> None:
    """Timers and the notifier call `publish`: it never raises; a miss is logged and counted."""
    links = {"north": _Link("north"), "south": _Link("south")}
    ingest = _Ingest(links)
    clock = [0.0]
    downlink = ClusterDownlink(ingest, engine=records, db_ttl_s=60.0, clock=lambda: clock[0])  # type: ignore[arg-type]
    ingest.node_districts.heard("heard-north", "north")
    downlink.publish("nb/v1/heard-north/cmd/ping", b"{}")
    downlink.publish("nb/v1/rec-south/cmd/ping", b"{}")  # from its record, "South"
    downlink.publish("nb/v1/rec-south/cmd/ping", b"{}")  # cached: one database read
    downlink.publish("nb/v1/rec-none/cmd/ping", b"{}")
    downlink.publish("nb/v1/rec-east/cmd/ping", b"{}")
    downlink.publish("nb/v1/no-row/cmd/ping", b"{}")
    downlink.publish("not/a/node/topic", b"{}")
    assert links["north"].sent == ["nb/v1/heard-north/cmd/ping"]
    assert links["south"].sent == ["nb/v1/rec-south/cmd/ping"] * 2
    health = ingest.downlink_health()
    assert health["published"] == 3
    assert health["unroutable"] == {
        "district_unknown": 2, "district_unlinked": 1, "bad_topic": 1,
    }  # fmt: skip
    assert downlink.recorded.reads == 4  # rec-south once, rec-none, rec-east, no-row
    # A node's record changes: seen after the cache's time, not before.
    with Session(records) as session:
        row = session.get(Node, "rec-none")
        assert row is not None
        row.district = "north"
        session.add(row)
        session.commit()
    downlink.publish("nb/v1/rec-none/cmd/ping", b"{}")
    assert links["north"].sent == ["nb/v1/heard-north/cmd/ping"]
    clock[0] = 61.0
    downlink.publish("nb/v1/rec-none/cmd/ping", b"{}")
    assert links["north"].sent[-1] == "nb/v1/rec-none/cmd/ping"
    # A broker down for the moment: `publish` queues (paho sends on reconnect), `reach` refuses.
    links["south"].client.connected = False
    downlink.publish("nb/v1/rec-south/cmd/ping", b"{}")
    assert downlink.health()["queued_broker_down"] == 1
    with pytest.raises(NodeUnreachable) as caught:
        downlink.reach("rec-south")
    assert (caught.value.reason, caught.value.status_code) == ("district_broker_down", 503)
    with pytest.raises(NodeUnreachable) as caught:
        check_reachable(downlink, "rec-east")
    assert (caught.value.reason, caught.value.status_code) == ("district_unlinked", 503)
    assert downlink.health()["unroutable"] == {  # `reach` refusals are counted as well
        "district_unknown": 3, "district_unlinked": 2, "bad_topic": 1, "district_broker_down": 1,
    }  # fmt: skip


def test_silence_counts_only_while_every_district_reaches_the_worker(records: Engine) -> None:
    links = {"north": _Link("north"), "south": _Link("south")}
    ingest = _Ingest(links)
    downlink = ClusterDownlink(ingest, engine=records)  # type: ignore[arg-type]
    assert downlink.link_up() is True
    ingest.bridges["south"] = "down"  # south's nodes cannot be heard: nobody is silent
    assert downlink.link_up() is False
    ingest.bridges["south"] = "up"
    links["north"].client.connected = False
    assert downlink.link_up() is False
    links["north"].client.connected = True
    ingest.database_up = False
    assert downlink.link_up() is False
    ingest.database_up = True
    del links["south"]  # a district without a link: its bridge state is unknown
    assert downlink.link_up() is False


class _CannotReach:
    """A publisher that has no way to the nodes in `lost` (a cluster downlink, say)."""

    def __init__(self, lost: set[str]) -> None:
        self.lost = lost
        self.sent: list[str] = []

    def reach(self, node_id: str) -> None:
        if node_id in self.lost:
            raise NodeUnreachable("district_unknown", f"{node_id}: no district", status_code=409)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.sent.append(parse_topic(topic).node_id)


def test_an_ota_offer_a_worker_cannot_send_leaves_the_node_pending_until_it_can(
    client: TestClient,
) -> None:
    admin = login(client, "admin")
    upload = client.post(
        f"{API}/ota/artifacts", headers=admin,
        data={"kind": "app", "name": "agent", "version": "1.0.0", "hardware": "sim"},
        files={"file": ("agent.tar", bytes(range(256)) * 8, "application/octet-stream")},
    )  # fmt: skip
    assert upload.status_code == 201, upload.text
    engine = runtime_of(client).engine
    with Session(engine) as session:
        for node_id in ("ota-near", "ota-lost"):
            session.add(Node(node_id=node_id, lifecycle="active", hardware="sim",
                             district="ota-d"))  # fmt: skip
        session.commit()
    created = client.post(
        f"{API}/ota/campaigns", headers=admin,
        json={"name": "downlink", "artifact_id": upload.json()["id"],
              "target": {"districts": ["ota-d"]}, "waves": [{"name": "all", "percent": 100}],
              "min_sample": 2},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    publisher = _CannotReach({"ota-lost"})
    job = OtaWaveJob(publisher=lambda: publisher, members_every_s=0)

    def states() -> dict[str, str]:
        got = client.get(f"{API}/ota/campaigns/{created.json()['id']}", headers=admin).json()
        return {n["node_id"]: n["state"] for n in got["nodes"]}

    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    assert publisher.sent == ["ota-near"]
    assert states() == {"ota-near": "offered", "ota-lost": "pending"}
    publisher.lost.clear()  # its district is known now
    run_jobs_once(engine=engine, jobs=[job], now=utcnow() + timedelta(seconds=1))
    assert "ota-lost" in publisher.sent
    assert states()["ota-lost"] == "offered"


# -- the real cluster ---------------------------------------------------------------------

SITE = "south-market"


class NodeOnBroker:
    """A node on its district broker: takes its commands, answers a ping, publishes events."""

    def __init__(self, port: int, node_id: str) -> None:
        self.node_id = node_id
        self.commands: list[tuple[str, dict[str, Any]]] = []  # (command name, payload)
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id,
                                  clean_session=False)  # fmt: skip
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe(f"nb/v1/{node_id}/cmd/#", qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_command
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), f"{node_id} could not subscribe to its commands"

    def _on_command(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        name = msg.topic.rsplit("/", 1)[-1]
        payload = json.loads(msg.payload)
        with self._lock:
            self.commands.append((name, payload))
        if name == "ping":
            reply = Reply(node_id=self.node_id, ts=utcnow(), request_id=payload["request_id"],
                          ok=True)  # fmt: skip
            self.client.publish(reply_topic(self.node_id, reply.request_id), encode(reply), qos=1)

    def received(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for n, p in self.commands if n == name]

    def born(self, *, district: str, site: str) -> None:
        now = utcnow()
        status = Status(node_id=self.node_id, ts=now, state="online", bd_seq=1)
        birth = Birth(
            node_id=self.node_id, ts=now, bd_seq=1, serial=f"NB-{self.node_id}",
            hardware="test", firmware=Firmware(version="0.1.0"),
            capabilities=["panic_button", "camera"], config_hash="0" * 64,
            site_id=site, district=district,
        )  # fmt: skip
        self.client.publish(status_topic(self.node_id), encode(status), qos=1, retain=True)
        self.client.publish(birth_topic(self.node_id), encode(birth), qos=1)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    with two_district_cluster(
        tmp_path_factory, "downlink", admin_password="downlink-admin-pw"
    ) as c:
        yield c


def _health(base: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/healthz", timeout=5).json()
    return body


def test_commands_snapshot_pulls_and_alert_changes_reach_a_south_node_through_either_worker(
    cluster: Supervisor,
) -> None:
    engine = make_engine(cluster.database_url)
    south = cluster.brokers["south"].port
    workers = [w.url for w in cluster.workers]
    tokens = {url: admin_token(url, cluster.admin_password) for url in workers}
    pillar = NodeOnBroker(south, "dl-s-pillar")
    camera = NodeOnBroker(south, "dl-s-cam")
    quiet = NodeOnBroker(south, "dl-s-quiet")  # never says a word: known from its record only
    try:
        pillar.born(district="south", site=SITE)
        camera.born(district="south", site=SITE)

        def both_known() -> bool:
            with Session(engine) as session:
                rows = [session.get(Node, n) for n in ("dl-s-pillar", "dl-s-cam")]
                return all(r is not None and r.district == "south" for r in rows)

        wait_for(both_known, "the two south nodes' births stored", timeout=30, interval=0.2)
        with Session(engine) as session:
            session.add(NodeCamera(node_id="dl-s-cam", camera_id="road"))  # it has a camera
            session.add(Node(node_id="dl-s-quiet", district="South"))  # case as an admin typed
            session.add(Node(node_id="dl-nowhere"))  # no district, never heard
            session.add(Node(node_id="dl-east", district="east"))  # no such district broker
            # A camera on the pillar's site with no known district: its snapshot request
            # cannot go, and that is counted, not dropped in silence.
            session.add(Node(node_id="dl-ghost-cam", site_id=SITE))
            session.add(NodeCamera(node_id="dl-ghost-cam", camera_id="road"))
            session.commit()

        def command(url: str, node_id: str) -> httpx.Response:
            auth = {"Authorization": f"Bearer {tokens[url]}"}
            return httpx.post(f"{url}{API}/nodes/{node_id}/commands", json={"name": "ping"},
                              headers=auth, timeout=10)  # fmt: skip

        # An operator's command reaches south's nodes whichever worker the API call lands on
        # (one leads south and has heard them; the other reads their district on record).
        sent: dict[str, set[str]] = {"dl-s-cam": set(), "dl-s-quiet": set()}
        for url in workers:
            for node_id, node in (("dl-s-cam", camera), ("dl-s-quiet", quiet)):
                response = command(url, node_id)
                assert response.status_code == 202, (url, node_id, response.text)
                request_id = response.json()["request_id"]
                sent[node_id].add(request_id)
                wait_for(lambda n=node, r=request_id: r in {p["request_id"]  # type: ignore[misc]
                                                           for p in n.received("ping")},
                         f"{node_id}'s ping sent through {url}", timeout=15)  # fmt: skip
        # The camera answered each ping; its replies are kept whichever worker stored them.
        for url in workers:
            for request_id in sent["dl-s-cam"]:
                wait_for(
                    lambda u=url, r=request_id: httpx.get(  # type: ignore[misc]
                        f"{u}{API}/nodes/dl-s-cam/replies/{r}",
                        headers={"Authorization": f"Bearer {tokens[u]}"}, timeout=10,
                    ).status_code == 200,
                    f"the camera's reply to {request_id} read through {url}", timeout=15,
                )  # fmt: skip

        # No district, or a district without a broker: refused with the reason, nothing sent.
        for url in workers:
            response = command(url, "dl-nowhere")
            assert response.status_code == 409, response.text
            assert response.json()["detail"]["reason"] == "district_unknown"
            assert "'dl-nowhere' has no known district" in response.json()["detail"]["message"]
            response = command(url, "dl-east")
            assert response.status_code == 503, response.text
            assert response.json()["detail"]["reason"] == "district_unlinked"
            assert "district 'east'" in response.json()["detail"]["message"]
        with Session(engine) as session:  # and nothing was recorded for them
            assert (
                session.exec(
                    select(NodeCommand).where(
                        col(NodeCommand.node_id).in_(["dl-nowhere", "dl-east"])
                    )
                ).all()
                == []
            )

        # A panic on south pulls a still from the camera on the pillar's site, through south.
        pillar.client.publish(*wire(PanicEvent(node_id="dl-s-pillar", ts=utcnow(),
                                               event_id=new_event_id(), seq=1)), qos=1)  # fmt: skip
        snapshot = wait_for(lambda: camera.received("snapshot"), "the camera's snapshot request",
                            timeout=30)  # fmt: skip
        alert_id = snapshot[0]["alert_id"]
        assert snapshot[0]["reason"] == "panic"

        def counted_ghost() -> bool:
            return any(
                (_health(u)["cluster"]["downlink"] or {}).get("unroutable", {})
                .get("district_unknown", 0) >= 1
                for u in workers
            )  # fmt: skip

        wait_for(counted_ghost, "the ghost camera's request counted as unroutable", timeout=15)

        # An operator acknowledges on each worker in turn: the pillar's light follows, once
        # per change (the ingest's own alert_state goes out once too: no double send).
        for url, state in ((workers[0], "acknowledged"), (workers[1], "dispatched")):
            response = httpx.post(
                f"{url}{API}/alerts/{alert_id}/transitions", json={"to": state},
                headers={"Authorization": f"Bearer {tokens[url]}"}, timeout=10,
            )  # fmt: skip
            assert response.status_code == 201, response.text
            wait_for(lambda s=state: s in {p["state"] for p in  # type: ignore[misc]
                                           pillar.received("alert_state")},
                     f"alert_state {state} at the pillar via {url}", timeout=15)  # fmt: skip
        states = [p["state"] for p in pillar.received("alert_state")]
        request_ids = [p["request_id"] for p in pillar.received("alert_state")]
        assert len(request_ids) == len(set(request_ids)), states
        assert states.index("acknowledged") < states.index("dispatched"), states

        # Silence-based offline detection runs: every district reaches both workers.
        downlinks = [_health(url)["cluster"]["downlink"] for url in workers]
        for url, downlink in zip(workers, downlinks, strict=True):
            assert downlink["link_up"] is True, (url, downlink)
            assert downlink["published"] >= 2, (url, downlink)
        # Both ways to a district were used: heard (south's leader) and on record (the quiet
        # node, on both workers).
        assert max(d["nodes_heard"] for d in downlinks) >= 2, downlinks
        assert min(d["database_reads"] for d in downlinks) >= 1, downlinks
    finally:
        for node in (pillar, camera, quiet):
            node.stop()
        engine.dispose()
