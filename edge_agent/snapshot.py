"""The ``snapshot`` command: keep each camera's latest frame as evidence, answer with its hash.

When a panic alert opens, the server asks the camera nodes nearest the
pillar for a snapshot (`proto.messages.SnapshotCommand`). This component
answers it on the node: for each camera asked (every camera when the
command names none) it takes the newest frame the camera's capture thread
read, encodes it as JPEG, puts it in the node's evidence store
(`edge_agent.evidence.EvidenceStore`, by SHA-256; pinned in the same call
that writes it, so eviction never takes a panic's evidence) and replies at once
with the hashes. A camera without a usable frame is listed under
``missing`` with the reason: ``unknown_camera``, ``not_started``, ``off``
(power shed it), ``no_frame``, ``stale`` (the newest frame is older than
`max_age_s`: the camera stalled, and an old picture must not pass for the
moment of the press) or ``store_refused``. The picture never travels over
MQTT; the HTTPS evidence upload carries it, referenced by its hash.

The camera pipeline is the `SnapshotSource` (components never import each
other; `build_node` hands this component the pipeline).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from edge_agent.component import CommandHandler, CommandRefused, Health, NodeContext
from edge_agent.evidence import EvidenceError
from proto.messages import Capability, CommandBase, SnapshotCommand

if TYPE_CHECKING:
    from edge_agent.evidence import EvidenceStore

__all__ = ["SnapshotComponent", "SnapshotSource", "Still", "encode_jpeg"]

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90


@dataclass(frozen=True)
class Still:
    """A camera's newest frame (BGR pixels) and how long ago it was read."""

    image: Any
    age_s: float


@runtime_checkable
class SnapshotSource(Protocol):
    """What the snapshot command needs from the camera pipeline."""

    def snapshot_cameras(self) -> Sequence[str]:
        """The node's camera ids."""
        ...

    def latest_still(self, camera_id: str) -> Still | str:
        """The camera's newest frame, or why there is none (``off``, ``no_frame``…)."""
        ...

    def evidence_store(self) -> EvidenceStore | None:
        """The store snapshots go to (None until the pipeline has started)."""
        ...


def encode_jpeg(image: Any) -> bytes:
    """The frame as JPEG bytes (OpenCV, imported only when a snapshot is taken)."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    return bytes(encoded.tobytes())


class SnapshotComponent:
    """Answers ``snapshot`` from a `SnapshotSource`; see the module docstring."""

    name = "snapshot"

    def __init__(self, source: SnapshotSource, *, max_age_s: float = 5.0) -> None:
        if max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        self.source = source
        self.max_age_s = max_age_s
        self.taken = 0
        self.missed = 0

    @property
    def capabilities(self) -> Sequence[Capability]:
        return ()

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"snapshot": self.snapshot}

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        return Health(True, f"{self.taken} snapshots kept, {self.missed} cameras without one")

    async def run(self, ctx: NodeContext) -> None:
        return None

    def snapshot(self, command: CommandBase) -> Mapping[str, Any]:
        """Keep each asked camera's newest frame; the reply lists hashes and what is missing."""
        if not isinstance(command, SnapshotCommand):
            raise CommandRefused(f"not a snapshot command: {type(command).__name__}")
        store = self.source.evidence_store()
        if store is None:
            raise CommandRefused("the camera pipeline has not started: no evidence store yet")
        known = list(self.source.snapshot_cameras())
        wanted = list(dict.fromkeys(command.cameras)) if command.cameras else known
        snapshots: list[dict[str, Any]] = []
        missing: list[dict[str, Any]] = []
        for camera_id in wanted:
            if camera_id not in known:
                missing.append({"camera_id": camera_id, "reason": "unknown_camera"})
                continue
            still = self.source.latest_still(camera_id)
            if isinstance(still, str):
                missing.append({"camera_id": camera_id, "reason": still})
                continue
            if still.age_s > self.max_age_s:
                missing.append(
                    {"camera_id": camera_id, "reason": "stale",
                     "frame_age_s": round(still.age_s, 3)}
                )  # fmt: skip
                continue
            try:
                data = encode_jpeg(still.image)
                # A panic's evidence: pinned in the same call that writes it (no gap).
                digest = store.put(data, suffix=".jpg", pin=True)
            except (EvidenceError, ValueError) as exc:
                logger.warning("snapshot of %s not kept: %s", camera_id, exc)
                missing.append({"camera_id": camera_id, "reason": "store_refused"})
                continue
            describe = getattr(store, "describe", None)  # the uploader signs and sends it
            if callable(describe):
                taken = datetime.now(timezone.utc) - timedelta(seconds=still.age_s)
                describe(
                    digest, data_class="panic_snapshot", event_type="snapshot",
                    camera_id=camera_id, alert_id=command.alert_id, captured_at=taken,
                )  # fmt: skip
            height, width = (int(n) for n in still.image.shape[:2])
            snapshots.append(
                {"camera_id": camera_id, "sha256": digest, "bytes": len(data), "width": width,
                 "height": height, "frame_age_s": round(still.age_s, 3)}
            )  # fmt: skip
        self.taken += len(snapshots)
        self.missed += len(missing)
        logger.info(
            "snapshot for alert %s (%s): %d kept, %d missing",
            command.alert_id, command.reason, len(snapshots), len(missing),
        )  # fmt: skip
        return {"alert_id": command.alert_id, "snapshots": snapshots, "missing": missing}
