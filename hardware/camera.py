"""Camera sources: frames from a Pi camera, OpenCV capture, or a simulated camera tests drive.

One interface, `CameraSource`: ``read(timeout_s=...)`` blocks until the next
`Frame` (an image as a numpy array, HxWx3 uint8, BGR as OpenCV gives it,
stamped with the backend's clock and numbered) or returns None when none came
in time; ``close()`` releases the device. Reading blocks, so the camera
pipeline calls it from a worker thread behind a bounded queue (the source
never starts threads itself). A source counts what it read, what it dropped
and its consecutive read failures; `health` says whether frames are flowing,
which OTA's health gate and the node's health report read.

Backends, registered in `CAMERAS` (entry-point group
``nigehbaan.hardware.cameras``) by their config model and selected with
``type`` (see `CameraConfig`):

- ``picamera2``: the Raspberry Pi camera stack (libcamera), imported only
  when built, so only on a Pi.
- ``opencv``: ``cv2.VideoCapture`` on a USB camera index, an RTSP/HTTP URL or
  a video file, or an image folder read in name order; cv2 is imported only
  when built (``pip install 'nigehbaan[camera]'``).
- ``sim``: `SimCamera`, a bounded queue of frames that a test fills with
  `SimCamera.push_frame` or plays from any iterable (`SimCamera.play`; a
  synthetic scene renders into one). `hardware` never imports `simulators`,
  so scenes are handed in as frames.

numpy is needed only once frames exist; it is imported lazily here.
"""

from __future__ import annotations

import collections
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from hardware.clock import Clock, SystemClock
from hardware.errors import BackendUnavailable, HardwareError
from hardware.registry import BackendConfig, BackendRegistry

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]
else:
    Image = Any

__all__ = [
    "CAMERAS",
    "CameraConfig",
    "CameraHealth",
    "CameraReadError",
    "CameraSource",
    "Frame",
    "OpenCvCamera",
    "OpenCvCameraConfig",
    "Picamera2Camera",
    "Picamera2Config",
    "SimCamera",
    "SimCameraConfig",
    "load_camera",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class CameraReadError(HardwareError):
    """A frame could not be read (device gone, stream broken, unreadable file)."""


@dataclass(frozen=True)
class Frame:
    """One captured image, stamped with the source's clock (monotonic) and numbered."""

    image: Image
    t: float
    index: int
    camera_id: str


@dataclass(frozen=True)
class CameraHealth:
    """Whether frames are flowing, and why not."""

    ok: bool
    detail: str


class CameraSource(ABC):
    """A source of frames; see the module docstring."""

    name: str

    def __init__(self, *, camera_id: str = "cam-1", clock: Clock | None = None) -> None:
        self.camera_id = camera_id
        self.clock: Clock = clock or SystemClock()
        self.frames_read = 0
        self.frames_dropped = 0
        self.read_failures = 0  # consecutive
        self.last_frame_at: float | None = None
        # The wall time the source itself stamped on the last frame, for a source that
        # gives one (the standards check compares it with the node's clock); None: unknown.
        self.source_time: datetime | None = None
        self.closed = False

    @abstractmethod
    def _grab(self, timeout_s: float | None) -> Image | None:
        """The next image, or None if none came within `timeout_s`."""

    def read(self, *, timeout_s: float | None = 1.0) -> Frame | None:
        """Block for the next frame (at most `timeout_s`; None: wait); None when none came."""
        if self.closed:
            raise CameraReadError(f"camera {self.camera_id} is closed")
        try:
            image = self._grab(timeout_s)
        except CameraReadError:
            self.read_failures += 1
            raise
        if image is None:
            return None
        self.read_failures = 0
        now = self.clock.monotonic()
        frame = Frame(image=image, t=now, index=self.frames_read, camera_id=self.camera_id)
        self.frames_read += 1
        self.last_frame_at = now
        return frame

    def frames(self, *, timeout_s: float | None = 1.0) -> Iterator[Frame]:
        """Frames until the source ends (a file played out) or a read times out."""
        while True:
            frame = self.read(timeout_s=timeout_s)
            if frame is None:
                return
            yield frame

    def health(self, *, stale_after_s: float = 10.0) -> CameraHealth:
        """Frames flowing: one came within `stale_after_s` and the last read did not fail."""
        if self.closed:
            return CameraHealth(False, "closed")
        if self.read_failures:
            return CameraHealth(False, f"{self.read_failures} failed reads in a row")
        if self.last_frame_at is None:
            return CameraHealth(False, "no frame yet")
        age = self.clock.monotonic() - self.last_frame_at
        if age > stale_after_s:
            return CameraHealth(False, f"no frame for {age:.1f}s")
        return CameraHealth(True, f"{self.frames_read} frames, {self.frames_dropped} dropped")

    def close(self) -> None:
        """Release the device; reads fail after this."""
        self.closed = True


class CameraConfig(BackendConfig[CameraSource]):
    """Base of every camera's config model (``[[cameras]]`` entries in agent.toml)."""

    id: str = Field(
        default="cam-1",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="camera id on this node (sent with its events)",
    )


# -------------------------------------------------------------------- sim


class SimCamera(CameraSource):
    """Frames a test pushes (or an iterable it plays); bounded, drops the oldest when full."""

    name = "sim"

    def __init__(
        self,
        *,
        camera_id: str = "cam-1",
        clock: Clock | None = None,
        max_queued: int = 32,
        frames: Iterable[Image] | None = None,
    ) -> None:
        super().__init__(camera_id=camera_id, clock=clock)
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self._queue: collections.deque[Image] = collections.deque()
        self._max = max_queued
        self._ready = threading.Condition()
        self._source: Iterator[Image] | None = iter(frames) if frames is not None else None
        self.fail_next = 0  # a test makes the next N reads fail

    def push_frame(self, image: Image) -> None:
        """Queue one image (any thread); when the queue is full the oldest is dropped, counted."""
        _check_image(image)
        with self._ready:
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self.frames_dropped += 1
            self._queue.append(image)
            self._ready.notify()

    def play(self, frames: Iterable[Image]) -> None:
        """Read from `frames` once the pushed ones are used up (e.g. a rendered scene)."""
        with self._ready:
            self._source = iter(frames)
            self._ready.notify()

    def _grab(self, timeout_s: float | None) -> Image | None:
        if self.fail_next:
            self.fail_next -= 1
            raise CameraReadError(f"simulated read failure on {self.camera_id}")
        with self._ready:
            if not self._queue and self._source is not None:
                image = next(self._source, None)
                if image is not None:
                    _check_image(image)
                    return image
                self._source = None
            if not self._queue and not self._ready.wait_for(lambda: bool(self._queue), timeout_s):
                return None
            return self._queue.popleft()


class SimCameraConfig(CameraConfig):
    """``type = "sim"``: a simulated camera fed by tests and simulators."""

    type: Literal["sim"] = Field(description="simulated camera (frames pushed or played)")
    max_queued: int = Field(
        default=32, ge=1, le=10_000, description="frames held before the oldest is dropped"
    )

    def create(self, *, clock: Clock) -> CameraSource:
        return SimCamera(camera_id=self.id, clock=clock, max_queued=self.max_queued)


def _check_image(image: Any) -> None:
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) not in (2, 3) or 0 in shape:
        raise HardwareError(f"a frame must be a 2-D or 3-D image array, got shape {shape!r}")


# ----------------------------------------------------------------- OpenCV


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailable(
            f"OpenCV is not installed ({exc}); install nigehbaan[camera]"
        ) from exc
    return cv2


class OpenCvCamera(CameraSource):
    """``cv2.VideoCapture`` (USB index, RTSP/HTTP URL, video file) or an image folder."""

    name = "opencv"

    def __init__(
        self,
        *,
        device: int | None = None,
        url: str | None = None,
        file: Path | None = None,
        folder: Path | None = None,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
        camera_id: str = "cam-1",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(camera_id=camera_id, clock=clock)
        given = [x for x in (device, url, file, folder) if x is not None]
        if len(given) != 1:
            raise HardwareError("give exactly one of device, url, file, folder")
        self._cv2 = _import_cv2()
        self.loop = loop
        self._capture: Any = None
        self._images: list[Path] = []
        self._next_image = 0
        if folder is not None:
            if not folder.is_dir():
                raise BackendUnavailable(f"image folder {folder} does not exist")
            self._images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise BackendUnavailable(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
            self.source = str(folder)
            return
        if file is not None and not file.is_file():
            raise BackendUnavailable(f"video file {file} does not exist")
        target: int | str = device if device is not None else str(url if url is not None else file)
        self.source = str(target)
        self._target = target
        self._capture = self._cv2.VideoCapture(target)
        if not self._capture.isOpened():
            raise BackendUnavailable(f"OpenCV cannot open {self.source}")
        if width is not None:
            self._capture.set(self._cv2.CAP_PROP_FRAME_WIDTH, width)
        if height is not None:
            self._capture.set(self._cv2.CAP_PROP_FRAME_HEIGHT, height)

    def _grab(self, timeout_s: float | None) -> Image | None:
        if self._images:
            return self._grab_image()
        ok, image = self._capture.read()
        if ok and image is not None:
            return image  # type: ignore[no-any-return]
        if isinstance(self._target, str) and self.loop and self.frames_read:
            self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
            if ok and image is not None:
                return image  # type: ignore[no-any-return]
        if isinstance(self._target, int) or self._target.startswith(("rtsp:", "http")):
            raise CameraReadError(f"no frame from {self.source}")
        return None  # a video file played out

    def _grab_image(self) -> Image | None:
        if self._next_image >= len(self._images):
            if not self.loop:
                return None
            self._next_image = 0
        path = self._images[self._next_image]
        self._next_image += 1
        image = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
        if image is None:
            raise CameraReadError(f"cannot read image {path}")
        return image  # type: ignore[no-any-return]

    def close(self) -> None:
        super().close()
        if self._capture is not None:
            self._capture.release()


class OpenCvCameraConfig(CameraConfig):
    """``type = "opencv"``: exactly one of `device`, `url`, `file`, `folder`."""

    type: Literal["opencv"] = Field(description="OpenCV capture or an image folder")
    device: int | None = Field(default=None, ge=0, le=63, description="USB camera index")
    url: str | None = Field(
        default=None,
        pattern=r"^(rtsp|rtsps|http|https)://",
        max_length=500,
        description="network stream (RTSP from an IP camera, or HTTP MJPEG)",
    )
    file: Path | None = Field(default=None, description="a video file (tests, replays)")
    folder: Path | None = Field(default=None, description="a folder of images, read in name order")
    loop: bool = Field(default=False, description="start a file or folder again at its end")
    width: int | None = Field(default=None, ge=16, le=8192, description="requested width")
    height: int | None = Field(default=None, ge=16, le=8192, description="requested height")

    @model_validator(mode="after")
    def _one_source(self) -> OpenCvCameraConfig:
        given = [n for n in ("device", "url", "file", "folder") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of device, url, file, folder")
        return self

    def create(self, *, clock: Clock) -> CameraSource:
        return OpenCvCamera(
            device=self.device,
            url=self.url,
            file=self.file,
            folder=self.folder,
            loop=self.loop,
            width=self.width,
            height=self.height,
            camera_id=self.id,
            clock=clock,
        )


# -------------------------------------------------------------- picamera2


class Picamera2Camera(CameraSource):
    """The Raspberry Pi camera through picamera2 (libcamera); only on a Pi."""

    name = "picamera2"

    def __init__(
        self,
        *,
        camera_num: int = 0,
        width: int = 1280,
        height: int = 720,
        camera_id: str = "cam-1",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(camera_id=camera_id, clock=clock)
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise BackendUnavailable(f"picamera2 is not installed: {exc}") from exc
        try:
            self._camera: Any = Picamera2(camera_num)
            config = self._camera.create_video_configuration(
                main={"size": (width, height), "format": "BGR888"}
            )
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:  # libcamera raises many types for "no camera here"
            raise BackendUnavailable(f"cannot open Pi camera {camera_num}: {exc}") from exc

    def _grab(self, timeout_s: float | None) -> Image | None:
        try:
            return self._camera.capture_array("main")  # type: ignore[no-any-return]
        except Exception as exc:
            raise CameraReadError(f"Pi camera read failed: {exc}") from exc

    def close(self) -> None:
        super().close()
        self._camera.close()


class Picamera2Config(CameraConfig):
    """``type = "picamera2"``: the Pi camera module (CSI)."""

    type: Literal["picamera2"] = Field(description="Raspberry Pi camera through picamera2")
    camera_num: int = Field(default=0, ge=0, le=7, description="which CSI camera")
    width: int = Field(default=1280, ge=64, le=4608, description="frame width")
    height: int = Field(default=720, ge=64, le=3496, description="frame height")

    def create(self, *, clock: Clock) -> CameraSource:
        return Picamera2Camera(
            camera_num=self.camera_num,
            width=self.width,
            height=self.height,
            camera_id=self.id,
            clock=clock,
        )


CAMERAS: BackendRegistry[CameraSource] = BackendRegistry(
    capability="camera",
    group="nigehbaan.hardware.cameras",
    builtin={
        "sim": "hardware.camera:SimCameraConfig",
        "opencv": "hardware.camera:OpenCvCameraConfig",
        "picamera2": "hardware.camera:Picamera2Config",
    },
)


def load_camera(
    config: CameraConfig | dict[str, Any], *, clock: Clock | None = None
) -> CameraSource:
    """Validate a ``[[cameras]]`` entry and open that camera."""
    return CAMERAS.create(config, clock=clock or SystemClock())
