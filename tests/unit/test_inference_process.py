"""A camera's detector in a child process: it answers, and a bad model never takes the agent down.

Each test starts a real child (``spawn``) that builds a detector plugin from
tests/support/busy_model.py by name.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("cv2")

from edge_agent.anpr.types import Box
from edge_agent.inference import InferenceError
from edge_agent.inference.workers import InferenceProcess, close_plugins, plugins_for

PLUGINS = "tests.support.busy_model"


def frame_with_a_plate() -> np.ndarray:
    frame = np.full((120, 200, 3), 60, dtype=np.uint8)
    frame[40:70, 30:130] = 250
    return frame


def test_the_detector_runs_in_another_process_and_returns_its_boxes() -> None:
    detector, reader = plugins_for(
        inference="processes",
        detector_name=f"{PLUGINS}:QuickDetector",
        reader_name=None,
        name="gate",
    )
    assert reader is None
    assert detector is not None
    try:
        marker, *plates = detector.detect(frame_with_a_plate(), None)
        assert plates == [Box(x=30, y=40, w=100, h=30, score=0.9)]
        process = detector.process  # type: ignore[attr-defined]
        assert process.pid is not None
        assert process.pid != os.getpid()
        assert marker.x == process.pid % 1000  # the boxes came from the child
    finally:
        close_plugins(detector)
    assert not process.alive()


def test_a_model_that_raises_is_an_inference_error_and_the_process_stays() -> None:
    process = InferenceProcess(detector=f"{PLUGINS}:FailingDetector", name="gate")
    try:
        with pytest.raises(InferenceError, match="does not like the frame"):
            process.call("detector", "detect", frame_with_a_plate(), None)
        pid = process.pid
        with pytest.raises(InferenceError):
            process.call("detector", "detect", frame_with_a_plate(), None)
        assert process.pid == pid
        assert process.starts == 1
    finally:
        process.close()


def test_a_model_that_kills_its_process_is_restarted_on_the_next_call() -> None:
    process = InferenceProcess(detector=f"{PLUGINS}:ExitingDetector", name="gate")
    try:
        for _ in range(2):
            with pytest.raises(InferenceError, match="died"):
                process.call("detector", "detect", frame_with_a_plate(), None)
        assert process.starts == 2
    finally:
        process.close()


def test_a_hung_model_is_killed_at_the_time_limit() -> None:
    process = InferenceProcess(detector=f"{PLUGINS}:HangingDetector", timeout_s=0.5, name="gate")
    try:
        process.start()
        with pytest.raises(InferenceError, match=r"longer than 0\.5 s"):
            process.call("detector", "detect", frame_with_a_plate(), None)
        assert not process.alive()
    finally:
        process.close()


def test_a_plugin_the_child_cannot_build_is_named_in_the_error() -> None:
    process = InferenceProcess(detector="no.such.module:Detector", name="gate")
    try:
        with pytest.raises(InferenceError, match=r"cannot build its plugins.*no\.such\.module"):
            process.call("detector", "detect", frame_with_a_plate(), None)
    finally:
        process.close()


def test_a_closed_process_refuses_calls_and_bad_settings_are_refused() -> None:
    process = InferenceProcess(detector=f"{PLUGINS}:QuickDetector")
    process.close()
    with pytest.raises(InferenceError, match="closed"):
        process.call("detector", "detect", frame_with_a_plate(), None)
    with pytest.raises(ValueError, match="needs a detector or a reader"):
        InferenceProcess()
    with pytest.raises(InferenceError, match="threads or processes"):
        plugins_for(inference="fibres", detector_name=None, reader_name=None)


def test_plugins_handed_in_as_objects_stay_on_the_analysis_thread() -> None:
    from tests.support.camera import WhiteRectDetector

    mine = WhiteRectDetector()
    detector, _ = plugins_for(
        inference="processes",
        detector_name=f"{PLUGINS}:QuickDetector",
        reader_name=None,
        detector=mine,
    )
    assert detector is mine


def test_a_camera_config_with_an_unknown_inference_mode_or_track_age_is_refused() -> None:
    from pydantic import ValidationError

    from edge_agent.config import CameraAnalyticsConfig

    assert CameraAnalyticsConfig().inference == "threads"
    assert CameraAnalyticsConfig(inference="processes").inference == "processes"
    with pytest.raises(ValidationError, match="inference"):
        CameraAnalyticsConfig.model_validate({"inference": "gpu"})
    with pytest.raises(ValidationError, match="inference_timeout_s"):
        CameraAnalyticsConfig.model_validate({"inference_timeout_s": 0})
    with pytest.raises(ValidationError, match="max_track_frames"):
        CameraAnalyticsConfig.model_validate({"max_track_frames": 0})
    assert CameraAnalyticsConfig.model_validate({"max_track_frames": None}).max_track_frames is None


def test_the_reader_gets_the_plates_neighbourhood_and_answers_in_frame_pixels() -> None:
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    box = Box(x=600, y=400, w=120, h=40, score=0.9)
    frame[400:440, 600:720] = 255  # the plate: all white, nothing else is
    process = InferenceProcess(reader=f"{PLUGINS}:ShapeReader", name="gate")
    try:
        assert process.reader is not None
        read = process.reader.read(frame, box)
    finally:
        process.close()
    assert read is not None
    # The box grown by its height on every side crossed the pipe, not 1280x720...
    assert read.text == f"{40 + 2 * 40}x{120 + 2 * 40}"
    # ...the reader's box pointed at the plate inside it, and came back in frame pixels.
    assert read.confidence == 1.0
    assert read.box == box
