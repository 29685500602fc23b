"""`bench panic --cluster`'s own options and the pure parts of its per-hop breakdown.

The options are refused before anything starts (no RabbitMQ, no database
needed); the breakdown (`simulators.bench_cluster.hop_breakdown`) is plain
arithmetic over the points each press was seen at, checked on made-up times.
The whole benchmark runs only as `nigehbaan bench panic --cluster` (speed is
never asserted in tests).
"""

from __future__ import annotations

import pytest

from edge_agent.console import main
from simulators.bench_cluster import HOP_POINTS, HOPS, background_split, hop_breakdown


def test_background_on_without_cluster_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "panic", "--background-on", "north"]) == 2
    assert "--background-on needs --cluster" in capsys.readouterr().err


def test_an_unknown_background_district_choice_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "panic", "--cluster", "--background-on", "east"]) == 2
    err = capsys.readouterr().err
    assert "bench panic --cluster: --background-on spread or north" in err
    assert "'east'" in err


def test_background_nodes_are_halved_over_the_district_brokers_or_all_on_north() -> None:
    assert background_split(5_001, "spread") == {"north": 2_501, "south": 2_500}
    assert background_split(5_000, "north") == {"north": 5_000}
    assert background_split(1, "spread") == {"north": 1}
    assert background_split(0, "spread") == {}
    with pytest.raises(ValueError, match="background_on"):
        background_split(10, "everywhere")


def _press(start: float, gaps_ms: list[float]) -> dict[str, float | None]:
    """A press seen at every point, each `gaps_ms[i]` after the one before."""
    at = start
    points: dict[str, float | None] = {HOP_POINTS[0]: at}
    for name, gap in zip(HOP_POINTS[1:], gaps_ms, strict=True):
        at += gap / 1000.0
        points[name] = at
    return points


def test_each_hop_is_the_time_between_two_points_in_order() -> None:
    assert len(HOPS) == len(HOP_POINTS) - 1
    result = hop_breakdown([_press(1_000.0, [30.0, 2.0, 1.0, 3.0, 20.0, 5.0])])
    p50 = {name: summary["p50"] for name, summary in result["hops_ms"].items()}
    assert p50 == {"node": 30.0, "to_district_broker": 2.0, "bridge_to_rabbitmq": 1.0,
                   "to_worker": 3.0, "store_commit": 20.0, "to_feed": 5.0}  # fmt: skip


def test_a_point_not_seen_leaves_only_its_two_hops_out() -> None:
    press = _press(0.0, [30.0, 2.0, 1.0, 3.0, 20.0, 5.0])
    press["rabbitmq"] = None  # the RabbitMQ tap missed it
    result = hop_breakdown([press])
    counts = {name: summary["n"] for name, summary in result["hops_ms"].items()}
    assert counts == {"node": 1, "to_district_broker": 1, "bridge_to_rabbitmq": 0,
                      "to_worker": 0, "store_commit": 1, "to_feed": 1}  # fmt: skip
    assert "tail" not in result  # no press was seen whole


def test_the_tail_says_where_the_slowest_presses_spent_their_time() -> None:
    quick = [_press(float(i), [30.0, 2.0, 1.0, 3.0, 20.0, 5.0]) for i in range(9)]
    slow = _press(100.0, [30.0, 2.0, 1.0, 3.0, 220.0, 5.0])  # a slow commit
    result = hop_breakdown([*quick, slow])
    tail = result["tail"]
    assert tail["presses"] == 1
    assert tail["from_ms"] == pytest.approx(261.0)
    assert tail["mean_hop_ms"]["store_commit"] == pytest.approx(220.0)
    assert tail["mean_hop_ms"]["node"] == pytest.approx(30.0)
