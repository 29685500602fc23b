"""The text-line detector's plate heuristic: stacked lines merge, non-plate shapes are left out."""

from __future__ import annotations

from edge_agent.anpr.detector import merge_lines, plate_boxes, reach
from edge_agent.anpr.types import Box


def test_the_two_rows_of_a_punjab_plate_merge_into_one_box() -> None:
    top, bottom = Box(100, 200, 90, 30), Box(95, 236, 80, 32)
    assert merge_lines([bottom, top]) == [Box(95, 200, 95, 68)]


def test_lines_side_by_side_or_far_apart_stay_apart() -> None:
    left, right = Box(0, 100, 80, 30), Box(300, 100, 80, 30)
    far_below = Box(0, 300, 80, 30)
    assert len(merge_lines([left, right, far_below])) == 3


def test_plate_boxes_keep_plate_shapes_largest_first() -> None:
    plate = Box(500, 400, 160, 50)
    small_plate = Box(100, 300, 60, 20)
    tall_pole = Box(10, 10, 20, 300)
    speck = Box(700, 10, 12, 6)
    kept = plate_boxes([small_plate, tall_pole, plate, speck], frame_height=720)
    assert kept == [plate, small_plate]


def test_pieces_of_one_row_join_before_rows_stack() -> None:
    # "LEF-" and the year "10" apart, the number "2373" below: one plate.
    series, year, number = Box(100, 100, 70, 30), Box(185, 98, 25, 16), Box(100, 134, 80, 32)
    assert merge_lines([number, year, series]) == [Box(100, 98, 110, 68)]


def test_words_far_apart_on_one_line_stay_apart() -> None:
    assert len(merge_lines([Box(0, 0, 60, 20), Box(200, 0, 60, 20)])) == 2


def test_a_one_line_box_reaches_up_for_a_letter_row_the_frame_detector_missed() -> None:
    number_row = Box(200, 300, 100, 30)
    assert reach(number_row, 1280, 720) == Box(195, 279, 110, 51)
    two_rows = Box(200, 300, 100, 60)
    assert reach(two_rows, 1280, 720) == two_rows
    at_the_top = Box(0, 5, 100, 30)
    assert reach(at_the_top, 1280, 720) == Box(0, 0, 105, 35)
