"""The list of every message kind, for schema export, golden files and tests.

A kind's name is the channel, plus the event type or command name where the
channel has one: ``status``, ``event.panic``, ``cmd.ping``…
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proto.messages import (
    COMMAND_MODELS,
    EVENT_MODELS,
    Ack,
    Birth,
    Reply,
    Status,
    Telemetry,
    WireModel,
)
from proto.topics import Channel

GOLDEN_DIR = Path(__file__).with_name("golden")
SCHEMA_DIR = Path(__file__).with_name("schemas")


@dataclass(frozen=True)
class MessageKind:
    """One payload kind: its catalog name, channel, topic name and model."""

    name: str
    channel: Channel
    model: type[WireModel]
    topic_name: str | None = None


def message_kinds() -> list[MessageKind]:
    """Every message kind in a stable order."""
    kinds = [
        MessageKind("status", Channel.STATUS, Status),
        MessageKind("birth", Channel.BIRTH, Birth),
        MessageKind("telemetry", Channel.TELEMETRY, Telemetry),
    ]
    kinds += [
        MessageKind(f"event.{name}", Channel.EVENT, model, name)
        for name, model in EVENT_MODELS.items()
    ]
    kinds += [
        MessageKind(f"cmd.{name}", Channel.CMD, model, name)
        for name, model in COMMAND_MODELS.items()
    ]
    kinds += [
        MessageKind("reply", Channel.REPLY, Reply),
        MessageKind("ack", Channel.ACK, Ack),
    ]
    return kinds


def json_schema(kind: MessageKind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a payload of `kind` satisfies."""
    schema = kind.model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"urn:nigehbaan:proto:v1:{kind.name}"
    return schema


def export_schemas(out_dir: Path) -> list[Path]:
    """Write one `<kind>.schema.json` per message kind; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in message_kinds():
        path = out_dir / f"{kind.name}.schema.json"
        text = json.dumps(json_schema(kind), indent=2, sort_keys=True, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)
    return written
