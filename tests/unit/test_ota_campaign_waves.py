"""The campaign wave rule on plain values: canary, wider, all; abort on failures; windows."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from fleet_server.ota.waves import (
    Abort,
    Complete,
    MaintenanceWindow,
    NodeProgress,
    Offer,
    StartWave,
    WavePlan,
    decide_wave,
    wave_targets,
)

NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)  # 03:00 in Karachi (UTC+5)
WAVES = (("percent", 5.0), ("percent", 30.0), ("percent", 100.0))


def plan(**kw: object) -> WavePlan:
    base: dict[str, object] = {
        "state": "running",
        "waves": WAVES,
        "wave_index": -1,
        "wave_started_at": None,
        "min_sample": 3,
        "failure_threshold": 0.05,
        "offer_resend_s": 600.0,
    }
    base.update(kw)
    return WavePlan(**base)  # type: ignore[arg-type]


def fleet(n: int, *, wave: int | None = None, state: str = "pending") -> list[NodeProgress]:
    return [NodeProgress(f"n{i:03d}", wave, state) for i in range(n)]


def test_wave_sizes_are_cumulative_and_the_last_takes_every_node() -> None:
    assert wave_targets(WAVES, 100) == [5, 30, 100]
    assert wave_targets(WAVES, 3) == [1, 2, 3]
    assert wave_targets((("count", 10.0), ("percent", 100.0)), 4) == [4, 4]
    assert wave_targets(WAVES, 0) == [0, 0, 0]


def test_a_new_campaign_starts_the_canary_and_offers_it_to_its_nodes_only() -> None:
    actions = decide_wave(plan(), fleet(100), NOW)
    start = actions[0]
    assert isinstance(start, StartWave)
    assert (start.index, len(start.node_ids)) == (0, 5)
    offers = [a for a in actions if isinstance(a, Offer)]
    assert sorted(o.node_id for o in offers) == sorted(start.node_ids)


def test_a_canary_over_the_failure_threshold_aborts_and_no_other_wave_starts() -> None:
    nodes = fleet(100)
    canary = [NodeProgress(f"c{i}", 0, "healthy") for i in range(9)]
    canary.append(NodeProgress("c9", 0, "rolled_back"))  # 10 % > 5 %
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), nodes + canary, NOW)
    assert len(actions) == 1
    assert isinstance(actions[0], Abort)
    assert "1 of 10" in actions[0].reason


def test_failures_are_not_judged_before_the_minimum_sample() -> None:
    canary = [NodeProgress("c0", 0, "failed"), NodeProgress("c1", 0, "downloading"),
              NodeProgress("c2", 0, "offered", offered_at=NOW)]  # fmt: skip
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), canary + fleet(50), NOW)
    assert not any(isinstance(a, Abort) for a in actions)


def test_a_healthy_canary_makes_way_for_the_wider_wave() -> None:
    canary = [NodeProgress(f"c{i}", 0, "healthy") for i in range(5)]
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), canary + fleet(95), NOW)
    start = actions[0]
    assert isinstance(start, StartWave)
    assert start.index == 1
    assert len(start.node_ids) == 25  # 30 % of 100, 5 already placed


def test_a_wave_with_nodes_still_working_waits() -> None:
    canary = [NodeProgress(f"c{i}", 0, "healthy") for i in range(4)]
    canary.append(NodeProgress("c4", 0, "deferred", offered_at=NOW))
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), canary + fleet(95), NOW)
    assert actions == []


def test_an_old_wave_with_a_good_sample_moves_on_despite_deferring_nodes() -> None:
    canary = [NodeProgress(f"c{i}", 0, "healthy") for i in range(4)]
    canary.append(NodeProgress("c4", 0, "deferred", offered_at=NOW))
    started = NOW - timedelta(hours=7)
    p = plan(wave_index=0, wave_started_at=started, wave_max_s=6 * 3600)
    actions = decide_wave(p, canary + fleet(95), NOW)
    assert isinstance(actions[0], StartWave)
    assert actions[0].index == 1


def test_nodes_joining_after_the_start_wait_for_the_next_wave() -> None:
    canary = [NodeProgress(f"c{i}", 0, "downloading") for i in range(5)]
    late = NodeProgress("late-01", None, "pending")
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), [*canary, late], NOW)
    assert all(not (isinstance(a, Offer) and a.node_id == "late-01") for a in actions)
    assert not any(isinstance(a, StartWave) for a in actions)


def test_nodes_joining_during_the_last_wave_join_it() -> None:
    last = [NodeProgress(f"a{i}", 2, "healthy") for i in range(10)]
    late = NodeProgress("late-01", None, "pending")
    actions = decide_wave(plan(wave_index=2, wave_started_at=NOW), [*last, late], NOW)
    assert actions == [StartWave(2, ("late-01",)), Offer("late-01")]


def test_the_campaign_completes_when_every_node_finished_the_last_wave() -> None:
    nodes = [NodeProgress(f"a{i}", i % 3, "healthy") for i in range(30)]
    assert decide_wave(plan(wave_index=2, wave_started_at=NOW), nodes, NOW) == [Complete()]


def test_a_paused_or_aborted_campaign_does_nothing() -> None:
    for state in ("paused", "aborted", "completed"):
        assert decide_wave(plan(state=state), fleet(10), NOW) == []


def test_an_unanswered_offer_is_sent_again_after_the_resend_time() -> None:
    nodes = [
        NodeProgress("a", 0, "offered", offered_at=NOW - timedelta(seconds=601)),
        NodeProgress("b", 0, "offered", offered_at=NOW - timedelta(seconds=10)),
        NodeProgress("c", 0, "downloading", offered_at=NOW - timedelta(hours=1)),
    ]
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), nodes, NOW)
    assert actions == [Offer("a", resend=True)]


def test_offers_wait_for_the_site_maintenance_window_in_the_site_time_zone() -> None:
    karachi_night = MaintenanceWindow("Asia/Karachi", time(1, 0), time(5, 0))  # 03:00 local
    karachi_day = MaintenanceWindow("Asia/Karachi", time(10, 0), time(12, 0))
    nodes = [NodeProgress("open", 0, "pending", window=karachi_night),
             NodeProgress("closed", 0, "pending", window=karachi_day)]  # fmt: skip
    actions = decide_wave(plan(wave_index=0, wave_started_at=NOW), nodes, NOW)
    assert actions == [Offer("open")]


def test_a_window_across_midnight_and_an_unknown_zone() -> None:
    late = MaintenanceWindow("Asia/Karachi", time(23, 0), time(4, 0))
    assert late.is_open(NOW)  # 03:00 local
    assert not late.is_open(NOW + timedelta(hours=8))  # 11:00 local
    assert MaintenanceWindow("Mars/Olympus", time(1, 0), time(2, 0)).is_open(NOW)


def test_nodes_that_share_an_ota_group_join_a_wave_together() -> None:
    # n000 and n042 are one pilot group: its signed assignment would reach both.
    nodes = [
        NodeProgress(
            n.node_id, None, "pending", group="pilot-a" if n.node_id in ("n000", "n042") else None
        )
        for n in fleet(100)
    ]
    start = decide_wave(plan(), nodes, NOW)[0]
    assert isinstance(start, StartWave)
    assert "n042" in start.node_ids
    assert len(start.node_ids) == 6  # five by size, plus the rest of the group
    # The next wave takes nobody twice.
    placed = [
        NodeProgress(n.node_id, 0 if n.node_id in start.node_ids else None, "healthy"
                     if n.node_id in start.node_ids else "pending", group=n.group)
        for n in nodes
    ]  # fmt: skip
    wider = decide_wave(plan(wave_index=0, wave_started_at=NOW), placed, NOW)[0]
    assert isinstance(wider, StartWave)
    assert not set(wider.node_ids) & set(start.node_ids)
    assert len(start.node_ids) + len(wider.node_ids) == 30
