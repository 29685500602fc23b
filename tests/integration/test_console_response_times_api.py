"""The response-time page's API: verdicts on a target, CSV, SVG plots (in-process, SQLite)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.models import Alert, utcnow
from tests.support.api import API, login, runtime_of


def _seed(client: TestClient) -> None:
    now = utcnow()
    with Session(runtime_of(client).engine) as session:
        # "rt-fast": acknowledged in 5 s; "rt-slow": in 5 s for 8 alerts, 40 s for 2 (p90 = 40 s).
        for district, acks in (("rt-fast", [5.0] * 10), ("rt-slow", [5.0] * 8 + [40.0] * 2)):
            for n, ack in enumerate(acks):
                received = now - timedelta(hours=1, minutes=n)
                session.add(
                    Alert(node_id=f"{district}-{n}", type="panic", severity="P1",
                          state="closed", district=district, received_at=received,
                          acknowledged_at=received + timedelta(seconds=ack))
                )  # fmt: skip
        session.commit()


def test_a_district_whose_p90_is_past_the_target_misses_it(client: TestClient) -> None:
    _seed(client)
    headers = login(client, "op")
    since = (utcnow() - timedelta(days=1)).isoformat()
    report = client.get(
        f"{API}/response-times/report", params={"since": since}, headers=headers
    ).json()
    verdicts = {v["district"]: v for v in report["verdicts"]}
    assert verdicts["rt-fast"]["verdict"] == "met"
    assert verdicts["rt-slow"]["verdict"] == "missed"
    assert verdicts["rt-slow"]["value_s"] == 40.0
    assert "rt-slow" in report["missing"]
    assert report["target_text"] == "90 % received → acknowledged within 15 s"

    # p50 within 15 s: both meet it.
    report = client.get(
        f"{API}/response-times/report",
        params={"since": since, "target_pct": 50},
        headers=headers,
    ).json()
    assert not {"rt-fast", "rt-slow"} & set(report["missing"])


def test_the_csv_has_a_row_per_district_and_stage(client: TestClient) -> None:
    response = client.get(f"{API}/response-times/export.csv", headers=login(client, "op"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="response-times-panic-all.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    slow = [r for r in rows if r["district"] == "rt-slow"]
    assert {r["stage"] for r in slow} >= {"received_to_acknowledged", "received_to_resolved"}
    acked = next(r for r in slow if r["stage"] == "received_to_acknowledged")
    assert (acked["count"], acked["p50_s"], acked["p90_s"]) == ("10", "5.000", "40.000")


def test_the_plots_are_svg_without_script(client: TestClient) -> None:
    headers = login(client, "op")
    for name in ("stage.svg", "chain.svg"):
        response = client.get(f"{API}/response-times/{name}", headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.text.startswith("<svg")
        assert "<script" not in response.text
        assert "style=" not in response.text


def test_a_target_on_an_unknown_stage_or_percentile_is_refused(client: TestClient) -> None:
    headers = login(client, "op")
    for params in ({"target_stage": "coffee"}, {"target_pct": 75}, {"target_s": 0}):
        response = client.get(f"{API}/response-times/report", params=params, headers=headers)
        assert response.status_code == 422, params
