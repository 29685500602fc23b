"""Where a deployment wants no approver, an export is ready at once (and still audited)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from fleet_server.app import create_app
from fleet_server.evidence.store import LocalEvidenceStore
from fleet_server.models import utcnow
from fleet_server.models.audit import AuditRecord
from fleet_server.models.evidence import EvidenceItem
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from tests.support.api import PASSWORDS, login, make_alert

API = "/api/v1"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("evidence-policy"), broker_url=None,
        admin_username="admin", admin_password=PASSWORDS["admin"],
        secret_key="test-secret-key-that-is-long-enough", evidence_export_approval=False,
    )  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_without_the_approval_policy_the_requester_downloads_at_once(client: TestClient) -> None:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    alert_id = make_alert(client, node="lhr-pol-01")
    data = b"\xff\xd8policy\xff\xd9"
    sha = hashlib.sha256(data).hexdigest()
    store = LocalEvidenceStore(runtime.settings.data_dir.resolve() / "evidence")
    store.append(sha, 0, data, size=len(data))
    store.finish(sha, size=len(data))
    with Session(runtime.engine) as session:
        session.add(EvidenceItem(
            sha256=sha, data_class="panic_snapshot", node_id="lhr-pol-01", alert_id=alert_id,
            captured_at=utcnow(), size=len(data), content_type="image/jpeg", claim={},
            signature="s" * 8, cert_serial="1", cert_pem="", state="stored",
        ))  # fmt: skip
        session.commit()
    admin = login(client, "admin")
    made = client.post(
        f"{API}/evidence/exports", json={"subject": f"alert:{alert_id}"},
        headers={**admin, "X-Purpose": "case:POL-1"},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["state"] == "approved"
    bundle = client.get(f"{API}/evidence/exports/{made.json()['id']}/bundle", headers=admin)
    assert bundle.status_code == 200, bundle.text
    assert bundle.headers["content-type"] == "application/zip"
    with Session(runtime.engine) as session:
        actions = session.exec(
            select(AuditRecord.action).where(
                col(AuditRecord.object) == f"export:{made.json()['id']}"
            )
        ).all()
    assert list(actions) == ["evidence.export_requested", "evidence.exported"]
