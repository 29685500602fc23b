"""Per-track voting: reads that disagree in a character still give the plate most frames saw."""

from __future__ import annotations

from edge_agent.anpr.types import Box, PlateRead
from edge_agent.camera.voting import Voter

BOX = Box(0, 0, 100, 30)


def read(text: str, confidence: float = 0.9, canonical: str | None = None) -> PlateRead:
    return PlateRead(text=text, canonical=canonical or text, confidence=confidence, box=BOX)


def test_no_reads_no_vote() -> None:
    assert Voter[str]().result() is None
    voter: Voter[str] = Voter()
    voter.add(read("--", canonical="-"))
    assert voter.result() is None


def test_the_majority_wins_per_position_and_frames_counts_exact_agreement() -> None:
    voter: Voter[str] = Voter()
    for text, crop in [("LEB6881", "a"), ("LEB6BB1", "b"), ("LEB6881", "c"), ("1EB6881", "d")]:
        voter.add(read(text), crop)
    vote = voter.result()
    assert vote is not None
    assert vote.text == "LEB6881"
    assert vote.frames == 2
    assert vote.reads == 4
    assert vote.crop in {"a", "c"}
    assert 0.5 < vote.confidence < 0.9


def test_confidence_weighs_the_vote() -> None:
    voter: Voter[str] = Voter()
    voter.add(read("ABC123", 0.95), "sure")
    voter.add(read("ABC128", 0.30), "unsure-1")
    voter.add(read("ABC128", 0.30), "unsure-2")
    vote = voter.result()
    assert vote is not None
    assert vote.text == "ABC123"
    assert vote.crop == "sure"


def test_the_length_most_reads_agree_on_is_voted_and_separators_do_not_count() -> None:
    voter: Voter[str] = Voter()
    voter.add(read("AB-1234"))
    voter.add(read("AB 1234"))
    voter.add(read("AB12345"))
    vote = voter.result()
    assert vote is not None
    assert vote.text == "AB1234"
    assert vote.frames == 2


def test_a_composite_text_takes_the_closest_read_as_best() -> None:
    voter: Voter[str] = Voter()
    voter.add(read("XB1234", 0.9), "x")
    voter.add(read("AY1234", 0.8), "y")
    voter.add(read("AB1239", 0.7), "z")
    vote = voter.result()
    assert vote is not None
    assert vote.text == "AB1234"  # no single read says it
    assert vote.frames == 1  # at least one, even when none agrees exactly
    assert vote.crop == "x"  # five of six characters agree, and the most confident of those


def test_the_canonical_key_from_the_rules_is_what_is_voted() -> None:
    voter: Voter[str] = Voter()
    voter.add(read("LEB-O9 6881", canonical="LEB6881"))
    voter.add(read("LEB6881"))
    vote = voter.result()
    assert vote is not None
    assert vote.text == "LEB6881"
    assert vote.frames == 2


def placed(text: str, province: str | None, layout: str, confidence: float = 0.9) -> PlateRead:
    return PlateRead(
        text=text,
        canonical=text,
        confidence=confidence,
        box=BOX,
        province=province,
        layout=layout,
    )


def test_one_frame_whose_caption_named_the_province_names_the_pass() -> None:
    # AMD-868: ICT-ISLAMABAD legible on one frame only; the others named no province.
    voter: Voter[str] = Voter()
    for i in range(3):
        voter.add(placed("AMD868", None, "LLL-999", 0.95), f"plain{i}")
    voter.add(placed("AMD868", "Islamabad", "islamabad", 0.8), "captioned")
    vote = voter.result()
    assert vote is not None
    assert (vote.best.province, vote.best.layout, vote.crop) == (
        "Islamabad",
        "islamabad",
        "captioned",
    )
    assert vote.frames == 4


def test_frames_that_disagree_on_the_province_leave_the_pass_with_none() -> None:
    voter: Voter[str] = Voter()
    voter.add(placed("AKH343", "Sindh", "sindh", 0.9))
    voter.add(placed("AKH343", "Punjab", "punjab-car", 0.9))
    vote = voter.result()
    assert vote is not None
    assert vote.best.province is None
    # A clear majority still names it.
    voter.add(placed("AKH343", "Sindh", "sindh", 0.9))
    voter.add(placed("AKH343", "Sindh", "sindh", 0.9))
    vote = voter.result()
    assert vote is not None
    assert vote.best.province == "Sindh"
