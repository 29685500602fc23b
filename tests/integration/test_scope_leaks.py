"""An out-of-scope user gets nothing: every route, counts, the live feed's replay (docs/access.md).

One fleet with nodes and alerts in Gulberg and Model Town (Lahore), Clifton
(Karachi) and one node with no district. Users from Clifton — an operator, a
technician and even an admin — call every route of the app with the Lahore
objects' ids; no answer may name a Lahore node, alert, site or district, nor
Gulberg's watchlist (a plate and a person entry), plate read, watchlist hit,
privacy masks or private camera (all made through the API and ingest paths
the feature tests use), no count may include them, and mutations answer 404 (or 403 where the route
refuses out-of-scope input) and change nothing. In-scope users see their
own (so the checks are not vacuous).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.alerting import load_policies
from fleet_server.api.scope import SCOPE_FREE_PREFIXES, SCOPE_FREE_ROUTES
from fleet_server.app import create_app
from fleet_server.auth import create_user
from fleet_server.feed_replay import replay_frames
from fleet_server.ingest import decode_all, store_batch
from fleet_server.models import Alert, Node, PowerSite, PowerState, Role, UserCreate, utcnow
from fleet_server.models.evidence import (
    EvidenceCase,
    EvidenceCaseItem,
    EvidenceExport,
    EvidenceItem,
)
from fleet_server.runtime import Runtime
from fleet_server.scope import Scope
from fleet_server.settings import Settings
from proto.codec import encode, topic_for
from proto.ids import new_event_id
from proto.messages import PanicEvent, PlateEvent, WatchlistHitEvent

API = "/api/v1"
PASSWORD = "scope-test-password"
T_PAST = "2000-01-01T00:00:00.000000Z"

NODES = {
    "lhr-g-01": ("Gulberg", "g-site"),
    "lhr-m-01": ("Model Town", "m-site"),
    "khi-c-01": ("Clifton", "c-site"),
    "nowhere-01": (None, None),
}
USERS = {
    "gulberg_op": (Role.OPERATOR, ["Gulberg"]),
    "lahore_duty": (Role.OPERATOR, ["Gulberg", "Model Town"]),
    "clifton_op": (Role.OPERATOR, ["Clifton"]),
    "clifton_tech": (Role.TECHNICIAN, ["Clifton"]),
    "clifton_admin": (Role.ADMIN, ["Clifton"]),
    "hq": (Role.OPERATOR, None),
}
OUTSIDERS = ("clifton_op", "clifton_tech", "clifton_admin")
# Routes whose modules are not scoped yet (docs/access.md, "Not yet scoped"): their leak
# checks are expected to fail until scoped. None now: the console's fleet pages are scoped.
NOT_YET_SCOPED: tuple[str, ...] = ()


@dataclass
class World:
    client: TestClient
    runtime: Runtime
    alerts: dict[str, str]  # node id → alert id
    tokens: dict[str, dict[str, str]]
    enrollment_token_id: str
    evidence: dict[str, str] = field(default_factory=dict)  # Gulberg's evidence objects
    lists: dict[str, str] = field(default_factory=dict)  # Gulberg's watchlist, hit, reads
    more: dict[str, set[str]] = field(default_factory=dict)  # node → its other markers

    def markers(self, *nodes: str) -> set[str]:
        """Strings that must never appear in an answer to someone outside `nodes`' districts."""
        out: set[str] = set()
        for node in nodes:
            district, site = NODES[node]
            out |= {node, self.alerts[node]} | self.more.get(node, set())
            out |= {x for x in (district, site) if x is not None}
        return out


def _ingest(runtime: Runtime, event: Any) -> Any:
    envelopes, _ = decode_all([(topic_for(event), encode(event))])
    with Session(runtime.engine, expire_on_commit=False) as session:
        policies = load_policies(session=session, ack_timeout_s=120)
        out = store_batch(session=session, envelopes=envelopes, now=utcnow(), policies=policies)
        session.commit()
    return out


def _press(runtime: Runtime, node: str) -> str:
    press = PanicEvent(node_id=node, ts=utcnow(), event_id=new_event_id(), seq=1)
    return str(_ingest(runtime, press).notices[0].alert.id)


GULBERG_LIST = "g-stolen-cars"
GULBERG_PLATE = "LEG4242"  # listed, read and hit in Gulberg
GULBERG_READ = "LEQ7171"  # read in Gulberg, not listed
GULBERG_OWNER = "Gulberg Galleria Plaza"
GULBERG_AGREEMENT = "G-AGR-2026-7"
GULBERG_MASK_REASON = "Gulberg school yard"


def _lists(client: TestClient, runtime: Runtime, admin: dict[str, str]) -> dict[str, str]:
    """Gulberg's watchlist (a plate and a person entry), a plate read and a watchlist hit on
    lhr-g-01's camera `gate`, masks on that camera and a private camera `lobby` beside it."""
    made = client.post(f"{API}/watchlists", headers=admin, json={
        "name": GULBERG_LIST, "category": "stolen_vehicle", "purpose": "stolen cars, Gulberg",
        "owner_agency": "Punjab Police", "districts": ["Gulberg"],
        "expires_at": "2099-01-01T00:00:00Z",
    })  # fmt: skip
    assert made.status_code == 201, made.text
    url = f"{API}/watchlists/{GULBERG_LIST}/entries"
    plate = client.post(url, headers=admin, json={"plate": GULBERG_PLATE, "note": "G-NOTE-CAR"})
    person = client.post(url, headers=admin, json={"kind": "person", "note": "G-NOTE-PERSON"})
    assert (plate.status_code, person.status_code) == (201, 201), (plate.text, person.text)
    read = PlateEvent(
        node_id="lhr-g-01", ts=utcnow(), event_id=new_event_id(), seq=2, camera_id="gate",
        track_id="t2", plate=GULBERG_READ, confidence=0.9, frames=3,
    )  # fmt: skip
    _ingest(runtime, read)
    hit = WatchlistHitEvent(
        node_id="lhr-g-01", ts=utcnow(), event_id=new_event_id(), seq=3,
        watchlist_id=GULBERG_LIST, watchlist_version=2, entry_id=plate.json()["id"].lower(),
        match="exact", camera_id="gate", track_id="t3", plate=GULBERG_PLATE,
        listed=GULBERG_PLATE, confidence=0.9, frames=4,
    )  # fmt: skip
    hit_alert = _ingest(runtime, hit).notices[0].alert.id
    masks = client.put(
        f"{API}/privacy/nodes/lhr-g-01/cameras/gate/masks", headers=admin,
        json={"masks": [[[0, 0], [0.5, 0], [0.5, 0.5]]], "reason": GULBERG_MASK_REASON},
    )  # fmt: skip
    private = client.put(
        f"{API}/privacy/nodes/lhr-g-01/cameras/lobby/private", headers=admin, json={
            "owner": GULBERG_OWNER, "agreement": GULBERG_AGREEMENT,
            "expires_at": "2099-01-01T00:00:00Z", "allow": ["plates"],
            "reason": "plaza gate camera",
        },
    )  # fmt: skip
    assert (masks.status_code, private.status_code) == (200, 200), (masks.text, private.text)
    return {
        "watchlist": GULBERG_LIST, "entry_id": plate.json()["id"], "person_id": person.json()["id"],
        "read_event_id": read.event_id, "hit_event_id": hit.event_id, "hit_alert": hit_alert,
    }  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("scope"),
        broker_url=None,
        admin_username="admin",
        admin_password=PASSWORD,
        secret_key="test-secret-key-that-is-long-enough",
    )
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        with Session(runtime.engine) as session:
            for node_id, (district, site) in NODES.items():
                session.add(
                    Node(node_id=node_id, district=district, site_id=site, lat=31.5, lon=74.3)
                )
                session.add(
                    PowerState(
                        node_id=node_id, ts=utcnow(), battery_soc=40.0, load_w=5.0, autonomy_h=3.0
                    )
                )
            for site in ("g-site", "c-site"):
                session.add(PowerSite(site_id=site, autonomy_target_h=30.0))
            session.commit()
            for name, (role, districts) in USERS.items():
                create_user(
                    session=session,
                    user_in=UserCreate(
                        username=name, role=role, password=PASSWORD, districts=districts
                    ),
                )
        alerts = {node: _press(runtime, node) for node in NODES}
        tokens = {}
        for name in (*USERS, "admin"):
            answer = client.post(
                f"{API}/login/access-token", data={"username": name, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            tokens[name] = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        made = client.post(
            f"{API}/enrollment-tokens", json={"district": "Gulberg"}, headers=tokens["admin"]
        )
        assert made.status_code == 201, made.text
        evidence = _evidence(runtime, alerts["lhr-g-01"])
        lists = _lists(client, runtime, tokens["admin"])
        more = {
            "lhr-g-01": {
                *lists.values(), GULBERG_PLATE, GULBERG_READ, GULBERG_OWNER, GULBERG_AGREEMENT,
                GULBERG_MASK_REASON, "G-NOTE-CAR", "G-NOTE-PERSON",
            }
        }  # fmt: skip
        yield World(client, runtime, alerts, tokens, made.json()["id"], evidence, lists, more)


def _evidence(runtime: Runtime, alert_id: str) -> dict[str, str]:
    """A Gulberg evidence file on the Gulberg alert, a Gulberg case holding it, an export."""
    sha = "e" * 64
    with Session(runtime.engine, expire_on_commit=False) as session:
        session.add(EvidenceItem(
            sha256=sha, data_class="panic_snapshot", node_id="lhr-g-01", district="Gulberg",
            alert_id=alert_id, captured_at=utcnow(), size=1, content_type="image/jpeg",
            claim={}, signature="x" * 8, cert_serial="1", cert_pem="", state="stored",
        ))  # fmt: skip
        case = EvidenceCase(reference="G-CASE-1", district="Gulberg", created_by="hq")
        export = EvidenceExport(
            subject=f"alert:{alert_id}", purpose="case:G-1", requested_by="hq", state="approved"
        )
        session.add_all([case, export])
        session.flush()
        session.add(EvidenceCaseItem(case_id=case.id, sha256=sha, added_by="hq"))
        session.commit()
        return {"sha256": sha, "case_id": case.id, "export_id": export.id}


def _path_values(world: World) -> dict[str, str]:
    return {
        "node_id": "lhr-g-01",
        "alert_id": world.alerts["lhr-g-01"],
        "site_id": "g-site",
        "token_id": world.enrollment_token_id,
        "request_id": "01J0000000000000000000000Z",
        "name": "panic-default",
        "user_id": "1",
        "artifact_id": "01J0000000000000000000000Z",
        "campaign_id": "01J0000000000000000000000Z",
        "entry_id": world.lists["entry_id"],
        "event_id": world.lists["hit_event_id"],
        "camera_id": "gate",
        **world.evidence,  # sha256, case_id, export_id
    }


QUERIES = {"/api/v1/technician/nodes": {"q": "lhr-g-01"}}


def _app_routes() -> list[tuple[str, str]]:
    app = create_app(
        Settings(data_dir=tempfile.mkdtemp(), broker_url=None, secret_key="x" * 40)  # never run
    )
    out = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        for method in sorted(route.methods or ()):
            if method in ("HEAD", "OPTIONS") or not path.startswith(API):
                continue
            if (method, path) in SCOPE_FREE_ROUTES:
                continue
            if any(path == p or path.startswith(p + "/") for p in SCOPE_FREE_PREFIXES):
                continue
            out.append((method, path))
    return out


def _param(method: str, path: str) -> Any:
    marks = []
    if any(path.startswith(p) for p in NOT_YET_SCOPED):
        marks.append(pytest.mark.xfail(reason="module not yet scoped (docs/access.md)"))
    return pytest.param(method, path, marks=marks, id=f"{method} {path}")


READS = [_param(m, p) for m, p in _app_routes() if m == "GET" and p != f"{API}/stream/alerts"]


def _fill(world: World, path: str) -> str:
    values = _path_values(world)
    if path.startswith((f"{API}/watchlists/", f"{API}/watchlist-hits/")):
        values["name"] = world.lists["watchlist"]
    names = re.findall(r"{([^}:]+)(?::[^}]*)?}", path)
    unknown = [n for n in names if n not in values]
    assert not unknown, f"add a value for {unknown} to _path_values for {path}"
    return re.sub(r"{([^}:]+)(?::[^}]*)?}", lambda m: values[m.group(1)], path)


def _assert_no_leak(text: str, markers: set[str], where: str, asked: str = "") -> None:
    """No marker in `text`, except those the caller itself sent (`asked`: URL and body)."""
    leaked = sorted(m for m in markers if m in text and m not in asked)
    assert not leaked, f"{where} leaked {leaked}: {text[:500]}"


def _assert_counts_match(body: Any, where: str) -> None:
    """In this small fleet every list fits one page: a count above the rows shown is a leak."""
    if isinstance(body, dict) and isinstance(body.get("data"), list) and "count" in body:
        assert body["count"] == len(body["data"]), f"{where}: count {body['count']} leaks"


@pytest.mark.parametrize(("method", "path"), READS)
@pytest.mark.parametrize("who", OUTSIDERS)
def test_an_out_of_scope_user_reads_nothing_of_another_district(
    world: World, who: str, method: str, path: str
) -> None:
    url = _fill(world, path)
    headers = {**world.tokens[who], "X-Purpose": "case:LEAK-1"}  # routes that need one
    answer = world.client.get(url, params=QUERIES.get(path), headers=headers)
    where = f"{who} GET {url}"
    assert answer.status_code in (200, 403, 404), f"{where}: {answer.status_code} {answer.text}"
    markers = world.markers("lhr-g-01", "lhr-m-01", "nowhere-01")
    _assert_no_leak(answer.text, markers, where, asked=f"{url} {QUERIES.get(path)}")
    if answer.headers.get("content-type", "").startswith("application/json"):
        _assert_counts_match(answer.json(), where)


def test_a_district_user_sees_their_district_and_only_it(world: World) -> None:
    for path, key in ((f"{API}/nodes", "node_id"), (f"{API}/alerts", "node_id")):
        seen = {
            row[key]
            for row in world.client.get(path, headers=world.tokens["gulberg_op"]).json()["data"]
        }
        assert seen == {"lhr-g-01"}, path
        duty = world.client.get(path, headers=world.tokens["lahore_duty"]).json()
        assert {row[key] for row in duty["data"]} == {"lhr-g-01", "lhr-m-01"}
        assert duty["count"] == len(duty["data"])
        everything = world.client.get(path, headers=world.tokens["hq"]).json()
        assert {row[key] for row in everything["data"]} >= set(NODES)
    one = world.client.get(f"{API}/nodes/lhr-g-01", headers=world.tokens["gulberg_op"])
    assert one.status_code == 200
    events = world.client.get(f"{API}/events", headers=world.tokens["gulberg_op"]).json()
    assert {e["node_id"] for e in events["data"]} == {"lhr-g-01"}


def test_an_out_of_scope_object_is_404_exactly_like_a_missing_one(world: World) -> None:
    headers = world.tokens["clifton_op"]
    for real, missing in (
        (f"{API}/alerts/{world.alerts['lhr-g-01']}", f"{API}/alerts/01J0000000000000000000000Z"),
        (f"{API}/nodes/lhr-g-01", f"{API}/nodes/no-such-node"),
    ):
        a, b = world.client.get(real, headers=headers), world.client.get(missing, headers=headers)
        assert (a.status_code, b.status_code) == (404, 404)
        assert a.json()["detail"].split("'")[0] == b.json()["detail"].split("'")[0]


WATCHLIST_IN = {
    "name": "x", "category": "other", "purpose": "p", "owner_agency": "a",
    "districts": ["Gulberg"], "expires_at": "2099-01-01T00:00:00Z",
}  # fmt: skip


MASKS_IN = {"masks": [[[0, 0], [1, 0], [1, 1]]], "reason": "leak check"}
PRIVATE_IN = {
    "owner": "Pearl Plaza", "agreement": "KP-1", "expires_at": "2099-01-01T00:00:00Z",
    "allow": ["plates"], "reason": "leak check",
}  # fmt: skip


def _mutations(world: World) -> dict[tuple[str, str], tuple[Any, int]]:
    """(method, path) → (body, status an outsider gets) for every route that changes data."""
    alert = world.alerts["lhr-g-01"]
    return {
        ("POST", f"{API}/alerts/{{alert_id}}/transitions"): ({"to": "acknowledged"}, 404),
        ("POST", f"{API}/nodes"): ({"node_id": "lhr-g-99", "district": "Gulberg"}, 403),
        ("POST", f"{API}/nodes/{{node_id}}/lifecycle"): ({"to": "commissioned"}, 404),
        ("POST", f"{API}/nodes/{{node_id}}/revoke"): ({"reason": "x"}, 404),
        ("POST", f"{API}/nodes/{{node_id}}/commands"): ({"name": "ping", "args": {}}, 404),
        ("POST", f"{API}/enrollment-tokens"): ({"district": "Gulberg"}, 403),
        ("DELETE", f"{API}/enrollment-tokens/{{token_id}}"): (None, 404),
        ("POST", f"{API}/enrollment-requests/{{request_id}}/accept"): (None, 404),
        ("POST", f"{API}/enrollment-requests/{{request_id}}/reject"): (None, 404),
        ("POST", f"{API}/preauthorized"): (None, 403),
        ("PUT", f"{API}/power/sites/{{site_id}}"): ({"autonomy_target_h": 1.0}, 404),
        ("POST", f"{API}/users"): (
            {"username": "x1", "role": "operator", "password": "long-enough"},
            403,
        ),
        ("PATCH", f"{API}/users/{{user_id}}"): ({"all_districts": True}, 403),
        ("POST", f"{API}/users/{{user_id}}/password"): ({"password": "long-enough"}, 403),
        ("PUT", f"{API}/escalation-policies/{{name}}"): ({}, 403),
        ("DELETE", f"{API}/escalation-policies/{{name}}"): (None, 403),
        ("POST", f"{API}/api-tokens"): ({"name": "x", "agency": "y"}, 403),
        ("POST", f"{API}/api-tokens/{{token_id}}/revoke"): (None, 403),
        ("POST", f"{API}/ota/artifacts"): (None, 403),
        ("DELETE", f"{API}/ota/artifacts/{{artifact_id}}"): (None, 403),
        ("POST", f"{API}/ota/campaigns"): ({"artifact_id": "x", "districts": ["Gulberg"]}, 403),
        ("POST", f"{API}/ota/campaigns/{{campaign_id}}/pause"): (None, 403),
        ("POST", f"{API}/ota/campaigns/{{campaign_id}}/resume"): (None, 403),
        ("POST", f"{API}/ota/campaigns/{{campaign_id}}/abort"): (None, 403),
        ("POST", f"{API}/ota/campaigns/{{campaign_id}}/retry-failed"): (None, 403),
        ("PUT", f"{API}/ota/nodes/{{node_id}}/tags"): (["x"], 403),
        ("PUT", f"{API}/ota/sites/{{site_id}}/window"): ({"start": "01:00", "end": "02:00"}, 403),
        ("POST", f"{API}/watchlists"): (WATCHLIST_IN, 403),
        ("POST", f"{API}/watchlists/{{name}}/entries"): ({"plate": "LEA1"}, 404),
        ("POST", f"{API}/watchlists/{{name}}/entries/bulk"): (
            {"entries": [{"plate": "LEA1"}]},
            404,
        ),
        ("POST", f"{API}/watchlists/{{name}}/entries/{{entry_id}}/photos"): (None, 404),
        ("DELETE", f"{API}/watchlists/{{name}}/entries/{{entry_id}}"): (None, 404),
        ("POST", f"{API}/watchlists/{{name}}/deliver"): (None, 404),
        ("POST", f"{API}/watchlist-hits/{{event_id}}/decision"): ({"decision": "rejected"}, 404),
        ("PUT", f"{API}/privacy/nodes/{{node_id}}/cameras/{{camera_id}}/masks"): (MASKS_IN, 404),
        ("PUT", f"{API}/privacy/nodes/{{node_id}}/cameras/{{camera_id}}/private"): (
            PRIVATE_IN,
            404,
        ),
        ("POST", f"{API}/privacy/nodes/{{node_id}}/deliver"): (None, 404),
        # Evidence (docs/evidence.md): requests and exports need a stated purpose first (428
        # here, with none sent); test_evidence_of_another_district_is_404_with_a_purpose sends one.
        ("POST", f"{API}/evidence/requests"): ({"sha256": "e" * 64, "node_id": "lhr-g-01"}, 428),
        ("POST", f"{API}/evidence/exports"): ({"subject": f"alert:{alert}"}, 428),
        ("POST", f"{API}/evidence/exports/{{export_id}}/decision"): ({"decision": "approved"}, 404),
        ("POST", f"{API}/evidence/cases"): ({"reference": "LEAK-2", "district": "Gulberg"}, 404),
        ("POST", f"{API}/evidence/cases/{{case_id}}/items"): ({"alert_id": alert}, 404),
        ("POST", f"{API}/evidence/cases/{{case_id}}/release"): ({"note": "leak check"}, 404),
    }


WRITES = [_param(m, p) for m, p in _app_routes() if m != "GET"]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_an_out_of_scope_admin_changes_nothing_of_another_district(
    world: World, method: str, path: str
) -> None:
    table = _mutations(world)
    assert (method, path) in table, f"add {method} {path} to _mutations with its outsider answer"
    body, expected = table[(method, path)]
    url = _fill(world, path)
    if path.startswith(f"{API}/api-tokens/"):
        url = path.replace("{token_id}", "1")
    answer = world.client.request(method, url, json=body, headers=world.tokens["clifton_admin"])
    assert answer.status_code in (expected, 422), f"{method} {url}: {answer.text}"
    markers = world.markers("lhr-g-01", "lhr-m-01", "nowhere-01")
    _assert_no_leak(answer.text, markers, url, asked=f"{url} {json.dumps(body)}")
    with Session(world.runtime.engine) as session:
        alert = session.get(Alert, world.alerts["lhr-g-01"])
        assert alert is not None
        assert alert.state == "new"
        node = session.get(Node, "lhr-g-01")
        assert node is not None
        assert node.lifecycle == "registered"
        assert session.get(Node, "lhr-g-99") is None


def test_another_districts_node_cannot_be_registered_into_ones_own(world: World) -> None:
    answer = world.client.post(
        f"{API}/nodes",
        json={"node_id": "lhr-g-01", "serial": "SN-HIJACK", "district": "Clifton"},
        headers=world.tokens["clifton_tech"],
    )
    assert answer.status_code == 409
    assert "Gulberg" not in answer.text
    with Session(world.runtime.engine) as session:
        node = session.get(Node, "lhr-g-01")
        assert node is not None
        assert (node.district, node.serial) == ("Gulberg", None)


def test_the_live_feed_replay_holds_only_the_clients_districts(world: World) -> None:
    since = __import__("fleet_server.stream", fromlist=["parse_cursor"]).parse_cursor(T_PAST)
    clifton = replay_frames(
        world.runtime.engine, since, limit=100, scope=Scope.of(agency=None, districts=["Clifton"])
    )
    text = "".join(clifton)
    assert world.alerts["khi-c-01"] in text
    _assert_no_leak(text, world.markers("lhr-g-01", "lhr-m-01", "nowhere-01"), "replay")
    # The limit counts in-scope alerts: Lahore's traffic does not turn Clifton's replay into
    # a resync (which would say "there was more").
    assert not any("resync" in f for f in clifton)
    assert len(replay_frames(world.runtime.engine, since, limit=1, scope=Scope.everything())) == 1


def test_counts_in_reports_cover_only_the_scope(world: World) -> None:
    power = world.client.get(f"{API}/power/overview", headers=world.tokens["clifton_op"]).json()
    assert power["count"] == 1
    assert [n["node_id"] for n in power["data"]] == ["khi-c-01"]
    times = world.client.get(
        f"{API}/metrics/response-times", headers=world.tokens["clifton_op"]
    ).json()
    assert {d["district"] for d in times["data"]} <= {"Clifton"}
    sites = world.client.get(f"{API}/power/sites", headers=world.tokens["clifton_op"]).json()
    assert [s["site_id"] for s in sites["data"]] == ["c-site"]
    assert sites["count"] == 1
    assert json.dumps(sites).count("g-site") == 0


def test_evidence_of_another_district_is_404_with_a_purpose_and_visible_within_it(
    world: World,
) -> None:
    sha, alert = world.evidence["sha256"], world.alerts["lhr-g-01"]
    outsider = {**world.tokens["clifton_op"], "X-Purpose": "case:LEAK-3"}
    insider = {**world.tokens["gulberg_op"], "X-Purpose": "case:G-3"}
    for method, url, body in (
        ("GET", f"{API}/evidence?alert_id={alert}", None),
        ("POST", f"{API}/evidence/exports", {"subject": f"alert:{alert}"}),
        ("POST", f"{API}/evidence/requests", {"sha256": sha, "node_id": "lhr-g-01"}),
        ("GET", f"{API}/evidence/cases/{world.evidence['case_id']}", None),
    ):
        answer = world.client.request(method, url, json=body, headers=outsider)
        assert answer.status_code == 404, f"{method} {url}: {answer.text}"
    listed = world.client.get(f"{API}/evidence", headers=outsider).json()
    assert listed["count"] == 0
    mine = world.client.get(f"{API}/evidence?alert_id={alert}", headers=insider).json()
    assert [row["sha256"] for row in mine["data"]] == [sha]
    assert mine["data"][0]["held"] is True  # the Gulberg case holds it


def test_gulbergs_watchlist_reads_hits_and_privacy_are_seen_within_gulberg_only(
    world: World,
) -> None:
    """The seeded watchlist data is really there for an insider (so the walk above is not
    vacuous for these routes) and absent for an outsider who states a valid purpose."""
    lists = world.lists
    reads = (
        (f"{API}/watchlists", GULBERG_LIST),
        (f"{API}/watchlists/{GULBERG_LIST}", lists["person_id"]),
        (f"{API}/plate-reads", GULBERG_READ),
        (f"{API}/watchlist-hits", lists["hit_event_id"]),
        (f"{API}/watchlist-hits/queue", lists["hit_event_id"]),
        (f"{API}/watchlist-hits/{lists['hit_event_id']}/entry", "G-NOTE-CAR"),
        (f"{API}/privacy/nodes/lhr-g-01", GULBERG_MASK_REASON),
        (f"{API}/privacy/private-cameras", GULBERG_AGREEMENT),
    )
    insider = {**world.tokens["gulberg_op"], "X-Purpose": "case:G-4"}
    outsider = {**world.tokens["clifton_op"], "X-Purpose": "case:LEAK-4"}
    markers = world.markers("lhr-g-01")
    for url, expected in reads:
        seen = world.client.get(url, headers=insider)
        assert seen.status_code == 200, f"{url}: {seen.text}"
        assert expected in seen.text, f"the insider should see {expected} in {url}"
        hidden = world.client.get(url, headers=outsider)
        assert hidden.status_code in (200, 404), f"{url}: {hidden.text}"
        _assert_no_leak(hidden.text, markers, f"clifton_op GET {url}", asked=url)


def test_a_purpose_naming_an_alert_of_another_district_is_refused_like_a_missing_one(
    world: World,
) -> None:
    gulberg_alert, clifton_alert = world.alerts["lhr-g-01"], world.alerts["khi-c-01"]
    missing = "01J0000000000000000000000Z"

    def watchlists(who: str, alert_id: str) -> Any:
        headers = {**world.tokens[who], "X-Purpose": f"alert:{alert_id}"}
        return world.client.get(f"{API}/watchlists", headers=headers)

    # In scope: the purpose stands and the view is served.
    assert watchlists("gulberg_op", gulberg_alert).status_code == 200
    assert watchlists("clifton_op", clifton_alert).status_code == 200
    assert watchlists("hq", gulberg_alert).status_code == 200
    # Out of scope and missing: the same 422, worded alike, naming no district.
    other, nothing = watchlists("clifton_op", gulberg_alert), watchlists("clifton_op", missing)
    assert (other.status_code, nothing.status_code) == (422, 422), (other.text, nothing.text)
    assert other.json()["detail"].replace(gulberg_alert, "") == nothing.json()["detail"].replace(
        missing, ""
    )
    assert "does not exist or is outside your scope" in other.json()["detail"]
    _assert_no_leak(other.text, world.markers("lhr-g-01") - {gulberg_alert}, "purpose")
    # Evidence routes apply the same gate: no export request names another district's alert.
    export = world.client.post(
        f"{API}/evidence/exports",
        json={"subject": f"alert:{clifton_alert}"},
        headers={**world.tokens["clifton_op"], "X-Purpose": f"alert:{gulberg_alert}"},
    )
    assert export.status_code == 422, export.text
