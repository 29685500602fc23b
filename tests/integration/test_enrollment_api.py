"""The enrollment API in-process (TestClient, real SQLite, real certificates, no broker).

Stories: a technician's token enrolls a node exactly once; expired, used,
unknown and wrong-scope tokens are refused with the reason a technician can
act on; a bad CSR is refused; preauthorized serials import from CSV and
enroll without a token; the manual accept queue; renewal keeps the key;
revocation and decommissioning reach the CRL; the enrollment rate limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.models import EnrollmentToken, Role, UserCreate, utcnow
from fleet_server.pki import key_fingerprint
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from tests.support.pki import csr_pem, new_key, public_pem

ADMIN_PW = "admin-pw-for-tests"
TECH_PW = "tech-pw-for-tests"


def make_client(tmp: Path, **settings: Any) -> TestClient:
    return TestClient(
        create_app(
            Settings(
                env="dev", data_dir=tmp, broker_url=None, admin_password=ADMIN_PW,
                secret_key="x" * 32, **settings,
            )
        )
    )  # fmt: skip


def login(client: TestClient, user: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/login/access-token", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("enroll"), enroll_rate_per_min=1000) as c:
        runtime: Runtime = c.app.state.runtime  # type: ignore[attr-defined]
        with Session(runtime.engine) as session:
            create_user(
                session=session,
                user_in=UserCreate(username="tech", role=Role.TECHNICIAN, password=TECH_PW),
            )
        yield c


@pytest.fixture(scope="module")
def admin(client: TestClient) -> dict[str, str]:
    return login(client, "admin", ADMIN_PW)


@pytest.fixture(scope="module")
def tech(client: TestClient) -> dict[str, str]:
    return login(client, "tech", TECH_PW)


def token(client: TestClient, auth: dict[str, str], **body: Any) -> str:
    r = client.post("/api/v1/enrollment-tokens", json=body, headers=auth)
    assert r.status_code == 201, r.text
    value: str = r.json()["token"]
    assert value.startswith("nbet_")
    return value


def enroll(client: TestClient, *, serial: str, key: Any = None, cn: str | None = None,
           **body: Any) -> Any:  # fmt: skip
    key = key or new_key()
    node_id = body.get("node_id") or serial.lower()
    body.setdefault("csr_pem", csr_pem(key, cn=cn or node_id, serial=serial))
    return client.post("/api/v1/enroll", json={"serial": serial, **body})


def refused(response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["detail"]["reason"] == reason
    assert response.json()["detail"]["message"]


def test_a_token_enrolls_a_node_once_and_is_stored_only_as_a_hash(
    client: TestClient, tech: dict[str, str], admin: dict[str, str]
) -> None:
    value = token(client, tech, district="lahore-gulberg", site_id="gulberg-main-blvd")
    key = new_key()

    r = enroll(client, serial="LHR-0001", key=key, token=value)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["node_id"] == "lhr-0001"
    assert body["broker_url"].startswith("mqtts://")
    cert = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    chain = x509.load_pem_x509_certificates(body["ca_chain_pem"].encode())
    cert.verify_directly_issued_by(chain[0])
    chain[0].verify_directly_issued_by(chain[1])
    assert key_fingerprint(cert) == key_fingerprint(key.public_key())
    assert cert.subject.rfc4514_string().startswith("2.5.4.5=LHR-0001,CN=lhr-0001")
    node = client.get("/api/v1/nodes/lhr-0001", headers=admin).json()
    assert (node["lifecycle"], node["district"], node["site_id"]) == (
        "provisioned", "lahore-gulberg", "gulberg-main-blvd",
    )  # fmt: skip
    listed = client.get("/api/v1/enrollment-tokens", headers=admin).json()["data"]
    assert value not in str(listed)
    assert any(t["used_by_node_id"] == "lhr-0001" for t in listed)

    refused(enroll(client, serial="LHR-0002", token=value), 403, "token_used")


def test_expired_unknown_and_wrong_scope_tokens_are_refused(
    client: TestClient, tech: dict[str, str]
) -> None:
    refused(enroll(client, serial="LHR-0100", token="nbet_nope"), 403, "token_unknown")

    expired = token(client, tech, ttl_s=60)
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with Session(runtime.engine) as session:
        for row in session.exec(select(EnrollmentToken)).all():
            if row.expires_at - row.created_at == timedelta(seconds=60):
                row.expires_at = utcnow() - timedelta(seconds=1)
                session.add(row)
        session.commit()
    refused(enroll(client, serial="LHR-0101", token=expired), 403, "token_expired")

    scoped = token(client, tech, district="karachi-south")
    refused(enroll(client, serial="LHR-0102", token=scoped, district="lahore-gulberg"),
            403, "wrong_scope")  # fmt: skip
    site = token(client, tech, district="karachi-south", site_id="saddar-1")
    refused(enroll(client, serial="LHR-0103", token=site, site_id="clifton-2"), 403, "wrong_scope")
    # A district token accepts any site in it; the refusals did not use it up.
    ok = enroll(client, serial="KHI-0104", token=scoped, site_id="clifton-2")
    assert ok.status_code == 200, ok.text


def test_a_bad_csr_is_refused(client: TestClient, tech: dict[str, str]) -> None:
    value = token(client, tech)
    refused(enroll(client, serial="LHR-0200", token=value, csr_pem="not a csr"), 400, "bad_csr")
    refused(enroll(client, serial="LHR-0201", token=value, cn="someone-else"), 400, "bad_csr")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    r = enroll(client, serial="LHR-0202", token=value, key=rsa_key)
    refused(r, 400, "bad_csr")
    assert "P-256" in r.json()["detail"]["message"]
    refused(
        enroll(client, serial="X", token=value, node_id="fleet-server"), 400, "node_id_reserved"
    )
    # None of that consumed the token.
    assert enroll(client, serial="LHR-0203", token=value).status_code == 200


def test_csv_import_reports_node_ids_and_skips_bad_rows_then_preauthorized_nodes_enroll(
    client: TestClient, admin: dict[str, str]
) -> None:
    good_pem, good_sha = new_key(), new_key()
    escaped = public_pem(good_pem).replace("\n", "\\n")
    csv_text = "\n".join([
        "serial,public_key_pem,district,site_id,node_id",
        f'PRE-0001,"{escaped}",lahore-gulberg,gulberg-1,',
        f"PRE-0002,sha256:{key_fingerprint(good_sha.public_key())},,,pre-custom-2",
        "PRE-0003,not-a-key,,,",
        f"PRE-0001,sha256:{'0' * 64},,,",
        f"PRE-0004,sha256:{'0' * 64},,,admin",
    ])  # fmt: skip

    r = client.post(
        "/api/v1/preauthorized", content=csv_text,
        headers={**admin, "Content-Type": "text/csv"},
    )  # fmt: skip

    assert r.status_code == 200, r.text
    assert r.json()["created"] == ["pre-0001", "pre-custom-2"]
    skipped = {(s["serial"], s["reason"].split(":")[0]) for s in r.json()["skipped"]}
    assert skipped == {
        ("PRE-0003", "bad public key"),
        ("PRE-0001", "serial already preauthorized"),
        ("PRE-0004", "node_id_reserved"),
    }
    assert (
        client.get("/api/v1/nodes/pre-custom-2", headers=admin).json()["lifecycle"] == "registered"
    )

    ok = enroll(client, serial="PRE-0001", key=good_pem, node_id="pre-0001")
    assert ok.status_code == 200, ok.text
    refused(enroll(client, serial="PRE-0002", node_id="pre-custom-2"), 403, "key_mismatch")
    ok = enroll(client, serial="PRE-0002", key=good_sha, node_id="pre-custom-2")
    assert ok.status_code == 200, ok.text
    refused(enroll(client, serial="NOBODY-1"), 403, "serial_unknown")

    files = {"file": ("serials.csv", f"PRE-0010,sha256:{'1' * 64}\n", "text/csv")}
    r = client.post("/api/v1/preauthorized", files=files, headers=admin)
    assert r.json() == {"created": ["pre-0010"], "skipped": []}


def test_renewal_returns_a_new_certificate_for_the_same_key(
    client: TestClient, tech: dict[str, str], admin: dict[str, str]
) -> None:
    key = new_key()
    first = enroll(client, serial="REN-0001", key=key, token=token(client, tech)).json()

    r = client.post("/api/v1/enroll/renew", json={
        "certificate_pem": first["certificate_pem"],
        "csr_pem": csr_pem(key, cn="ren-0001", serial="REN-0001"),
    })  # fmt: skip

    assert r.status_code == 200, r.text
    old = x509.load_pem_x509_certificate(first["certificate_pem"].encode())
    new = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert new.serial_number != old.serial_number
    assert key_fingerprint(new) == key_fingerprint(old)
    assert new.subject == old.subject

    other = csr_pem(new_key(), cn="ren-0001", serial="REN-0001")
    r = client.post(
        "/api/v1/enroll/renew", json={"certificate_pem": first["certificate_pem"], "csr_pem": other}
    )
    refused(r, 403, "key_mismatch")  # fmt: skip

    r = client.post("/api/v1/nodes/ren-0001/revoke", json={"reason": "stolen"}, headers=admin)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["revoked"]) == sorted(
        [f"{old.serial_number:x}", f"{new.serial_number:x}"]
    )
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    assert runtime.pki is not None
    crl = x509.load_pem_x509_crl(runtime.pki.paths.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is not None
    r = client.post("/api/v1/enroll/renew", json={
        "certificate_pem": r.text and first["certificate_pem"],
        "csr_pem": csr_pem(key, cn="ren-0001", serial="REN-0001"),
    })  # fmt: skip
    refused(r, 403, "revoked")
    certs = client.get("/api/v1/certificates?node_id=ren-0001", headers=admin).json()
    assert certs["count"] == 2
    assert all(c["revoked_at"] for c in certs["data"])


def test_node_registration_and_lifecycle(
    client: TestClient, tech: dict[str, str], admin: dict[str, str]
) -> None:
    r = client.post("/api/v1/nodes", headers=tech, json={
        "node_id": "life-0001", "serial": "LIFE-0001", "site_id": "s1", "district": "d1",
        "location": {"lat": 31.5, "lon": 74.3},
    })  # fmt: skip
    assert r.status_code == 201
    assert r.json()["lifecycle"] == "registered"
    refused(client.post("/api/v1/nodes/life-0001/lifecycle", json={"to": "commissioned"},
                        headers=tech), 409, "illegal_transition")  # fmt: skip
    enrolled = enroll(client, serial="LIFE-0001", node_id="life-0001", token=token(client, tech))
    assert enrolled.status_code == 200, enrolled.text

    move = client.post("/api/v1/nodes/life-0001/lifecycle", json={"to": "commissioned"},
                       headers=tech)  # fmt: skip
    assert move.json()["lifecycle"] == "commissioned"
    refused(client.post("/api/v1/nodes/life-0001/lifecycle", json={"to": "active"}, headers=tech),
            403, "forbidden")  # fmt: skip
    move = client.post("/api/v1/nodes/life-0001/lifecycle", json={"to": "active"}, headers=admin)
    assert move.json()["lifecycle"] == "active"
    move = client.post("/api/v1/nodes/life-0001/lifecycle", json={"to": "decommissioned"},
                       headers=admin)  # fmt: skip
    assert move.json()["lifecycle"] == "decommissioned"
    certs = client.get("/api/v1/certificates?node_id=life-0001", headers=admin).json()["data"]
    assert certs
    assert all(c["revoked_at"] for c in certs)
    refused(enroll(client, serial="LIFE-0001", node_id="life-0001", token=token(client, tech)),
            403, "decommissioned")  # fmt: skip


def test_the_manual_accept_queue(tmp_path: Path) -> None:
    with make_client(tmp_path, enrollment_manual_accept=True) as c:
        admin = login(c, "admin", ADMIN_PW)
        key = new_key()
        first = enroll(c, serial="Q-0001", key=key)
        assert first.status_code == 202, first.text
        request_id = first.json()["request_id"]
        assert first.json()["reason"] == "pending_approval"
        # Asking again with the same key is the same request, not a second one.
        assert enroll(c, serial="Q-0001", key=key).json()["request_id"] == request_id
        assert c.get(f"/api/v1/enroll/{request_id}").status_code == 202
        pending = c.get("/api/v1/enrollment-requests?state=pending", headers=admin).json()
        assert [p["id"] for p in pending["data"]] == [request_id]

        assert (
            c.post(f"/api/v1/enrollment-requests/{request_id}/accept", headers=admin).json()[
                "state"
            ]
            == "accepted"
        )

        done = c.get(f"/api/v1/enroll/{request_id}")
        assert done.status_code == 200
        assert done.json()["node_id"] == "q-0001"

        other = enroll(c, serial="Q-0002").json()["request_id"]
        c.post(f"/api/v1/enrollment-requests/{other}/reject", json={"note": "not ours"},
               headers=admin)  # fmt: skip
        refused(c.get(f"/api/v1/enroll/{other}"), 403, "rejected")
        refused(c.post(f"/api/v1/enrollment-requests/{other}/accept", headers=admin), 409,
                "request_decided")  # fmt: skip


def test_enrollment_is_rate_limited_per_client_address(tmp_path: Path) -> None:
    with make_client(tmp_path, enroll_rate_per_min=3) as c:
        codes = [enroll(c, serial=f"RL-{i:04d}", token="nbet_x").status_code for i in range(4)]
        assert codes == [403, 403, 403, 429]
        refused(enroll(c, serial="RL-9999", token="nbet_y"), 429, "rate_limited")
