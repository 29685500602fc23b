"""The look-alike table the server's fuzzy search uses (proto.plates) agrees with the
node's plate rules, and one-confusion variants are what a search sends."""

from __future__ import annotations

from datetime import datetime, timezone

from edge_agent.anpr.rules import builtin_rules
from proto.codec import encode
from proto.limits import MAX_PAYLOAD_BYTES
from proto.messages import MAX_TELEMETRY_CAMERAS, Telemetry
from proto.plates import LOOKALIKE_GROUPS, lookalikes, normalise_plate, one_confusion_variants
from proto.topics import Channel


def test_normalise_keeps_letters_and_digits_upper_case() -> None:
    assert normalise_plate(" lea-1234 ") == "LEA1234"
    assert normalise_plate("LEB 09/6881") == "LEB096881"


def test_one_confusion_variants_change_one_lookalike_at_a_time() -> None:
    variants = one_confusion_variants("LE8-1")
    assert "LE81" in variants  # the query itself
    assert {"IE81", "1E81", "LEB1", "LE8I", "LE8L"} <= set(variants)
    assert "1EB1" not in variants  # two changes
    assert "LEA1" not in variants  # A is no look-alike of 8
    assert len(variants) <= 1 + 3 * len("LE81")


def test_every_lookalike_pair_is_a_correction_in_the_pk_rules() -> None:
    """The node's digit class maps each letter of a group to the group's digit."""
    rules = builtin_rules("pk")
    digit_confusions = rules.classes["D"].confusions
    for group in LOOKALIKE_GROUPS:
        digits = {c for c in group if c.isdigit()}
        assert len(digits) == 1, group
        (digit,) = digits
        for letter in group - digits:
            assert digit_confusions.get(letter) == digit, (letter, digit)
        assert lookalikes(digit) == group - {digit}


def test_telemetry_with_the_most_cameras_fits_the_size_limit() -> None:
    camera = {
        "camera_id": "c" * 64, "frames_in": 2**62, "frames_dropped": 2**62,
        "motion_ratio": 0.123456789, "detector_ms": {"p50": 599999.99, "p95": 599999.99},
        "reader_ms": {"p50": 599999.99, "p95": 599999.99}, "plates_per_hour": 1_000_000,
        "shed": "stopped", "analytics_rate": 0.123456789, "fault": "f" * 64,
    }  # fmt: skip
    report = Telemetry(
        node_id="lhr-gulberg-0042", ts=datetime.now(timezone.utc), uptime_s=1e9,
        cpu_percent=99.9, mem_percent=99.9, disk_free_mb=1e9, temperature_c=99.9,
        outbox_depth=10**9, frames_dropped=10**12, rssi_dbm=-100.5,
        cameras=[{**camera, "camera_id": f"{i}" + "c" * 63} for i in range(MAX_TELEMETRY_CAMERAS)],
    )  # fmt: skip
    assert len(encode(report)) <= MAX_PAYLOAD_BYTES[Channel.TELEMETRY]
