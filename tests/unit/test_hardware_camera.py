"""Camera sources keep one contract: frames in order, stamped, counted; None when none come.

One contract test runs over every backend that can load here: the simulated
camera, OpenCV on a video file and on an image folder that the test writes
itself, and picamera2 (skipped off a Pi). OpenCV tests are skipped with the
reason when cv2 is not installed (``pip install 'nigehbaan[camera]'``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware import CAMERAS, BackendUnavailable, CameraSource, ManualClock, SimCamera, load_camera
from hardware.camera import CameraReadError, OpenCvCamera, Picamera2Camera
from hardware.errors import HardwareError

np = pytest.importorskip("numpy", reason="numpy is needed for frames (nigehbaan[camera])")

WIDTH, HEIGHT, COUNT = 64, 48, 6


def scene(count: int = COUNT) -> Iterator[Any]:
    """A synthetic street: a bright 'vehicle' box crossing a dark road, one step per frame."""
    for i in range(count):
        frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        x = 4 + i * 8
        frame[18:30, x : x + 12] = (40 * i % 256, 200, 255)
        yield frame


def _cv2() -> Any:
    return pytest.importorskip("cv2", reason="OpenCV is not installed (nigehbaan[camera])")


def write_video(path: Path) -> Path:
    cv2 = _cv2()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for frame in scene():
        writer.write(frame)
    writer.release()
    return path


def write_folder(path: Path) -> Path:
    cv2 = _cv2()
    path.mkdir()
    for i, frame in enumerate(scene()):
        assert cv2.imwrite(str(path / f"frame-{i:03d}.png"), frame)
    (path / "notes.txt").write_text("not an image")
    return path


def _sim() -> CameraSource:
    camera = SimCamera(max_queued=COUNT)
    for frame in scene():
        camera.push_frame(frame)
    return camera


def _picamera2() -> CameraSource:
    try:
        return Picamera2Camera(width=WIDTH * 2, height=HEIGHT * 2)
    except BackendUnavailable as exc:
        pytest.skip(f"picamera2 cannot load here: {exc}")


MAKERS: dict[str, Callable[[Path], CameraSource]] = {
    "sim": lambda _tmp: _sim(),
    "opencv-file": lambda tmp: OpenCvCamera(file=write_video(tmp / "street.avi")),
    "opencv-folder": lambda tmp: OpenCvCamera(folder=write_folder(tmp / "frames")),
    "picamera2": lambda _tmp: _picamera2(),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_every_camera_gives_stamped_numbered_frames_in_order(kind: str, tmp_path: Path) -> None:
    camera = MAKERS[kind](tmp_path)
    try:
        frames = [camera.read(timeout_s=2.0) for _ in range(3)]
        assert all(f is not None for f in frames)
        assert [f.index for f in frames if f] == [0, 1, 2]
        times = [f.t for f in frames if f]
        assert times == sorted(times)
        first = frames[0]
        assert first is not None
        assert first.image.ndim == 3
        assert first.image.shape[2] == 3
        assert first.image.dtype == np.uint8
        assert camera.frames_read == 3
        assert camera.health().ok
    finally:
        camera.close()
    assert not camera.health().ok
    with pytest.raises(CameraReadError):
        camera.read(timeout_s=0.0)


# ---------------------------------------------------------------- simulated


def test_a_pushed_frame_comes_back_as_it_was_pushed() -> None:
    clock = ManualClock(start=5.0)
    camera = SimCamera(clock=clock, camera_id="cam-2")
    image = next(scene())
    camera.push_frame(image)
    frame = camera.read(timeout_s=0.0)
    assert frame is not None
    assert frame.image is image
    assert (frame.t, frame.index, frame.camera_id) == (5.0, 0, "cam-2")
    assert camera.read(timeout_s=0.0) is None  # nothing more: no frame, no block


def test_a_full_queue_drops_the_oldest_frame_and_counts_it() -> None:
    camera = SimCamera(max_queued=2)
    frames = list(scene(4))
    for frame in frames:
        camera.push_frame(frame)
    assert camera.frames_dropped == 2
    got = [camera.read(timeout_s=0.0) for _ in range(2)]
    assert [g.image is f for g, f in zip(got, frames[2:], strict=True) if g] == [True, True]


def test_the_sim_camera_plays_a_synthetic_scene_after_what_was_pushed() -> None:
    camera = SimCamera()
    pushed = np.full((HEIGHT, WIDTH, 3), 7, dtype=np.uint8)
    camera.push_frame(pushed)
    camera.play(scene())
    images = [f.image for f in camera.frames(timeout_s=0.0)]
    assert len(images) == 1 + COUNT
    assert images[0] is pushed
    # The vehicle moves right by 8 pixels a frame.
    columns = [int(np.argmax(img[24, :, 1] > 0)) for img in images[1:]]
    assert columns == [4 + 8 * i for i in range(COUNT)]


def test_a_blocked_read_wakes_when_another_thread_pushes_a_frame() -> None:
    camera = SimCamera()
    image = next(scene())
    pusher = threading.Timer(0.05, camera.push_frame, args=(image,))
    pusher.start()
    try:
        frame = camera.read(timeout_s=5.0)
    finally:
        pusher.join()
    assert frame is not None
    assert frame.image is image


def test_health_says_whether_frames_are_flowing() -> None:
    clock = ManualClock(start=0.0)
    camera = SimCamera(clock=clock)
    assert camera.health().detail == "no frame yet"
    camera.push_frame(next(scene()))
    camera.read(timeout_s=0.0)
    assert camera.health().ok
    clock.advance(11.0)
    assert camera.health().detail == "no frame for 11.0s"
    camera.fail_next = 2
    for _ in range(2):
        with pytest.raises(CameraReadError):
            camera.read(timeout_s=0.0)
    assert camera.health().detail == "2 failed reads in a row"


def test_a_frame_that_is_not_an_image_is_refused() -> None:
    with pytest.raises(HardwareError, match="image array"):
        SimCamera().push_frame(np.zeros((0,), dtype=np.uint8))


# ------------------------------------------------------------------- OpenCV


def test_opencv_plays_a_video_file_to_its_end_then_gives_none(tmp_path: Path) -> None:
    camera = OpenCvCamera(file=write_video(tmp_path / "street.avi"))
    try:
        frames = list(camera.frames(timeout_s=1.0))
    finally:
        camera.close()
    assert len(frames) == COUNT
    assert frames[0].image.shape == (HEIGHT, WIDTH, 3)


def test_opencv_reads_an_image_folder_in_name_order_and_can_loop(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "frames")
    camera = load_camera({"type": "opencv", "id": "gate-cam", "folder": str(folder), "loop": True})
    try:
        frames = [camera.read(timeout_s=0.0) for _ in range(COUNT + 2)]
    finally:
        camera.close()
    images = [f.image for f in frames if f is not None]
    assert len(images) == COUNT + 2
    # PNG is lossless: the folder gives back exactly what was written, then starts again.
    expected = list(scene())
    assert all(np.array_equal(a, b) for a, b in zip(images, expected + expected[:2], strict=True))
    assert frames[0] is not None
    assert frames[0].camera_id == "gate-cam"


def test_opencv_names_a_source_that_is_not_there(tmp_path: Path) -> None:
    _cv2()
    with pytest.raises(BackendUnavailable, match="does not exist"):
        OpenCvCamera(file=tmp_path / "missing.avi")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match="no images"):
        OpenCvCamera(folder=tmp_path / "empty")


# ----------------------------------------------------------------- registry


def test_every_camera_backend_is_registered_with_a_documented_config() -> None:
    assert {"sim", "opencv", "picamera2"} <= set(CAMERAS.names())
    config = CAMERAS.validate({"type": "sim", "id": "cam-3", "max_queued": 4})
    camera = config.create(clock=ManualClock())
    assert isinstance(camera, SimCamera)
    assert camera.camera_id == "cam-3"
