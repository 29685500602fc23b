"""A node's refusal on its own scheduled check shows in the campaign, with its typed reason.

The story: an admin starts a campaign; the wave job signs the update for two nodes'
groups and offers it. Neither node acts on the offer command (say it arrived while
they were offline); each finds the update at its own scheduled check instead, and
refuses the repository's metadata: one was flashed with another repository's root (no
valid signature), the other's clock ran 400 days ahead (expired). A refusal before any
offer is read carries no campaign and no version; the server still files it under the
campaign each node was offered, and the admin reads "signature: …" and "expired: …" in
the campaign's per-node status through the API.

Everything is real but the MQTT hop: the agent (`build_node`) with its OTA component,
python-tuf's ngclient reading the server's own repository routes through the ASGI app,
and the node's `ota` events going through the server's ingest (decode, batch, store)
exactly as the broker consumer hands them over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from edge_agent.config import config_from_dict
from edge_agent.memory import MemoryTransport, memory_transport
from edge_agent.node import build_node
from edge_agent.ota import OtaComponent, OtaConfig
from fleet_server.alerting import load_policies
from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Node, Role, UserCreate, utcnow
from fleet_server.ota.job import OtaWaveJob
from fleet_server.ota.signing import repository_for
from fleet_server.settings import Settings
from fleet_server.timers import run_jobs_once
from hardware import ManualClock, SimBackend
from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import TransportError
from ota.keys import OnlineKeys, generate_signer
from ota.repository import Repository
from ota.transport import Download, Transport
from proto.codec import encode, topic_for
from proto.messages import OtaEvent
from tests.support.api import API, PASSWORDS, login, runtime_of
from tests.support.polling import until

OTA = f"{API}/ota"
REPO_URL = f"http://testserver{OTA}/repository"
NODES = ("ref-node-01", "ref-node-02")


def _new_repository(where: Path) -> OnlineKeys:
    online = OnlineKeys.generate()
    Repository.create(
        where, root_signers=[generate_signer() for _ in range(3)], root_threshold=2,
        targets_signer=generate_signer(), online=online,
    )  # fmt: skip
    return online


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("ota-refusal")
    ota_dir = data / "ota"
    _new_repository(ota_dir).save(ota_dir / "keys", passphrase=None)
    settings = Settings(
        data_dir=data, broker_url=None, admin_password=PASSWORDS["admin"], ota_dir=ota_dir,
        secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        with Session(runtime_of(client).engine) as session:
            for node_id in NODES:
                session.add(Node(node_id=node_id, hardware="sim", district="ref-d",
                                 lifecycle="active"))  # fmt: skip
            session.commit()
            create_user(session=session, user_in=UserCreate(
                username="op", role=Role.OPERATOR, password=PASSWORDS["op"]))  # fmt: skip
        yield client


class _ServerTransport(Transport):
    """The node's transport, through the server's ASGI app."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def open(self, url: str, *, offset: int = 0) -> Download:
        headers = dict(login(self.client, "op"))
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self.client.get(url, headers=headers)
        if response.status_code not in (200, 206):
            raise TransportError(f"{url}: HTTP {response.status_code}", status=response.status_code)
        return Download(status=response.status_code, chunks=iter([response.content]))


def _bundle(tmp_path: Path, version: str) -> bytes:
    source = tmp_path / f"agent-{version}"
    source.mkdir()
    (source / "agent.py").write_text(f"VERSION = {version!r}\n")
    blob, _ = build_artifact(source, kind=ArtifactKind.APP, name="agent", version=version,
                             hardware=["sim"])  # fmt: skip
    return blob


async def _node_reports(
    client: TestClient, tmp_path: Path, node_id: str, *, root: bytes, clock: ManualClock
) -> list[OtaEvent]:
    """Run the agent until its scheduled check has ended; its `ota` events."""
    data = tmp_path / node_id
    config = config_from_dict(
        {"node_id": node_id, "serial": f"SN-{node_id}", "data_dir": str(data),
         "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"}}
    )  # fmt: skip
    (data / "ota").mkdir(parents=True)
    (data / "ota" / "root.json").write_bytes(root)
    settings = OtaConfig.model_validate(
        {"enabled": True, "first_check_s": 0, "maintenance_window": None,
         "restart_for_app": False, "trust_server_clock": False,
         "repository_url": REPO_URL, "trusted_root": str(data / "ota" / "root.json")}
    )  # fmt: skip
    component = OtaComponent(settings, data_dir=data / "ota", group=node_id, hardware="sim",
                             transport=_ServerTransport(client))  # fmt: skip
    node = build_node(config, backend=SimBackend(clock=clock),
                      transport_factory=memory_transport(), components=[component],
                      renewal=False)  # fmt: skip
    task = asyncio.ensure_future(node.run())
    try:
        await clock.elapse(0)
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        transport.connect()
        await until(lambda: component.checks_done >= 1, "the scheduled check", timeout=60)
        await until(lambda: transport.messages(OtaEvent), "the ota event", timeout=30)
        return list(transport.messages(OtaEvent))
    finally:
        node.stop()
        await asyncio.wait_for(task, 10)


def _ingest(client: TestClient, events: list[OtaEvent]) -> None:
    """What the server's MQTT consumer does with the node's messages."""
    envelopes, _ = decode_all([(topic_for(e), encode(e)) for e in events])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()


def test_a_refusal_at_a_scheduled_check_shows_in_the_campaign_with_its_reason(
    server: TestClient, tmp_path: Path
) -> None:
    admin = login(server, "admin")
    uploaded = server.post(
        f"{OTA}/artifacts", headers=admin,
        data={"kind": "app", "name": "agent", "version": "1.1.0", "hardware": "sim"},
        files={"file": ("agent.tar", _bundle(tmp_path, "1.1.0"), "application/octet-stream")},
    )  # fmt: skip
    assert uploaded.status_code == 201, uploaded.text
    created = server.post(
        f"{OTA}/campaigns", headers=admin,
        json={"name": "agent 1.1.0", "artifact_id": uploaded.json()["id"],
              "target": {"node_ids": list(NODES)},
              "waves": [{"name": "all", "percent": 100}], "min_sample": 2},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    cid = created.json()["id"]

    class Offline:  # the offers go out; the nodes do not act on them
        def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
            pass

    settings = runtime_of(server).settings
    job = OtaWaveJob(publisher=Offline, repository=lambda: repository_for(settings))
    run_jobs_once(engine=runtime_of(server).engine, jobs=[job], now=utcnow())
    states = {
        n["node_id"]: n["state"]
        for n in server.get(f"{OTA}/campaigns/{cid}", headers=admin).json()["nodes"]
    }
    assert states == dict.fromkeys(NODES, "offered")

    real_root = server.get(f"{OTA}/repository/metadata/1.root.json", headers=admin).content
    _new_repository(tmp_path / "elsewhere")
    foreign_root = (tmp_path / "elsewhere" / "metadata" / "1.root.json").read_bytes()
    now = datetime.now(timezone.utc)

    async def both() -> tuple[list[OtaEvent], list[OtaEvent]]:
        wrong_root = await _node_reports(server, tmp_path, NODES[0], root=foreign_root,
                                         clock=ManualClock(start=0.0, wall=now))  # fmt: skip
        later = now + timedelta(days=400)
        ahead = await _node_reports(server, tmp_path, NODES[1], root=real_root,
                                    clock=ManualClock(start=0.0, wall=later))  # fmt: skip
        return wrong_root, ahead

    wrong_root, ahead = asyncio.run(asyncio.wait_for(both(), 120))
    for events, reasons in ((wrong_root, {"signature"}), (ahead, {"expired", "clock"})):
        refusal = [e for e in events if e.phase == "failed"]
        assert refusal, [(e.phase, e.reason) for e in events]
        # What made this a problem: the node knew neither the campaign nor the version.
        assert (refusal[0].campaign_id, refusal[0].version) == (None, "unknown")
        assert refusal[0].reason in reasons, refusal[0]
    _ingest(server, wrong_root + ahead)

    got = server.get(f"{OTA}/campaigns/{cid}", headers=admin).json()
    rows = {n["node_id"]: n for n in got["nodes"]}
    assert rows[NODES[0]]["state"] == "failed", rows
    assert rows[NODES[0]]["detail"].startswith("signature: "), rows[NODES[0]]
    assert rows[NODES[1]]["state"] == "failed", rows
    assert rows[NODES[1]]["detail"].split(":")[0] in {"expired", "clock"}, rows[NODES[1]]
    assert got["counts"].get("failed") == 2
