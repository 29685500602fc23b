"""The reader's layout step: text lines become plate rows, captions are left out, rules choose."""

from __future__ import annotations

from edge_agent.anpr.reader import TextLine, choose, group_rows, without_captions
from edge_agent.anpr.rules import load_rules


def _line(text: str, x: float, y: float, h: float) -> TextLine:
    return TextLine(text=text, score=0.99, x=x, y=y, w=len(text) * h * 0.6, h=h)


def test_a_two_row_punjab_plate_is_split_into_its_rows_and_the_caption_dropped() -> None:
    lines = [
        _line("5789", 76, 70, 72),
        _line("PUNJAB", 15, 118, 16),
        _line("LEH-07", 88, 3, 79),
    ]
    rows = group_rows(lines)
    assert [[line.text for line in row] for row in rows] == [["LEH-07"], ["5789"]]


def test_pieces_of_one_row_are_joined_left_to_right() -> None:
    rows = group_rows([_line("868", 200, 10, 60), _line("AMD", 20, 12, 58)])
    assert [[line.text for line in row] for row in rows] == [["AMD", "868"]]


def test_a_caption_the_height_filter_kept_is_left_out_by_the_rules() -> None:
    ranked, confidence = choose(load_rules("pk"), [("R-8501", 0.99), ("KARACHI", 0.98)])
    assert (ranked.canonical, ranked.layout) == ("R8501", "sindh-old")
    assert 0.9 < confidence <= 1.0


def test_a_half_read_year_is_trimmed_rather_than_read_into_the_key() -> None:
    ranked, _ = choose(load_rules("pk"), [("LE-1", 0.84), ("2150", 0.99)])
    assert ranked.canonical == "LE2150"


def test_the_number_row_is_never_dropped_to_fit_a_layout() -> None:
    ranked, _ = choose(load_rules("pk"), [("LEF-14", 0.9), ("7463", 0.99)])
    assert (ranked.canonical, ranked.attributes) == ("LEF7463", {"year": "14"})


def test_a_read_no_layout_fits_comes_back_unknown_with_low_confidence() -> None:
    ranked, confidence = choose(load_rules("pk"), [("1234567890123", 0.9)])
    assert (ranked.layout, ranked.canonical) == ("unknown", "1234567890123")
    assert confidence < 0.5


def test_a_caption_alone_is_no_plate() -> None:
    rules = load_rules("pk")
    assert without_captions(rules, [("PUNJAB", 0.99)]) == []
    assert without_captions(rules, [("AKH-343", 0.9), ("SINDH", 0.99)]) == [("AKH-343", 0.9)]


def test_a_caption_names_the_province_even_when_read_with_one_letter_wrong() -> None:
    from edge_agent.anpr.reader import caption_province

    rules = load_rules("pk")
    assert caption_province(rules, [_line("ICT-ISLAMABAD", 0, 90, 20)]) == "Islamabad"
    assert caption_province(rules, [_line("KHYBER PAKHTUNKHVA", 0, 90, 12)]) == (
        "Khyber Pakhtunkhwa"
    )
    assert caption_province(rules, [_line("BAL0CHISTAN", 0, 90, 12)]) == "Balochistan"
    # Short captions only exactly: KPX is not KPK, and a plate number is no caption.
    assert caption_province(rules, [_line("KPX", 0, 90, 12), _line("AMD868", 0, 0, 40)]) is None


def test_the_plates_colours_name_sindh_punjab_and_islamabad() -> None:
    import numpy as np

    from edge_agent.anpr.reader import province_hint

    white = np.full((60, 120, 3), 245, dtype=np.uint8)
    assert province_hint(white) is None
    orange = white.copy()
    orange[:] = (20, 140, 235)  # BGR: Sindh's yellow gone orange (hue ~11)
    assert province_hint(orange) == "Sindh"
    green = white.copy()
    green[:, :24] = (80, 150, 40)
    assert province_hint(green) == "Punjab"
    blue = white.copy()
    blue[:, :24] = (170, 90, 30)
    assert province_hint(blue) == "Islamabad"


def test_a_layout_of_another_province_than_the_plates_own_evidence_names_none() -> None:
    from edge_agent.anpr.reader import settle_province
    from edge_agent.anpr.rules import rank

    rules = load_rules("pk")
    # TD-483-C on a yellow Sindh plate: only Punjab's district layout fits the text.
    ranked = rank(rules, "TD483", province_hint="Sindh")[0]
    assert ranked.province == "Punjab"
    settled = settle_province(ranked, "Sindh")
    assert settled.province is None
    assert (settled.canonical, settled.layout) == (ranked.canonical, ranked.layout)
    assert settle_province(ranked, "Punjab") is ranked
    assert settle_province(ranked, None) is ranked
