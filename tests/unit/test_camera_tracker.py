"""One moving plate is one track, confirmed after N hits and ended after M misses.

Boxes in, tracks out: no frames, no threads.
"""

from __future__ import annotations

from edge_agent.anpr.types import Box
from edge_agent.camera.tracker import PlateTracker, iou


def test_iou_of_same_disjoint_and_half_overlapping_boxes() -> None:
    a = Box(0, 0, 10, 10)
    assert iou(a, a) == 1.0
    assert iou(a, Box(20, 20, 10, 10)) == 0.0
    assert abs(iou(a, Box(5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_a_plate_moving_across_the_frame_is_one_track_confirmed_after_three_hits() -> None:
    tracker = PlateTracker(confirm_hits=3, max_misses=2)
    seen_ids: list[str] = []
    for i in range(10):
        update = tracker.update([Box(100 + 40 * i, 400 - 10 * i, 120, 40)])
        seen_ids.extend(t.track_id for t, _ in update.seen)
        assert update.ended == []
    assert set(seen_ids) == {"t1"}
    assert len(seen_ids) == 8  # frames 3..10
    assert tracker.update([]).ended == []
    assert tracker.update([]).ended == []
    ended = tracker.update([]).ended  # the third miss is more than max_misses
    assert [t.track_id for t in ended] == ["t1"]
    assert tracker.tracks == []


def test_the_prediction_keeps_a_fast_plate_on_its_track() -> None:
    # 90 px per frame on a 120 px plate: without the predicted step IoU would be ~0.14.
    tracker = PlateTracker(iou_min=0.3, confirm_hits=2)
    for i in range(6):
        tracker.update([Box(90 * i, 300, 120, 40)])
    assert len(tracker.tracks) == 1
    assert tracker.tracks[0].hits == 6


def test_a_single_false_detection_never_becomes_an_ended_track() -> None:
    tracker = PlateTracker(confirm_hits=3, max_misses=1)
    tracker.update([Box(10, 10, 50, 20)])
    ended = [tracker.update([]).ended for _ in range(3)]
    assert ended == [[], [], []]
    assert tracker.tracks == []


def test_two_plates_side_by_side_are_two_tracks() -> None:
    tracker = PlateTracker(confirm_hits=1)
    for i in range(4):
        update = tracker.update([Box(100 + 10 * i, 300, 100, 30), Box(700 - 10 * i, 320, 100, 30)])
    assert sorted(t.track_id for t, _ in update.seen) == ["t1", "t2"]


def test_a_track_survives_a_missed_frame_and_flush_ends_the_confirmed_ones() -> None:
    tracker = PlateTracker(confirm_hits=2, max_misses=2)
    tracker.update([Box(100, 100, 100, 30)])
    tracker.update([Box(110, 100, 100, 30)])
    tracker.update([])
    update = tracker.update([Box(130, 100, 100, 30)])
    assert [t.track_id for t, _ in update.seen] == ["t1"]
    tracker.update([Box(600, 500, 100, 30)])  # a new, unconfirmed one
    assert [t.track_id for t in tracker.flush()] == ["t1"]


def test_a_parked_plate_is_reported_once_at_max_age_and_never_again() -> None:
    # A parked car inside a motion region: the detector sees it on every frame.
    tracker = PlateTracker(confirm_hits=2, max_misses=2, max_age=10)
    ended_at: list[tuple[int, str]] = []
    seen_after_report = 0
    for frame in range(1, 501):
        update = tracker.update([Box(200, 300, 120, 40)])
        if ended_at:
            seen_after_report += len(update.seen)
        ended_at.extend((frame, t.track_id) for t in update.ended)
        assert len(tracker.tracks) == 1  # the parked car never piles up tracks
    assert ended_at == [(10, "t1")]
    assert seen_after_report == 0  # reported: it is not read again
    assert tracker.tracks[0].reported
    # It drives away: the track ends without a second report, and flush has nothing either.
    assert [tracker.update([]).ended for _ in range(3)] == [[], [], []]
    assert tracker.tracks == []
    assert tracker.flush() == []


def test_a_reported_parked_plate_is_not_returned_by_flush_but_a_fresh_one_is() -> None:
    tracker = PlateTracker(confirm_hits=1, max_misses=2, max_age=3)
    for _ in range(5):
        tracker.update([Box(200, 300, 120, 40)])
    tracker.update([Box(200, 300, 120, 40), Box(600, 300, 120, 40)])
    assert [t.track_id for t in tracker.flush()] == ["t2"]


def test_without_max_age_a_parked_plate_is_reported_only_when_it_leaves() -> None:
    tracker = PlateTracker(confirm_hits=2, max_misses=1)
    assert all(not tracker.update([Box(200, 300, 120, 40)]).ended for _ in range(200))
    tracker.update([])
    assert [t.track_id for t in tracker.update([]).ended] == ["t1"]


def test_max_age_below_confirm_hits_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="max_age"):
        PlateTracker(confirm_hits=3, max_age=2)
