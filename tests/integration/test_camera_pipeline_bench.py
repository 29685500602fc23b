"""`nigehbaan bench pipeline` runs end to end on a small budget and says what it measured.

Only the shape of the result is checked: speed is measured by the bench,
never asserted in tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")

from simulators.bench_pipeline import PipelineBenchConfig, run_pipeline_bench


def test_the_pipeline_bench_reports_gate_rate_stage_ms_and_press_latency(tmp_path: Path) -> None:
    result = run_pipeline_bench(
        PipelineBenchConfig(
            frames=10, repeats=1, presses=2, detector_delay_s=0.05, work_dir=tmp_path
        )
    )
    assert result["bench"] == "pipeline"
    assert result["frames_per_s_per_core"] > 0
    gate = result["motion_gate"]["runs"][0]
    assert gate["motion_frames"] == 0  # no vehicle in view
    assert set(gate["ms_per_frame"]) == {"p50", "p95"}
    stage = result["stages"]["runs"][0]
    assert stage["detector_calls"] > 0
    press = result["press"]
    assert press["presses"] == 2
    assert press["busy_vs_idle"] is not None
    assert press["detector_ms_while_busy"] is not None  # the detector really was busy
    assert result["press_python_cpu"]["detector_busy"] == "python-cpu"
    processes = result["press_processes"]
    assert (processes["inference"], processes["detector_busy"]) == ("processes", "python-cpu")
    assert processes["detector_ms_while_busy"] is not None  # the child's detector was busy
    assert isinstance(result["load_1m_before"], float)
