"""Evidence a court can verify: a node signs and uploads, the server exports, anyone verifies.

The fleet server runs over HTTPS asking for client certificates (as
`nigehbaan server --https` does), on a PKI made by the product's own CA
code. The node side is the real `EvidenceUploader` with its HTTPS client,
durable queue and local evidence store. The export is verified by
``nigehbaan evidence verify`` in a separate process, in a clean directory
holding only the bundle and the fleet root certificate, with the database
and web stack made unimportable.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from edge_agent.evidence import EvidenceStore
from edge_agent.evidence_upload import (
    EvidenceUploadConfig,
    EvidenceUploader,
    HttpsEvidenceClient,
    UploadQueue,
    UploadRefused,
    sign_claim,
)
from edge_agent.outbox import StoredEvent
from fleet_server.alerting import load_policies
from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.broker.process import free_port
from fleet_server.evidence.retention import RetentionPolicy, expire_evidence
from fleet_server.evidence.store import LocalEvidenceStore
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Node, NodeCertificate, Role, UserCreate, utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.evidence import EvidenceItem
from fleet_server.ota.mtls import uvicorn_client_cert_options
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.evidence import EvidenceClaim
from proto.ids import new_event_id
from proto.messages import PanicEvent
from tests.support.pki import FleetCA, csr_pem, key_pem, new_key

API = "/api/v1"
NODE = "lhr-ev-01"
PASSWORDS = {"admin": "admin-password", "op": "operator-pw", "audit": "auditor-pw"}
# A small JPEG-like file: the bytes are what matter to the hashes and signatures.
CROP = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
SNAPSHOT = b"\xff\xd8\xff\xe0" + bytes(reversed(range(256))) * 90 + b"\xff\xd9"


@dataclass
class Served:
    url: str
    tmp: Path
    fleet_ca: FleetCA
    root_ca: Path
    engine: Engine
    node_key: ec.EllipticCurvePrivateKey
    node_cert: Path
    node_key_file: Path
    server_store: LocalEvidenceStore
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("evidence")
    fleet_ca = FleetCA()
    server_files = fleet_ca.server_files(tmp)
    key = new_key()
    node_pem = fleet_ca.sign_csr(csr_pem(key, cn=NODE), lifetime=timedelta(days=5))
    (tmp / "node.pem").write_text(node_pem)
    (tmp / "node.key").write_bytes(key_pem(key))
    settings = Settings(
        data_dir=tmp / "server", broker_url=None, admin_password=PASSWORDS["admin"],
        secret_key="test-secret-key-that-is-long-enough", pki_dir=fleet_ca.paths.root,
        init_pki=False, evidence_max_bytes=64 * 1024,
    )  # fmt: skip
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning",
        ssl_certfile=str(server_files.cert), ssl_keyfile=str(server_files.key),
        **uvicorn_client_cert_options(fleet_ca.paths.chain),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    engine = app.state.runtime.engine
    cert = x509.load_pem_x509_certificate(node_pem.encode())
    with Session(engine) as session:
        session.add(Node(node_id=NODE, hardware="sim", lifecycle="active", district="gulberg"))
        session.add(NodeCertificate(
            serial=format(cert.serial_number, "x"), node_id=NODE, hardware_serial=f"SN-{NODE}",
            key_sha256="0" * 64, not_before=utcnow() - timedelta(minutes=5),
            not_after=utcnow() + timedelta(days=5), issued_via="token", pem=node_pem,
        ))  # fmt: skip
        for name, role in (("op", Role.OPERATOR), ("audit", Role.AUDITOR)):
            create_user(
                session=session,
                user_in=UserCreate(username=name, role=role, password=PASSWORDS[name]),
            )
        session.commit()
    url = f"https://127.0.0.1:{port}"
    headers = {}
    with httpx.Client(
        base_url=url, verify=ssl.create_default_context(cafile=str(fleet_ca.paths.chain))
    ) as client:
        for user, password in PASSWORDS.items():
            token = client.post(
                f"{API}/login/access-token", data={"username": user, "password": password}
            )
            assert token.status_code == 200, token.text
            headers[user] = {"Authorization": f"Bearer {token.json()['access_token']}"}
    try:
        yield Served(
            url, tmp, fleet_ca, fleet_ca.paths.root / "root-ca.pem", engine, key,
            tmp / "node.pem", tmp / "node.key",
            LocalEvidenceStore(settings.data_dir.resolve() / "evidence"), headers,
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _tls(served: Served) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(served.fleet_ca.paths.chain))


def _uploader(served: Served, name: str, **config: Any) -> EvidenceUploader:
    data = served.tmp / name
    return EvidenceUploader(
        EvidenceUploadConfig(url=f"{served.url}{API}/evidence", chunk_kb=4, **config),
        node_id=NODE,
        store=EvidenceStore(data / "evidence"),
        queue=UploadQueue(data / "evidence-upload.sqlite3"),
        key=lambda: served.node_key,
        client=lambda: HttpsEvidenceClient(
            f"{served.url}{API}/evidence",
            ca_file=served.fleet_ca.paths.chain,
            cert_file=served.node_cert,
            key_file=served.node_key_file,
        ),
    )


def _panic_alert(served: Served) -> tuple[str, str]:
    """A press from the node, ingested as the server ingests it: (event id, alert id)."""
    press = PanicEvent(node_id=NODE, ts=utcnow(), event_id=new_event_id(), seq=1)
    envelopes, _ = decode_all([(topic_for(press), encode(press))])
    with Session(served.engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()
    return press.event_id, out.notices[0].alert.id


def _hit_event(sha: str) -> StoredEvent:
    payload = {
        "type": "watchlist_hit", "node_id": NODE, "event_id": new_event_id(), "seq": 7,
        "ts": utcnow().isoformat(), "camera_id": "cam1", "snapshot_sha256": sha,
    }  # fmt: skip
    return StoredEvent(
        seq=7, event_id=str(payload["event_id"]), event_type="watchlist_hit",
        topic=f"nb/v1/{NODE}/event/watchlist_hit", payload=json.dumps(payload).encode(),
        created_at=time.time(),
    )  # fmt: skip


def _audit(served: Served, obj: str) -> list[tuple[str, str]]:
    with Session(served.engine) as session:
        rows = session.exec(
            select(AuditRecord).where(col(AuditRecord.object) == obj).order_by(col(AuditRecord.seq))
        ).all()
        return [(r.actor, r.action) for r in rows]


def _verify(served: Served, bundle: bytes, where: Path) -> subprocess.CompletedProcess[str]:
    """`nigehbaan evidence verify` in a clean directory, with the server stack unimportable."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "bundle.zip").write_bytes(bundle)
    (where / "ca.pem").write_bytes(served.root_ca.read_bytes())
    blocker = where / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'sqlmodel', 'sqlalchemy', 'uvicorn',"
        " 'starlette', 'alembic', 'psycopg'):\n"
        "            raise ImportError('blocked in this test: ' + name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "evidence", "verify", "bundle.zip",
         "--ca", "ca.pem"],
        cwd=where, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_hit_crop_is_signed_uploaded_verified_and_recorded_as_captured_by_the_node(
    served: Served,
) -> None:
    uploader = _uploader(served, "node-a")
    sha = uploader.store.put(CROP)
    uploader.on_event(_hit_event(sha))  # a watchlist hit: uploaded without being asked
    assert uploader.store.is_pinned(sha)  # the hit's evidence cannot be evicted while queued
    assert uploader.work_once() == 1
    assert served.server_store.has(sha)
    with served.server_store.open(sha) as handle:
        assert handle.read() == CROP
    with Session(served.engine) as session:
        item = session.get(EvidenceItem, sha)
        assert item is not None
        assert (item.state, item.node_id, item.camera_id, item.data_class) == (
            "stored",
            NODE,
            "cam1",
            "plate_crop",
        )
    assert _audit(served, f"evidence:{sha}") == [(f"node:{NODE}", "evidence.captured")]
    assert not uploader.store.is_pinned(sha)
    # Again: idempotent by SHA-256, nothing re-sent, still one record.
    assert uploader.enqueue(sha)
    assert uploader.work_once() == 1
    assert _audit(served, f"evidence:{sha}") == [(f"node:{NODE}", "evidence.captured")]


def test_a_cut_upload_resumes_where_the_server_stopped(served: Served) -> None:
    uploader = _uploader(served, "node-b")
    sha = uploader.store.put(SNAPSHOT)
    claim = EvidenceClaim(
        sha256=sha, size=len(SNAPSHOT), data_class="panic_snapshot", node_id=NODE,
        camera_id="cam2", captured_at=utcnow(),
    )  # fmt: skip
    client = HttpsEvidenceClient(
        f"{served.url}{API}/evidence", ca_file=served.fleet_ca.paths.chain,
        cert_file=served.node_cert, key_file=served.node_key_file,
    )  # fmt: skip
    signed = sign_claim(served.node_key, claim)
    assert client.begin(signed) == (0, "partial")
    assert client.put(sha, 0, SNAPSHOT[:5000]) == 5000  # then the link drops
    assert client.begin(signed) == (5000, "partial")  # the server says where to go on
    with pytest.raises(UploadRefused) as wrong:
        client.put(sha, 0, SNAPSHOT[:100])
    assert (wrong.value.reason, wrong.value.received) == ("offset", 5000)
    assert client.put(sha, 5000, SNAPSHOT[5000:]) == len(SNAPSHOT)
    assert client.begin(signed) == (len(SNAPSHOT), "stored")


def test_uploads_that_do_not_hold_are_refused_with_a_reason_and_nothing_is_kept(
    served: Served,
) -> None:
    client = HttpsEvidenceClient(
        f"{served.url}{API}/evidence", ca_file=served.fleet_ca.paths.chain,
        cert_file=served.node_cert, key_file=served.node_key_file,
    )  # fmt: skip
    data = b"not what was signed" * 10
    claim = EvidenceClaim(
        sha256=hashlib.sha256(b"other bytes").hexdigest(), size=len(data),
        data_class="plate_crop", node_id=NODE, captured_at=utcnow(),
    )  # fmt: skip
    signed = sign_claim(served.node_key, claim)
    # Another key's signature (a forged claim) is refused.
    forged = signed.model_copy(update={"signature": sign_claim(new_key(), claim).signature})
    with pytest.raises(UploadRefused) as bad_signature:
        client.begin(forged)
    assert (bad_signature.value.status, bad_signature.value.reason) == (422, "signature")
    # A claim for another node is refused.
    other = claim.model_copy(update={"node_id": "lhr-ev-99"})
    with pytest.raises(UploadRefused) as not_mine:
        client.begin(sign_claim(served.node_key, other))
    assert not_mine.value.reason == "node_mismatch"
    # Bytes that are not the signed file: refused at the end, the partial upload discarded.
    assert client.begin(signed)[0] == 0
    with pytest.raises(UploadRefused) as mismatch:
        client.put(claim.sha256, 0, data)
    assert mismatch.value.reason == "hash_mismatch"
    assert not served.server_store.has(claim.sha256)
    assert served.server_store.received(claim.sha256) == 0
    # Larger than the server's bound: refused before any byte is sent.
    big = claim.model_copy(update={"size": 65 * 1024})
    with pytest.raises(UploadRefused) as too_large:
        client.begin(sign_claim(served.node_key, big))
    assert (too_large.value.status, too_large.value.reason) == (413, "too_large")
    # No client certificate: 401.
    with httpx.Client(base_url=served.url, verify=_tls(served)) as anon:
        assert (
            anon.post(f"{API}/evidence/uploads", json=signed.model_dump(mode="json")).status_code
            == 401
        )


def _export(served: Served, subject: str, purpose: str) -> bytes:
    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        asked = api.post(
            f"{API}/evidence/exports", json={"subject": subject},
            headers={**served.headers["op"], "X-Purpose": purpose},
        )  # fmt: skip
        assert asked.status_code == 201, asked.text
        export = asked.json()
        assert export["state"] == "pending"  # the policy wants a second user's approval
        early = api.get(
            f"{API}/evidence/exports/{export['id']}/bundle", headers=served.headers["op"]
        )
        assert (early.status_code, early.json()["detail"]["reason"]) == (409, "not_approved")
        approved = api.post(
            f"{API}/evidence/exports/{export['id']}/decision",
            json={"decision": "approved", "note": "court order 17"},
            headers=served.headers["audit"],
        )
        assert approved.status_code == 200, approved.text
        bundle = api.get(
            f"{API}/evidence/exports/{export['id']}/bundle", headers=served.headers["op"]
        )
        assert bundle.status_code == 200, bundle.text
        return bundle.content


def test_an_alert_s_evidence_exports_as_a_bundle_that_verifies_offline_and_names_a_changed_file(
    served: Served, tmp_path: Path
) -> None:
    event_id, alert_id = _panic_alert(served)
    uploader = _uploader(served, "node-c")
    sha = uploader.store.put(SNAPSHOT + b"c")
    assert uploader.enqueue(
        sha, data_class="panic_snapshot", camera_id="cam3", event_id=event_id,
        event_type="panic_snapshot", captured_at=utcnow(),
    )  # fmt: skip
    assert uploader.work_once() == 1
    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        listed = api.get(f"{API}/evidence", params={"alert_id": alert_id},
                         headers=served.headers["op"]).json()  # fmt: skip
        assert [row["sha256"] for row in listed["data"]] == [sha]
        no_purpose = api.get(f"{API}/evidence/{sha}/file", headers=served.headers["op"])
        assert no_purpose.status_code == 428
        viewed = api.get(
            f"{API}/evidence/{sha}/file",
            headers={**served.headers["op"], "X-Purpose": f"alert:{alert_id}"},
        )  # fmt: skip
        assert viewed.content == SNAPSHOT + b"c"
    bundle = _export(served, f"alert:{alert_id}", "fir:FIR-221/2026")

    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        audit = json.loads(zf.read("audit.json"))["records"]
    assert manifest["approved_by"] == "audit"
    assert [i["sha256"] for i in manifest["items"]] == [sha]
    actions = {(r["actor"], r["action"]) for r in audit}
    assert {(f"node:{NODE}", "evidence.captured"), ("user:op", "data.viewed"),
            ("user:op", "evidence.exported")} <= actions  # fmt: skip

    good = _verify(served, bundle, tmp_path / "clean")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "holds" in good.stdout

    # One byte changed in the evidence file: the verifier fails and names it.
    member = f"files/{sha}.jpg"
    altered = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(altered, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == member:
                data = data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
            dst.writestr(info, data)
    bad = _verify(served, altered.getvalue(), tmp_path / "altered")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"FAIL {member}" in bad.stdout

    # A changed manifest (someone rewrites the listed hash) breaks the server's signature.
    forged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "manifest.json":
                data = data.replace(b'"fir:FIR-221/2026"', b'"fir:FIR-999/2026"')
            dst.writestr(info, data)
    forged_run = _verify(served, forged.getvalue(), tmp_path / "forged")
    assert forged_run.returncode == 1
    assert "FAIL manifest.json" in forged_run.stdout

    # A file slipped into the bundle, or one taken out, is named too.
    from fleet_server.evidence.verify import load_ca, verify_bundle

    trusted = load_ca(served.root_ca.read_bytes())
    for extra, drop in (("files/extra.jpg", None), (None, "audit.json")):
        changed = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(bundle)) as src, zipfile.ZipFile(changed, "w") as dst:
            for info in src.infolist():
                if info.filename != drop:
                    dst.writestr(info, src.read(info.filename))
            if extra:
                dst.writestr(extra, b"planted")
        problems = verify_bundle(changed.getvalue(), trusted=trusted).problems
        assert [name for name, _ in problems] == [extra or drop]

    # Another fleet's CA does not vouch for it.
    (tmp_path / "foreign").mkdir()
    other_root = FleetCA().paths.root / "root-ca.pem"
    served_foreign = Served(**{**served.__dict__, "root_ca": other_root})
    foreign = _verify(served_foreign, bundle, tmp_path / "foreign")
    assert foreign.returncode == 1
    assert "not issued under the trusted fleet CA" in foreign.stdout


def test_a_user_may_not_approve_an_export_they_asked_for(served: Served) -> None:
    _, alert_id = _panic_alert(served)
    uploader = _uploader(served, "node-d")
    event = _hit_event(uploader.store.put(CROP + b"d"))
    with Session(served.engine) as session:  # the hit event belongs to the alert
        from fleet_server.models import Event

        session.add(Event(event_id=event.event_id, node_id=NODE, type="watchlist_hit",
                          seq=8, ts=utcnow(), payload="{}", alert_id=alert_id))  # fmt: skip
        session.commit()
    uploader.on_event(event)
    assert uploader.work_once() == 1
    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        asked = api.post(
            f"{API}/evidence/exports", json={"subject": f"alert:{alert_id}"},
            headers={**served.headers["admin"], "X-Purpose": "case:C-17"},
        ).json()  # fmt: skip
        own = api.post(
            f"{API}/evidence/exports/{asked['id']}/decision", json={"decision": "approved"},
            headers=served.headers["admin"],
        )  # fmt: skip
        assert (own.status_code, own.json()["detail"]["reason"]) == (403, "self_approval")
        operator = api.post(
            f"{API}/evidence/exports/{asked['id']}/decision", json={"decision": "approved"},
            headers=served.headers["op"],
        )  # fmt: skip
        assert operator.status_code == 403  # an operator is not an approver
        no_purpose = api.post(f"{API}/evidence/exports", json={"subject": f"alert:{alert_id}"},
                              headers=served.headers["op"])  # fmt: skip
        assert no_purpose.status_code == 428


def test_retention_deletes_on_server_and_node_keeps_held_evidence_until_release(
    served: Served,
) -> None:
    uploader = _uploader(served, "node-e", retention_plate_crop_days=None)
    kept = uploader.store.put(CROP + b"held")
    gone = uploader.store.put(CROP + b"expires")
    for sha in (kept, gone):
        uploader.on_event(_hit_event(sha))
    assert uploader.work_once() == 2
    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        case = api.post(
            f"{API}/evidence/cases", json={"reference": "FIR-404/2026", "district": "gulberg"},
            headers=served.headers["op"],
        )  # fmt: skip
        assert case.status_code == 201, case.text
        case_id = case.json()["id"]
        attached = api.post(
            f"{API}/evidence/cases/{case_id}/items", json={"sha256s": [kept]},
            headers=served.headers["op"],
        )  # fmt: skip
        assert attached.json()["added"] == 1

    later = utcnow() + timedelta(days=40)  # past the 30-day plate-crop retention
    policy = RetentionPolicy(days={"plate_crop": 30.0}, case_days=60.0)
    with Session(served.engine) as session:
        deleted = expire_evidence(
            session=session, store=served.server_store, policy=policy, now=later
        )
        session.commit()
    assert gone in deleted
    assert kept not in deleted  # on legal hold
    assert not served.server_store.has(gone)
    assert served.server_store.has(kept)
    assert ("system", "evidence.expired") in _audit(served, f"evidence:{gone}")

    # The node hears it at its next round: deletes its copy of the expired file, keeps the held one.
    uploader.work_once()
    assert gone not in uploader.store
    assert kept in uploader.store
    assert uploader.store.is_pinned(kept)
    assert (f"node:{NODE}", "evidence.deleted_on_node") in _audit(served, f"evidence:{gone}")

    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        refused = api.post(f"{API}/evidence/cases/{case_id}/release", json={"note": "closed"},
                           headers=served.headers["op"])  # fmt: skip
        assert refused.status_code == 403  # an operator may not lift a hold
        released = api.post(
            f"{API}/evidence/cases/{case_id}/release",
            json={"note": "court released it"},
            headers=served.headers["audit"],
        )
        assert released.status_code == 200, released.text
    assert ("user:audit", "evidence.hold_released") in _audit(served, f"case:{case_id}")
    with Session(served.engine) as session:  # still within the case retention after release
        assert kept not in expire_evidence(
            session=session, store=served.server_store, policy=policy, now=later
        )
        session.commit()
    with Session(served.engine) as session:  # past it
        deleted = expire_evidence(
            session=session, store=served.server_store, policy=policy,
            now=later + timedelta(days=21),
        )  # fmt: skip
        session.commit()
    assert kept in deleted
    assert not served.server_store.has(kept)
    uploader.work_once()
    assert kept not in uploader.store
    with Session(served.engine) as session:
        item = session.get(EvidenceItem, kept)
        assert item is not None
        assert (item.state, item.delete_reason) == ("deleted", "retention:case_evidence")


def test_the_node_applies_its_own_retention_and_reports_it(served: Served) -> None:
    uploader = _uploader(served, "node-f", retention_plate_crop_days=1.0)
    sha = uploader.store.put(CROP + b"old")
    uploader.on_event(_hit_event(sha))
    assert uploader.work_once() == 1
    uploader._now = lambda: utcnow() + timedelta(days=2)
    uploader.work_once()
    assert sha not in uploader.store
    assert (f"node:{NODE}", "evidence.deleted_on_node") in _audit(served, f"evidence:{sha}")


def test_the_claim_signature_is_the_node_key_s(served: Served) -> None:
    claim = EvidenceClaim(
        sha256="a" * 64, size=1, data_class="plate_crop", node_id=NODE, captured_at=utcnow()
    )
    signed = sign_claim(served.node_key, claim)
    from cryptography.hazmat.primitives import hashes

    from proto.evidence import signed_payload

    served.node_key.public_key().verify(
        base64.b64decode(signed.signature), signed_payload(claim), ec.ECDSA(hashes.SHA256())
    )


def test_a_snapshot_the_store_is_told_about_is_uploaded_as_its_alert_s_evidence(
    served: Served,
) -> None:
    _, alert_id = _panic_alert(served)
    uploader = _uploader(served, "node-g")
    sha = uploader.store.put(SNAPSHOT + b"g")
    # What the snapshot command does after keeping a frame (edge_agent.snapshot).
    uploader.store.describe(
        sha, data_class="panic_snapshot", event_type="snapshot", camera_id="cam4",
        alert_id=alert_id, captured_at=utcnow(),
    )  # fmt: skip
    assert uploader.store.is_pinned(sha)
    assert uploader.work_once() == 1
    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        listed = api.get(
            f"{API}/evidence", params={"alert_id": alert_id}, headers=served.headers["op"]
        ).json()
    rows = {r["sha256"]: (r["data_class"], r["camera_id"]) for r in listed["data"]}
    assert rows[sha] == ("panic_snapshot", "cam4")  # presses from one node join one alert


def test_a_case_s_evidence_exports_as_a_bundle_naming_the_case(served: Served) -> None:
    from fleet_server.evidence.verify import load_ca, verify_bundle

    uploader = _uploader(served, "node-h")
    sha = uploader.store.put(CROP + b"case")
    uploader.on_event(_hit_event(sha))
    assert uploader.work_once() == 1
    with httpx.Client(base_url=served.url, verify=_tls(served)) as api:
        case = api.post(
            f"{API}/evidence/cases", json={"reference": "CASE-77", "district": "gulberg"},
            headers=served.headers["op"],
        ).json()  # fmt: skip
        api.post(f"{API}/evidence/cases/{case['id']}/items", json={"sha256s": [sha]},
                 headers=served.headers["op"])  # fmt: skip
    bundle = _export(served, f"case:{case['id']}", "case:CASE-77")
    verdict = verify_bundle(bundle, trusted=load_ca(served.root_ca.read_bytes()))
    assert verdict.ok, verdict.problems
    assert (verdict.subject, verdict.files) == (f"case:{case['id']}", 1)
    with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
        actions = {r["action"] for r in json.loads(zf.read("audit.json"))["records"]}
    assert {"evidence.captured", "evidence.case_opened", "evidence.hold_placed"} <= actions
