"""The scope rule, stated purposes and the live feed's per-client filter (docs/access.md)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from fleet_server.alerting import AlertNotice
from fleet_server.models import AlertPublic
from fleet_server.scope import Purpose, PurposeInvalid, Scope, parse_purpose
from fleet_server.stream import AlertFrame, Broadcaster, alert_frame

GULBERG = Scope.of(agency="PSCA", districts=["Gulberg"])
LAHORE = Scope.of(agency="PSCA", districts=["Gulberg", "Model Town"])
HQ = Scope.everything(agency="PSCA")
NOTHING = Scope.of(agency="PSCA", districts=[])


def test_a_district_scope_allows_its_districts_and_nothing_without_one() -> None:
    assert GULBERG.allows("Gulberg")
    assert not GULBERG.allows("Clifton")
    assert not GULBERG.allows(None), "a row with no district is nobody's but the command centre's"
    assert HQ.allows(None)
    assert HQ.allows("Clifton")
    assert HQ.is_all
    assert not NOTHING.allows("Gulberg")
    assert not NOTHING.is_all


def test_a_city_is_the_list_of_its_districts() -> None:
    assert LAHORE.covers(GULBERG)
    assert not GULBERG.covers(LAHORE)
    assert HQ.covers(LAHORE)
    assert not LAHORE.covers(HQ)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("case:FIR-123/2026", Purpose("case", "FIR-123/2026")),
        ("fir: 456/26 ", Purpose("fir", "456/26")),
        ("alert:01j0000000000000000000000z", Purpose("alert", "01J0000000000000000000000Z")),
        (
            "NOTE:checking a complaint from the plaza",
            Purpose("note", "checking a complaint from the plaza"),
        ),
    ],
)
def test_a_stated_purpose_is_a_case_a_fir_an_alert_or_a_note(text: str, expected: Purpose) -> None:
    assert parse_purpose(text) == expected


@pytest.mark.parametrize(
    "text",
    [None, "", "  ", "because", "case:", "case:;drop table", "alert:123", "note:short", "why:x"],
)
def test_anything_else_is_refused(text: str | None) -> None:
    with pytest.raises(PurposeInvalid):
        parse_purpose(text)


def _frame(district: str | None, alert_id: str) -> AlertFrame:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    alert = AlertPublic(
        id=alert_id, node_id="n", type="panic", severity="P1", district=district, updated_at=now
    )
    return alert_frame(AlertNotice(op="created", alert=alert, event_id=None))


def test_a_feed_client_gets_only_its_districts_frames() -> None:
    async def run() -> tuple[list[str], list[str], list[str]]:
        feed = Broadcaster(queue_max=10)
        gulberg = feed.subscribe(scope=GULBERG)
        hq = feed.subscribe(scope=HQ)
        internal = feed.subscribe()
        feed.publish(
            [_frame("Gulberg", "A" * 26), _frame("Clifton", "B" * 26), _frame(None, "C" * 26)]
        )
        feed.publish(["a plain string of unknown district\n\n"])

        def drain(sub: object) -> list[str]:
            q = sub.queue  # type: ignore[attr-defined]
            return [q.get_nowait() for _ in range(q.qsize())]

        return drain(gulberg), drain(hq), drain(internal)

    gulberg, hq, internal = asyncio.run(run())
    assert len(gulberg) == 1
    assert "A" * 26 in gulberg[0]
    assert len(hq) == 4
    assert len(internal) == 4
