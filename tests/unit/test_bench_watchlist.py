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
from simulators.bench_watchlist import _sizes, one_lookalike_off, run_matching, unique_plates


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
