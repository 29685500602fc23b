"""Loading the shipped models opens no network connection (models are never fetched at run time).

A fresh Python process (nothing loaded yet) blocks every way Python opens a
connection or looks a name up — `socket.socket.connect`/`connect_ex`,
`socket.create_connection`, `socket.getaddrinfo` — and records each attempt.
It first checks that the blocker itself works (a connection to 127.0.0.1 is
refused by it and recorded), then builds the plate reader (`RapidOcrReader`)
and detector (`OcrLineDetector`) and the face models (`YuNetDetector`,
`SFaceEmbedder`), runs each once so lazily loaded ones load, and reads a
rendered plate. All of it must work with no attempt recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("rapidocr")
pytest.importorskip("PIL")
pytest.importorskip("cv2")

CHILD = textwrap.dedent(
    """
    import json, random, socket, sys

    attempts = []

    class NetworkBlocked(OSError):
        pass

    def blocked(name):
        def refuse(*args, **kwargs):
            attempts.append(name)
            raise NetworkBlocked(f"network blocked in this test: {name}")
        return refuse

    socket.socket.connect = blocked("socket.connect")
    socket.socket.connect_ex = blocked("socket.connect_ex")
    socket.create_connection = blocked("socket.create_connection")
    socket.getaddrinfo = blocked("socket.getaddrinfo")

    # The blocker must bite, or this test proves nothing.
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    except NetworkBlocked:
        pass
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", 9))
        except NetworkBlocked:
            pass
    blocker_works = attempts == ["socket.create_connection", "socket.connect"]
    attempts.clear()

    import numpy as np
    from edge_agent.anpr.detector import OcrLineDetector
    from edge_agent.anpr.reader import RapidOcrReader
    from edge_agent.faces.models import ARCFACE_TEMPLATE, DetectedFace, SFaceEmbedder, YuNetDetector
    from simulators.plates import render_scene

    reader = RapidOcrReader(rules="pk")
    detector = OcrLineDetector()
    frame, truth = render_scene(random.Random(7), layout="punjab-car", clean=True)
    boxes = detector.detect(frame, None)
    reads = [reader.read(frame, box) for box in boxes]
    canonicals = [r.canonical for r in reads if r is not None]

    faces = YuNetDetector().detect(frame)  # YuNet loads on first use
    face = np.full((112, 112, 3), 128, dtype=np.uint8)
    landmarks = np.asarray(ARCFACE_TEMPLATE, dtype=np.float32)
    embedding = SFaceEmbedder().embed(face, DetectedFace((0, 0, 112, 112), landmarks, 0.9))

    print(json.dumps({
        "blocker_works": blocker_works,
        "attempts": attempts,
        "truth": truth.canonical,
        "read": canonicals,
        "faces": len(faces),
        "embedding": int(np.asarray(embedding).size),
    }))
    """
)


def test_the_shipped_plate_and_face_models_load_and_read_with_the_network_blocked() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["blocker_works"], "the socket blocker did not record a connect attempt"
    assert out["attempts"] == [], f"a model tried the network: {out['attempts']}"
    assert out["truth"] in out["read"], out
    assert out["embedding"] == 128
