"""Golden files and the committed schemas guard the contract nodes in the field speak.

A change that removes a field, changes its type, or makes a new field required
breaks a golden payload or the schema compatibility check, and fails the build.
The same checks cover the MQTT payloads and the HTTPS enrollment bodies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from proto.catalog import GOLDEN_DIR, SCHEMA_DIR, BodyKind, MessageKind, all_kinds, json_schema
from proto.codec import decode, encode, encode_canonical
from proto.topics import Topic

KINDS: dict[str, MessageKind | BodyKind] = {k.name: k for k in all_kinds()}
GOLDEN_NODE = "lhr-gulberg-0042"


def test_every_kind_has_a_golden_file_and_no_strays() -> None:
    files = {p.name.removesuffix(".json") for p in GOLDEN_DIR.glob("*.json")}
    assert files == set(KINDS)


def _topic_for(kind: MessageKind, payload: dict[str, Any]) -> Topic:
    topic_name = kind.topic_name
    if kind.name == "reply":
        topic_name = payload["request_id"]
    return Topic(GOLDEN_NODE, kind.channel, topic_name)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_golden_payload_still_decodes_and_re_encodes_identically(name: str) -> None:
    raw = (GOLDEN_DIR / f"{name}.json").read_bytes().rstrip(b"\n")
    kind = KINDS[name]
    if isinstance(kind, MessageKind):
        message = decode(_topic_for(kind, json.loads(raw)), raw)
        assert encode(message) == raw
    else:  # an HTTPS body: the same canonical JSON, through its model
        body = kind.model.model_validate_json(raw)
        assert encode_canonical(body.model_dump(mode="json", exclude_none=True)) == raw


@pytest.mark.parametrize("name", sorted(KINDS))
def test_golden_payload_satisfies_the_exported_schema(name: str) -> None:
    payload = json.loads((GOLDEN_DIR / f"{name}.json").read_bytes())
    jsonschema.Draft202012Validator(json_schema(KINDS[name])).validate(payload)


def _load_committed(name: str) -> dict[str, Any]:
    path: Path = SCHEMA_DIR / f"{name}.schema.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(schema["$defs"][ref.removeprefix("#/$defs/")])
    return node


def _types(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    node = _resolve(schema, node)
    if "anyOf" in node:
        return set().union(*(_types(schema, n) for n in node["anyOf"]))
    if "const" in node:
        return {f"const:{node['const']}"}
    if "enum" in node:
        return {f"enum:{v}" for v in node["enum"]}
    return {str(node.get("type", "object"))}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_current_schema_is_backward_compatible_with_committed(name: str) -> None:
    old = _load_committed(name)
    new = json_schema(KINDS[name])
    removed = set(old["properties"]) - set(new["properties"])
    assert not removed, f"{name}: fields removed: {sorted(removed)}"
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    assert not newly_required, f"{name}: fields became required: {sorted(newly_required)}"
    for field, old_node in old["properties"].items():
        old_types = _types(old, old_node)
        new_types = _types(new, new["properties"][field])
        assert old_types <= new_types, f"{name}.{field}: {old_types} no longer accepted"


@pytest.mark.parametrize("name", sorted(KINDS))
def test_committed_schema_is_current(name: str) -> None:
    """Run `nigehbaan proto schema --out proto/schemas` after a deliberate change."""
    assert _load_committed(name) == json.loads(json.dumps(json_schema(KINDS[name])))
