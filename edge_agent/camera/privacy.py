"""Privacy at the edge: masked pixels are blacked out of every frame before anything sees it.

A node's privacy policy (`PrivacyPolicy`, one version per node, made and
versioned by the fleet server's privacy page, docs/privacy.md) says per
camera:

- ``masks``: polygons in fractions of the frame (0..1, x right, y down) over
  what the camera must never record — the windows of homes, a school yard.
  `PrivacyGuard.admit` blacks those pixels out of the frame itself in the
  capture thread, before the frame is queued: the motion gate, the detector,
  the reader, the crops in the evidence store and anything else downstream
  only ever get the masked image, so a plate inside a mask is never read and
  its pixels never leave the node. (The motion gate's ``ignore`` regions are
  a different thing: they only keep trees and clocks from waking the
  detector; the pixels are still there for everything else.)
- ``private``: the camera belongs to someone else (a hotel, a plaza, a
  school) and is shared under an agreement: its owner, the agreement's
  reference and expiry, and the data classes it may contribute
  (``live_view``, ``plates``, ``faces``). A private camera whose agreement
  has expired (by the node's clock), or that may contribute neither plates
  nor faces (live view only), gives the analysis nothing: `admit` returns
  None and the frame is dropped and counted. Each stage asks for its own
  class at run time (`PrivacyGuard.allows`): the plate stage ``plates`` on
  every frame, the face stage ``faces`` — so a faces-only camera runs faces
  and never the plate detector or reader.

The policy reaches the node as the runtime config key ``privacy.policy``
(a ``set_config`` command carrying the policy as JSON text), so the config
hash in Birth changes with it. The guard keeps the newest version it has seen
in ``<data_dir>/privacy.json`` and loads it at start, so a restart never
analyses an unmasked frame while it waits for the server; a policy older
than the one held is ignored. The version applied is reported in telemetry
(``privacy_version``); the server lists nodes applying an older one.

This module imports numpy and OpenCV only when a mask is first drawn, so the
config can name its models without them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_agent.camera.standards import Standards
from proto.topics import NAME_PATTERN

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]
    Mask = npt.NDArray[np.bool_]
else:
    Image = Any
    Mask = Any

__all__ = [
    "DATA_CLASSES",
    "CameraPrivacy",
    "PrivacyGuard",
    "PrivacyPolicy",
    "PrivateSource",
    "rasterise",
    "redact",
]

logger = logging.getLogger(__name__)

DataClass = Literal["live_view", "plates", "faces"]
DATA_CLASSES: tuple[str, ...] = ("live_view", "plates", "faces")
MAX_MASKS = 16  # per camera
MAX_POINTS = 32  # per polygon

Point = tuple[Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(ge=0.0, le=1.0)]]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=MAX_POINTS)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PrivateSource(_Model):
    """A privately owned camera shared under an agreement, and what it may contribute."""

    owner: str = Field(min_length=1, max_length=120, description="the owner organisation")
    agreement: str = Field(
        min_length=1, max_length=120, description="the data-sharing agreement's reference"
    )
    expires_at: datetime = Field(description="no data from this camera after this time (UTC)")
    allow: list[DataClass] = Field(
        default_factory=list, max_length=3, description="data classes it may contribute"
    )
    source: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^((rtsp|rtsps|http|https|onvif)://\S+|/dev/video[0-9]{1,2})$",
        description="a third-party camera the node opens itself: an RTSP/HTTP URL, an ONVIF "
        "device (onvif://user:pass@host:port[/profile], edge_agent.camera.onvif; credentials "
        "may be in either, never logged or reported, see `redact`) or a /dev/videoN device",
    )
    standards: Standards | None = Field(
        default=None,
        description="minimums checked on every connect (resolution, frame rate, clock); "
        "a camera below them is live view only (edge_agent.camera.standards)",
    )

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("expires_at needs a UTC offset")
        return value.astimezone(timezone.utc)

    def allows(self, data_class: str, now: datetime) -> bool:
        """True while the agreement runs and it names `data_class`."""
        return now < self.expires_at and data_class in self.allow


class CameraPrivacy(_Model):
    """One camera's masks and, for a private camera, its agreement."""

    masks: list[Polygon] = Field(
        default_factory=list,
        max_length=MAX_MASKS,
        description="polygons blacked out of every frame, fractions of the frame",
    )
    private: PrivateSource | None = Field(
        default=None, description="set for a privately owned camera"
    )


class PrivacyPolicy(_Model):
    """A node's privacy policy: one version, per camera its masks and agreement."""

    version: int = Field(ge=1, le=2**31 - 1, description="the server's version of this policy")
    cameras: dict[Annotated[str, Field(pattern=NAME_PATTERN)], CameraPrivacy] = Field(
        default_factory=dict, max_length=16, description="camera id → its privacy settings"
    )


def rasterise(polygons: Sequence[Sequence[tuple[float, float]]], width: int, height: int) -> Mask:
    """A boolean HxW mask, True inside any polygon (its edge pixels included).

    Corners are fractions of the frame; they are scaled to pixel centres with
    1/16-pixel precision (OpenCV's fixed-point ``shift``) and the polygon is
    filled with its boundary, so a mask never lets a sliver of what it covers
    through at any resolution.
    """
    import cv2
    import numpy as np

    if width <= 0 or height <= 0:
        raise ValueError(f"a frame of {width}x{height} has no pixels")
    canvas = np.zeros((height, width), dtype=np.uint8)
    shapes = []
    for polygon in polygons:
        points = np.array(
            [
                (min(max(x, 0.0), 1.0) * (width - 1), min(max(y, 0.0), 1.0) * (height - 1))
                for x, y in polygon
            ],
            dtype=np.float64,
        )
        shapes.append(np.round(points * 16).astype(np.int32).reshape(-1, 1, 2))
    if shapes:
        cv2.fillPoly(canvas, shapes, 1, lineType=cv2.LINE_8, shift=4)
        cv2.polylines(canvas, shapes, True, 1, lineType=cv2.LINE_8, shift=4)
    mask: Mask = canvas.astype(bool)
    return mask


class PrivacyGuard:
    """Applies the node's privacy policy to frames (see the module docstring); thread-safe.

    `policy` returns the policy in the node's current config (read on every
    frame: a ``set_config`` takes effect on the next one); `now` is the node
    clock's UTC time; `path` keeps the newest version across restarts.
    """

    def __init__(
        self,
        policy: Callable[[], PrivacyPolicy | None],
        *,
        now: Callable[[], datetime],
        path: Path | None = None,
    ) -> None:
        self._source = policy
        self._now = now
        self._path = path
        self._lock = threading.Lock()
        self._held: PrivacyPolicy | None = self._load()
        self._masks: dict[tuple[str, int, int, int], Image] = {}  # uint8 keep-masks
        self.frames_masked = 0
        self.frames_refused = 0

    # ------------------------------------------------------------------ policy

    def _load(self) -> PrivacyPolicy | None:
        if self._path is None or not self._path.exists():
            return None
        try:
            return PrivacyPolicy.model_validate_json(self._path.read_bytes())
        except (OSError, ValidationError, ValueError) as exc:
            # Fail loudly but keep running: the server re-sends to a lagging node.
            logger.error("privacy policy in %s is unreadable (%s); ignored", self._path, exc)
            return None

    def _save(self, policy: PrivacyPolicy) -> None:
        if self._path is None:
            return
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(policy.model_dump_json(), encoding="utf-8")
            os.replace(tmp, self._path)
        except OSError:
            logger.exception("cannot keep privacy policy version %d", policy.version)

    def current(self) -> PrivacyPolicy | None:
        """The newest of the config's policy and the one held from before."""
        offered = self._source()
        with self._lock:
            held = self._held
            if offered is not None and (held is None or offered.version > held.version):
                if held is not None:
                    logger.info("privacy policy version %d → %d", held.version, offered.version)
                self._held = offered
                self._masks.clear()
                self._save(offered)
                return offered
            return held

    @property
    def version(self) -> int | None:
        """The version applied now (None: no policy, nothing masked)."""
        policy = self.current()
        return policy.version if policy is not None else None

    def allows(self, camera_id: str, data_class: str) -> bool:
        """May this camera contribute `data_class` now? (Only private cameras are limited.)"""
        policy = self.current()
        camera = policy.cameras.get(camera_id) if policy is not None else None
        if camera is None or camera.private is None:
            return True
        return camera.private.allows(data_class, self._now())

    def _analysable(self, private: PrivateSource) -> bool:
        """May anything look at this private camera's frames (plates or faces, today)?"""
        now = self._now()
        return private.allows("plates", now) or private.allows("faces", now)

    def standards(self, camera_id: str) -> Standards | None:
        """The minimums this camera must meet on connect (None: a camera of our own, no check)."""
        policy = self.current()
        camera = policy.cameras.get(camera_id) if policy is not None else None
        if camera is None or camera.private is None:
            return None
        return camera.private.standards

    # ------------------------------------------------------------------ frames

    def admit(self, camera_id: str, image: Image) -> Image | None:
        """The frame as the rest of the node may see it: masked, or None when it may not."""
        policy = self.current()
        camera = policy.cameras.get(camera_id) if policy is not None else None
        if camera is None or policy is None:
            return image
        if camera.private is not None and not self._analysable(camera.private):
            # Expired, or live view only: nothing of it is analysed or kept on the node.
            self.frames_refused += 1
            return None
        if not camera.masks:
            return image
        import cv2
        import numpy as np

        height, width = int(image.shape[0]), int(image.shape[1])
        key = (camera_id, policy.version, width, height)
        keep = self._masks.get(key)
        if keep is None:
            # 255 where the frame may be seen, 0 under a mask: one C pass per frame
            # (`bitwise_and` writes a new image; a boolean-index copy was ~100x slower).
            keep = np.where(rasterise(camera.masks, width, height), 0, 255).astype(np.uint8)
            with self._lock:
                self._masks[key] = keep
        masked: Image = np.asarray(cv2.bitwise_and(image, image, mask=keep), dtype=np.uint8)
        self.frames_masked += 1
        return masked

    def stats(self) -> dict[str, Any]:
        """Figures for the component's stats: the version, frames masked and refused."""
        return {
            "version": self.version,
            "frames_masked": self.frames_masked,
            "frames_refused": self.frames_refused,
        }


def redact(source: str) -> str:
    """A source as it may be logged or reported: any ``user:password@`` taken out of the URL."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(source)
    except ValueError:
        return "<unparseable source>"
    if "@" not in parts.netloc:
        return source
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))


def policy_from_text(value: Any) -> Any:
    """A ``privacy.policy`` value: JSON text (from ``set_config``) becomes the model."""
    if isinstance(value, (str, bytes)):
        try:
            return PrivacyPolicy.model_validate(json.loads(value))
        except ValueError as exc:  # JSONDecodeError and ValidationError both are
            raise ValueError(f"privacy policy is not valid: {exc}") from None
    return value
