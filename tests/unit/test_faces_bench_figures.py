"""`bench faces` figures: pairs files in either label style, TAR at FAR, errors at a threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.bench_faces import FacesBenchError, Pair, load_pairs, pair_figures, tar_at_far


def test_pairs_load_with_yes_no_or_one_zero_and_an_optional_header(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text("image_a,image_b,same\na.jpg,b.jpg,yes\na.jpg,c.jpg,No\n", encoding="utf-8")
    assert load_pairs(path) == [Pair("a.jpg", "b.jpg", True), Pair("a.jpg", "c.jpg", False)]
    path.write_text("a.jpg,b.jpg,1\na.jpg,c.jpg,0\n\n", encoding="utf-8")
    assert [p.same for p in load_pairs(path)] == [True, False]


@pytest.mark.parametrize("text", ["a.jpg,b.jpg\n", "h,h,h\na.jpg,b.jpg,maybe\n", "x,y,same\n"])
def test_a_bad_pairs_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FacesBenchError):
        load_pairs(path)


def test_tar_at_far_sets_the_threshold_above_the_allowed_negatives() -> None:
    negatives = [i / 1000 for i in range(1000)]  # 0.000 .. 0.999
    positives = [0.5, 0.995, 0.9985, 0.9995]
    tar, threshold = tar_at_far(positives, negatives, 0.001)
    assert threshold is not None
    assert 0.998 < threshold <= 0.999
    assert tar == 0.5
    tar, _ = tar_at_far(positives, negatives, 0.01)
    assert tar == 0.75
    assert tar_at_far([], negatives, 0.01) == (None, None)


def test_errors_at_the_shipped_threshold() -> None:
    scored = [
        (Pair("a", "b", True), 0.6),
        (Pair("a", "c", True), 0.3),
        (Pair("a", "d", False), 0.5),
        (Pair("a", "e", False), 0.1),
    ]
    figures = pair_figures(scored, threshold=0.42)
    assert figures["pairs"] == 4
    assert figures["false_accepts"] == 1
    assert figures["false_rejects"] == 1
    assert figures["accuracy"] == 0.5
