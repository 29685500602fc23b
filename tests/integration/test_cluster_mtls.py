"""The loopback cluster's district brokers speak mutual TLS with the cluster's one fleet PKI.

A `Supervisor` (one RabbitMQ node, districts north and south, two workers on
a PostgreSQL schema) made one development PKI in its directory and pointed
every worker at it; each district broker is the one-box fleet broker (mTLS
node listener, ACL, CRL) plus the bridge. Stories:

- a node enrolled through worker 0 connects with its certificate to its
  district broker over mTLS, may not publish under another node's topics,
  and its panic press is stored and acknowledged to it;
- a client with no certificate, or with a certificate from another CA, is
  refused by every district broker;
- a node revoked through worker 1 is cut off and refused by the district
  brokers afterwards (the supervisor sees the CRL the worker rewrote and
  restarts the brokers on it); a CRL re-signed with nothing new only reloads;
  workers sharing the PKI write the CRL one at a time (a file lock).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, col, select

from fleet_server.cluster.supervisor import CrlWatch, Supervisor
from fleet_server.db import make_engine
from fleet_server.models import Event
from fleet_server.pki import IssuingCa, PkiPaths, init_dev_pki
from fleet_server.pki.runtime import PkiRuntime, crl_file_lock
from proto.codec import encode
from proto.ids import new_event_id
from proto.messages import Birth, Firmware, PanicEvent, Status
from proto.topics import ack_topic, birth_topic, downlink_filters, status_topic
from tests.support.cluster import admin_token, two_district_cluster
from tests.support.ingest import migrated_engine, wire
from tests.support.pki import FleetCA, Identity, TlsClient, connects, csr_pem, key_pem, new_key
from tests.support.polling import wait_for

API = "/api/v1"
ADMIN_PW = "mtls-admin-pw"

# -- the CRL watch on its own (no sockets) -------------------------------------------------


def test_a_crl_that_gains_a_serial_restarts_the_brokers_once_per_window_a_re_sign_only_reloads(
    tmp_path: Path,
) -> None:
    paths = PkiPaths(tmp_path / "pki")
    init_dev_pki(paths, passphrase=b"crl-watch-test", now=datetime.now(timezone.utc))
    ca = IssuingCa(paths)
    now = datetime.now(timezone.utc)
    ca.write_crl(revoked=[], now=now)
    clock = [100.0]
    watch = CrlWatch(paths.crl, restart_min_interval_s=30.0, clock=lambda: clock[0])
    assert watch.poll() == (False, False)  # nothing changed

    ca.write_crl(revoked=[], now=now + timedelta(minutes=1))  # the periodic re-sign
    assert watch.poll() == (True, False)

    ca.write_crl(revoked=[(1001, now)], now=now)  # a revocation
    assert watch.poll() == (True, True)

    clock[0] += 5  # another, inside the window: reloaded now, restarted when it ends
    ca.write_crl(revoked=[(1001, now), (1002, now)], now=now)
    assert watch.poll() == (True, False)
    ca.write_crl(revoked=[(1001, now), (1002, now), (1003, now)], now=now)
    assert watch.poll() == (True, False)  # folded into the same pending restart
    clock[0] += 24
    assert watch.poll() == (False, False)
    clock[0] += 1
    assert watch.poll() == (False, True)
    assert watch.poll() == (False, False)

    paths.crl.write_text("not a CRL")  # unreadable: reload and restart rather than trust it
    clock[0] += 60
    assert watch.poll() == (True, True)


def test_workers_sharing_a_pki_write_the_crl_one_at_a_time(tmp_path: Path) -> None:
    """Another worker holding the CRL lock (from its database read to its install) makes this
    worker's CRL write wait, so an older revocation list never lands after a newer one."""
    paths = PkiPaths(tmp_path / "pki")
    init_dev_pki(paths, passphrase=b"crl-lock-test", now=datetime.now(timezone.utc))
    engine = migrated_engine(tmp_path / "fleet.db")
    runtime = PkiRuntime(paths=paths, engine=engine)
    try:
        runtime.write_crl()
        first = paths.crl.read_bytes()
        with crl_file_lock(paths):  # as another worker process would hold it
            writer = threading.Thread(target=runtime.write_crl, daemon=True)
            writer.start()
            writer.join(0.5)
            assert writer.is_alive(), "the CRL was written while another worker held the lock"
            assert paths.crl.read_bytes() == first
        writer.join(10)
        assert not writer.is_alive()
        assert paths.crl.read_bytes() != first  # written once the lock was free
        assert paths.crl_number.read_text().strip() == "2"
    finally:
        engine.dispose()


# -- the real cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    stop = threading.Event()

    def watch() -> None:
        """What `cluster run` does every second: here every 0.5 s, for the revocation story."""
        while not stop.wait(0.5):
            supervisor.watch()

    with two_district_cluster(tmp_path_factory, "mtls", admin_password=ADMIN_PW) as supervisor:
        watcher = threading.Thread(target=watch, name="supervisor-watch", daemon=True)
        watcher.start()
        try:
            yield supervisor
        finally:
            stop.set()
            watcher.join(timeout=30)


def _admin(base: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(base, ADMIN_PW)}"}


def _enroll(base: str, node_id: str, directory: Path) -> tuple[Identity, str]:
    """A node enrolled through the worker at `base`: its identity and the CA chain it got."""
    admin = _admin(base)
    made = httpx.post(f"{base}{API}/enrollment-tokens", json={}, headers=admin, timeout=20)
    assert made.status_code in (200, 201), made.text
    key = new_key()
    serial = f"SN-{node_id}"
    enrolled = httpx.post(f"{base}{API}/enroll", json={
        "serial": serial, "node_id": node_id, "token": made.json()["token"],
        "csr_pem": csr_pem(key, cn=node_id, serial=serial),
    }, timeout=20)  # fmt: skip
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    ca = directory / f"{node_id}-ca.pem"
    ca.write_text(body["ca_chain_pem"])
    identity = Identity.write(directory, node_id, ca=ca, cert_pem=body["certificate_pem"],
                              key=key_pem(key))  # fmt: skip
    return identity, str(body["ca_chain_pem"])


def _born(node: TlsClient, node_id: str, district: str) -> None:
    now = datetime.now(timezone.utc)
    assert node.publish(status_topic(node_id), encode(
        Status(node_id=node_id, ts=now, state="online", bd_seq=1))) == 0  # fmt: skip
    assert node.publish(birth_topic(node_id), encode(Birth(
        node_id=node_id, ts=now, bd_seq=1, serial=f"SN-{node_id}", hardware="test",
        firmware=Firmware(version="0.1.0"), capabilities=["panic_button"],
        config_hash="0" * 64, site_id=f"{district}-site", district=district,
    ))) == 0  # fmt: skip


def _plain_tls_connects(port: int, *, ca: Path, timeout: float = 3.0) -> bool:
    """Whether a client that trusts the broker but shows no certificate gets a CONNACK."""
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="no-cert", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca))
    client.on_connect = lambda _c, _u, _f, reason, _p: (
        None if reason.is_failure else connected.set()
    )
    client.connect_async("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        return connected.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_node_enrolled_through_one_worker_presses_panic_over_mtls_stored_and_acked(
    cluster: Supervisor, tmp_path: Path
) -> None:
    described = {d["name"]: d for d in cluster.describe()["districts"]}
    north = described["north"]
    assert north["mtls_url"] == f"mqtts://127.0.0.1:{north['mtls_port']}"
    assert north["ca"] == str(cluster.pki.chain)

    node_id = "mt-n-pillar"
    identity, chain = _enroll(cluster.workers[0].url, node_id, tmp_path)
    assert chain == cluster.pki.chain.read_text()  # one CA for the whole cluster
    node = TlsClient(identity, host="127.0.0.1", port=north["mtls_port"]).start()
    try:
        assert node.wait_connected(), cluster.brokers["north"].log_text()
        assert node.subscribe(*downlink_filters(node_id)) == [1] * len(downlink_filters(node_id))
        _born(node, node_id, "north")
        # The ACL: another node's topics are not this node's to publish.
        spoof = PanicEvent(node_id="mt-n-other", ts=datetime.now(timezone.utc),
                           event_id=new_event_id(), seq=1)  # fmt: skip
        assert node.publish(*wire(spoof)) == 135

        press = PanicEvent(node_id=node_id, ts=datetime.now(timezone.utc),
                           event_id=new_event_id(), seq=1)  # fmt: skip
        assert node.publish(*wire(press)) == 0

        def acked() -> bool:
            while not node.messages.empty():
                topic, payload = node.messages.get_nowait()
                if topic == ack_topic(node_id) and press.event_id in json.loads(payload).get(
                    "event_ids", []
                ):
                    return True
            return False

        wait_for(acked, "the panic press acked to the node over mTLS", timeout=30, interval=0.1)
        engine = make_engine(cluster.database_url)
        try:
            with Session(engine) as session:
                stored = session.exec(select(Event).where(col(Event.node_id) == node_id)).all()
                assert [e.event_id for e in stored] == [press.event_id]
                spoofed = select(Event).where(col(Event.node_id) == "mt-n-other")
                assert not session.exec(spoofed).all()
        finally:
            engine.dispose()
    finally:
        node.stop()


def test_clients_without_a_certificate_or_with_another_cas_are_refused(
    cluster: Supervisor, tmp_path: Path
) -> None:
    other = FleetCA()
    key = new_key()
    rogue = Identity.write(
        tmp_path, "mt-rogue", ca=cluster.pki.chain,
        cert_pem=other.sign_csr(csr_pem(key, cn="mt-rogue")), key=key_pem(key),
    )  # fmt: skip
    for district, port in cluster.district_mtls_ports.items():
        assert not _plain_tls_connects(port, ca=cluster.pki.chain), district
        assert not connects(rogue, host="127.0.0.1", port=port, timeout=3.0), district


def test_a_node_revoked_through_another_worker_is_refused_by_the_district_brokers(
    cluster: Supervisor, tmp_path: Path
) -> None:
    node_id = "mt-s-pillar"
    identity, _ = _enroll(cluster.workers[0].url, node_id, tmp_path)
    south = cluster.district_mtls_ports["south"]
    node = TlsClient(identity, host="127.0.0.1", port=south).start()
    restarts = cluster.crl_restarts
    try:
        assert node.wait_connected(), cluster.brokers["south"].log_text()
        node.client.reconnect_delay_set(min_delay=1, max_delay=1)
        worker1 = cluster.workers[1].url
        revoked = httpx.post(f"{worker1}{API}/nodes/{node_id}/revoke",
                             json={"reason": "stolen pillar"}, headers=_admin(worker1),
                             timeout=20)  # fmt: skip
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["broker"] == "external"  # the supervisor owns the brokers
        # Its live connection is dropped (the brokers restart on a CRL with a new serial)...
        assert node.disconnected.wait(15), "the revoked node stayed connected"
        wait_for(lambda: cluster.crl_restarts > restarts, "the district brokers restarted",
                 timeout=15)  # fmt: skip
        node.connected.clear()
        assert not node.connected.wait(3), "the revoked node got back in"
    finally:
        node.stop()
    # ...and every district broker refuses it from now on.
    for district, port in cluster.district_mtls_ports.items():
        assert not connects(identity, host="127.0.0.1", port=port, timeout=3.0), district
