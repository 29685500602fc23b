"""`bench watchlist` measures what it says: every listed read is an exact hit, every read one
look-alike off a listed plate is a confusable hit, and a random unlisted plate is a hit only
when it really is one look-alike character from a listed plate.

The bench prints figures and asserts nothing; this checks that its counts are true on a
small hotlist (no stack: `--no-e2e`), and that bad options are refused.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from proto.plates import one_confusion_variants
from simulators.bench_watchlist import (
    StreamPass,
    _sizes,
    _stream_figures,
    face_people,
    one_lookalike_off,
    register_watchlist,
    run_matching,
    unique_plates,
)


def test_the_counts_are_the_truth_on_a_small_hotlist(tmp_path: Path) -> None:
    figures = run_matching(work=tmp_path, sizes=[300], reads=150, clean=400, seed=3)
    small = figures["matching"]["300"]
    assert small["bundles"] == 1
    assert small["exact"]["found"] == small["exact"]["reads"] == 150
    assert small["confusable"]["found"] == small["confusable"]["reads"] > 100
    false = figures["false_confusable"]["300"]
    assert false["random_plates"] == 400
    # a clean read counts as right only when it matched nothing: the two figures agree
    assert small["clean"]["found"] == 400 - false["false_confusable_matches"]
    assert false["rate"] == false["false_confusable_matches"] / 400


def test_the_random_set_never_holds_a_listed_plate() -> None:
    rng = random.Random(9)
    listed = set(unique_plates(rng, 500))
    assert len(listed) == 500
    assert not listed & set(unique_plates(rng, 500, avoid=listed))


def test_a_lookalike_swap_is_one_character_and_never_a_listed_plate() -> None:
    rng = random.Random(5)
    listed = {"LEB6881", "LEB6B81"}
    for _ in range(50):
        variant = one_lookalike_off(rng, "LEB6881", listed)
        assert variant is not None
        assert variant not in listed
        assert variant in one_confusion_variants("LEB6881")
    assert one_lookalike_off(rng, "AAA", {"AAA"}) is None  # A has no look-alike


def test_bad_sizes_are_refused() -> None:
    assert _sizes("1000,10000") == [1000, 10000]
    for bad in ("", "ten", "0", "2000000"):
        with pytest.raises(argparse.ArgumentTypeError):
            _sizes(bad)


# ------------------------------------------------------------------ stream (pure parts)


def _pass(kind: str, label: str, entry: str | None, at: float) -> StreamPass:
    return StreamPass(kind=kind, label=label, key=f"{label}-{at}", entry_id=entry,
                      entered_frame=int(at * 5), entered_at=at)  # fmt: skip


def test_a_hit_belongs_to_the_pass_on_screen_and_counts_only_if_it_quotes_that_pass() -> None:
    passes = [
        _pass("plate", "hotlisted", "plate-0", 10.0),
        _pass("plate", "clean", None, 20.0),
        _pass("face", "enrolled", "person-0", 30.0),
        _pass("face", "unenrolled", None, 40.0),
    ]
    written = {
        "h1": (14.0, {"subject": "plate", "entry_id": "plate-0"}),  # true
        "h2": (15.0, {"subject": "plate", "entry_id": "plate-0"}),  # a second hit: duplicate
        "h3": (24.0, {"subject": "plate", "entry_id": "filler-3"}),  # clean plate misread
        "h4": (33.0, {"subject": "person", "entry_id": "person-0"}),  # true
        "h5": (44.0, {"subject": "person", "entry_id": "person-0"}),  # an unenrolled face
        "h6": (5.0, {"subject": "plate", "entry_id": "plate-0"}),  # before anything entered
    }
    arrived = {"h1": 16.5, "h2": 16.0, "h4": 34.0}
    figures = _stream_figures(passes, written, arrived, started=0.0, frames=300)
    assert figures["expected"] == 2
    assert figures["hits_found"] == 2
    assert figures["false_hits"] == {"plates": 2, "faces": 1}
    assert figures["false_hits_on_unenrolled_faces"] == 1
    assert figures["duplicate_hits"] == 1
    assert figures["hits_not_on_feed"] == 3
    assert figures["plates"]["entry_to_feed_ms"] == {"n": 1, "p50": 6500.0, "p99": 6500.0}
    assert figures["faces"]["entry_to_feed_ms"]["p50"] == 4000.0
    assert [p["hit"] for p in figures["per_pass"]] == [True, False, True, False]


def test_face_people_groups_photos_by_the_pairs_file(tmp_path: Path) -> None:
    for name in ("a1.jpg", "a2.jpg", "a3.jpg", "b1.jpg", "c1.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "pairs.csv").write_text(
        "image_a,image_b,same\na1.jpg,a2.jpg,yes\na2.jpg,a3.jpg,yes\na1.jpg,b1.jpg,no\n"
        "b1.jpg,c1.jpg,no\nmissing.jpg,a1.jpg,yes\n"
    )
    assert face_people(tmp_path) == [["a1.jpg", "a2.jpg", "a3.jpg"], ["b1.jpg"], ["c1.jpg"]]


def test_stream_refuses_a_faces_directory_without_pairs_and_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register_watchlist(parser.add_subparsers())
    for argv, says in (
        (["--faces", str(tmp_path)], "no pairs.csv"),
        (["--passes", "0"], "--passes"),
        (["--fps", "100"], "--fps"),
    ):
        args = parser.parse_args(["watchlist", "--stream", *argv, "--results-dir", str(tmp_path)])
        assert args.func(args) == 2
        assert says in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing saved
