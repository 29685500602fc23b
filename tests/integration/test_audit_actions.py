"""Every security-relevant action leaves its audit record, and auditors can read and export them.

One server in-process (TestClient, SQLite, development PKI so checkpoints
are signed, no broker). Each story does the action through the API the way a
user would and finds the record: who, what, on which object. The chain
verifies at the end of the module, checkpoints included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.broker import ManagedBroker
from fleet_server.models import Role, UserCreate
from fleet_server.models.audit import AuditCheckpoint, AuditRecord
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from tests.support.api import make_alert
from tests.support.pki import csr_pem, new_key

API = "/api/v1"
PASSWORDS = {"admin": "admin-pw-for-audit", "tech": "tech-pw-for-audit",
             "op": "op-pw-for-audit", "aud": "aud-pw-for-audit"}  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        env="dev", data_dir=tmp_path_factory.mktemp("audit-actions"), broker_url=None,
        admin_password=PASSWORDS["admin"], secret_key="audit-test-secret-key-long-enough",
        enrollment_manual_accept=True, enroll_rate_per_min=1000,
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        with Session(runtime(c).engine) as session:
            for name, role in (("tech", Role.TECHNICIAN), ("op", Role.OPERATOR),
                               ("aud", Role.AUDITOR)):  # fmt: skip
                create_user(
                    session=session,
                    user_in=UserCreate(username=name, role=role, password=PASSWORDS[name]),
                )
        yield c


def runtime(client: TestClient) -> Runtime:
    value: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return value


_AUTH: dict[str, dict[str, str]] = {}


def auth(client: TestClient, user: str) -> dict[str, str]:
    if user not in _AUTH:
        r = client.post(
            f"{API}/login/access-token", data={"username": user, "password": PASSWORDS[user]}
        )
        assert r.status_code == 200, r.text
        _AUTH[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    return _AUTH[user]


def records(client: TestClient, **where: str) -> list[AuditRecord]:
    """Records matching every `field=value`, oldest first."""
    with Session(runtime(client).engine) as session:
        query = select(AuditRecord).order_by(col(AuditRecord.seq))
        for name, value in where.items():
            query = query.where(getattr(AuditRecord, name) == value)
        return list(session.exec(query).all())


def last(client: TestClient, **where: str) -> AuditRecord:
    found = records(client, **where)
    assert found, f"no audit record with {where}"
    return found[-1]


def test_the_settings_in_effect_are_recorded_at_start_without_secrets(client: TestClient) -> None:
    row = last(client, action="server.started")
    assert (row.actor, row.object) == ("system", "server:settings")
    settings = row.detail["settings"]
    assert settings["enrollment_manual_accept"] is True
    assert settings["secret_key"] == "set"
    assert "audit-test-secret" not in json.dumps(row.detail)
    assert PASSWORDS["admin"] not in json.dumps(row.detail)


def test_a_checkpoint_is_signed_at_start(client: TestClient) -> None:
    with Session(runtime(client).engine) as session:
        assert session.exec(select(AuditCheckpoint)).first() is not None


def test_users_made_at_start_and_by_code_are_recorded(client: TestClient) -> None:
    assert last(client, action="user.created", object="user:admin").actor == "system"
    assert last(client, action="user.created", object="user:aud").detail["role"] == "auditor"


def test_a_sign_in_is_recorded(client: TestClient) -> None:
    auth(client, "op")
    row = last(client, action="login.succeeded", object="user:op")
    assert row.actor == "user:op"
    assert row.detail["address"]


def test_a_failed_sign_in_is_recorded(client: TestClient) -> None:
    r = client.post(f"{API}/login/access-token", data={"username": "op", "password": "wrong!"})
    assert r.status_code == 401
    row = last(client, action="login.failed", object="user:op")
    assert row.actor == "anonymous"
    assert "wrong!" not in json.dumps(row.detail)
    r = client.post(f"{API}/login/access-token", data={"username": "nobody", "password": "x"})
    assert last(client, action="login.failed").object == "user:nobody"


def test_an_admin_creating_a_user_is_recorded(client: TestClient) -> None:
    body = {"username": "carol", "role": "operator", "password": "carol-pw-123"}
    r = client.post(f"{API}/users", headers=auth(client, "admin"), json=body)
    assert r.status_code == 201, r.text
    row = last(client, action="user.created", object="user:carol")
    assert row.actor == "user:admin"
    assert "carol-pw-123" not in json.dumps(row.detail)


def test_a_role_change_and_a_password_reset_are_recorded(client: TestClient) -> None:
    admin = auth(client, "admin")
    users = client.get(f"{API}/users", headers=admin).json()["data"]
    carol = next(u for u in users if u["username"] == "carol")
    r = client.patch(f"{API}/users/{carol['id']}", json={"role": "technician"}, headers=admin)
    assert r.status_code == 200, r.text
    row = last(client, action="user.changed", object="user:carol")
    assert (row.actor, row.detail["role"]) == ("user:admin", ["operator", "technician"])
    r = client.post(f"{API}/users/{carol['id']}/password", json={"password": "new-pw-4567"},
                    headers=admin)  # fmt: skip
    assert r.status_code in (200, 204), r.text
    assert last(client, action="user.password_reset", object="user:carol").actor == "user:admin"


def test_a_user_made_on_the_command_line_is_recorded(tmp_path: Path) -> None:
    env = {**os.environ, "NEW_PW": "cli-made-pw-123"}
    made = subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "server", "--data-dir", str(tmp_path),
         "--create-user", "dave", "--role", "auditor", "--password-env", "NEW_PW"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    from fleet_server.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    try:
        with Session(engine) as session:
            row = session.exec(
                select(AuditRecord).where(AuditRecord.action == "user.created")
            ).one()
    finally:
        engine.dispose()
    assert row.object == "user:dave"
    assert row.actor.startswith("cli")
    assert row.detail["role"] == "auditor"


def test_enrollment_tokens_made_and_withdrawn_are_recorded(client: TestClient) -> None:
    tech = auth(client, "tech")
    r = client.post(f"{API}/enrollment-tokens", json={"district": "lahore"}, headers=tech)
    assert r.status_code == 201, r.text
    token_id = r.json()["id"]
    made = last(client, action="enrollment.token_created", object=f"enrollment-token:{token_id}")
    assert made.actor == "user:tech"
    assert r.json()["token"] not in json.dumps(made.detail)
    r = client.delete(f"{API}/enrollment-tokens/{token_id}", headers=tech)
    assert r.status_code == 200, r.text
    withdrawn = last(client, action="enrollment.token_revoked")
    assert (withdrawn.actor, withdrawn.object) == ("user:tech", f"enrollment-token:{token_id}")


def enroll(client: TestClient, serial: str, **body: Any) -> Any:
    key = new_key()
    return client.post(f"{API}/enroll", json={
        "serial": serial, "csr_pem": csr_pem(key, cn=serial.lower(), serial=serial), **body,
    })  # fmt: skip


def test_an_enrollment_with_a_token_is_recorded(client: TestClient) -> None:
    value = client.post(f"{API}/enrollment-tokens", json={"district": "lahore"},
                        headers=auth(client, "tech")).json()["token"]  # fmt: skip
    r = enroll(client, "AUD-0001", token=value)
    assert r.status_code == 200, r.text
    row = last(client, action="enrollment.accepted", object="node:aud-0001")
    assert row.actor == "node:aud-0001"
    assert row.detail["via"] == "token"
    assert value not in json.dumps(row.detail)


def test_a_refused_enrollment_is_recorded(client: TestClient) -> None:
    r = enroll(client, "AUD-0002", token="nbet_not-a-real-token")
    assert r.status_code == 403, r.text
    row = last(client, action="enrollment.refused")
    assert row.actor == "serial:AUD-0002"
    assert row.detail["reason"] == "token_unknown"
    assert "not-a-real-token" not in json.dumps(row.detail)


def test_the_accept_queue_decisions_are_recorded(client: TestClient) -> None:
    admin = auth(client, "admin")
    queued = enroll(client, "AUD-0003")
    assert queued.status_code == 202, queued.text
    request_id = queued.json()["request_id"]
    assert last(client, action="enrollment.queued").object == f"enrollment-request:{request_id}"
    r = client.post(f"{API}/enrollment-requests/{request_id}/accept", headers=admin)
    assert r.status_code == 200, r.text
    row = last(client, action="enrollment.accepted", object="node:aud-0003")
    assert (row.actor, row.detail["via"]) == ("user:admin", "manual")
    other = enroll(client, "AUD-0004").json()["request_id"]
    client.post(f"{API}/enrollment-requests/{other}/reject", json={"note": "not ours"},
                headers=admin)  # fmt: skip
    row = last(client, action="enrollment.rejected")
    assert (row.actor, row.object) == ("user:admin", f"enrollment-request:{other}")
    assert row.detail["note"] == "not ours"


def test_registration_lifecycle_and_revocation_of_a_node_are_recorded(client: TestClient) -> None:
    admin = auth(client, "admin")
    body = {"node_id": "aud-life-1", "serial": "AUD-LIFE-1", "district": "lahore"}
    r = client.post(f"{API}/nodes", headers=auth(client, "tech"), json=body)
    assert r.status_code == 201, r.text
    assert last(client, action="node.registered", object="node:aud-life-1").actor == "user:tech"
    r = client.post(f"{API}/nodes/aud-0001/revoke", json={"reason": "stolen"}, headers=admin)
    assert r.status_code == 200, r.text
    row = last(client, action="node.revoked", object="node:aud-0001")
    assert row.actor == "user:admin"
    assert row.detail["reason"] == "stolen"
    assert len(row.detail["revoked"]) == 1
    r = client.post(f"{API}/nodes/aud-0003/lifecycle", json={"to": "decommissioned"},
                    headers=admin)  # fmt: skip
    assert r.status_code == 200, r.text
    row = last(client, action="node.lifecycle_changed", object="node:aud-0003")
    assert row.detail["to"] == "decommissioned"


def test_an_alert_transition_is_recorded(client: TestClient) -> None:
    alert_id = make_alert(client, node="aud-alert-01")
    r = client.post(f"{API}/alerts/{alert_id}/transitions", json={"to": "acknowledged"},
                    headers=auth(client, "op"))  # fmt: skip
    assert r.status_code == 201, r.text
    row = last(client, action="alert.transition", object=f"alert:{alert_id}")
    assert row.actor == "user:op"
    assert (row.detail["from"], row.detail["to"]) == ("new", "acknowledged")


def test_an_escalation_policy_change_is_recorded(client: TestClient) -> None:
    admin = auth(client, "admin")
    body = {"alert_type": "tamper", "levels": [{"after_s": 0, "recipient": "zone-ops"}]}
    r = client.put(f"{API}/escalation-policies/tamper-audit", json=body, headers=admin)
    assert r.status_code in (200, 201), r.text
    row = last(client, object="escalation-policy:tamper-audit")
    assert row.actor == "user:admin"
    assert row.action == "escalation_policy.created"
    assert row.detail["after"]["levels"][0]["recipient"] == "zone-ops"


def test_api_tokens_issued_and_revoked_are_recorded(client: TestClient) -> None:
    admin = auth(client, "admin")
    body = {"name": "ctd-cases", "agency": "CTD", "role": "auditor", "districts": ["lahore"]}
    r = client.post(f"{API}/api-tokens", json=body, headers=admin)
    assert r.status_code == 201, r.text
    token_id, secret = r.json()["id"], r.json()["token"]
    row = last(client, action="api_token.issued", object=f"api-token:{token_id}")
    assert (row.actor, row.detail["agency"]) == ("user:admin", "CTD")
    assert secret not in json.dumps(row.detail)
    r = client.post(f"{API}/api-tokens/{token_id}/revoke", headers=admin)
    assert r.status_code == 200, r.text
    assert last(client, action="api_token.revoked").object == f"api-token:{token_id}"


def test_ota_artifacts_and_campaigns_are_recorded(client: TestClient) -> None:
    from fleet_server.models import Node

    admin = auth(client, "admin")
    with Session(runtime(client).engine) as session:
        session.add(Node(node_id="aud-ota-1", lifecycle="active", hardware="sim", district="ota-d"))
        session.commit()
    r = client.post(
        f"{API}/ota/artifacts", headers=admin,
        data={"kind": "app", "name": "agent", "version": "1.0.0", "hardware": "sim"},
        files={"file": ("agent.tar", b"agent bytes" * 100, "application/octet-stream")},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    artifact_id = r.json()["id"]
    uploaded = last(client, action="ota.artifact_uploaded", object=f"ota-artifact:{artifact_id}")
    assert (uploaded.actor, uploaded.detail["sha256"]) == ("user:admin", r.json()["sha256"])
    body = {"name": "audit", "artifact_id": artifact_id, "target": {"districts": ["ota-d"]}}
    r = client.post(f"{API}/ota/campaigns", json=body, headers=admin)
    assert r.status_code == 201, r.text
    campaign = f"ota-campaign:{r.json()['id']}"
    for step in ("pause", "resume", "abort"):
        done = client.post(f"{API}/ota/campaigns/{r.json()['id']}/{step}", headers=admin)
        assert done.status_code == 200, done.text
    actions = [row.action for row in records(client, object=campaign)]
    assert actions == [
        "ota.campaign_created", "ota.campaign_paused", "ota.campaign_resumed",
        "ota.campaign_aborted",
    ]  # fmt: skip
    assert last(client, object=campaign).actor == "user:admin"


def test_auditors_read_filter_and_export_and_no_one_writes(client: TestClient) -> None:
    aud = auth(client, "aud")
    client.post(f"{API}/login/access-token", data={"username": "aud", "password": "wrong!"})
    page = client.get(f"{API}/audit/records", params={"action": "login."}, headers=aud)
    assert page.status_code == 200, page.text
    assert page.json()["count"] >= 2
    assert {r["action"] for r in page.json()["data"]} <= {
        "login.succeeded", "login.failed", "login.blocked",
    }  # fmt: skip
    mine = client.get(f"{API}/audit/records", params={"actor": "user:tech"}, headers=aud).json()
    assert mine["count"] >= 1
    assert all(r["actor"] == "user:tech" for r in mine["data"])
    first = page.json()["data"][-1]
    where = {"since": first["at"], "object": first["object"]}
    ranged = client.get(f"{API}/audit/records", headers=aud, params=where).json()
    assert first["seq"] in [r["seq"] for r in ranged["data"]]
    assert all(r["at"] >= first["at"] for r in ranged["data"])
    assert client.get(f"{API}/audit/records", headers=auth(client, "op")).status_code == 403
    exported = client.get(f"{API}/audit/export", params={"format": "csv"}, headers=aud)
    assert exported.status_code == 200
    assert exported.text.startswith("seq,at,actor,action,object,detail,prev_hash,hash\n")
    assert "attachment" in exported.headers["content-disposition"]
    full = client.get(f"{API}/audit/export", headers=aud).json()
    assert full["partial"] is False
    assert full["checkpoints"]
    for method in ("post", "put", "patch", "delete"):
        answer = getattr(client, method)(f"{API}/audit/records", headers=auth(client, "admin"))
        assert answer.status_code == 405


def test_the_whole_chain_verifies_with_its_checkpoints(client: TestClient) -> None:
    verdict = client.get(f"{API}/audit/verify", headers=auth(client, "aud")).json()
    assert verdict["ok"], verdict
    assert verdict["checkpoints"] >= 1
    assert verdict["note"] is None  # checked against the server's CA


def test_a_sign_in_refused_by_the_rate_limit_is_recorded(tmp_path: Path) -> None:
    settings = Settings(
        env="dev", data_dir=tmp_path, broker_url=None, admin_password=PASSWORDS["admin"],
        secret_key="audit-test-secret-key-long-enough", login_account_burst=1,
        login_account_per_min=0.01,
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        form = {"username": "admin", "password": "wrong-guess"}
        assert c.post(f"{API}/login/access-token", data=form).status_code == 401
        for _ in range(3):  # hammering a closed door is one record per wait
            assert c.post(f"{API}/login/access-token", data=form).status_code == 429
        blocked = records(c, action="login.blocked", object="user:admin")
    assert len(blocked) == 1
    assert (blocked[0].actor, blocked[0].detail["limit"]) == ("anonymous", "account")


def test_a_command_sent_to_a_node_is_recorded(broker: ManagedBroker, tmp_path: Path) -> None:
    from fleet_server.models import Node

    settings = Settings(
        env="dev", data_dir=tmp_path, broker_url=broker.url, admin_password=PASSWORDS["admin"],
        secret_key="audit-test-secret-key-long-enough", mqtt_client_id="audit-cmd-test",
    )  # fmt: skip
    with TestClient(create_app(settings)) as c:
        with Session(runtime(c).engine) as session:
            session.add(Node(node_id="aud-cmd-1", lifecycle="active"))
            session.commit()
        r = c.post(f"{API}/login/access-token",
                   data={"username": "admin", "password": PASSWORDS["admin"]})  # fmt: skip
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        body = {"name": "test_mode", "args": {"enabled": True}}
        sent = c.post(f"{API}/nodes/aud-cmd-1/commands", json=body, headers=admin)
        assert sent.status_code in (200, 201, 202), sent.text
        row = last(c, action="node.command_sent", object="node:aud-cmd-1")
    assert row.actor == "user:admin"
    assert (row.detail["command"], row.detail["args"]) == ("test_mode", {"enabled": True})
    assert row.detail["request_id"] == sent.json()["request_id"]


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2026-01-01T00:00:00"},  # no zone: UTC, as the page sends it
        {"until": "2026-01-01"},
        {"since": "0001-01-01T00:00:00+14:00"},  # before the first datetime in UTC
        {"until": "9999-12-31T23:59:59-14:00"},  # after the last
    ],
)
def test_any_time_an_auditor_can_type_is_a_filter_not_a_server_error(
    client: TestClient, query: dict[str, str]
) -> None:
    aud = auth(client, "aud")
    assert client.get(f"{API}/audit/records", params=query, headers=aud).status_code == 200
    exported = client.get(f"{API}/audit/export", params={**query, "format": "csv"}, headers=aud)
    assert exported.status_code == 200
    huge = client.get(f"{API}/audit/records", params={"offset": 10**30}, headers=aud)
    assert huge.status_code == 422
