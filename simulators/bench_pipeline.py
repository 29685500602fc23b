"""`nigehbaan bench pipeline`: the camera pipeline's cost on this CPU, and what it does to a press.

Three measurements, each repeated and reported with the machine's load
average (other work on the machine moves every figure):

- ``motion_gate``: 1280x720 frames of a still street with sensor noise (no
  vehicle in view) through one camera's analysis, so the motion gate is all
  that runs; frames per second per core from the process's CPU time over the
  run (OpenCV's own threads included; target ≥ 10), and the gate's ms per
  frame.
- ``stages``: a vehicle pass at 1280x720 (a Punjab district plate rendered
  by `simulators.plates`) through gate, detector and reader; ms per call of
  each stage (p50/p95). The detector and reader are the plugins named with
  ``--detector``/``--reader`` (entry point or ``module:factory``); without
  them a bench-only white-rectangle detector and no reader.
- ``press``: a node on the real clock with an in-memory uplink; presses on
  an idle pipeline, then presses while a detector that sleeps
  ``--detector-delay`` per call is kept busy by a vehicle that never leaves;
  latency from the button's press edge to the light showing ``sent``, both
  on the node's clock; ``busy_vs_idle`` is the ratio of the p50s.
  ``press_python_cpu`` repeats it with a detector that burns the CPU in pure
  Python for the same time (holding the GIL, the worst case for a thread;
  ONNX Runtime and OpenCV release it while they compute).
  ``press_processes`` repeats that with ``inference = "processes"``: the
  same GIL-burning detector, built by name in a child process
  (`edge_agent.inference.workers`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.bench_harness import bench_result

__all__ = ["PipelineBenchConfig", "run_pipeline_bench"]

WIDTH, HEIGHT = 1280, 720


@dataclass(frozen=True)
class PipelineBenchConfig:
    """What `run_pipeline_bench` measures and how much."""

    frames: int = 300
    repeats: int = 3
    presses: int = 15
    detector_delay_s: float = 0.2
    detector: str | None = None
    reader: str | None = None
    work_dir: Path | None = None


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def _street(seed: int = 5) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(40, 110, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def _noisy(base: Any, count: int) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(11)
    frames = []
    for _ in range(count):
        noise = rng.integers(-3, 4, size=base.shape, dtype=np.int16)
        frames.append(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return frames


def _plate_face(height: int = 64) -> tuple[Any, str]:
    """A Punjab district plate from `simulators.plates`, or a drawn stand-in without fonts."""
    import random

    import cv2
    import numpy as np

    try:
        from simulators.plates import random_plate, render_plate

        rows, canonical, _ = random_plate("punjab-district", random.Random(7))
        face = render_plate("punjab-district", rows)
        width = round(face.shape[1] * height / face.shape[0])
        return cv2.resize(face, (width, height), interpolation=cv2.INTER_AREA), canonical
    except Exception:  # Pillow or the Debian fonts missing: a white plate with black text
        face = np.full((height, 240, 3), 245, np.uint8)
        cv2.putText(face, "LEB6881", (10, 48), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3)
        return face, "LEB6881"


def _vehicle(base: Any, i: int, face: Any) -> Any:
    import cv2

    frame = base.copy()
    ph, pw = face.shape[:2]
    x, y = 60 + (i % 40) * 26, 420 - (i % 40) * 4
    cv2.rectangle(frame, (x - 60, y - 120), (x + pw + 60, y + ph + 46), (25, 25, 35), -1)
    frame[y : y + ph, x : x + pw] = face
    return frame


class WhiteRectDetector:
    """Bench-only detector: bright plate-shaped regions (the white plates `_vehicle` carries)."""

    name = "bench-white-rect"

    def __init__(self, delay_s: float = 0.0, *, spin: bool = False) -> None:
        self.delay_s = delay_s
        self.spin = spin  # burn the CPU in Python (holding the GIL) instead of sleeping
        self.calls = 0
        self.called = threading.Event()

    def detect(self, frame: Any, regions: list[Any] | None = None) -> list[Any]:
        import cv2

        from edge_agent.anpr.types import Box

        self.calls += 1
        self.called.set()
        if self.delay_s and self.spin:
            end = time.perf_counter() + self.delay_s
            while time.perf_counter() < end:
                sum(range(1000))
        elif self.delay_s:
            time.sleep(self.delay_s)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        _, mask = cv2.threshold(grey, 230, 255, cv2.THRESH_BINARY)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = []
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i][:5])
            if area >= 400 and 2.0 <= w / max(1, h) <= 6.0:
                boxes.append(Box(x=x, y=y, w=w, h=h, score=0.9))
        return boxes


def _settings(**extra: Any) -> Any:
    from edge_agent.config import CameraAnalyticsConfig

    return CameraAnalyticsConfig.model_validate({"max_fps": 0, **extra})


def _motion_gate(config: PipelineBenchConfig) -> dict[str, Any]:
    from edge_agent.camera.analysis import CameraAnalysis, percentiles

    frames = _noisy(_street(), 8)
    runs = []
    per_core: list[float] = []
    for _ in range(config.repeats):
        analysis = CameraAnalysis(camera_id="bench", settings=_settings())
        load = _load()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(config.frames):
            analysis.process(frames[i % len(frames)])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if cpu:
            per_core.append(config.frames / cpu)
        runs.append(
            {
                "frames": config.frames,
                "frames_per_s_per_core": round(config.frames / cpu, 1) if cpu else None,
                "frames_per_s_wall": round(config.frames / wall, 1),
                "motion_frames": analysis.stats.motion_frames,
                "ms_per_frame": percentiles(analysis.stats.motion_ms),
                "load_1m": load,
            }
        )
    return {
        "frame_size": f"{WIDTH}x{HEIGHT}",
        "frames_per_s_per_core": round(statistics.median(per_core), 1) if per_core else None,
        "runs": runs,
    }


def _stages(config: PipelineBenchConfig) -> dict[str, Any]:
    from edge_agent.camera.analysis import CameraAnalysis
    from edge_agent.camera.plugins import load_detector, load_reader

    detector: Any = load_detector(config.detector) if config.detector else WhiteRectDetector()
    reader = load_reader(config.reader) if config.reader else None
    base = _street()
    face, truth = _plate_face()
    frames = [base.copy() for _ in range(3)]
    frames += [_vehicle(base, i, face) for i in range(40)]
    frames += [base.copy() for _ in range(10)]
    runs = []
    for _ in range(config.repeats):
        analysis = CameraAnalysis(
            camera_id="bench", settings=_settings(), detector=detector, reader=reader
        )
        load = _load()
        passes = [p for f in frames for p in analysis.process(f)] + analysis.flush()
        figures = analysis.stats.as_dict()
        runs.append(
            {
                "frames": len(frames),
                "motion_ms": figures["motion_ms"],
                "detector_ms": figures["detector_ms"],
                "reader_ms": figures["reader_ms"],
                "detector_calls": analysis.stats.detector_calls,
                "reader_calls": analysis.stats.reader_calls,
                "plates": [p.plate for p in passes],
                "load_1m": load,
            }
        )
    return {
        "detector": getattr(detector, "name", type(detector).__name__),
        "reader": getattr(reader, "name", None) if reader is not None else None,
        "truth": truth,
        "runs": runs,
    }


def spinning_bench_detector() -> WhiteRectDetector:
    """The GIL-burning bench detector, for a child process to build by name.

    Its delay comes from ``NB_BENCH_DETECTOR_DELAY_S`` (the child inherits
    the environment; a plugin factory takes no arguments).
    """
    return WhiteRectDetector(float(os.environ.get("NB_BENCH_DETECTOR_DELAY_S", "0.2")), spin=True)


async def _press_latency(
    config: PipelineBenchConfig, work: Path, *, spin: bool = False, inference: str = "threads"
) -> dict[str, Any]:
    from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
    from edge_agent.config import config_from_dict
    from edge_agent.memory import MemoryTransport, memory_transport
    from edge_agent.node import build_node
    from edge_agent.panic import PanicComponent
    from hardware import Pattern, SimBackend, SimButton
    from hardware.camera import SimCamera
    from hardware.indicator import SimIndicator
    from proto.messages import Ack, EventBase

    camera = SimCamera(camera_id="bench", max_queued=4)
    detector: WhiteRectDetector | None = None
    if inference == "processes":
        os.environ["NB_BENCH_DETECTOR_DELAY_S"] = str(config.detector_delay_s)
        settings = _settings(
            queue_size=4,
            inference="processes",
            detector=f"{__name__}:spinning_bench_detector",
        )
        camera_feed = CameraFeed.of(camera, settings)
    else:
        detector = WhiteRectDetector(delay_s=config.detector_delay_s, spin=spin)
        camera_feed = CameraFeed.of(camera, _settings(queue_size=4), detector=detector)
    pipeline = CameraPipeline([camera_feed])
    node = build_node(
        config_from_dict(
            {
                "node_id": "bench-cam-0001",
                "serial": "SN-BENCH",
                "data_dir": str(work / "node"),
                "hardware": {"type": "sim"},
                "outbox": {"synchronous": "normal"},
            }
        ),
        backend=SimBackend(),
        transport_factory=memory_transport(),
        components=[pipeline],
        renewal=False,
    )
    panic = node.component("panic")
    assert isinstance(panic, PanicComponent)
    button, indicator = panic.button, panic.indicator
    assert isinstance(button, SimButton)
    assert isinstance(indicator, SimIndicator)

    async def press() -> float:
        sent_before = sum(1 for c in indicator.history if c.pattern is Pattern.SENT)
        edges_before = len(button.edges)
        button.press()
        deadline = time.monotonic() + 10.0
        while sum(1 for c in indicator.history if c.pattern is Pattern.SENT) == sent_before:
            if time.monotonic() > deadline:
                raise RuntimeError("a press was not sent within 10 s")
            await asyncio.sleep(0.002)
        button.release()
        transport = node.uplink.transport
        assert isinstance(transport, MemoryTransport)
        ids = [e.event_id for e in transport.messages(EventBase)]
        transport.deliver(Ack(node_id=node.node_id, ts=node.clock.now(), event_ids=ids))
        await asyncio.sleep(0.15)
        sent = [c for c in indicator.history if c.pattern is Pattern.SENT][sent_before]
        return sent.t - button.edges[edges_before].t

    stop = threading.Event()

    def feed() -> None:  # a vehicle that never leaves: the detector is always busy
        base = _street()
        face, _ = _plate_face()
        frames = [_vehicle(base, i, face) for i in range(40)]
        i = 0
        while not stop.is_set():
            camera.push_frame(frames[i % len(frames)])
            i += 1
            stop.wait(1 / 15)

    task = asyncio.ensure_future(node.run())
    try:
        await asyncio.sleep(0.3)
        idle = [await press() for _ in range(config.presses)]
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        if detector is not None:
            await asyncio.to_thread(detector.called.wait, 10.0)
        else:  # the child builds its detector first; busy once a call has come back
            deadline = time.monotonic() + 120.0
            while pipeline.workers["bench"].stats.detector_calls == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the inference process never answered")
                await asyncio.sleep(0.05)
        load = _load()
        busy = [await press() for _ in range(config.presses)]
        stats = pipeline.stats()["cameras"]["bench"]
    finally:
        stop.set()
        node.stop()
        await asyncio.wait_for(task, 15)

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50": round(1000 * statistics.median(ordered), 1),
            "p95": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max": round(1000 * ordered[-1], 1),
        }

    idle_ms, busy_ms = summary(idle), summary(busy)
    return {
        "presses": config.presses,
        "detector_delay_ms": round(1000 * config.detector_delay_s),
        "detector_busy": "python-cpu" if spin else "sleep",
        "inference": inference,
        "idle_ms": idle_ms,
        "busy_ms": busy_ms,
        "busy_vs_idle": round(busy_ms["p50"] / idle_ms["p50"], 2) if idle_ms["p50"] else None,
        "detector_ms_while_busy": stats["detector_ms"],
        "frames_dropped_while_busy": stats["frames_dropped"],
        "load_1m": load,
    }


def _work_dir(config: PipelineBenchConfig) -> Iterator[Path]:
    import tempfile

    if config.work_dir is not None:
        config.work_dir.mkdir(parents=True, exist_ok=True)
        yield config.work_dir
        return
    with tempfile.TemporaryDirectory(prefix="nb-bench-pipeline-") as tmp:
        yield Path(tmp)


def run_pipeline_bench(config: PipelineBenchConfig) -> dict[str, Any]:
    """Run the three measurements; one result dict (see the module docstring)."""
    started = time.time()
    load_before = _load()
    gate = _motion_gate(config)
    stages = _stages(config)
    for work in _work_dir(config):
        press = asyncio.run(_press_latency(config, work / "sleep"))
        press_cpu = asyncio.run(_press_latency(config, work / "cpu", spin=True))
        press_proc = asyncio.run(
            _press_latency(config, work / "proc", spin=True, inference="processes")
        )
    return bench_result(
        "pipeline",
        {
            "motion_gate": gate,
            "frames_per_s_per_core": gate["frames_per_s_per_core"],
            "stages": stages,
            "press": press,
            "press_python_cpu": press_cpu,
            "press_processes": press_proc,
            "load_1m_before": load_before,
            "load_1m_after": _load(),
            "cpus": os.cpu_count(),
        },
        started_at=started,
    )
