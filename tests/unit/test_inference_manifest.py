"""Model manifests: a model file runs only if it is the file its manifest names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_agent.inference import (
    RUNTIMES,
    ModelError,
    builtin_manifest,
    load_manifest,
    open_model,
    verify_model,
)


def _manifest(tmp_path: Path, payload: bytes, *, sha: str | None = None, **extra: str) -> Path:
    (tmp_path / "tiny.onnx").write_bytes(payload)
    fields = {
        "name": "tiny",
        "version": "1",
        "sha256": repr(sha or hashlib.sha256(payload).hexdigest()),
        "input_shape": "[1, 3, 8, 8]",
        "runtime": "onnxruntime",
        "licence": "Apache-2.0",
        "source": "tests",
        "file": "tiny.onnx",
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()), encoding="utf-8")
    return path


def test_a_model_that_matches_its_manifest_is_accepted(tmp_path: Path) -> None:
    manifest = load_manifest(_manifest(tmp_path, b"model bytes"))
    assert verify_model(manifest) == tmp_path / "tiny.onnx"


def test_a_model_whose_sha256_differs_is_refused_before_any_runtime_sees_it(
    tmp_path: Path,
) -> None:
    manifest = load_manifest(_manifest(tmp_path, b"model bytes", sha="0" * 64))
    with pytest.raises(
        ModelError, match=r"tiny 1: .* has SHA-256 [0-9a-f]{64}, its manifest says 0{64}; refusing"
    ):
        open_model(manifest)


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    manifest = load_manifest(_manifest(tmp_path, b"x", file="elsewhere.onnx"))
    with pytest.raises(ModelError, match="missing"):
        verify_model(manifest)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("licence", "AGPL-3.0", "cannot ship"),
        ("licence", "CC-BY-NC-4.0", "cannot ship"),
        ("runtime", "tensorflow", "runtime 'tensorflow' unknown"),
        ("sha256", "abc", "64 hex digits"),
    ],
)
def test_manifests_that_cannot_be_used_are_refused(
    tmp_path: Path, field: str, value: str, why: str
) -> None:
    with pytest.raises(ModelError, match=why):
        load_manifest(_manifest(tmp_path, b"x", **{field: value}))


def test_both_runtime_plugins_are_registered_and_import_lazily() -> None:
    assert set(RUNTIMES) == {"onnxruntime", "litert"}
    for runtime in RUNTIMES.values():
        assert isinstance(runtime.available(), bool)


@pytest.mark.parametrize("name", ["ppocr-det", "ppocr-rec", "ppocr-cls"])
def test_the_shipped_ocr_models_match_their_manifests(name: str) -> None:
    pytest.importorskip("rapidocr")
    manifest = builtin_manifest(name)
    assert manifest.licence == "Apache-2.0"
    assert verify_model(manifest).is_file()
