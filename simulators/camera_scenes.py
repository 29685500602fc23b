"""The simulated camera's scenes: vehicles with rendered plates driving through the frame.

`render_pass` makes the frames of one vehicle pass with known truth: a
plate drawn by `simulators.plates` (Pakistani layouts, DejaVu fonts from
Debian's packages) on a vehicle body that drives across a textured street,
under the pass's own lighting (overall gain and a gradient across the
frame), blur and sensor noise, with still street before and after so the
motion gate and the tracker see the pass begin and end. It is pure: the
same `random.Random` gives the same frames.

`ScenePlayer` plays passes into a node's simulated camera (`SimCamera`,
``[[cameras]] type = "sim"``) on its own thread at a frame rate, with street
frames between passes, and keeps the truth of every pass it played — so the
demo and scenarios run the **real** pipeline (motion gate → detector →
tracker → reader → vote → one `PlateEvent`) and can check what it read. The
cheap path that makes up plate reads without pixels
(`simulators.synthetic_scene`) stays for city-sized runs.

`anpr_missing()` says why the real pipeline cannot run here (the ``anpr``
extra, OpenCV, Pillow or the fonts missing), or None.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulators.plates import PlateTruth, random_plate, render_plate

if TYPE_CHECKING:
    from hardware.camera import SimCamera

__all__ = [
    "PK_LAYOUTS",
    "ScenePass",
    "ScenePlayer",
    "anpr_missing",
    "camera_analytics",
    "pipeline_camera",
    "render_pass",
]

logger = logging.getLogger(__name__)

PK_LAYOUTS = ("punjab-district", "punjab-car", "sindh")
Image = Any


@dataclass(frozen=True)
class ScenePass:
    """The frames of one vehicle pass and what they show."""

    frames: list[Image]
    truth: PlateTruth


def _street(width: int, height: int, rng: random.Random) -> Image:
    import numpy as np

    nrng = np.random.default_rng(rng.getrandbits(32))
    street = nrng.integers(40, 110, size=(height, width, 3), dtype=np.uint8)
    street[int(0.75 * height) :] //= 2  # the road, darker than the walls behind it
    return street


def render_pass(
    rng: random.Random | int,
    *,
    layout: str | None = None,
    layouts: Sequence[str] = PK_LAYOUTS,
    size: tuple[int, int] = (640, 360),
    frames: int = 18,
    plate_height: int = 56,
    lighting: bool = True,
    blur: bool = True,
) -> ScenePass:
    """One vehicle pass across a still street: 3 street frames, `frames` with the vehicle, 6 after.

    The truth's box is the plate's box in the middle frame of the pass.
    """
    import cv2
    import numpy as np

    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    layout = layout or rng.choice(list(layouts))
    rows, canonical, year = random_plate(layout, rng)
    face = render_plate(layout, rows)  # drawn large, then scaled: small sizes lose the fonts
    scale = plate_height / face.shape[0]
    plate = cv2.resize(
        face, (round(face.shape[1] * scale), plate_height), interpolation=cv2.INTER_AREA
    )
    ph, pw = plate.shape[:2]
    width, height = size
    street = _street(width, height, rng)
    body = tuple(rng.randint(20, 200) for _ in range(3))
    gain = rng.uniform(0.7, 1.1) if lighting else 1.0
    slope = np.linspace(1.0, rng.uniform(0.85, 1.15), width) if lighting else np.ones(width)
    sigma = rng.uniform(0.0, 0.8) if blur else 0.0
    noise = rng.uniform(1.0, 4.0) if lighting else 0.0
    nrng = np.random.default_rng(rng.getrandbits(32))
    span = max(1, width - pw - 80)
    step_x = span / max(1, frames - 1)
    y0 = height - ph - 60 - rng.randint(0, 30)

    def shot(frame: Image) -> Image:
        if not (lighting or blur):
            return frame
        lit: Any = frame.astype(np.float32) * (gain * slope)[None, :, None]
        if sigma > 0.3:
            lit = cv2.GaussianBlur(lit, (0, 0), sigma)
        if noise:
            lit += nrng.normal(0.0, noise, size=lit.shape)
        return np.clip(lit, 0, 255).astype(np.uint8)

    out = [shot(street.copy()) for _ in range(3)]
    box = None
    for i in range(frames):
        frame = street.copy()
        x, y = 40 + round(step_x * i), y0 - 2 * i
        cv2.rectangle(frame, (x - 40, y - 70), (x + pw + 40, y + ph + 40), body, -1)
        frame[y : y + ph, x : x + pw] = plate
        out.append(shot(frame))
        if i == frames // 2:
            from edge_agent.anpr.types import Box

            box = Box(x, y, pw, ph)
    out += [shot(street.copy()) for _ in range(6)]
    province, country = _layout_place(layout)
    assert box is not None
    truth = PlateTruth(
        canonical=canonical, rows=rows, layout=layout, province=province, country=country,
        box=box, year=year,
    )  # fmt: skip
    return ScenePass(frames=out, truth=truth)


def _layout_place(layout: str) -> tuple[str | None, str]:
    from simulators.plates import LAYOUTS

    return LAYOUTS[layout]


def anpr_missing() -> str | None:
    """Why the real plate pipeline cannot run here, or None when it can."""
    for module, extra in (("cv2", "camera"), ("rapidocr", "anpr"), ("PIL", "anpr")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install 'nigehbaan[{extra}]')"
    from simulators.plates import PlateRenderError, font_path

    try:
        font_path()
    except PlateRenderError as exc:
        return str(exc)
    return None


def camera_analytics(camera_id: str = "gate", *, max_fps: float = 4.0) -> dict[str, Any]:
    """The agent config sections that give a node one simulated camera with the real pipeline."""
    return {
        "cameras": [{"type": "sim", "id": camera_id, "max_queued": 64}],
        "analytics": {
            camera_id: {
                "max_fps": max_fps,
                "queue_size": 16,
                "detector": "edge_agent.anpr.detector:OcrLineDetector",
                "reader": "edge_agent.anpr.reader:RapidOcrReader",
            }
        },
    }


def pipeline_camera(node: Any, camera_id: str = "gate") -> Callable[[], SimCamera | None]:
    """A lookup of `node`'s simulated camera once its pipeline opened it (None until then)."""

    def lookup() -> SimCamera | None:
        from hardware.camera import SimCamera

        try:
            pipeline = node.component("camera")
        except KeyError:  # a node built without cameras
            return None
        worker = getattr(pipeline, "workers", {}).get(camera_id)
        source = getattr(worker, "source", None)
        return source if isinstance(source, SimCamera) else None

    return lookup


@dataclass
class ScenePlayer:
    """Plays rendered vehicle passes into a simulated camera on a thread (see the module doc).

    `camera` returns the camera (None until it is open); `gap_s` is the range
    of seconds of still street between passes. `played` holds each pass's
    truth once all its frames were pushed.
    """

    camera: Callable[[], SimCamera | None]
    seed: int = 0
    fps: float = 6.0
    gap_s: tuple[float, float] = (3.0, 8.0)
    layouts: Sequence[str] = PK_LAYOUTS
    size: tuple[int, int] = (640, 360)
    max_passes: int | None = None
    played: list[PlateTruth] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start playing (a daemon thread; `stop` ends it)."""
        self._thread = threading.Thread(target=self._run, name="scene-player", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the current frame."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        frame_s = 1.0 / self.fps
        while not self._stop.is_set():
            camera = self.camera()
            if camera is None:
                self._stop.wait(0.5)
                continue
            if self.max_passes is not None and len(self.played) >= self.max_passes:
                return
            try:
                scene = render_pass(rng, layouts=self.layouts, size=self.size)
            except Exception:
                logger.exception("scene player: cannot render a pass; stopping")
                return
            for frame in scene.frames:
                if self._stop.is_set():
                    return
                camera.push_frame(frame)
                time.sleep(frame_s)
            self.played.append(scene.truth)
            logger.info("scene player: %s drove past", scene.truth.canonical)
            still = scene.frames[-1]
            gap_end = time.monotonic() + rng.uniform(*self.gap_s)
            while time.monotonic() < gap_end and not self._stop.is_set():
                camera.push_frame(still)
                time.sleep(frame_s)
