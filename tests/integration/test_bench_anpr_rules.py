"""`nigehbaan bench anpr --rules generic` and `--rules FILE`, end to end on rendered plates.

`--rules pk` is exercised in `test_bench_anpr.py`; here the other two ways
of naming rules: the built-in `generic` rules (letters and digits, 4–8
characters, no layout of a country) on rendered frames with openalpr-style
truth, and a rules file of the user's own on rendered crops. A rules file
with a bad pattern is refused before any image is read, naming the file and
the line, with a non-zero exit. Never ../shared data.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rapidocr")
pytest.importorskip("PIL")

import cv2

from simulators.plates import random_plate, render_plate, render_scene

NIGEHBAAN = [sys.executable, "-m", "edge_agent.console", "--log-level", "WARNING"]

# The user's own rules: Punjab's newer car plates only (AAA 999), with look-alikes.
OWN_RULES = """\
# A site's own rules file (syntax: edge_agent/anpr/rules/pk.yaml).
country: PK
max_corrections: 1
classes:
  L:
    chars: ABCDEFGHJKLMNPQRSTVWXYZ
    confusions: {"0": D, "8": B, "5": S}
  D:
    chars: "0123456789"
    confusions: {O: "0", I: "1", B: "8", S: "5"}
layouts:
  - name: site-car
    rows: ["L{3}-D{3}"]
    province: Punjab
"""


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NIGEHBAAN, "bench", "anpr", *args, "--json",
         "--results-dir", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def json_line(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-3000:]
    line: dict[str, Any] = json.loads(result.stdout.strip())
    return line


def test_generic_rules_score_rendered_frames_with_openalpr_truth(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for index, layout in enumerate(("punjab-car", "mercosur", "br-old")):
        frame, truth = render_scene(random.Random(100 + index), layout=layout, clean=True)
        cv2.imwrite(str(scenes / f"scene{index}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        box = truth.box
        (scenes / f"scene{index}.txt").write_text(
            f"scene{index}.jpg\t{box.x}\t{box.y}\t{box.w}\t{box.h}\t{truth.canonical}\n",
            encoding="utf-8",
        )
    line = json_line(
        bench(tmp_path, "--images", str(scenes), "--truth", str(scenes), "--rules", "generic")
    )
    assert (line["rules"], line["country"], line["images"]) == ("generic", "XX", 3)
    assert line["detect_recall"] == 1.0
    assert line["exact_rate"] >= 2 / 3, line["misses"]
    assert set(line["ms_per_read"]) == {"p50", "p95"}
    assert line["province_right_rate"] is None  # no country, no province


def test_a_rules_file_of_one_s_own_reads_rendered_crops(tmp_path: Path) -> None:
    rules = tmp_path / "site-rules.yaml"
    rules.write_text(OWN_RULES, encoding="utf-8")
    crops = tmp_path / "crops"
    crops.mkdir()
    rng = random.Random(11)
    lines = ["file,plate"]
    for index in range(3):
        rows, canonical, _ = random_plate("punjab-car", rng)
        cv2.imwrite(str(crops / f"{index}.png"), render_plate("punjab-car", rows, height=100))
        lines.append(f"{index}.png,{canonical}")
    truth = tmp_path / "labels.csv"
    truth.write_text("\n".join(lines) + "\n", encoding="utf-8")
    line = json_line(
        bench(tmp_path, "--images", str(crops), "--truth", str(truth), "--rules", str(rules))
    )
    assert line["rules"] == str(rules)
    assert (line["images"], line["exact_rate"], line["detect_recall"]) == (3, 1.0, None)
    assert line["false_reads"] == 0


def test_a_rules_file_with_a_bad_pattern_is_refused_naming_the_line(tmp_path: Path) -> None:
    rules = tmp_path / "broken.yaml"
    # Line 13 (the layout's rows): a repeat that is never closed.
    rules.write_text(OWN_RULES.replace('"L{3}-D{3}"', '"L{3-D{3}"'), encoding="utf-8")
    crops = tmp_path / "crops"
    crops.mkdir()
    cv2.imwrite(str(crops / "0.png"), render_plate("punjab-car", ("LEA-123",), height=100))
    truth = tmp_path / "labels.csv"
    truth.write_text("file,plate\n0.png,LEA123\n", encoding="utf-8")
    result = bench(tmp_path, "--images", str(crops), "--truth", str(truth), "--rules", str(rules))
    assert result.returncode != 0
    assert result.stdout == ""  # no JSON line for a run that did not happen
    assert "broken.yaml" in result.stderr
    assert "line 13" in result.stderr, result.stderr
    assert not list((tmp_path / "results").glob("anpr-*.json"))
