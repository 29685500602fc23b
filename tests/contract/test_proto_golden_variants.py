"""Golden variants: a kind's optional fields filled, as a newer node sends them.

`proto/golden/<kind>.json` is the payload as first published and must keep
decoding; `proto/golden/variants/<kind>.<variant>.json` shows fields added
later (the camera issue's plate box, province, layout and canonical key; the
per-camera telemetry list). Each must decode, re-encode byte for byte, and
satisfy the committed schema, so a later change cannot quietly break them.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from proto.catalog import GOLDEN_DIR, SCHEMA_DIR, MessageKind, message_kinds
from proto.codec import decode, encode
from proto.limits import MAX_PAYLOAD_BYTES
from proto.topics import Topic

VARIANT_DIR = GOLDEN_DIR / "variants"
KINDS = {k.name: k for k in message_kinds()}
GOLDEN_NODE = "lhr-gulberg-0042"


def _kind_of(path: Path) -> MessageKind:
    stem = path.name.removesuffix(".json")
    kind_name = stem.rsplit(".", 1)[0]
    assert kind_name in KINDS, f"{path.name}: no kind {kind_name!r}"
    return KINDS[kind_name]


VARIANTS = sorted(VARIANT_DIR.glob("*.json"))


def test_the_camera_issue_variants_exist() -> None:
    names = {p.name for p in VARIANTS}
    assert {"event.plate.camera.json", "telemetry.cameras.json"} <= names


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: p.name)
def test_variant_decodes_re_encodes_and_satisfies_the_committed_schema(path: Path) -> None:
    kind = _kind_of(path)
    raw = path.read_bytes().rstrip(b"\n")
    message = decode(Topic(GOLDEN_NODE, kind.channel, kind.topic_name), raw)
    assert encode(message) == raw
    assert len(raw) <= MAX_PAYLOAD_BYTES[kind.channel]
    schema = json.loads((SCHEMA_DIR / f"{kind.name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(json.loads(raw))
