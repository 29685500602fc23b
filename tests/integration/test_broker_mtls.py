"""The fleet broker with real certificates: who may publish and read what, and revocation.

A real Mosquitto 2.0 with the generated fleet config (mTLS listener, the ACL
file from docs/provisioning.md, the CRL) and a real PKI made by
`fleet_server.pki` in a temporary directory. Every rule is checked with paho
and again with the independent `mosquitto_pub`/`mosquitto_sub` clients.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.broker import FleetBrokerFiles, ManagedBroker, fleet_broker_config, free_port
from fleet_server.db import make_engine
from fleet_server.models import Node, NodeCertificate, utcnow
from fleet_server.pki import IssuingCa, PkiPaths, init_dev_pki, key_fingerprint
from fleet_server.pki.ca import cert_pem, cert_serial_hex, private_key_pem
from fleet_server.pki.runtime import PkiRuntime
from fleet_server.schema import migrate
from tests.support.pki import (
    Identity,
    TlsClient,
    connects,
    mosquitto_pub,
    mosquitto_sub,
    new_key,
)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto-clients missing"),
]

NOT_AUTHORIZED = 135  # MQTT 5 reason code


@dataclass
class Fleet:
    """A PKI, a database of certificates, and a managed broker enforcing both."""

    tmp: Path
    ca: IssuingCa
    paths: PkiPaths
    engine: Engine
    broker: ManagedBroker
    port: int
    server: Identity

    def node(self, node_id: str) -> Identity:
        """A node certificate issued by the fleet CA (recorded, so it can be revoked)."""
        key = new_key()
        now = utcnow()
        cert = self.ca.issue_node(
            key=key.public_key(), node_id=node_id, serial=f"SN-{node_id}", now=now, days=1
        )
        with Session(self.engine) as session:
            session.add(
                NodeCertificate(
                    serial=cert_serial_hex(cert), node_id=node_id, hardware_serial=f"SN-{node_id}",
                    key_sha256=key_fingerprint(cert), not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc, issued_via="test",
                    pem=cert_pem(cert).decode(),
                )
            )  # fmt: skip
            session.commit()
        return Identity.write(
            self.tmp / "ids", node_id, ca=self.paths.chain, cert_pem=cert_pem(cert),
            key=private_key_pem(key),
        )  # fmt: skip

    def revoke(self, node_id: str) -> None:
        with Session(self.engine) as session:
            for row in session.exec(
                select(NodeCertificate).where(NodeCertificate.node_id == node_id)
            ):
                row.revoked_at = utcnow()
                session.add(row)
            session.commit()

    def client(self, identity: Identity) -> TlsClient:
        client = TlsClient(identity, host="127.0.0.1", port=self.port).start()
        assert client.wait_connected(), (
            f"{identity.name} could not connect\n{self.broker.log_text()}"
        )
        return client


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("mtls")
    paths = PkiPaths(tmp / "pki")
    init_dev_pki(paths, passphrase=b"test-root-passphrase", now=utcnow())
    ca = IssuingCa(paths)
    now = utcnow()
    broker_cert, broker_key = ca.ensure_service("broker", now=now, hostnames=["127.0.0.1"])
    server_cert, server_key = ca.ensure_service("fleet-server", now=now, server=False, client=True)
    engine = make_engine(f"sqlite:///{tmp / 'fleet.db'}")
    migrate(engine)
    pki = PkiRuntime(paths=paths, engine=engine)
    pki.write_crl()
    port = free_port()
    config = fleet_broker_config(
        tmp / "broker",
        files=FleetBrokerFiles(
            ca_chain=paths.chain, certfile=broker_cert, keyfile=broker_key, crlfile=paths.crl
        ),
        mqtts_port=port,
    )
    broker = ManagedBroker(config)
    broker.start()
    server = Identity(name="fleet-server", ca=paths.chain, cert=server_cert, key=server_key)
    try:
        yield Fleet(tmp=tmp, ca=ca, paths=paths, engine=engine, broker=broker, port=port,
                    server=server)  # fmt: skip
    finally:
        broker.stop()
        engine.dispose()


@pytest.fixture
def server(fleet: Fleet) -> Iterator[TlsClient]:
    """The fleet server's identity (CN fleet-server), subscribed to everything under nb/v1."""
    client = fleet.client(fleet.server)
    assert client.subscribe("nb/v1/#") == [1]
    try:
        yield client
    finally:
        client.stop()


def drain(client: TlsClient, *, until_topic: str, timeout: float = 5.0) -> list[str]:
    """Topics received up to and including `until_topic`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic, _ = client.messages.get(timeout=max(0.01, deadline - time.monotonic()))
        seen.append(topic)
        if topic == until_topic:
            return seen
    raise AssertionError(f"{until_topic} never arrived; got {seen}")


def test_the_generated_acl_is_exactly_the_documented_one(fleet: Fleet) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "provisioning.md").read_text()
    acl = (fleet.tmp / "broker" / "acl").read_text().splitlines()
    doc_lines = [line.strip() for line in doc.splitlines()]
    start = doc_lines.index(acl[0])
    assert doc_lines[start : start + len(acl)] == acl
    conf = fleet.broker.config.render()
    for line in ("require_certificate true", "use_identity_as_username true",
                 f"crlfile {fleet.paths.crl}", "allow_anonymous false"):  # fmt: skip
        assert line in conf


def test_a_node_publishes_only_under_its_own_id_paho(fleet: Fleet, server: TlsClient) -> None:
    node = fleet.client(fleet.node("lhr-acl-a1"))
    try:
        for channel in (
            "status",
            "birth",
            "telemetry",
            "event/panic",
            "reply/01J0000000000000000000000",
        ):
            assert node.publish(f"nb/v1/lhr-acl-a1/{channel}") == 0
        assert node.publish("nb/v1/lhr-acl-b1/event/panic") == NOT_AUTHORIZED
        assert node.publish("nb/v1/lhr-acl-b1/telemetry") == NOT_AUTHORIZED
        # A node may not forge commands or acks, even to itself.
        assert node.publish("nb/v1/lhr-acl-a1/cmd/ping") == NOT_AUTHORIZED
        assert node.publish("nb/v1/lhr-acl-a1/ack") == NOT_AUTHORIZED
        node.publish("nb/v1/lhr-acl-a1/telemetry", b'{"last":true}')
        seen = drain(server, until_topic="nb/v1/lhr-acl-a1/telemetry")
        assert not [t for t in seen if "lhr-acl-b1" in t or t.endswith(("/cmd/ping", "/ack"))]
    finally:
        node.stop()


def test_a_node_reads_only_its_own_commands_and_acks_paho(fleet: Fleet, server: TlsClient) -> None:
    node = fleet.client(fleet.node("lhr-acl-a2"))
    try:
        granted = node.subscribe("nb/v1/lhr-acl-a2/cmd/+", "nb/v1/lhr-acl-a2/ack")
        assert granted == [1, 1]
        # Mosquitto 2.0 grants these subscriptions and enforces `read` on each
        # delivered message instead: nothing of another node's may arrive.
        node.subscribe("nb/v1/lhr-acl-b2/cmd/+", "nb/v1/lhr-acl-b2/ack", "nb/v1/#")
        for topic in ("nb/v1/lhr-acl-b2/cmd/ping", "nb/v1/lhr-acl-b2/ack",
                      "nb/v1/lhr-acl-a2/cmd/ping", "nb/v1/lhr-acl-a2/ack"):  # fmt: skip
            assert server.publish(topic) == 0
        own = {"nb/v1/lhr-acl-a2/ack", "nb/v1/lhr-acl-a2/cmd/ping"}
        got: list[str] = []
        while not own <= set(got):
            got.append(node.messages.get(timeout=5)[0])
        time.sleep(0.3)  # anything else in flight lands now
        while not node.messages.empty():
            got.append(node.messages.get_nowait()[0])
        assert set(got) == own, got
    finally:
        node.stop()


def test_a_node_publishes_only_under_its_own_id_mosquitto_clients(
    fleet: Fleet, server: TlsClient
) -> None:
    node = fleet.node("lhr-cli-a3")
    for topic in ("nb/v1/lhr-cli-b3/event/panic", "nb/v1/lhr-cli-a3/event/panic"):
        done = mosquitto_pub(node, port=fleet.port, topic=topic)
        assert done.returncode == 0, done.stderr
    seen = drain(server, until_topic="nb/v1/lhr-cli-a3/event/panic")
    assert "nb/v1/lhr-cli-b3/event/panic" not in seen


def test_a_node_reads_only_its_own_commands_mosquitto_clients(
    fleet: Fleet, server: TlsClient
) -> None:
    node = fleet.node("lhr-cli-a4")
    sub = mosquitto_sub(
        node, port=fleet.port, topics=["nb/v1/lhr-cli-a4/cmd/+", "nb/v1/lhr-cli-b4/cmd/+"],
        count=3, wait_s=10,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while sub.poll() is None and time.monotonic() < deadline:
            # Another node's command first in every round: were it readable, it would show.
            server.publish("nb/v1/lhr-cli-b4/cmd/ping", b'{"for":"b"}')
            server.publish("nb/v1/lhr-cli-a4/cmd/ping", b'{"for":"a"}')
            time.sleep(0.2)
        out, err = sub.communicate(timeout=10)
    finally:
        if sub.poll() is None:
            sub.kill()
    lines = out.splitlines()
    assert len(lines) == 3, (out, err)
    assert all(line.startswith("nb/v1/lhr-cli-a4/cmd/ping ") for line in lines), lines


def test_a_certificate_from_another_ca_is_refused(fleet: Fleet) -> None:
    other = PkiPaths(fleet.tmp / "other-pki")
    init_dev_pki(other, passphrase=b"another-root", now=utcnow())
    stranger_ca = IssuingCa(other)
    key = new_key()
    cert = stranger_ca.issue_node(
        key=key.public_key(), node_id="lhr-stranger", serial="SN-X", now=utcnow(), days=1
    )
    # It trusts our broker (our chain) but presents a certificate our CA never issued.
    stranger = Identity.write(
        fleet.tmp / "ids", "lhr-stranger", ca=fleet.paths.chain, cert_pem=cert_pem(cert),
        key=private_key_pem(key),
    )  # fmt: skip
    assert not connects(stranger, host="127.0.0.1", port=fleet.port)
    done = mosquitto_pub(stranger, port=fleet.port, topic="nb/v1/lhr-stranger/status")
    assert done.returncode != 0


def test_a_revoked_node_is_refused_and_its_live_connection_dropped(fleet: Fleet) -> None:
    revoked = fleet.node("lhr-revoked-1")
    bystander = fleet.node("lhr-bystander-1")
    live = fleet.client(revoked)
    try:
        pki = PkiRuntime(paths=fleet.paths, engine=fleet.engine, broker=fleet.broker)
        fleet.revoke("lhr-revoked-1")

        assert pki.publish_revocation() == "restarted"

        assert live.disconnected.wait(5), "the revoked node's open connection was not dropped"
        # paho keeps retrying once a second; none of those may get in.
        assert not live.connected.wait(2)
    finally:
        live.stop()
    assert not connects(revoked, host="127.0.0.1", port=fleet.port)
    assert mosquitto_pub(revoked, port=fleet.port, topic="nb/v1/lhr-revoked-1/status").returncode
    assert connects(bystander, host="127.0.0.1", port=fleet.port)


def wait_for_reload(fleet: Fleet, reloads_before: int, *, timeout: float = 5.0) -> None:
    """Until the broker logs that it re-read its config (the SIGHUP was handled)."""
    deadline = time.monotonic() + timeout
    while fleet.broker.log_text().count("Reloading config.") <= reloads_before:
        assert time.monotonic() < deadline, f"no reload logged\n{fleet.broker.log_text()}"
        time.sleep(0.05)


def test_mosquitto_rereads_the_crl_on_sighup_and_keeps_every_live_connection(
    fleet: Fleet,
) -> None:
    """What Mosquitto 2.0.11 does on SIGHUP after a revocation, measured (docs/provisioning.md).

    It re-reads the CRL (a new connection with the revoked certificate is
    refused) and drops nobody: neither the revoked node's live connection
    nor a bystander's. The probe waits for the broker's own "Reloading
    config." line first: a probe that got in before the reload would take
    the client id over and close the live connection itself (the broker
    names clients by certificate CN), which is what made this test fail
    in November, not the SIGHUP.
    """
    node = fleet.node("lhr-revoked-2")
    bystander = fleet.node("lhr-bystander-2")
    live = fleet.client(node)
    other = fleet.client(bystander)
    try:
        fleet.revoke("lhr-revoked-2")
        PkiRuntime(paths=fleet.paths, engine=fleet.engine).write_crl()
        reloads = fleet.broker.log_text().count("Reloading config.")
        fleet.broker.reload()
        wait_for_reload(fleet, reloads)

        assert not connects(node, host="127.0.0.1", port=fleet.port), "CRL not re-read"
        # The refused probe never reached MQTT, so it cannot have taken anything over.
        assert "lhr-revoked-2 already connected" not in fleet.broker.log_text()
        assert live.connected.is_set()
        assert not live.disconnected.is_set()
        assert other.connected.is_set()
        assert not other.disconnected.is_set()
        # Accepted (16 = "no matching subscribers" is a success code in MQTT 5).
        assert live.publish("nb/v1/lhr-revoked-2/telemetry") < 128
        assert other.publish("nb/v1/lhr-bystander-2/telemetry") < 128
    finally:
        live.stop()
        other.stop()


def test_reload_mode_restarts_only_when_a_revoked_node_is_still_connected(fleet: Fleet) -> None:
    """`reload` never leaves a revoked node connected, and costs no wave when it is offline."""
    offline = fleet.node("lhr-revoked-3")
    online = fleet.node("lhr-revoked-4")
    live = fleet.client(online)
    asked: list[list[str]] = []

    def still_connected(node_ids: Iterable[str]) -> list[str]:
        ids = list(node_ids)
        asked.append(ids)
        return [i for i in ids if i == "lhr-revoked-4" and live.connected.is_set()]

    pki = PkiRuntime(
        paths=fleet.paths, engine=fleet.engine, broker=fleet.broker,
        revocation_action="reload", still_connected=still_connected,
    )  # fmt: skip
    try:
        fleet.revoke("lhr-revoked-3")
        assert pki.publish_revocation(["lhr-revoked-3"]) == "reloaded"
        assert not connects(offline, host="127.0.0.1", port=fleet.port)
        assert live.connected.is_set(), "a reload without a connected revoked node dropped others"

        fleet.revoke("lhr-revoked-4")
        assert pki.publish_revocation(["lhr-revoked-4"]) == "restarted"
        assert live.disconnected.wait(5), "the revoked node stayed connected"
        assert not live.connected.wait(2)
        assert asked == [["lhr-revoked-3"], ["lhr-revoked-4"]]
    finally:
        live.stop()


def test_presence_in_the_database_is_the_default_still_connected_check(fleet: Fleet) -> None:
    with Session(fleet.engine) as session:
        session.add(Node(node_id="lhr-presence-on", site_id="s", online=True))
        session.add(Node(node_id="lhr-presence-off", site_id="s", online=False))
        session.commit()
    pki = PkiRuntime(paths=fleet.paths, engine=fleet.engine)
    assert pki.still_connected(["lhr-presence-on", "lhr-presence-off", "lhr-nobody"]) == [
        "lhr-presence-on"
    ]
    assert pki.still_connected([]) == []


def test_revocations_inside_the_restart_window_share_one_later_restart(fleet: Fleet) -> None:
    """Rate limit: the CRL bites at once, the reconnect wave comes once per window (issue 11/5).

    The first revocation restarts the broker. The next two, inside the
    window, are refused on any new connection immediately (CRL + SIGHUP)
    but share one restart scheduled for the window's end; firing it drops
    the revoked nodes' live connections.
    """
    first, second, third = (fleet.node(f"lhr-window-{i}") for i in (1, 2, 3))
    scheduled: list[tuple[float, Callable[[], None]]] = []
    pki = PkiRuntime(
        paths=fleet.paths, engine=fleet.engine, broker=fleet.broker,
        restart_min_interval_s=60.0,
        call_later=lambda delay, action: scheduled.append((delay, action)),
    )  # fmt: skip
    fleet.revoke("lhr-window-1")
    pid = fleet.broker.pid
    assert pki.publish_revocation(["lhr-window-1"]) == "restarted"
    assert fleet.broker.pid != pid
    assert not connects(first, host="127.0.0.1", port=fleet.port)

    live = fleet.client(second)
    try:
        pid = fleet.broker.pid
        reloads = fleet.broker.log_text().count("Reloading config.")
        fleet.revoke("lhr-window-2")
        assert pki.publish_revocation(["lhr-window-2"]) == "restart-scheduled"
        fleet.revoke("lhr-window-3")
        assert pki.publish_revocation(["lhr-window-3"]) == "restart-scheduled"
        wait_for_reload(fleet, reloads)
        assert fleet.broker.pid == pid, "a revocation inside the window restarted the broker"
        # The two SIGHUPs may be handled as one or two reloads, and the first may
        # have read the CRL before the third revocation was in it: poll, bounded.
        # (A probe that gets in harms nothing: lhr-window-3 has no live session.)
        deadline = time.monotonic() + 5
        while connects(third, host="127.0.0.1", port=fleet.port, timeout=1):
            assert time.monotonic() < deadline, "CRL not enforced after the SIGHUP"
        assert len(scheduled) == 1, "the window's revocations were not coalesced"
        delay, restart = scheduled[0]
        assert 0 < delay <= 60.0

        restart()

        assert fleet.broker.pid != pid
        assert live.disconnected.wait(5), "the scheduled restart did not drop the revoked node"
        assert not live.connected.wait(2)
    finally:
        live.stop()
