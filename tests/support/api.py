"""The fleet server's API in-process (TestClient), signed in, with alerts to act on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.alerting import load_policies
from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Role, UserCreate, utcnow
from fleet_server.runtime import Runtime
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PanicEvent

API = "/api/v1"
PASSWORDS = {"admin": "admin-password", "op": "operator-pw", "audit": "auditor-pw"}
_TOKENS: dict[tuple[int, str], dict[str, str]] = {}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app per module: argon2 makes users and logins deliberately slow."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("server-api"),
        broker_url=None,
        admin_username="admin",
        admin_password=PASSWORDS["admin"],
        secret_key="test-secret-key-that-is-long-enough",
    )
    with TestClient(create_app(settings)) as test_client:
        runtime = runtime_of(test_client)
        with Session(runtime.engine) as session:
            for name, role in (("op", Role.OPERATOR), ("audit", Role.AUDITOR)):
                create_user(
                    session=session,
                    user_in=UserCreate(username=name, role=role, password=PASSWORDS[name]),
                )
        yield test_client


def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def login(client: TestClient, user: str) -> dict[str, str]:
    key = (id(client), user)
    if key in _TOKENS:
        return _TOKENS[key]
    response = client.post(
        f"{API}/login/access-token", data={"username": user, "password": PASSWORDS[user]}
    )
    assert response.status_code == 200, response.text
    _TOKENS[key] = {"Authorization": f"Bearer {response.json()['access_token']}"}
    return _TOKENS[key]


def make_alert(client: TestClient, node: str = "lhr-api-01") -> str:
    press = PanicEvent(node_id=node, ts=utcnow(), event_id=new_event_id(), seq=1)
    envelopes, _ = decode_all([(topic_for(press), encode(press))])
    with Session(runtime_of(client).engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()
    return out.notices[0].alert.id
