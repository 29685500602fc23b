"""Face matching: the best template by cosine, and a hit only from several agreeing frames."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.faces import (
    DEFAULT_THRESHOLD,
    FaceError,
    FaceMatcher,
    Match,
    Template,
    TrackVoter,
    VoterConfig,
)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def test_the_matcher_finds_the_closest_template() -> None:
    matcher = FaceMatcher(
        [Template("ali", "wanted", unit(1)), Template("sana", "missing", unit(2))]
    )
    probe = unit(2) * 0.9 + unit(3) * 0.1
    best = matcher.best(probe)
    assert best is not None
    assert best.entry_id == "sana"
    assert best.category == "missing"
    assert best.score > 0.9
    assert FaceMatcher([]).best(probe) is None


def test_a_template_of_the_wrong_size_or_zero_is_refused() -> None:
    with pytest.raises(FaceError):
        FaceMatcher([Template("x", "wanted", np.ones(64))])
    with pytest.raises(FaceError):
        FaceMatcher([Template("x", "wanted", np.zeros(128))])


def m(entry: str, score: float, category: str = "wanted") -> Match:
    return Match(entry, category, score)


def test_one_lucky_frame_is_not_a_hit() -> None:
    voter = TrackVoter(VoterConfig(min_frames=3))
    assert voter.add("t1", frame=1, match=m("ali", 0.9), area=900, quality=1) is None
    for frame in range(2, 6):
        assert voter.add("t1", frame=frame, match=m("ali", 0.1), area=900, quality=1) is None


def test_three_agreeing_frames_make_one_hit_and_only_once() -> None:
    voter = TrackVoter(VoterConfig(min_frames=3))
    hits = [
        voter.add("t1", frame=f, match=m("ali", 0.6), area=900 + f, quality=0.8)
        for f in range(1, 6)
    ]
    assert hits[0] is None
    assert hits[1] is None
    hit = hits[2]
    assert hit is not None
    assert hit.entry_id == "ali"
    assert hit.frames == (1, 2, 3)
    assert hit.best_frame == 3
    assert hit.score == pytest.approx(0.6)
    assert hits[3] is None
    assert hits[4] is None


def test_agreeing_frames_need_most_of_the_tracks_weight() -> None:
    voter = TrackVoter(VoterConfig(min_frames=3, min_weight_share=0.6))
    # Big, sharp frames of the track match nobody; three tiny ones match "ali".
    for f in range(3):
        voter.add("t1", frame=f, match=m("ali", 0.1), area=10_000, quality=1)
    results = [
        voter.add("t1", frame=10 + f, match=m("ali", 0.7), area=400, quality=0.5) for f in range(3)
    ]
    assert results == [None, None, None]


def test_frames_refused_by_the_gates_weigh_nothing() -> None:
    voter = TrackVoter(VoterConfig(min_frames=3))
    for f in range(3):
        assert voter.add("t1", frame=f, match=m("ali", 0.9), area=900, quality=0) is None


def test_the_threshold_is_per_watchlist_category() -> None:
    config = VoterConfig(min_frames=2, category_thresholds={"missing": 0.3, "wanted": 0.8})
    assert config.threshold("other") == DEFAULT_THRESHOLD
    voter = TrackVoter(config)
    for f in range(2):
        wanted = voter.add("a", frame=f, match=m("ali", 0.5, "wanted"), area=900, quality=1)
        missing = voter.add("b", frame=f, match=m("sana", 0.5, "missing"), area=900, quality=1)
    assert wanted is None
    assert missing is not None
    assert missing.category == "missing"


def test_tracks_do_not_vote_for_each_other_and_end_clears_them() -> None:
    voter = TrackVoter(VoterConfig(min_frames=2))
    assert voter.add("a", frame=1, match=m("ali", 0.7), area=900, quality=1) is None
    assert voter.add("b", frame=1, match=m("ali", 0.7), area=900, quality=1) is None
    voter.end_track("a")
    assert voter.add("a", frame=2, match=m("ali", 0.7), area=900, quality=1) is None
    assert voter.add("b", frame=2, match=m("ali", 0.7), area=900, quality=1) is not None
