"""Models on the node: manifests that pin each model file, and runtime plugins that run them.

A model is a file with a small manifest (name, version, SHA-256, input
shape, runtime, licence, source). `open_model` checks the file against its
manifest before any runtime sees it — a file whose SHA-256 differs is
refused with `ModelError`, so a half-written OTA delivery or a swapped file
never runs — and hands it to the runtime plugin the manifest names:
``onnxruntime`` (ONNX Runtime) or ``litert`` (Google's ``ai-edge-litert``,
or ``tflite_runtime`` where only that exists, e.g. Pi OS with numpy < 2).
Each plugin imports its library only when used, so the agent runs without
any of them. Models are never downloaded at run time: they come from the
packages that ship them (rapidocr's wheel), the project's own scripts, or
OTA.

The tree::

    InferenceError        root (an AgentError)
    ├── ModelError        a manifest or model file that must not be used
    └── RuntimeMissing    the runtime a manifest names is not installed here
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from edge_agent.errors import AgentError

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = [
    "RUNTIMES",
    "InferenceError",
    "LiteRtRuntime",
    "LoadedModel",
    "ModelError",
    "ModelManifest",
    "OnnxRuntime",
    "Runtime",
    "RuntimeMissing",
    "Session",
    "builtin_manifest",
    "file_sha256",
    "load_manifest",
    "open_model",
    "use_model_dirs",
    "verify_model",
]

logger = logging.getLogger(__name__)

_MANIFEST_KEYS = {
    "name",
    "version",
    "sha256",
    "input_shape",
    "runtime",
    "licence",
    "source",
    "file",
}
# Weights under these licences never ship in the (proprietary) firmware.
_REFUSED_LICENCES = ("AGPL", "GPL-3", "CC-BY-NC", "NON-COMMERCIAL", "NONCOMMERCIAL")


class InferenceError(AgentError):
    """Root of the inference package's errors."""


class ModelError(InferenceError):
    """A manifest is malformed, or a model file does not match its manifest."""


class RuntimeMissing(InferenceError):
    """The runtime a manifest names is not installed on this machine."""


@dataclass(frozen=True)
class ModelManifest:
    """What a model file must be: its identity, its hash, how to run it, and its licence.

    `file` is a path relative to the manifest, or ``package:path`` for a
    model shipped inside an installed Python package (rapidocr's wheel).
    """

    name: str
    version: str
    sha256: str
    input_shape: tuple[int | None, ...]
    runtime: str
    licence: str
    source: str
    file: str
    origin: Path | None = None

    def model_path(self) -> Path:
        """Where the model file is (resolved, not yet checked)."""
        if ":" in self.file and not Path(self.file).is_absolute():
            package, _, inner = self.file.partition(":")
            try:
                base = resources.files(package)
            except ModuleNotFoundError as exc:
                raise ModelError(
                    f"model {self.name}: package {package!r} is not installed ({self.file})"
                ) from exc
            return Path(str(base.joinpath(inner)))
        path = Path(self.file)
        if not path.is_absolute() and self.origin is not None:
            path = self.origin.parent / path
        return path


def _parse_manifest(data: object, source: str, origin: Path | None) -> ModelManifest:
    if not isinstance(data, Mapping):
        raise ModelError(f"{source}: a model manifest must be a mapping")
    missing = _MANIFEST_KEYS - set(data)
    unknown = set(data) - _MANIFEST_KEYS
    if missing or unknown:
        raise ModelError(
            f"{source}: manifest keys missing {sorted(missing)} / unknown {sorted(unknown)}"
        )
    sha = str(data["sha256"]).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ModelError(f"{source}: sha256 must be 64 hex digits")
    shape = data["input_shape"]
    if not isinstance(shape, list) or not all(d is None or isinstance(d, int) for d in shape):
        raise ModelError(f"{source}: input_shape must be a list of integers (null = any)")
    runtime = str(data["runtime"])
    if runtime not in RUNTIMES:
        raise ModelError(f"{source}: runtime {runtime!r} unknown (have {', '.join(RUNTIMES)})")
    licence = str(data["licence"])
    if not licence.strip() or any(bad in licence.upper() for bad in _REFUSED_LICENCES):
        raise ModelError(f"{source}: licence {licence!r} cannot ship in the firmware")
    return ModelManifest(
        name=str(data["name"]),
        version=str(data["version"]),
        sha256=sha,
        input_shape=tuple(shape),
        runtime=runtime,
        licence=licence,
        source=str(data["source"]),
        file=str(data["file"]),
        origin=origin,
    )


def load_manifest(path: Path) -> ModelManifest:
    """A manifest from its YAML file (`ModelError` if it cannot be used)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"cannot read model manifest {path}: {exc}") from exc
    return _parse_manifest(data, str(path), path)


# Directories searched before the shipped manifests: the node's OTA model slot
# (`<data_dir>/ota/slots/model/current`, set by `edge_agent.ota.use_slots`), so a
# model bundle delivered by OTA replaces the shipped model of the same name.
_MODEL_DIRS: list[Path] = []


def use_model_dirs(dirs: Sequence[Path]) -> None:
    """Search these directories for ``<name>.yaml`` before the shipped manifests."""
    _MODEL_DIRS[:] = list(dirs)


def builtin_manifest(name: str) -> ModelManifest:
    """A manifest shipped with the agent (``edge_agent/inference/models/<name>.yaml``).

    A ``<name>.yaml`` in a directory given to `use_model_dirs` (the OTA model slot)
    comes first.
    """
    for directory in _MODEL_DIRS:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return load_manifest(candidate)
    ref = resources.files(__package__).joinpath("models").joinpath(f"{name}.yaml")
    if not ref.is_file():
        raise ModelError(f"no built-in model manifest {name!r}")
    return load_manifest(Path(str(ref)))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (model files run to tens of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model(manifest: ModelManifest) -> Path:
    """The model's path, once its file exists and its SHA-256 matches the manifest."""
    path = manifest.model_path()
    if not path.is_file():
        raise ModelError(f"model {manifest.name} {manifest.version}: file {path} is missing")
    actual = file_sha256(path)
    if actual != manifest.sha256:
        raise ModelError(
            f"model {manifest.name} {manifest.version}: {path} has SHA-256 {actual}, "
            f"its manifest says {manifest.sha256}; refusing to load it"
        )
    return path


class Session(Protocol):
    """A loaded model: named inputs in, outputs out (numpy arrays)."""

    input_names: Sequence[str]

    def run(self, inputs: Mapping[str, Array]) -> list[Array]: ...


class Runtime(Protocol):
    """A runtime plugin: says whether it can run here, and loads a verified model file."""

    name: str

    def available(self) -> bool: ...

    def load(self, path: Path, *, threads: int) -> Session: ...


class _OrtSession:
    def __init__(self, session: Any) -> None:
        self._session = session
        self.input_names: Sequence[str] = [str(i.name) for i in session.get_inputs()]

    def run(self, inputs: Mapping[str, Array]) -> list[Array]:
        return list(self._session.run(None, dict(inputs)))


class OnnxRuntime:
    """ONNX Runtime on the CPU (``onnxruntime``, imported on first use)."""

    name = "onnxruntime"

    def available(self) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def load(self, path: Path, *, threads: int) -> Session:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as exc:
            raise RuntimeMissing(
                "onnxruntime is not installed (pip install nigehbaan[anpr])"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        return _OrtSession(session)


class _LiteRtSession:
    def __init__(self, interpreter: Any) -> None:
        interpreter.allocate_tensors()
        self._interpreter = interpreter
        self._inputs = interpreter.get_input_details()
        self._outputs = interpreter.get_output_details()
        self.input_names: Sequence[str] = [str(d["name"]) for d in self._inputs]

    def run(self, inputs: Mapping[str, Array]) -> list[Array]:
        for detail in self._inputs:
            self._interpreter.set_tensor(detail["index"], inputs[detail["name"]])
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(d["index"]) for d in self._outputs]


class LiteRtRuntime:
    """LiteRT (``ai-edge-litert``), or ``tflite_runtime`` where only that is installed."""

    name = "litert"

    @staticmethod
    def _interpreter_class() -> Any:
        try:
            from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
        except ImportError:
            try:
                from tflite_runtime.interpreter import (  # type: ignore[import-not-found]
                    Interpreter,
                )
            except ImportError as exc:
                raise RuntimeMissing(
                    "neither ai-edge-litert nor tflite_runtime is installed"
                ) from exc
        return Interpreter

    def available(self) -> bool:
        try:
            self._interpreter_class()
        except RuntimeMissing:
            return False
        return True

    def load(self, path: Path, *, threads: int) -> Session:
        interpreter = self._interpreter_class()(model_path=str(path), num_threads=threads)
        return _LiteRtSession(interpreter)


RUNTIMES: dict[str, Runtime] = {"onnxruntime": OnnxRuntime(), "litert": LiteRtRuntime()}


@dataclass(frozen=True)
class LoadedModel:
    """A verified model file, its manifest, and the session that runs it."""

    manifest: ModelManifest
    path: Path
    session: Session


def open_model(manifest: ModelManifest, *, threads: int = 1) -> LoadedModel:
    """Verify the model file against its manifest, then load it with the manifest's runtime."""
    path = verify_model(manifest)
    runtime = RUNTIMES[manifest.runtime]
    logger.info(
        "loading model %s %s (%s, %s) with %s",
        manifest.name,
        manifest.version,
        manifest.licence,
        path,
        runtime.name,
    )
    return LoadedModel(manifest=manifest, path=path, session=runtime.load(path, threads=threads))
