"""The synthetic plate renderer: every layout draws, the same seed draws the same frame."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("PIL")
pytest.importorskip("cv2")

from edge_agent.anpr.rules import load_rules, rank
from simulators.plates import LAYOUTS, random_plate, render_plate, render_scene


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_renders_a_frame_with_the_plate_inside_it(layout: str) -> None:
    frame, truth = render_scene(random.Random(7), layout=layout, size=(320, 200))
    assert frame.shape == (200, 320, 3)
    assert str(frame.dtype) == "uint8"
    box = truth.box
    assert box.w > 20
    assert box.h > 10
    assert box.x >= 0
    assert box.x + box.w <= 320
    assert box.y >= 0
    assert box.y + box.h <= 200
    assert truth.layout == layout
    # The plate differs from the background: there is ink inside the box.
    assert int(frame[box.y : box.y + box.h, box.x : box.x + box.w].std()) > 10


def test_the_same_seed_draws_the_same_frame() -> None:
    a, truth_a = render_scene(11, size=(160, 120))
    b, truth_b = render_scene(11, size=(160, 120))
    assert truth_a == truth_b
    assert (a == b).all()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_random_plates_fit_their_own_rules(layout: str) -> None:
    rules = load_rules("pk" if LAYOUTS[layout][1] == "PK" else "br")
    rng = random.Random(3)
    province = LAYOUTS[layout][0]
    for _ in range(20):
        rows, canonical, _ = random_plate(layout, rng)
        ranked = rank(rules, list(rows))
        # Punjab's AAA 999 and Sindh's AAA-999 share a shape: colour tells them apart.
        assert ranked[0].canonical == canonical
        # Islamabad's, KP's and Balochistan's layouts are tried only with evidence
        # (a caption, a colour) naming the province: the reader's hint.
        hinted = rank(rules, list(rows), province_hint=province)
        assert any(r.layout == layout and r.canonical == canonical for r in hinted)
        assert hinted[0].province == province, hinted[0]


def test_a_two_row_plate_is_twice_as_wide_as_tall() -> None:
    plate = render_plate("punjab-district", ("LEB-09", "6881"), height=60)
    assert plate.shape == (60, 120, 3)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_tiny_plates_still_render(layout: str) -> None:
    rows, _, _ = random_plate(layout, random.Random(1))
    assert render_plate(layout, rows, height=20).shape[0] == 20
