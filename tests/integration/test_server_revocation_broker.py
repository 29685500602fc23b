"""A revoke that revokes nothing leaves the broker alone; real revocations reach it.

Every broker restart disconnects the whole fleet, so `POST /nodes/{id}/revoke`
repeated on a node whose certificates are already revoked must not touch the
broker at all (issue 11, item 5). The server's own PKI runtime is used with a
stand-in broker that counts what it was made to do; what a restart does to
real connections is checked against Mosquitto in test_broker_mtls.py.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Node, NodeCertificate, utcnow
from tests.support.api import API, login, runtime_of


class CountingBroker:
    """Stands in for `ManagedBroker`: running, and counts reloads and restarts."""

    running = True

    def __init__(self) -> None:
        self.reloads = 0
        self.restarts = 0

    def reload(self) -> None:
        self.reloads += 1

    def restart(self) -> None:
        self.restarts += 1


def _enrolled(client: TestClient, node_id: str) -> str:
    now = utcnow()
    serial = f"{abs(hash(node_id)):x}"
    with Session(runtime_of(client).engine) as session:
        session.add(Node(node_id=node_id, site_id="site-rv"))
        session.add(
            NodeCertificate(
                serial=serial, node_id=node_id, hardware_serial=f"SN-{node_id}",
                key_sha256="0" * 64, not_before=now, not_after=now + timedelta(days=30),
                issued_via="test", pem="-----BEGIN CERTIFICATE-----\n",
            )
        )  # fmt: skip
        session.commit()
    return serial


def test_a_repeated_revoke_that_revokes_nothing_leaves_the_broker_alone(
    client: TestClient,
) -> None:
    pki = runtime_of(client).pki
    assert pki is not None, "the test server has no PKI"
    broker = CountingBroker()
    saved = pki.broker
    pki.broker = broker  # type: ignore[assignment]
    try:
        serial = _enrolled(client, "lhr-rv-01")
        admin = login(client, "admin")

        first = client.post(f"{API}/nodes/lhr-rv-01/revoke", headers=admin)
        assert first.status_code == 200, first.text
        assert first.json()["revoked"] == [serial]
        assert first.json()["broker"] == "restarted"
        assert broker.restarts == 1
        touched = (broker.reloads, broker.restarts)

        for _ in range(3):
            again = client.post(f"{API}/nodes/lhr-rv-01/revoke", headers=admin)
            assert again.status_code == 200, again.text
            assert again.json() == {"node_id": "lhr-rv-01", "revoked": [], "broker": "unchanged"}
        assert (broker.reloads, broker.restarts) == touched, "a no-op revoke touched the broker"
    finally:
        pki.broker = saved
