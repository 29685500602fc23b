"""An enrolment photo → one face template, with the node's own models: `nigehbaan faces template`.

The fleet server computes the templates it seals into watchlist bundles by
running this as a subprocess (``python -m edge_agent.faces.template``),
so the template comes from the same detector, alignment, embedder and
model files (checked against the same manifests) the nodes run, through
one code path, and the model never loads into the server process (which
may not import `edge_agent`: docs/decisions.md). It reads one image (a
path, or ``-`` for stdin), checks it as an enrolment photo — exactly one
face, big enough, sharp, frontal (`ENROLMENT_QUALITY`, stricter than a
street camera's gates) — and prints one JSON line: on success the template
(base64 of the little-endian float32 vector), the embedder's name, version
and SHA-256, and the quality figures; on refusal ``ok: false`` with a
stable ``reason`` (``not_an_image``, ``no_face``, ``several_faces``,
``too_small``, ``blurred``, ``pose``, ``models_missing``) and a sentence
saying what is wrong with the photo. Exit status 0 on success, 3 on a
refusal, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from edge_agent.faces.quality import QualityConfig, QualityVerdict

__all__ = ["ENROLMENT_QUALITY", "main", "register", "template_of"]

# Enrolment photos are taken on purpose: hold them to more than a passing street face.
ENROLMENT_QUALITY = QualityConfig(
    min_eye_distance_px=32.0,
    min_box_px=80.0,
    min_blur=60.0,
    max_yaw_deg=25.0,
    max_pitch_deg=25.0,
    max_roll_deg=20.0,
)
MAX_PHOTO_BYTES = 20 * 1024 * 1024
_REASON_OF = {
    "too small": "too_small",
    "blurred": "blurred",
    "turned away": "pose",
    "looking up or down": "pose",
    "tilted": "pose",
}


def _refusal(reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "reason": reason, "detail": detail, **extra}


def _quality(verdict: QualityVerdict, box: tuple[float, float, float, float]) -> dict[str, Any]:
    return {
        "face_box": [round(v, 1) for v in box],
        "eye_distance_px": round(verdict.eye_distance_px, 1),
        "blur": round(verdict.blur, 1),
        "yaw_deg": round(verdict.pose.yaw, 1),
        "pitch_deg": round(verdict.pose.pitch, 1),
        "roll_deg": round(verdict.pose.roll, 1),
    }


def template_of(data: bytes, *, quality: QualityConfig = ENROLMENT_QUALITY) -> dict[str, Any]:
    """The JSON-ready verdict on one photo's bytes (see the module docstring)."""
    try:
        import cv2
        import numpy as np

        from edge_agent.faces.models import SFaceEmbedder, YuNetDetector, align_face
        from edge_agent.faces.quality import assess
    except ImportError as exc:
        return _refusal("models_missing", f"the face models are not installed here: {exc}")
    if not data or len(data) > MAX_PHOTO_BYTES:
        return _refusal("not_an_image", f"a photo must be 1 byte to {MAX_PHOTO_BYTES} bytes")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 16:
        return _refusal("not_an_image", "the file is not an image OpenCV can read")
    try:
        detector = YuNetDetector(max_side=1280)
        embedder = SFaceEmbedder()
    except Exception as exc:  # a missing or tampered model file (ModelError, FaceModelMissing)
        return _refusal("models_missing", f"the face models cannot load: {exc}")
    faces = detector.detect(image)
    if not faces:
        return _refusal("no_face", "no face was found in the photo")
    if len(faces) > 1:
        return _refusal(
            "several_faces", f"{len(faces)} faces in the photo; an enrolment photo shows one"
        )
    face = faces[0]
    aligned = align_face(image, face.landmarks)
    verdict = assess(box=face.box, landmarks=face.landmarks, aligned=aligned, config=quality)
    figures = _quality(verdict, face.box)
    if not verdict.passed:
        reason = _REASON_OF.get(verdict.reasons[0], "pose")
        detail = (
            f"the face is {' and '.join(verdict.reasons)} (eyes {figures['eye_distance_px']} px "
            f"apart, sharpness {figures['blur']}, yaw {figures['yaw_deg']}°, pitch "
            f"{figures['pitch_deg']}°, roll {figures['roll_deg']}°)"
        )
        return _refusal(reason, detail, quality=figures)
    vector = embedder.embed_aligned(aligned).astype("<f4")
    manifest = embedder.manifest
    return {
        "ok": True,
        "template": base64.b64encode(vector.tobytes()).decode("ascii"),
        "dim": int(vector.shape[0]),
        "model": manifest.name,
        "model_version": manifest.version,
        "model_sha256": manifest.sha256,
        "detector_score": round(face.score, 3),
        "quality": figures,
    }


def _run(args: argparse.Namespace) -> int:
    try:
        if args.photo == "-":
            data = sys.stdin.buffer.read(MAX_PHOTO_BYTES + 1)
        else:
            with open(args.photo, "rb") as handle:
                data = handle.read(MAX_PHOTO_BYTES + 1)
    except OSError as exc:
        print(json.dumps(_refusal("not_an_image", f"cannot read {args.photo}: {exc}")))  # noqa: T201 (the CLI's output)
        return 3
    result = template_of(data)
    print(json.dumps(result, sort_keys=True))  # noqa: T201 (the CLI's output)
    return 0 if result["ok"] else 3


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``nigehbaan faces template PHOTO``: one enrolment photo → its template, as JSON."""
    faces = subparsers.add_parser("faces", help="face templates with the node's own models")
    sub = faces.add_subparsers(dest="faces_command", required=True, metavar="ACTION")
    template = sub.add_parser(
        "template", help="check an enrolment photo and print its face template as JSON"
    )
    template.add_argument("photo", help="the photo (JPEG/PNG), or - for stdin")
    template.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edge_agent.faces.template PHOTO`` (what the fleet server runs)."""
    parser = argparse.ArgumentParser(prog="nigehbaan faces template")
    parser.add_argument("photo", help="the photo (JPEG/PNG), or - for stdin")
    args = parser.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
