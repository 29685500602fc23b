"""`bench watchlist --stream` on the plate half: rendered vehicles through a real node's camera
pipeline, a real Mosquitto and a real ``nigehbaan server``, hits timed to the operator feed.

Four passes, two with hotlisted plates, no face photos (tests never read the dev data set).
The bench asserts nothing; this checks that what it reports is consistent with what it
played: a clean plate never counts as found, each found hit reached the feed after its
vehicle entered the frame, and the face half says it did not run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.camera_scenes import anpr_missing

if anpr_missing() is not None:
    pytest.skip(f"the camera pipeline cannot run: {anpr_missing()}", allow_module_level=True)

from simulators.bench_watchlist import run_stream_bench


def test_a_short_plate_stream_reports_hits_false_hits_and_entry_to_feed(tmp_path: Path) -> None:
    figures = run_stream_bench(
        work=tmp_path, plate_passes=4, hotlist=50, seed=21, fps=5.0, gap_s=1.5, settle_s=10.0
    )
    assert figures["face_half"].startswith("off")
    assert figures["faces"]["passes"] == 0
    assert figures["expected"] == figures["plates"]["expected"] == 2
    assert figures["false_hits"] == {"plates": 0, "faces": 0}
    assert figures["hits_not_on_feed"] == 0
    passes = figures["per_pass"]
    assert sorted(p["label"] for p in passes) == ["clean", "clean", "hotlisted", "hotlisted"]
    frames = [p["entered_frame"] for p in passes]
    assert frames == sorted(frames)
    assert len(set(frames)) == 4
    found = [p for p in passes if p["hit"]]
    assert found, "no hotlisted plate was read and matched"
    assert all(p["label"] == "hotlisted" for p in found)
    assert figures["hits_found"] == figures["plates"]["hits_found"] == len(found)
    for one in found:
        assert one["on_feed_s"] > one["entered_s"]
        assert one["entry_to_feed_ms"] == pytest.approx(
            (one["on_feed_s"] - one["entered_s"]) * 1000.0, abs=2.0
        )
    assert figures["entry_to_feed_ms"]["n"] == len(found)
