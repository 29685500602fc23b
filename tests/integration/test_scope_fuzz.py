"""The fuzzer, as a user of another district, finds no server error and no out-of-scope data.

Schemathesis reads the OpenAPI a real `nigehbaan server` serves (managed
Mosquitto and development PKI, as in test_server_openapi_fuzz) and sends
every operation a bounded number of generated requests with the token of an
*admin scoped to Clifton* and a fixed, valid stated purpose (`X-Purpose`, so
the purpose-gated routes answer rather than 428), while the fleet also holds
in Gulberg a node, an alert, a power site, an enrollment token, a watchlist
with a plate and a person entry, a plate read, a watchlist hit (and its
alert), privacy masks and a private camera. Any 5xx fails, and so does any
answer that names a Gulberg object the request did not name itself.
Bounded and derandomized; the SSE feed is left out of the fuzz (it never
ends) and checked on its own: the replay and the live frames a Clifton client
gets over real HTTP hold no Gulberg alert.
"""

from __future__ import annotations

import json
import time
from collections import Counter
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
from proto.messages import PanicEvent, PlateEvent, WatchlistHitEvent
from simulators.server_process import ServerProcess

pytestmark = pytest.mark.broker

PASSWORD = "fuzz-admin-password"
# Routes not scoped yet (docs/access.md, "Not yet scoped"): their leaks make this test an
# expected failure that names them; a leak anywhere else fails it. None now.
NOT_YET_SCOPED: tuple[str, ...] = ()
PURPOSE = {"X-Purpose": "case:FUZZ-2026-1"}  # valid, so purpose-gated routes really answer
GULBERG_LIST, GULBERG_PLATE, GULBERG_READ = "g-stolen-cars", "LEG4242", "LEQ7171"
GULBERG_OWNER, GULBERG_AGREEMENT = "Gulberg Galleria Plaza", "G-AGR-2026-7"
GULBERG_MASK_REASON = "Gulberg school yard"
MARKERS: set[str] = {
    "lhr-g-01", "Gulberg", "g-site", GULBERG_LIST, GULBERG_PLATE, GULBERG_READ, GULBERG_OWNER,
    GULBERG_AGREEMENT, GULBERG_MASK_REASON, "G-NOTE-CAR", "G-NOTE-PERSON",
}  # fmt: skip
ALERTS: dict[str, str] = {}  # node id → its alert
ADMIN: dict[str, str] = {}  # the every-district admin's headers
STATUSES: Counter[tuple[str, int]] = Counter()  # (operation, status) → answers
# Purpose-gated reads that must answer (200), not only refuse, for the fuzz to reach them.
GATED_READS = ("GET /api/v1/watchlists", "GET /api/v1/plate-reads", "GET /api/v1/watchlist-hits")


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
            for node_id in ("lhr-g-01", "khi-c-01"):
                press = PanicEvent(node_id=node_id, ts=utcnow(), event_id=new_event_id(), seq=1)
                ALERTS[node_id] = _ingest(session, press).notices[0].alert.id
            MARKERS.add(ALERTS["lhr-g-01"])
            ADMIN.update(admin)
            base = f"{proc.base_url}/api/v1"
            token = httpx.post(
                f"{base}/enrollment-tokens", json={"district": "Gulberg"}, headers=admin
            ).json()
            MARKERS.add(token["id"])
            MARKERS.update(_seed_lists(session, base, admin))
        engine.dispose()
        user = {"username": "clifton-admin", "role": "admin", "password": PASSWORD}
        made_user = httpx.post(
            f"{base}/users", json={**user, "districts": ["Clifton"]}, headers=admin
        )
        assert made_user.status_code == 201, made_user.text
        yield proc, proc.login("clifton-admin", PASSWORD)
    finally:
        proc.stop()


def _ingest(session: Session, event: Any) -> Any:
    envelopes, _ = decode_all([(topic_for(event), encode(event))])
    policies = load_policies(session=session, ack_timeout_s=120)
    out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
    session.commit()
    return out


def _seed_lists(session: Session, base: str, admin: dict[str, str]) -> set[str]:
    """Gulberg's watchlist (plate and person entries), a plate read and a hit on lhr-g-01,
    masks on its camera and a private camera beside it; their ids as markers."""
    made = httpx.post(f"{base}/watchlists", headers=admin, json={
        "name": GULBERG_LIST, "category": "stolen_vehicle", "purpose": "stolen cars, Gulberg",
        "owner_agency": "Punjab Police", "districts": ["Gulberg"],
        "expires_at": "2099-01-01T00:00:00Z",
    })  # fmt: skip
    assert made.status_code == 201, made.text
    url = f"{base}/watchlists/{GULBERG_LIST}/entries"
    plate = httpx.post(url, headers=admin, json={"plate": GULBERG_PLATE, "note": "G-NOTE-CAR"})
    person = httpx.post(url, headers=admin, json={"kind": "person", "note": "G-NOTE-PERSON"})
    assert (plate.status_code, person.status_code) == (201, 201), (plate.text, person.text)
    read = PlateEvent(
        node_id="lhr-g-01", ts=utcnow(), event_id=new_event_id(), seq=2, camera_id="gate",
        track_id="t2", plate=GULBERG_READ, confidence=0.9, frames=3,
    )  # fmt: skip
    _ingest(session, read)
    hit = WatchlistHitEvent(
        node_id="lhr-g-01", ts=utcnow(), event_id=new_event_id(), seq=3,
        watchlist_id=GULBERG_LIST, watchlist_version=2, entry_id=plate.json()["id"].lower(),
        match="exact", camera_id="gate", track_id="t3", plate=GULBERG_PLATE,
        listed=GULBERG_PLATE, confidence=0.9, frames=4,
    )  # fmt: skip
    hit_alert = _ingest(session, hit).notices[0].alert.id
    masks = httpx.put(
        f"{base}/privacy/nodes/lhr-g-01/cameras/gate/masks", headers=admin,
        json={"masks": [[[0, 0], [0.5, 0], [0.5, 0.5]]], "reason": GULBERG_MASK_REASON},
    )  # fmt: skip
    private = httpx.put(
        f"{base}/privacy/nodes/lhr-g-01/cameras/lobby/private", headers=admin, json={
            "owner": GULBERG_OWNER, "agreement": GULBERG_AGREEMENT,
            "expires_at": "2099-01-01T00:00:00Z", "allow": ["plates"],
            "reason": "plaza gate camera",
        },
    )  # fmt: skip
    assert (masks.status_code, private.status_code) == (200, 200), (masks.text, private.text)
    # The seeding is real: the every-district admin sees it all with a purpose.
    seen = {
        path: httpx.get(f"{base}{path}", headers={**admin, **PURPOSE}).text
        for path in ("/watchlists", "/plate-reads", "/watchlist-hits", "/privacy/private-cameras")
    }
    assert GULBERG_LIST in seen["/watchlists"]
    assert GULBERG_READ in seen["/plate-reads"]
    assert hit.event_id in seen["/watchlist-hits"]
    assert GULBERG_OWNER in seen["/privacy/private-cameras"]
    return {plate.json()["id"], person.json()["id"], read.event_id, hit.event_id, hit_alert}


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
        answer = case.call_and_validate(
            headers={"Authorization": f"Bearer {token}", **PURPOSE},
            checks=[not_a_server_error, no_out_of_scope_data],
            timeout=10,
        )
        STATUSES[(operation.label, answer.status_code)] += 1

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
    started = time.monotonic()
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
    took = time.monotonic() - started
    refused = sum(n for (_, code), n in STATUSES.items() if code == 428)
    print(
        f"scope fuzz: {fuzzed} operations, {calls} requests in {took:.1f} s, {refused} answered"
        f" 428, statuses {sorted(Counter(c for (_, c) in STATUSES.elements()).items())},"
        f" markers {sorted(MARKERS)}"
    )
    assert fuzzed > 30
    known = {k: v for k, v in failures.items() if any(p in k for p in NOT_YET_SCOPED)}
    others = {k: v for k, v in failures.items() if k not in known}
    assert not others, "\n\n".join(f"{label}:\n{text}" for label, text in others.items())
    for label in GATED_READS:  # the stated purpose got them past the gate
        assert STATUSES[(label, 200)] > 0, f"{label}: {sorted(STATUSES.items())}"
    if known:
        pytest.xfail(f"routes not scoped yet leak: {sorted(known)}")
