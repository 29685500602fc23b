"""OTA server stories through the API: artifacts uploaded, served with Range, campaigns in waves."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fleet_server.alerting import load_policies
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Node, utcnow
from fleet_server.models.ota import OtaCampaignNode
from fleet_server.ota.job import OtaWaveJob
from fleet_server.timers import run_jobs_once
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import OtaEvent
from tests.support.api import API, login, runtime_of

OTA = f"{API}/ota"
BLOB = bytes(range(256)) * 40  # 10,240 bytes


def _nodes(client: TestClient, prefix: str, n: int, **fields: object) -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(n)]
    with Session(runtime_of(client).engine) as session:
        for node_id in ids:
            session.add(Node(node_id=node_id, lifecycle="active", **fields))  # type: ignore[arg-type]
        session.commit()
    return ids


def _upload(
    client: TestClient,
    *,
    name: str,
    version: str = "1.0.0",
    kind: str = "app",
    hardware: str = "sim",
    data: bytes = BLOB,
    user: str = "admin",
) -> dict[str, object]:
    response = client.post(
        f"{OTA}/artifacts",
        headers=login(client, user),
        data={"kind": kind, "name": name, "version": version, "hardware": hardware},
        files={"file": (f"{name}.tar", data, "application/octet-stream")},
    )
    return {"status": response.status_code, **response.json()}


@pytest.fixture(scope="module")
def artifact(client: TestClient) -> dict[str, object]:
    answer = _upload(client, name="agent")
    assert answer["status"] == 201, answer
    return answer


def _reason(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    return str(body["detail"]["reason"])


# ------------------------------------------------------------------ artifacts


def test_an_uploaded_artifact_records_its_sha256_length_kind_version_and_hardware(
    artifact: dict[str, object],
) -> None:
    assert artifact["sha256"] == hashlib.sha256(BLOB).hexdigest()
    assert artifact["length"] == len(BLOB)
    assert (artifact["kind"], artifact["version"], artifact["hardware"]) == (
        "app",
        "1.0.0",
        ["sim"],
    )
    assert artifact["target_path"] == "app/agent-1.0.0.tar"


def test_an_artifact_for_hardware_no_node_runs_or_of_an_unknown_kind_is_refused(
    client: TestClient,
) -> None:
    wrong_hw = client.post(
        f"{OTA}/artifacts",
        headers=login(client, "admin"),
        data={"kind": "app", "name": "agent", "version": "9.0.0", "hardware": "esp32"},
        files={"file": ("a.tar", b"x", "application/octet-stream")},
    )
    assert wrong_hw.status_code == 422
    assert _reason(wrong_hw) == "wrong_hardware"
    bad_kind = client.post(
        f"{OTA}/artifacts",
        headers=login(client, "admin"),
        data={"kind": "firmware", "name": "agent", "version": "9.0.1", "hardware": "sim"},
        files={"file": ("a.tar", b"x", "application/octet-stream")},
    )
    assert bad_kind.status_code == 422
    assert _reason(bad_kind) == "unknown_kind"
    names = [
        a["version"]
        for a in client.get(f"{OTA}/artifacts", headers=login(client, "audit")).json()["data"]
    ]
    assert "9.0.0" not in names
    assert "9.0.1" not in names


def test_an_upload_over_the_size_limit_is_refused_and_leaves_nothing_stored(
    client: TestClient,
) -> None:
    settings = runtime_of(client).settings
    before = settings.ota_max_artifact_bytes
    settings.ota_max_artifact_bytes = 1000
    try:
        answer = _upload(client, name="big", data=b"\0" * 5000)
    finally:
        settings.ota_max_artifact_bytes = before
    assert answer["status"] == 413
    leftovers = list((settings.ota_path / "targets").glob(".upload-*"))
    assert leftovers == []


def test_only_an_admin_uploads_and_an_operator_or_auditor_may_read(
    client: TestClient, artifact: dict[str, object]
) -> None:
    assert _upload(client, name="op-try", user="op")["status"] == 403
    for user in ("op", "audit"):
        got = client.get(f"{OTA}/artifacts/{artifact['id']}", headers=login(client, user))
        assert got.status_code == 200


def test_the_same_name_and_version_twice_is_refused(
    client: TestClient, artifact: dict[str, object]
) -> None:
    again = _upload(client, name="agent", data=b"other bytes")
    assert again["status"] == 409
    assert again["detail"]["reason"] == "version_exists"  # type: ignore[index]


# ---------------------------------------------------------------- serving


def test_a_target_is_served_whole_with_its_sha256_as_etag(
    client: TestClient, artifact: dict[str, object]
) -> None:
    got = client.get(f"{OTA}/repository/targets/app/agent-1.0.0.tar", headers=login(client, "op"))
    assert got.status_code == 200
    assert got.content == BLOB
    assert got.headers["etag"] == f'"{artifact["sha256"]}"'
    assert got.headers["accept-ranges"] == "bytes"
    hashed = f"app/{artifact['sha256']}.agent-1.0.0.tar"
    assert (
        client.get(f"{OTA}/repository/targets/{hashed}", headers=login(client, "op")).content
        == BLOB
    )


def test_a_cut_download_resumes_with_a_range_and_the_rest_matches(
    client: TestClient, artifact: dict[str, object]
) -> None:
    url = f"{OTA}/repository/targets/app/agent-1.0.0.tar"
    etag = f'"{artifact["sha256"]}"'
    headers = {**login(client, "op"), "Range": "bytes=4000-", "If-Range": etag}
    rest = client.get(url, headers=headers)
    assert rest.status_code == 206
    assert rest.content == BLOB[4000:]
    assert rest.headers["content-range"] == f"bytes 4000-{len(BLOB) - 1}/{len(BLOB)}"
    middle = client.get(url, headers={**login(client, "op"), "Range": "bytes=10-19"})
    assert (middle.status_code, middle.content) == (206, BLOB[10:20])
    suffix = client.get(url, headers={**login(client, "op"), "Range": "bytes=-5"})
    assert suffix.content == BLOB[-5:]


def test_a_range_for_a_changed_file_gets_the_whole_file_and_a_range_past_the_end_416(
    client: TestClient, artifact: dict[str, object]
) -> None:
    url = f"{OTA}/repository/targets/app/agent-1.0.0.tar"
    stale = {**login(client, "op"), "Range": "bytes=4000-", "If-Range": '"0000"'}
    whole = client.get(url, headers=stale)
    assert (whole.status_code, whole.content) == (200, BLOB)
    past = client.get(url, headers={**login(client, "op"), "Range": f"bytes={len(BLOB)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(BLOB)}"


def test_the_repository_refuses_an_anonymous_reader_unless_opened(
    client: TestClient, artifact: dict[str, object]
) -> None:
    url = f"{OTA}/repository/targets/app/agent-1.0.0.tar"
    assert client.get(url).status_code == 401
    settings = runtime_of(client).settings
    settings.ota_repo_open = True
    try:
        assert client.get(url).content == BLOB
    finally:
        settings.ota_repo_open = False


def test_metadata_files_are_served_as_stored(client: TestClient) -> None:
    from fleet_server.api.routes.ota import store_for

    store = store_for(runtime_of(client))
    store.put_metadata("timestamp.json", b'{"signed": {"_type": "timestamp"}}')
    got = client.get(f"{OTA}/repository/metadata/timestamp.json", headers=login(client, "op"))
    assert got.status_code == 200
    assert got.content == b'{"signed": {"_type": "timestamp"}}'
    assert got.headers["cache-control"] == "no-store"
    missing = client.get(f"{OTA}/repository/metadata/9.root.json", headers=login(client, "op"))
    assert missing.status_code == 404
    bad = client.get(f"{OTA}/repository/metadata/..%2Fsecret.key", headers=login(client, "op"))
    assert bad.status_code == 404


def test_an_unused_artifact_is_deleted_and_one_a_campaign_names_stays(
    client: TestClient, artifact: dict[str, object]
) -> None:
    spare = _upload(client, name="spare")
    gone = client.delete(f"{OTA}/artifacts/{spare['id']}", headers=login(client, "admin"))
    assert gone.status_code == 200
    url = f"{OTA}/repository/targets/app/spare-1.0.0.tar"
    assert client.get(url, headers=login(client, "op")).status_code == 404
    _nodes(client, "keep", 1, hardware="sim", district="keep-d")
    created = client.post(
        f"{OTA}/campaigns",
        headers=login(client, "admin"),
        json={
            "name": "keeps it",
            "artifact_id": artifact["id"],
            "target": {"districts": ["keep-d"]},
        },
    )
    assert created.status_code == 201, created.text
    refused = client.delete(f"{OTA}/artifacts/{artifact['id']}", headers=login(client, "admin"))
    assert refused.status_code == 409
    assert _reason(refused) == "artifact_in_use"


# -------------------------------------------------------------- campaigns


def _campaign(
    client: TestClient, artifact_id: object, target: Mapping[str, object], **kw: object
) -> httpx.Response:
    response: httpx.Response = client.post(
        f"{OTA}/campaigns",
        headers=login(client, "admin"),
        json={"name": "test", "artifact_id": artifact_id, "target": target, **kw},
    )
    return response


def test_a_campaign_targeting_nothing_is_refused_at_creation(
    client: TestClient, artifact: dict[str, object]
) -> None:
    empty = _campaign(client, artifact["id"], {})
    assert (empty.status_code, _reason(empty)) == (422, "targets_nothing")
    nobody = _campaign(client, artifact["id"], {"districts": ["no-such-district"]})
    assert (nobody.status_code, _reason(nobody)) == (422, "targets_nothing")
    _nodes(client, "rpi-only", 3, hardware="rpi", district="rpi-d")
    wrong = _campaign(client, artifact["id"], {"districts": ["rpi-d"]})
    assert (wrong.status_code, _reason(wrong)) == (422, "targets_nothing")
    assert "3 node(s) matched with other hardware" in wrong.json()["detail"]["message"]


def test_a_campaign_targets_the_union_of_district_site_tag_and_node_list(
    client: TestClient, artifact: dict[str, object]
) -> None:
    by_district = _nodes(client, "u-d", 2, hardware="sim", district="union-d")
    by_site = _nodes(client, "u-s", 2, hardware="sim", site_id="union-site")
    tagged = _nodes(client, "u-t", 2, hardware="sim")
    listed = _nodes(client, "u-l", 1, hardware="sim")
    for node_id in tagged:
        put = client.put(
            f"{OTA}/nodes/{node_id}/tags", headers=login(client, "admin"), json=["pilot"]
        )
        assert put.json() == ["pilot"]
    target = {
        "districts": ["union-d"],
        "sites": ["union-site"],
        "tags": ["pilot"],
        "node_ids": listed,
    }
    created = _campaign(client, artifact["id"], target)
    assert created.status_code == 201
    nodes = sorted(n["node_id"] for n in created.json()["nodes"])
    assert nodes == sorted(by_district + by_site + tagged + listed)
    assert created.json()["counts"] == {"pending": 7}


def test_pause_resume_abort_and_illegal_moves(
    client: TestClient, artifact: dict[str, object]
) -> None:
    _nodes(client, "pr", 2, hardware="sim", district="pr-d")
    cid = _campaign(client, artifact["id"], {"districts": ["pr-d"]}).json()["id"]
    admin = login(client, "admin")
    assert client.post(f"{OTA}/campaigns/{cid}/pause", headers=admin).json()["state"] == "paused"
    again = client.post(f"{OTA}/campaigns/{cid}/pause", headers=admin)
    assert (again.status_code, _reason(again)) == (409, "illegal_transition")
    assert client.post(f"{OTA}/campaigns/{cid}/resume", headers=admin).json()["state"] == "running"
    assert client.post(f"{OTA}/campaigns/{cid}/abort", headers=admin).json()["state"] == "aborted"
    assert client.post(f"{OTA}/campaigns/{cid}/resume", headers=admin).status_code == 409
    assert (
        client.post(f"{OTA}/campaigns/{cid}/pause", headers=login(client, "op")).status_code == 403
    )
    listed = client.get(
        f"{OTA}/campaigns", headers=login(client, "audit"), params={"state": "aborted"}
    )
    assert cid in [c["id"] for c in listed.json()["data"]]


def test_a_site_window_needs_a_real_time_zone(client: TestClient) -> None:
    admin = login(client, "admin")
    ok = client.put(f"{OTA}/sites/lhr-01/window", headers=admin,
                    json={"tz": "Asia/Karachi", "start": "01:00", "end": "05:00"})  # fmt: skip
    assert ok.status_code == 200
    bad = client.put(f"{OTA}/sites/lhr-01/window", headers=admin,
                     json={"tz": "Asia/Lahore-ish", "start": "01:00", "end": "05:00"})  # fmt: skip
    assert (bad.status_code, _reason(bad)) == (422, "bad_time_zone")


# ---------------------------------------------------- waves, job and ingest


class Sent:
    """A publisher that keeps what the job sent."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.messages.append((topic, payload))


def _report(
    client: TestClient, node_id: str, phase: str, cid: str, *, seq: int,
    detail: str | None = None, **extra: object,
) -> None:  # fmt: skip
    """An `ota` event through the normal ingest path (decode, batch, store)."""
    event = OtaEvent(
        node_id=node_id,
        ts=utcnow(),
        event_id=new_event_id(),
        seq=seq,
        artifact="agent",
        version="1.0.0",
        phase=phase,
        campaign_id=cid,
        detail=detail,
        **extra,
    )
    envelopes, _ = decode_all([(topic_for(event), encode(event))])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()
    assert out.acks[node_id] == [event.event_id]


def _states(client: TestClient, cid: str) -> dict[str, tuple[int | None, str, str]]:
    got = client.get(f"{OTA}/campaigns/{cid}", headers=login(client, "audit")).json()
    return {n["node_id"]: (n["wave"], n["state"], n["detail"]) for n in got["nodes"]}


@pytest.fixture
def job() -> OtaWaveJob:
    return OtaWaveJob(publisher=lambda: Sent(), members_every_s=0)


def test_a_failing_canary_aborts_the_campaign_and_no_other_wave_starts(
    client: TestClient, artifact: dict[str, object], job: OtaWaveJob
) -> None:
    fleet = _nodes(client, "wave", 20, hardware="sim", district="wave-d")
    cid = _campaign(client, artifact["id"], {"districts": ["wave-d"]},
                    min_sample=1, failure_threshold=0.0).json()["id"]  # fmt: skip
    engine = runtime_of(client).engine
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    states = _states(client, cid)
    canary = [n for n, (wave, _, _) in states.items() if wave == 0]
    assert len(canary) == 1  # 5 % of 20
    assert all(states[n][0] is None for n in fleet if n not in canary)
    _report(client, canary[0], "downloading", cid, seq=1)
    assert _states(client, cid)[canary[0]][1] == "downloading"
    _report(client, canary[0], "rolled_back", cid, seq=2, detail="button loop not alive in 120 s")
    run_jobs_once(engine=engine, jobs=[job], now=utcnow() + timedelta(seconds=1))
    got = client.get(f"{OTA}/campaigns/{cid}", headers=login(client, "audit")).json()
    assert got["state"] == "aborted"
    assert "1 of 1 finished nodes failed or rolled back" in got["reason"]
    states = _states(client, cid)
    assert states[canary[0]] == (0, "rolled_back", "button loop not alive in 120 s")
    assert all(states[n][0] is None for n in fleet if n not in canary)


def test_retry_failed_offers_again_to_the_failed_nodes_only(
    client: TestClient, artifact: dict[str, object], job: OtaWaveJob
) -> None:
    _nodes(client, "retry", 4, hardware="sim", district="retry-d")
    cid = _campaign(client, artifact["id"], {"districts": ["retry-d"]},
                    waves=[{"name": "all", "percent": 100}], min_sample=4,
                    failure_threshold=0.5).json()["id"]  # fmt: skip
    engine = runtime_of(client).engine
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    _report(client, "retry-000", "healthy", cid, seq=1)
    _report(client, "retry-001", "failed", cid, seq=1, detail="hash mismatch")
    _report(client, "retry-002", "deferred", cid, seq=1, detail="battery below 30 %")
    retried = client.post(f"{OTA}/campaigns/{cid}/retry-failed", headers=login(client, "admin"))
    assert retried.status_code == 200
    states = _states(client, cid)
    assert states["retry-000"][1] == "healthy"
    assert states["retry-001"][1:] == ("pending", "")
    assert states["retry-002"] == (0, "deferred", "battery below 30 %")
    with Session(engine) as session:
        row = session.exec(
            select(OtaCampaignNode).where(
                OtaCampaignNode.campaign_id == cid, OtaCampaignNode.node_id == "retry-001"
            )
        ).one()
        assert row.attempt == 2
    none_left = client.post(f"{OTA}/campaigns/{cid}/retry-failed", headers=login(client, "admin"))
    assert (none_left.status_code, _reason(none_left)) == (409, "nothing_to_retry")


def test_a_node_enrolled_after_the_start_joins_the_next_wave(
    client: TestClient, artifact: dict[str, object], job: OtaWaveJob
) -> None:
    _nodes(client, "late", 10, hardware="sim", district="late-d")
    cid = _campaign(client, artifact["id"], {"districts": ["late-d"]},
                    waves=[{"name": "canary", "count": 2}, {"name": "all", "percent": 100}],
                    min_sample=2).json()["id"]  # fmt: skip
    engine = runtime_of(client).engine
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    canary = [n for n, (wave, _, _) in _states(client, cid).items() if wave == 0]
    _nodes(client, "late-new", 1, hardware="sim", district="late-d")
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    assert _states(client, cid)["late-new-000"][0] is None  # known, waiting for the next wave
    for i, node_id in enumerate(canary):
        _report(client, node_id, "healthy", cid, seq=1 + i)
    run_jobs_once(engine=engine, jobs=[job], now=utcnow())
    states = _states(client, cid)
    assert states["late-new-000"][0] == 1
    assert all(wave is not None for wave, _, _ in states.values())


def test_a_node_s_refusal_reason_and_download_progress_show_in_its_status(
    client: TestClient, artifact: dict[str, object], job: OtaWaveJob
) -> None:
    _nodes(client, "why", 2, hardware="sim", district="why-d")
    cid = _campaign(client, artifact["id"], {"districts": ["why-d"]},
                    waves=[{"name": "all", "percent": 100}]).json()["id"]  # fmt: skip
    run_jobs_once(engine=runtime_of(client).engine, jobs=[job], now=utcnow())
    _report(client, "why-000", "deferred", cid, seq=1, reason="battery_low",
            detail="battery 22 % is below the policy's 30 %")  # fmt: skip
    _report(client, "why-001", "downloading", cid, seq=1, bytes_done=4096, bytes_total=10240)
    states = _states(client, cid)
    assert states["why-000"][1:] == (
        "deferred",
        "battery_low: battery 22 % is below the policy's 30 %",
    )
    assert states["why-001"][1:] == ("downloading", "4096/10240 bytes")
    _report(client, "why-001", "failed", cid, seq=2, reason="hash",
            detail="sha256 of the download differs from the signed one")  # fmt: skip
    assert _states(client, cid)["why-001"][1:] == (
        "failed",
        "hash: sha256 of the download differs from the signed one",
    )
