"""The server with a signed TUF repository: uploads are signed, offers are assigned per node.

The story: after the key ceremony (root 2 of 3, offline targets key, online
keys on the server), an admin uploads an agent bundle; the server lists it in
the `app` role and publishes. A campaign's wave job signs the artifact as
what the canary node's own group runs and sends that node an `ota_check`.
The node's trust core (`ota.trust.UpdateClient`, python-tuf's ngclient)
then reads the metadata and the target over the server's own HTTP routes,
resuming with Range, and gets exactly the uploaded bytes. Another node's
group was assigned nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.models import Node, Role, UserCreate, utcnow
from fleet_server.ota.job import OtaWaveJob
from fleet_server.ota.signing import node_group, repository_for
from fleet_server.settings import Settings
from fleet_server.timers import run_jobs_once
from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import OtaError
from ota.keys import OnlineKeys, generate_signer
from ota.repository import Repository
from ota.transport import Download, Transport
from ota.trust import UpdateClient
from proto.codec import decode
from proto.messages import OtaCheckCommand
from tests.support.api import API, PASSWORDS, login, runtime_of

OTA = f"{API}/ota"
REPO_URL = f"http://testserver{OTA}/repository"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("ota-signed")
    ota_dir = data / "ota"
    online = OnlineKeys.generate()
    Repository.create(
        ota_dir,
        root_signers=[generate_signer() for _ in range(3)],
        root_threshold=2,
        targets_signer=generate_signer(),
        online=online,
    )
    online.save(ota_dir / "keys", passphrase=None)
    settings = Settings(
        data_dir=data, broker_url=None, admin_password=PASSWORDS["admin"], ota_dir=ota_dir,
        secret_key="test-secret-key-that-is-long-enough",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        with Session(runtime_of(client).engine) as session:
            for node_id in ("sig-node-01", "sig-node-02"):
                session.add(Node(node_id=node_id, hardware="sim", district="sig-d",
                                 lifecycle="active"))  # fmt: skip
            session.commit()
            create_user(session=session, user_in=UserCreate(
                username="op", role=Role.OPERATOR, password=PASSWORDS["op"]))  # fmt: skip
        yield client


def bundle(tmp_path: Path, version: str) -> bytes:
    source = tmp_path / f"agent-{version}"
    source.mkdir()
    (source / "agent.py").write_text(f"VERSION = {version!r}\n")
    # The bulk of an agent build, the same in every version (what a delta saves).
    (source / "lib.py").write_text(
        "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(4000))
    )
    blob, _ = build_artifact(source, kind=ArtifactKind.APP, name="agent", version=version,
                             hardware=["sim"])  # fmt: skip
    return blob


def upload(client: TestClient, blob: bytes, *, version: str) -> dict[str, object]:
    response = client.post(
        f"{OTA}/artifacts",
        headers=login(client, "admin"),
        data={"kind": "app", "name": "agent", "version": version, "hardware": "sim"},
        files={"file": ("agent.tar", blob, "application/octet-stream")},
    )
    return {"status": response.status_code, **response.json()}


class ServerTransport(Transport):
    """The node's transport, through the server's ASGI app, as the node's own user would."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.ranges: list[int] = []
        self.cut_target_at: int | None = None  # the next target download breaks after this

    def open(self, url: str, *, offset: int = 0) -> Download:
        headers = dict(login(self.client, "op"))
        if offset:
            headers["Range"] = f"bytes={offset}-"
            self.ranges.append(offset)
        response = self.client.get(url, headers=headers)
        from ota.errors import TransportError

        if response.status_code not in (200, 206):
            raise TransportError(f"{url}: HTTP {response.status_code}", status=response.status_code)
        cut, self.cut_target_at = self.cut_target_at, None
        if cut is not None and "/targets/" in url:
            return Download(status=response.status_code, chunks=self._cut(response.content, cut))
        return Download(status=response.status_code, chunks=iter([response.content]))

    @staticmethod
    def _cut(data: bytes, at: int) -> Iterator[bytes]:
        from ota.errors import TransportError

        yield data[:at]
        raise TransportError("connection cut (LTE)")


def test_a_file_that_is_not_a_bundle_or_lies_about_itself_is_refused(
    signed: TestClient, tmp_path: Path
) -> None:
    junk = upload(signed, b"not a tar", version="0.9.0")
    assert junk["status"] == 422
    assert junk["detail"]["reason"] == "not_a_bundle"  # type: ignore[index]
    liar = upload(signed, bundle(tmp_path, "0.9.1"), version="0.9.2")
    assert liar["status"] == 422
    assert liar["detail"]["reason"] == "manifest_mismatch"  # type: ignore[index]


def test_an_offered_node_finds_and_downloads_exactly_the_uploaded_bytes_through_the_server(
    signed: TestClient, tmp_path: Path
) -> None:
    blob = bundle(tmp_path, "1.0.0")
    uploaded = upload(signed, blob, version="1.0.0")
    assert uploaded["status"] == 201, uploaded
    settings = runtime_of(signed).settings
    created = signed.post(
        f"{OTA}/campaigns",
        headers=login(signed, "admin"),
        json={"name": "agent 1.0.0", "artifact_id": uploaded["id"],
              "target": {"districts": ["sig-d"]},
              "waves": [{"name": "canary", "count": 1}, {"name": "all", "percent": 100}]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    sent: list[tuple[str, bytes]] = []

    class Recorder:
        def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
            sent.append((topic, payload))

    job = OtaWaveJob(publisher=Recorder, repository=lambda: repository_for(settings))
    run_jobs_once(engine=runtime_of(signed).engine, jobs=[job], now=utcnow())
    assert len(sent) == 1
    command = decode(*sent[0])
    assert isinstance(command, OtaCheckCommand)
    assert command.node_id == "sig-node-01"
    assert command.group == node_group("sig-node-01")
    assert command.campaign_id == created.json()["id"]
    assert (command.artifact_kind, command.version) == ("app", "1.0.0")

    transport = ServerTransport(signed)
    root = signed.get(f"{OTA}/repository/metadata/1.root.json", headers=login(signed, "op"))
    node = UpdateClient(
        cache_dir=tmp_path / "node", metadata_url=f"{REPO_URL}/metadata/",
        targets_url=f"{REPO_URL}/targets/", transport=transport, group="sig-node-01",
        hardware="sim", trusted_root=root.content,
    )  # fmt: skip
    offer = node.check(ArtifactKind.APP)
    assert offer is not None
    assert (offer.version, offer.sha256) == ("1.0.0", hashlib.sha256(blob).hexdigest())
    transport.cut_target_at = len(blob) // 2
    with pytest.raises(OtaError):
        node.download(offer)
    got = node.download(offer)  # resumes where the cut left it
    assert transport.ranges == [len(blob) // 2]
    assert got.path.read_bytes() == blob

    other = UpdateClient(
        cache_dir=tmp_path / "other", metadata_url=f"{REPO_URL}/metadata/",
        targets_url=f"{REPO_URL}/targets/", transport=transport, group="sig-node-02",
        hardware="sim", trusted_root=root.content,
    )  # fmt: skip
    assert other.check(ArtifactKind.APP) is None  # not in the canary: nothing signed for it


def test_a_newer_version_gets_a_server_made_delta_that_a_node_applies(
    signed: TestClient, tmp_path: Path
) -> None:
    old, new = bundle(tmp_path, "2.0.0"), bundle(tmp_path, "2.0.1")
    assert upload(signed, old, version="2.0.0")["status"] == 201
    uploaded = upload(signed, new, version="2.0.1")
    assert uploaded["status"] == 201
    repository = repository_for(runtime_of(signed).settings)
    assert repository is not None
    deltas = [t for t in repository.repo.artifacts(ArtifactKind.APP)
              if t.unrecognized_fields.get("custom", {}).get("delta_to") == "2.0.1"]  # fmt: skip
    # One from each of the newest earlier versions (2.0.0, and 1.4.0 from an earlier story).
    bases = {t.unrecognized_fields["custom"]["delta_from"]: t for t in deltas}
    assert "2.0.0" in bases
    assert bases["2.0.0"].length < len(new) / 10  # a small change moves a small delta
    repository.assign(groups=["sig-node-02"], kind="app", target_path="app/agent-2.0.1.tar",
                      campaign_id="test", downgrade=False)  # fmt: skip
    installed = tmp_path / "installed.tar"
    installed.write_bytes(old)
    root = signed.get(f"{OTA}/repository/metadata/1.root.json", headers=login(signed, "op"))
    node = UpdateClient(
        cache_dir=tmp_path / "node2", metadata_url=f"{REPO_URL}/metadata/",
        targets_url=f"{REPO_URL}/targets/", transport=ServerTransport(signed),
        group="sig-node-02", hardware="sim", trusted_root=root.content,
    )  # fmt: skip
    offer = node.check(ArtifactKind.APP)
    assert offer is not None
    got = node.download(offer, installed=installed, installed_version="2.0.0")
    assert got.via_delta
    assert got.path.read_bytes() == new
    assert got.bytes_transferred < len(new) / 10


def _report(client: TestClient, node_id: str, phase: str, cid: str, *, seq: int) -> None:
    """An `ota` event through the normal ingest path (decode, batch, store)."""
    from fleet_server.alerting import load_policies
    from fleet_server.ingest import decode_all, store_batch
    from proto.codec import encode, topic_for
    from proto.ids import new_event_id
    from proto.messages import OtaEvent

    event = OtaEvent(
        node_id=node_id, ts=utcnow(), event_id=new_event_id(), seq=seq, artifact="agent",
        version="3.0.0", phase=phase, campaign_id=cid,
    )  # fmt: skip
    envelopes, _ = decode_all([(topic_for(event), encode(event))])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()


def test_an_aborted_campaign_is_withdrawn_from_every_node_not_yet_healthy(
    signed: TestClient, tmp_path: Path
) -> None:
    uploaded = upload(signed, bundle(tmp_path, "3.0.0"), version="3.0.0")
    assert uploaded["status"] == 201, uploaded
    settings = runtime_of(signed).settings
    created = signed.post(
        f"{OTA}/campaigns",
        headers=login(signed, "admin"),
        json={"name": "agent 3.0.0", "artifact_id": uploaded["id"],
              "target": {"node_ids": ["sig-node-01", "sig-node-02"]},
              "waves": [{"name": "canary", "count": 2}, {"name": "all", "percent": 100}],
              "min_sample": 2, "failure_threshold": 0.0},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    cid = created.json()["id"]

    class Recorder:
        def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
            pass

    job = OtaWaveJob(publisher=Recorder, repository=lambda: repository_for(settings))
    engine = runtime_of(signed).engine
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    repository = repository_for(settings)
    assert repository is not None
    for node_id in ("sig-node-01", "sig-node-02"):
        assigned = repository.repo.assignment(node_group(node_id), ArtifactKind.APP)
        assert assigned is not None
        assert assigned.unrecognized_fields["custom"]["campaign"] == cid
    _report(signed, "sig-node-02", "healthy", cid, seq=101)
    _report(signed, "sig-node-01", "rolled_back", cid, seq=102)
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    got = signed.get(f"{OTA}/campaigns/{cid}", headers=login(signed, "admin")).json()
    assert got["state"] == "aborted", got
    # The node that rolled back (or one still deferring) no longer finds 3.0.0 signed
    # for its group; the node already healthy on it keeps its assignment.
    assert repository.repo.assignment(node_group("sig-node-01"), ArtifactKind.APP) is None
    kept = repository.repo.assignment(node_group("sig-node-02"), ArtifactKind.APP)
    assert kept is not None
    assert kept.unrecognized_fields["custom"]["campaign"] == cid


def test_a_campaign_an_admin_aborts_is_withdrawn_at_the_next_sweep(
    signed: TestClient, tmp_path: Path
) -> None:
    uploaded = upload(signed, bundle(tmp_path, "4.0.0"), version="4.0.0")
    assert uploaded["status"] == 201, uploaded
    settings = runtime_of(signed).settings
    created = signed.post(
        f"{OTA}/campaigns",
        headers=login(signed, "admin"),
        json={"name": "agent 4.0.0", "artifact_id": uploaded["id"],
              "target": {"node_ids": ["sig-node-01"]},
              "waves": [{"name": "all", "percent": 100}]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    cid = created.json()["id"]

    class Recorder:
        def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
            pass

    job = OtaWaveJob(publisher=Recorder, repository=lambda: repository_for(settings))
    engine = runtime_of(signed).engine
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    repository = repository_for(settings)
    assert repository is not None
    group = node_group("sig-node-01")
    assert repository.repo.assignment(group, ArtifactKind.APP) is not None
    stopped = signed.post(f"{OTA}/campaigns/{cid}/abort", headers=login(signed, "admin"))
    assert stopped.status_code == 200, stopped.text
    job._refresh_at = None  # the once-a-minute sweep is due
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    assert repository.repo.assignment(group, ArtifactKind.APP) is None


def test_a_shared_group_is_assigned_as_one_and_no_other_group_can_take_it(
    signed: TestClient, tmp_path: Path
) -> None:
    admin = login(signed, "admin")
    for bad in (["ota-group:Pilot A"], ["ota-group:pilot-a", "ota-group:pilot-b"]):
        refused = signed.put(f"{OTA}/nodes/sig-node-01/tags", headers=admin, json=bad)
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["reason"] == "bad_group"
    for node_id in ("sig-node-01", "sig-node-02"):
        tagged = signed.put(
            f"{OTA}/nodes/{node_id}/tags", headers=admin, json=["ota-group:pilot-a"]
        )
        assert tagged.status_code == 200, tagged.text
    try:
        uploaded = upload(signed, bundle(tmp_path, "5.0.0"), version="5.0.0")
        assert uploaded["status"] == 201, uploaded
        created = signed.post(
            f"{OTA}/campaigns", headers=admin,
            json={"name": "agent 5.0.0 pilot", "artifact_id": uploaded["id"],
                  "target": {"tags": ["ota-group:pilot-a"]},
                  "waves": [{"name": "canary", "count": 1}, {"name": "all", "percent": 100}]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        sent: list[tuple[str, bytes]] = []

        class Recorder:
            def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
                sent.append((topic, payload))

        settings = runtime_of(signed).settings
        job = OtaWaveJob(publisher=Recorder, repository=lambda: repository_for(settings))
        run_jobs_once(engine=runtime_of(signed).engine, jobs=[job], now=utcnow())
        got = signed.get(f"{OTA}/campaigns/{cid}", headers=admin).json()
        # A canary of one takes the whole group: the assignment reaches both nodes.
        assert sorted((n["node_id"], n["wave"]) for n in got["nodes"]) == [
            ("sig-node-01", 0), ("sig-node-02", 0)
        ]  # fmt: skip
        commands = [decode(*m) for m in sent]
        assert {c.group for c in commands if isinstance(c, OtaCheckCommand)} == {"pilot-a"}

        root = signed.get(f"{OTA}/repository/metadata/1.root.json", headers=admin).content

        def client(group: str) -> UpdateClient:
            return UpdateClient(
                cache_dir=tmp_path / f"node-{group}", metadata_url=f"{REPO_URL}/metadata/",
                targets_url=f"{REPO_URL}/targets/", transport=ServerTransport(signed),
                group=group, hardware="sim", trusted_root=root,
            )  # fmt: skip

        offer = client("pilot-a").check(ArtifactKind.APP)
        assert offer is not None
        assert offer.version == "5.0.0"
        # A node of another group finds nothing of pilot-a's; told to look at pilot-a it
        # refuses (the director signs per group; the node looks only under its own).
        other = client("pilot-b")
        assert other.check(ArtifactKind.APP) is None
        with pytest.raises(OtaError) as refused_offer:
            other.check(ArtifactKind.APP, expect_group="pilot-a")
        assert refused_offer.value.reason == "mix_and_match"
    finally:
        for node_id in ("sig-node-01", "sig-node-02"):
            signed.put(f"{OTA}/nodes/{node_id}/tags", headers=admin, json=[])


def test_an_os_bundle_is_uploaded_and_signed_in_the_os_role(
    signed: TestClient, tmp_path: Path
) -> None:
    source = tmp_path / "os-src"
    source.mkdir()
    (source / "rootfs.raucb").write_bytes(b"hsqs" + b"\0" * 4096)
    blob, _ = build_artifact(source, kind=ArtifactKind.OS, name="nigehbaan-os",
                             version="2026.11.1", hardware=["sim"])  # fmt: skip
    response = signed.post(
        f"{OTA}/artifacts",
        headers=login(signed, "admin"),
        data={"kind": "os", "name": "nigehbaan-os", "version": "2026.11.1", "hardware": "sim"},
        files={"file": ("os.tar", blob, "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    repository = repository_for(runtime_of(signed).settings)
    assert repository is not None
    listed = [t.path for t in repository.repo.artifacts(ArtifactKind.OS)]
    assert listed == ["os/nigehbaan-os-2026.11.1.tar"]
