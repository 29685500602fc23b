"""Plate format rules: the rules files load, rank and correct reads, and never drop a read."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.anpr.errors import RulesError
from edge_agent.anpr.rules import BUILTIN_RULES, load_rules, parse_rules, rank


@pytest.mark.parametrize("name", BUILTIN_RULES)
def test_every_builtin_rules_file_loads(name: str) -> None:
    rules = load_rules(name)
    assert rules.layouts


def test_a_two_row_punjab_plate_keys_on_letters_and_number_and_keeps_the_year() -> None:
    best = rank(load_rules("pk"), ["LEB-09", "6881"])[0]
    assert (best.canonical, best.province, best.layout) == ("LEB6881", "Punjab", "punjab-district")
    assert best.attributes == {"year": "09"}


def test_a_two_row_plate_read_as_one_line_is_split_by_the_rules() -> None:
    best = rank(load_rules("pk"), "LEB096881")[0]
    assert best.canonical == "LEB6881"
    assert best.layout == "punjab-district"


def test_look_alikes_are_corrected_by_position() -> None:
    # 8 in a letter position is B; O and I in digit positions are 0 and 1.
    best = rank(load_rules("pk"), ["LE8-O9", "688I"])[0]
    assert best.canonical == "LEB6881"
    assert best.corrections == 3


def test_a_confident_character_costs_more_to_correct_than_a_doubtful_one() -> None:
    rules = load_rules("pk")
    sure = rank(rules, ["AKH-34S"], confidences=[[1.0] * 7])[0]
    unsure = rank(rules, ["AKH-34S"], confidences=[[1.0] * 6 + [0.1]])[0]
    assert sure.canonical == unsure.canonical == "AKH345"
    assert unsure.cost < sure.cost


def test_sindh_plates_and_the_government_series() -> None:
    rules = load_rules("pk")
    assert rank(rules, "AZU-290")[0].province == "Sindh"
    assert rank(rules, "R-8501")[0].layout == "sindh-old"
    assert rank(rules, "GS-1234")[0].layout == "sindh-government"


def test_a_province_hint_decides_between_layouts_of_the_same_shape() -> None:
    rules = load_rules("pk")
    assert rank(rules, "AKH343", province_hint="Punjab")[0].province == "Punjab"
    assert rank(rules, "AKH343", province_hint="Sindh")[0].province == "Sindh"


def test_a_read_no_layout_fits_is_kept_as_unknown() -> None:
    ranked = rank(load_rules("pk"), "12345678901")
    assert [(r.canonical, r.layout, r.province) for r in ranked] == [
        ("12345678901", "unknown", None)
    ]


def test_brazilian_old_and_mercosur_layouts() -> None:
    rules = load_rules("br")
    assert rank(rules, "AYO-9034")[0].canonical == "AYO9034"
    assert rank(rules, "ABC1B34")[0].layout == "mercosur"
    assert rank(rules, "A8C1234")[0].canonical == "ABC1234"


def test_generic_rules_take_letters_and_digits_without_correcting() -> None:
    ranked = rank(load_rules("generic"), "AB-12 3")
    assert (ranked[0].canonical, ranked[0].layout) == ("AB123", "generic")
    assert rank(load_rules("generic"), "AB1")[0].layout == "unknown"


BAD_PATTERN = """\
country: PK
classes:
  D: {chars: "0123456789"}
layouts:
  - name: ok
    rows: ["D{3}"]
  - name: broken
    rows: ["D{3}", "D{9,2}"]
"""


def test_a_rules_file_with_a_bad_pattern_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PATTERN, encoding="utf-8")
    with pytest.raises(RulesError, match=r"bad\.yaml line 8"):
        load_rules(path)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [("D{3}Q", "undefined class 'Q'"), ("D{3}*", "column 5"), ("(G|)D", "alternatives")],
)
def test_bad_patterns_say_what_is_wrong(pattern: str, why: str) -> None:
    text = (
        f'classes:\n  D: {{chars: "0123456789"}}\nlayouts:\n  - name: x\n    rows: ["{pattern}"]\n'
    )
    with pytest.raises(RulesError, match=r"line 5") as caught:
        parse_rules(text, source="t.yaml")
    assert why in str(caught.value)


def test_a_confusion_into_a_character_outside_the_class_is_refused() -> None:
    text = 'classes:\n  D: {chars: "01", confusions: {O: X}}\nlayouts:\n  - {name: x, rows: [D]}\n'
    with pytest.raises(RulesError, match="line 2"):
        parse_rules(text, source="t.yaml")


def test_a_layout_that_must_not_guess_its_split_needs_the_rows_seen() -> None:
    rules = load_rules("pk")
    assert rank(rules, ["LEB-17", "4201A"])[0].layout == "punjab-district-suffix"
    assert all(r.layout != "punjab-district-suffix" for r in rank(rules, "LEB174201A"))


def test_without_evidence_a_shape_two_provinces_issue_names_no_province() -> None:
    # AMD-868 is an Islamabad plate (ICT-ISLAMABAD under it) that the rules once
    # called Sindh: Punjab's, Sindh's and Islamabad's AAA 999 look alike.
    best = rank(load_rules("pk"), "AMD-868")[0]
    assert best.canonical == "AMD868"
    assert best.province is None
    assert best.layout == "LLL-999"


def test_letters_only_one_province_issues_are_evidence_enough() -> None:
    # U is never issued in Punjab (nor in Islamabad): only Sindh's layout fits.
    best = rank(load_rules("pk"), "AZU-290")[0]
    assert (best.province, best.layout) == ("Sindh", "sindh")


@pytest.mark.parametrize(
    ("text", "hint", "layout"),
    [
        ("AMD-868", "Islamabad", "islamabad"),
        ("PRA-1234", "Khyber Pakhtunkhwa", "khyber-pakhtunkhwa"),
        ("QA-123", "Balochistan", "balochistan"),
        ("GAB 123", "Punjab", "punjab-government"),
        ("GAB 1234", "Punjab", "punjab-government"),
    ],
)
def test_islamabad_kp_balochistan_and_punjab_government_with_their_evidence(
    text: str, hint: str, layout: str
) -> None:
    best = rank(load_rules("pk"), text, province_hint=hint)[0]
    assert (best.canonical, best.layout, best.province) == (
        text.replace("-", "").replace(" ", ""),
        layout,
        hint,
    )


def test_a_layout_needing_evidence_is_never_chosen_without_it() -> None:
    ranked = rank(load_rules("pk"), "PRA-1234", province_hint="Sindh")
    assert all(r.layout not in ("khyber-pakhtunkhwa", "balochistan", "islamabad") for r in ranked)


@pytest.mark.parametrize(
    ("layout_lines", "why"),
    [
        ('    needs_evidence: "yes"\n', "needs_evidence must be true or false"),
        ("    needs_evidence: true\n", "names no province"),
        ("    shape: 3\n", "shape must be a name"),
        ("    colour: green\n", "unknown keys"),
    ],
)
def test_bad_province_evidence_settings_are_refused_naming_the_line(
    layout_lines: str, why: str
) -> None:
    text = (
        "country: XX\nclasses:\n  D: {chars: '0123456789'}\nlayouts:\n"
        "  - name: odd\n    rows: ['D{4}']\n" + layout_lines
    )
    with pytest.raises(RulesError, match=why) as caught:
        parse_rules(text, source="x.yaml")
    assert "x.yaml line 5" in str(caught.value)


def test_a_bad_province_margin_is_refused() -> None:
    text = "province_margin: -1\nclasses:\n  D: {chars: '0'}\nlayouts:\n  - {name: a, rows: [D]}\n"
    with pytest.raises(RulesError, match="province_margin"):
        parse_rules(text, source="x.yaml")


def test_rawalpindis_district_series_keeps_its_i() -> None:
    # RIA-09 over 9133: Punjab's district series (RI: Rawalpindi) do use I.
    rules = load_rules("pk")
    best = rank(rules, ["RIA-09", "9133"])[0]
    assert (best.canonical, best.layout, best.province) == ("RIA9133", "punjab-district", "Punjab")
    assert rank(rules, ["R1A-09", "9133"])[0].canonical == "RIA9133"
