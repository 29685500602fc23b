"""The fuzzer, as a user of another district, finds no server error and no out-of-scope data.

Schemathesis reads the OpenAPI a real `nigehbaan server` serves (managed
Mosquitto and development PKI, as in test_server_openapi_fuzz) and sends
every operation a bounded number of generated requests with the token of an
*admin scoped to Clifton*, while the fleet also holds a node, an alert, a
power site and an enrollment token in Gulberg. Any 5xx fails, and so does
any answer that names a Gulberg object the request did not name itself.
Bounded and derandomized; the SSE feed is left out of the fuzz (it never
ends) and checked on its own: the replay and the live frames a Clifton client
gets over real HTTP hold no Gulberg alert.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from sqlmodel import Session

from fleet_server.alerting import load_policies
from fleet_server.db import make_engine
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Node, PowerSite, PowerState, utcnow
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PanicEvent
from simulators.server_process import ServerProcess

pytestmark = pytest.mark.broker

PASSWORD = "fuzz-admin-password"
# Routes not scoped yet (docs/access.md, "Not yet scoped"): their leaks make this test an
# expected failure that names them; a leak anywhere else fails it. None now.
NOT_YET_SCOPED: tuple[str, ...] = ()
MARKERS: set[str] = {"lhr-g-01", "Gulberg", "g-site"}
ALERTS: dict[str, str] = {}  # node id → its alert
ADMIN: dict[str, str] = {}  # the every-district admin's headers


@pytest.fixture(scope="module")
def outsider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    proc = ServerProcess(
        data_dir=tmp_path_factory.mktemp("scope-fuzz"),
        broker_url=None,
        extra_args=("--managed-broker", "--managed-broker-port", "0"),
        env={"NIGEHBAAN_MQTTS_PORT": "0", "FUZZ_PW": PASSWORD, "NIGEHBAAN_SSE_KEEPALIVE_S": "1"},
    )
    made = proc.run_cli("--create-admin", "fuzz-admin", "--password-env", "FUZZ_PW")
    assert made.returncode == 0, made.stderr
    proc.start(timeout=60)
    try:
        admin = {"Authorization": f"Bearer {proc.login('fuzz-admin', PASSWORD)}"}
        engine = make_engine(proc.db_url)
        with Session(engine, expire_on_commit=False) as session:
            for node_id, district, site in (
                ("lhr-g-01", "Gulberg", "g-site"),
                ("khi-c-01", "Clifton", "c-site"),
            ):
                session.add(
                    Node(node_id=node_id, district=district, site_id=site, lat=31.5, lon=74.3)
                )
                session.add(PowerState(node_id=node_id, ts=utcnow(), battery_soc=50.0))
                session.add(PowerSite(site_id=site, autonomy_target_h=30.0))
            session.commit()
            policies = load_policies(session=session, ack_timeout_s=120)
            for node_id in ("lhr-g-01", "khi-c-01"):
                press = PanicEvent(node_id=node_id, ts=utcnow(), event_id=new_event_id(), seq=1)
                envelopes, _ = decode_all([(topic_for(press), encode(press))])
                out = store_batch(
                    session=session, envelopes=envelopes, now=utcnow(), policies=policies
                )
                session.commit()
                ALERTS[node_id] = out.notices[0].alert.id
            MARKERS.add(ALERTS["lhr-g-01"])
        engine.dispose()
        ADMIN.update(admin)
        base = f"{proc.base_url}/api/v1"
        token = httpx.post(
            f"{base}/enrollment-tokens", json={"district": "Gulberg"}, headers=admin
        ).json()
        MARKERS.add(token["id"])
        user = {"username": "clifton-admin", "role": "admin", "password": PASSWORD}
        made_user = httpx.post(
            f"{base}/users", json={**user, "districts": ["Clifton"]}, headers=admin
        )
        assert made_user.status_code == 201, made_user.text
        yield proc, proc.login("clifton-admin", PASSWORD)
    finally:
        proc.stop()


def test_the_live_feed_gives_a_clifton_client_no_gulberg_alert_replayed_or_live(
    outsider: tuple[ServerProcess, str],
) -> None:
    proc, token = outsider
    base = f"{proc.base_url}/api/v1"
    seen: list[str] = []
    url = f"{base}/stream/alerts?since=2000-01-01T00:00:00.000000Z&access_token={token}"
    with httpx.stream("GET", url, timeout=httpx.Timeout(10.0)) as feed:
        lines = feed.iter_lines()

        def read_until(text: str) -> None:
            for line in lines:
                seen.append(line)
                if text in line:
                    return
            raise AssertionError(f"the feed ended before {text!r}")

        # The replay: Gulberg's alert was made first, so a leak would come before Clifton's.
        read_until(ALERTS["khi-c-01"])
        # Live: Gulberg's alert changes first, then Clifton's.
        for node_id in ("lhr-g-01", "khi-c-01"):
            moved = httpx.post(
                f"{base}/alerts/{ALERTS[node_id]}/transitions",
                json={"to": "acknowledged"},
                headers=ADMIN,
            )
            assert moved.status_code == 201, moved.text
        read_until('"state":"acknowledged"')
    text = "\n".join(seen)
    assert '"op":"sync"' in text
    assert ALERTS["lhr-g-01"] not in text
    assert "Gulberg" not in text


def _asked(case: schemathesis.Case[Any]) -> str:
    parts = (case.path_parameters, case.query, case.body, case.headers)
    return json.dumps([p for p in parts if p is not None], default=str)


@schemathesis.check
def no_out_of_scope_data(ctx: Any, response: Any, case: schemathesis.Case[Any]) -> bool | None:
    """No Gulberg node, alert, site or token in the answer, unless the request named it."""
    asked = _asked(case)
    leaked = sorted(m for m in MARKERS if m in response.text and m not in asked)
    if leaked:
        raise AssertionError(f"out-of-scope data {leaked} in {response.text[:300]}")
    return None


def _fuzz(operation: schemathesis.APIOperation[Any, Any, Any, Any], token: str) -> int:
    calls = 0

    @settings(
        max_examples=8,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case[Any]) -> None:
        nonlocal calls
        calls += 1
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"},
            checks=[not_a_server_error, no_out_of_scope_data],
            timeout=10,
        )

    run()
    return calls


def test_an_out_of_scope_admin_fuzzing_every_operation_gets_no_5xx_and_no_other_district(
    outsider: tuple[ServerProcess, str],
) -> None:
    proc, token = outsider
    schema = schemathesis.openapi.from_url(f"{proc.base_url}/openapi.json").exclude(
        path="/api/v1/stream/alerts"
    )
    failures: dict[str, str] = {}
    fuzzed = calls = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures[f"(unusable operation {fuzzed})"] = str(result.err())
            continue
        operation = result.ok()
        fuzzed += 1
        try:
            calls += _fuzz(operation, token)
        except (Exception, FailureGroup) as exc:  # one failure must not hide the others
            failures[operation.label] = str(exc)[:2000]
    print(f"scope fuzz: {fuzzed} operations, {calls} requests, markers {sorted(MARKERS)}")
    assert fuzzed > 30
    known = {k: v for k, v in failures.items() if any(p in k for p in NOT_YET_SCOPED)}
    others = {k: v for k, v in failures.items() if k not in known}
    assert not others, "\n\n".join(f"{label}:\n{text}" for label, text in others.items())
    if known:
        pytest.xfail(f"routes not scoped yet leak: {sorted(known)}")
