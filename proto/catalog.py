"""The list of every message kind, for schema export, golden files and tests.

A kind's name is the channel, plus the event type or command name where the
channel has one: ``status``, ``event.panic``, ``cmd.ping``…

The HTTPS enrollment bodies (`proto.enrollment`) are catalogued beside them
as `BodyKind`s, named ``https.<what>``: the same golden directory, the same
schema export and the same compatibility tests guard both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from proto.enrollment import (
    EnrollPending,
    EnrollRequest,
    EnrollResponse,
    RefusalBody,
    RenewRequest,
    enroll_path,
    renew_path,
)
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


@dataclass(frozen=True)
class BodyKind:
    """One HTTPS body kind: its catalog name, model, and where it travels (for the docs)."""

    name: str
    model: type[BaseModel]
    method: str
    path: str
    status: int | None = None  # the answer's HTTP status; None for a request


def body_kinds() -> list[BodyKind]:
    """Every HTTPS enrollment body kind in a stable order."""
    return [
        BodyKind("https.enroll.request", EnrollRequest, "POST", enroll_path()),
        BodyKind("https.enroll.response", EnrollResponse, "POST", enroll_path(), 200),
        BodyKind("https.enroll.pending", EnrollPending, "POST", enroll_path(), 202),
        BodyKind("https.renew.request", RenewRequest, "POST", renew_path()),
        BodyKind("https.refusal", RefusalBody, "POST", enroll_path(), 403),
    ]


def all_kinds() -> list[MessageKind | BodyKind]:
    """MQTT payload kinds, then HTTPS body kinds: everything with a golden file and a schema."""
    return [*message_kinds(), *body_kinds()]


def json_schema(kind: MessageKind | BodyKind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a payload of `kind` satisfies."""
    schema = kind.model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"urn:nigehbaan:proto:v1:{kind.name}"
    return schema


def export_schemas(out_dir: Path) -> list[Path]:
    """Write one `<kind>.schema.json` per message and body kind; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in all_kinds():
        path = out_dir / f"{kind.name}.schema.json"
        text = json.dumps(json_schema(kind), indent=2, sort_keys=True, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)
    return written
