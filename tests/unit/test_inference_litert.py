"""The LiteRT plugin: ai-edge-litert first, tflite_runtime where only that exists, lazily."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from edge_agent.inference import LiteRtRuntime, RuntimeMissing


class _FakeInterpreter:
    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *, model_path: str, num_threads: int) -> None:
        self.made.append({"model_path": model_path, "num_threads": num_threads})
        self._tensors: dict[int, Any] = {}

    def allocate_tensors(self) -> None:
        pass

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"name": "x", "index": 0}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"name": "y", "index": 1}]

    def set_tensor(self, index: int, value: Any) -> None:
        self._tensors[index] = value

    def invoke(self) -> None:
        self._tensors[1] = self._tensors[0] * 2

    def get_tensor(self, index: int) -> Any:
        return self._tensors[index]


def _install(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    module = types.ModuleType(f"{package}.interpreter")
    module.Interpreter = _FakeInterpreter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    monkeypatch.setitem(sys.modules, f"{package}.interpreter", module)


def _hide(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    for package in packages:
        # None in sys.modules makes `import package` raise ImportError.
        monkeypatch.setitem(sys.modules, package, None)
        monkeypatch.setitem(sys.modules, f"{package}.interpreter", None)


def test_tflite_runtime_serves_where_ai_edge_litert_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hide(monkeypatch, "ai_edge_litert")
    _install(monkeypatch, "tflite_runtime")
    runtime = LiteRtRuntime()
    assert runtime.available()
    session = runtime.load(tmp_path / "m.tflite", threads=2)
    assert _FakeInterpreter.made[-1] == {"model_path": str(tmp_path / "m.tflite"), "num_threads": 2}
    assert list(session.input_names) == ["x"]
    (out,) = session.run({"x": np.array([1.0, 2.0])})
    assert out.tolist() == [2.0, 4.0]


def test_no_litert_at_all_is_reported_not_crashed(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "ai_edge_litert", "tflite_runtime")
    runtime = LiteRtRuntime()
    assert not runtime.available()
    with pytest.raises(RuntimeMissing, match="ai-edge-litert nor tflite_runtime"):
        runtime.load(Path("m.tflite"), threads=1)
