"""`nigehbaan bench watchlist`: hotlist matching on the node, false look-alike hits, hit → alert.

Three measurements, one JSON line (simulators/bench_harness.py):

- ``matching``: for hotlists of each size (default 1k, 10k and 100k plates;
  a bundle carries at most `proto.watchlist.MAX_BUNDLE_PLATES`, so a larger
  hotlist is several signed lists held at once), signed by a throw-away
  development PKI and installed in the node's real `WatchlistStore`
  (signature check and index: ``install_ms``), the time per
  `WatchlistStore.match_plate` call (``{p50, p99}`` µs and calls/s) for
  three kinds of read: a listed plate (an exact hit), a listed plate with one
  character swapped for a look-alike (a confusable hit), and a random plate
  not on the list (the common case: no hit, and the costliest, since every
  one-look-alike variant is tried). Each kind also counts how many reads got
  the answer they should (``found``).
- ``false_confusable``: for each size, a random set of plates not on the
  list, and how many of them still match a listed plate one look-alike
  character away: the hits an operator would have to reject.
- ``end_to_end`` (unless ``--no-e2e``): a real Mosquitto, a real ``nigehbaan
  server`` process and the real node agent over MQTT, holding a signed
  1,000-plate list. The node matches a read and writes the hit through its
  durable outbox; the time is from that write to the alert on the operator's
  SSE feed (``{p50, p95, p99, max}`` ms), with how many hits arrived.

``--stream`` runs instead a simulated camera stream through a real node's
camera pipeline (`run_stream_bench`, the ``stream`` section below): rendered
vehicles with hotlisted and clean plates and, with ``--faces DIR``, real
photos of enrolled and unenrolled persons; hits found, false hits and the
time from the subject entering the frame to its alert on the operator feed
(docs/watchlists-operations.md).

Plates are drawn from a seeded generator in Pakistani shapes (``LEB6881``,
``KHI123``, ``ICT8812``…), so two runs with one ``--seed`` measure the same
lists. Figures go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import statistics
import string
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from simulators.bench_harness import (
    add_output_options,
    bench_result,
    bench_server,
    bench_work_dir,
    loopback_broker,
    publish,
)

__all__ = ["register_watchlist", "run_stream_bench", "run_watchlist_bench"]

DEFAULT_SIZES = (1_000, 10_000, 100_000)
LETTERS = string.ascii_uppercase
DISTRICT = "lahore"
WATCHLIST = "bench-stolen"


# ------------------------------------------------------------------ plates


def random_plate(rng: random.Random) -> str:
    """A canonical key in one of the common Pakistani shapes."""
    shape = rng.random()
    if shape < 0.6:  # Punjab: three letters, three or four digits (LEB6881)
        return "".join(rng.choices(LETTERS, k=3)) + str(rng.randint(100, 9999))
    if shape < 0.9:  # Sindh / Islamabad: two or three letters, three or four digits
        return "".join(rng.choices(LETTERS, k=rng.choice((2, 3)))) + str(rng.randint(100, 9999))
    return "".join(rng.choices(LETTERS, k=2)) + str(rng.randint(10, 99)) + rng.choice(LETTERS)


def unique_plates(rng: random.Random, count: int, *, avoid: set[str] | None = None) -> list[str]:
    """`count` different plates, none in `avoid`."""
    seen: set[str] = set(avoid or ())
    out: list[str] = []
    while len(out) < count:
        plate = random_plate(rng)
        if plate not in seen:
            seen.add(plate)
            out.append(plate)
    return out


def one_lookalike_off(rng: random.Random, key: str, listed: set[str]) -> str | None:
    """`key` with one character swapped for a look-alike, not itself listed; None if none."""
    from proto.plates import lookalikes

    spots = [(i, other) for i, ch in enumerate(key) for other in lookalikes(ch)]
    rng.shuffle(spots)
    for i, other in spots:
        variant = key[:i] + other + key[i + 1 :]
        if variant not in listed:
            return variant
    return None


# ---------------------------------------------------------------- signing


class _Signing:
    """A throw-away development PKI: signs bundles, and the chain a node trusts."""

    def __init__(self, work: Path, now: datetime) -> None:
        from cryptography import x509

        from fleet_server.pki.store import PkiPaths, init_dev_pki
        from fleet_server.watchlists.signing import WatchlistSigner

        paths = PkiPaths(work / "pki")
        init_dev_pki(paths, passphrase=b"bench-watchlist", now=now)
        self.signer = WatchlistSigner.from_pki(paths, now=now)
        self.trusted = list(x509.load_pem_x509_certificates(paths.chain.read_bytes()))

    def bundles(
        self,
        keys: Sequence[str],
        *,
        now: datetime,
        name: str = WATCHLIST,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """The hotlist as signed bundle texts (several when it exceeds one bundle).

        `ids` are the entries' ids, one per key (default ``e0``, ``e1``…).
        """
        from fleet_server.watchlists.signing import sign_bundle
        from proto.watchlist import MAX_BUNDLE_PLATES, WatchlistBody, WatchlistPlate

        texts = []
        for part, start in enumerate(range(0, len(keys), MAX_BUNDLE_PLATES)):
            chunk = keys[start : start + MAX_BUNDLE_PLATES]
            body = WatchlistBody(
                watchlist_id=name if part == 0 else f"{name}-{part}", version=1,
                category="stolen_vehicle", purpose="benchmark", owner_agency="bench",
                issued_at=now, expires_at=now + timedelta(days=1), districts=[DISTRICT],
                plates=[WatchlistPlate(entry_id=ids[start + i] if ids else f"e{start + i}", key=k)
                        for i, k in enumerate(chunk)],
            )  # fmt: skip
            texts.append(sign_bundle(body, signer=self.signer).model_dump_json())
        return texts


# ---------------------------------------------------------------- matching


def _timed(store: Any, reads: Sequence[str], now: datetime, want: str | None) -> dict[str, Any]:
    """µs per `match_plate` call over `reads`, and how many got the `want` answer."""
    times: list[float] = []
    found = 0
    started = time.perf_counter()
    for read in reads:
        t0 = time.perf_counter_ns()
        matches = store.match_plate(read, now=now)
        times.append((time.perf_counter_ns() - t0) / 1000.0)
        kinds = {m.match for m in matches}
        if (want is None and not matches) or (want is not None and want in kinds):
            found += 1
    total = time.perf_counter() - started
    quantiles = statistics.quantiles(times, n=100, method="inclusive")
    return {
        "reads": len(reads),
        "found": found,
        "us": {"p50": round(quantiles[49], 2), "p99": round(quantiles[98], 2)},
        "per_s": round(len(reads) / total) if total > 0 else None,
    }


def run_matching(
    *, work: Path, sizes: Sequence[int], reads: int, clean: int, seed: int
) -> dict[str, Any]:
    """The ``matching`` and ``false_confusable`` figures (see the module docstring)."""
    from edge_agent.watchlist import WatchlistStore

    now = datetime.now(timezone.utc)
    signing = _Signing(work, now)
    rng = random.Random(seed)
    universe = unique_plates(rng, max(sizes))
    matching: dict[str, Any] = {}
    false_hits: dict[str, Any] = {}
    for size in sizes:
        keys = universe[:size]
        listed = set(keys)
        texts = signing.bundles(keys, now=now)
        store = WatchlistStore(trusted=signing.trusted, district=DISTRICT)
        started = time.perf_counter()
        for text in texts:
            store.install(text, now=now)
        install_ms = (time.perf_counter() - started) * 1000.0
        exact = [rng.choice(keys) for _ in range(reads)]
        swapped = [v for v in (one_lookalike_off(rng, rng.choice(keys), listed)
                               for _ in range(reads)) if v is not None]  # fmt: skip
        random_set = unique_plates(rng, clean, avoid=listed)
        matching[str(size)] = {
            "bundles": len(texts),
            "bundle_bytes": sum(len(t) for t in texts),
            "install_ms": round(install_ms, 1),
            "exact": _timed(store, exact, now, "exact"),
            "confusable": _timed(store, swapped, now, "confusable"),
            "clean": _timed(store, random_set, now, None),
        }
        wrong = sum(1 for plate in random_set if store.match_plate(plate, now=now))
        false_hits[str(size)] = {
            "random_plates": len(random_set),
            "false_confusable_matches": wrong,
            "rate": round(wrong / len(random_set), 6) if random_set else None,
        }
    return {"matching": matching, "false_confusable": false_hits}


# -------------------------------------------------------------- end to end


@contextlib.asynccontextmanager
async def _stack(work: Path, lists: dict[str, str]) -> AsyncIterator[tuple[Any, Any, str]]:
    """A loopback Mosquitto and a ``nigehbaan server`` with an admin and `lists` (name: category).

    Yields the broker, the server process and the admin's token; stops both after.
    """
    import httpx

    now = datetime.now(timezone.utc)
    with loopback_broker(work) as broker:
        server = bench_server(work=work, broker_url=broker.url)
        password = secrets.token_urlsafe(12)
        made = server.run_cli(
            "--create-admin", "bench", "--password-env", "NB_PW", env={"NB_PW": password}
        )
        if made.returncode != 0:
            raise RuntimeError(f"could not create the bench admin: {made.stderr.strip()}")
        server.start()
        try:
            token = server.login("bench", password)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as api:
                for name, category in lists.items():
                    answer = await api.post(
                        "/api/v1/watchlists", headers={"Authorization": f"Bearer {token}"},
                        json={"name": name, "category": category,
                              "purpose": "benchmark", "owner_agency": "bench",
                              "districts": [DISTRICT],
                              "expires_at": (now + timedelta(days=1)).isoformat()},
                    )  # fmt: skip
                    answer.raise_for_status()
            yield broker, server, token
        finally:
            server.stop()


async def _end_to_end(*, work: Path, hits: int, interval_s: float, seed: int) -> dict[str, Any]:
    from edge_agent.config import config_from_dict
    from edge_agent.node import build_node
    from edge_agent.outbox import StoredEvent
    from edge_agent.watchlist import WatchlistStore, write_hits
    from hardware import SimBackend
    from proto.ids import new_event_id
    from proto.messages import PlateEvent
    from simulators.sse import alert_feed

    now = datetime.now(timezone.utc)
    signing = _Signing(work / "e2e", now)
    keys = unique_plates(random.Random(seed), 1_000)
    store = WatchlistStore(trusted=signing.trusted, district=DISTRICT)
    for text in signing.bundles(keys, now=now):
        store.install(text, now=now)
    async with _stack(work, {WATCHLIST: "stolen_vehicle"}) as (broker, server, token):
        config = config_from_dict(
            {
                "node_id": "lhr-bench-wl-0001", "serial": "SN-BENCH-WL",
                "district": DISTRICT, "site_id": "bench-site",
                "data_dir": str(work / "node"), "hardware": {"type": "sim"},
                "mqtt": {"url": broker.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            }
        )  # fmt: skip
        node = build_node(config, backend=SimBackend(), renewal=False)
        written: dict[str, float] = {}

        def on_written(stored: StoredEvent) -> None:
            written.setdefault(stored.event_id, time.perf_counter())

        node.add_listener(on_written)
        up = asyncio.Event()
        node.subscribe(lambda signal: up.set() if signal.kind == "connected" else None)
        arrived: dict[str, float] = {}
        connected = asyncio.Event()

        async def watch() -> None:
            async for item in alert_feed(server.base_url, token, connected=connected):
                alert = item.data.get("alert") or {}
                if item.data.get("op") == "created" and alert.get("type") == "watchlist_hit":
                    arrived.setdefault(str(item.data.get("event_id")), time.perf_counter())

        feed = asyncio.ensure_future(watch())
        task = asyncio.ensure_future(node.run())
        try:
            await asyncio.wait_for(connected.wait(), 30)
            await asyncio.wait_for(up.wait(), 30)
            rng = random.Random(seed + 1)
            for i in range(hits):
                plate = rng.choice(keys)
                event = PlateEvent(
                    node_id=config.node_id, ts=datetime.now(timezone.utc),
                    event_id=new_event_id(), seq=0, camera_id="gate", track_id=f"t{i}",
                    plate=plate, canonical=plate, confidence=0.9, frames=5,
                )  # fmt: skip
                write_hits(node, store, event, event.event_id)
                await asyncio.sleep(interval_s)
            deadline = time.monotonic() + 30
            while len(set(written) & set(arrived)) < len(written):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        finally:
            node.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed
    latencies = sorted(
        (arrived[event_id] - at) * 1000.0 for event_id, at in written.items() if event_id in arrived
    )
    figures: dict[str, Any] = {"hits": len(written), "arrived": len(latencies)}
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        figures["hit_to_feed_ms"] = {
            "p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1),
            "max": round(latencies[-1], 1),
        }  # fmt: skip
    return figures


def run_watchlist_bench(
    *,
    work: Path,
    sizes: Sequence[int] = DEFAULT_SIZES,
    reads: int = 20_000,
    clean: int = 20_000,
    seed: int = 14,
    e2e_hits: int = 40,
    e2e_interval_s: float = 0.1,
    e2e: bool = True,
) -> dict[str, Any]:
    """Every figure of the bench (see the module docstring), without the envelope."""
    figures = run_matching(work=work, sizes=sizes, reads=reads, clean=clean, seed=seed)
    figures["settings"] = {"sizes": list(sizes), "reads": reads, "clean": clean, "seed": seed}
    if e2e:
        figures["end_to_end"] = asyncio.run(
            _end_to_end(work=work, hits=e2e_hits, interval_s=e2e_interval_s, seed=seed)
        )
    return figures


# ------------------------------------------------------------------ stream
#
# A simulated camera stream through the node's REAL camera pipeline: rendered vehicles
# carrying hotlisted and clean plates, and (with --faces) real photos of enrolled and
# unenrolled persons walking past. Each pass's first frame with the subject in it is
# timed as it is pushed into the camera; each hit is timed as the node writes it and as
# its alert reaches the operator's SSE feed. A hit belongs to the last pass that entered
# before it was written (passes are apart by a still street), and is true only when it
# quotes that pass's own entry: a hotlisted plate's, an enrolled person's.

WANTED = "bench-wanted"
STREAM_NODE = "lhr-bench-wl-0002"
STREAM_SIZE = (640, 480)


@dataclass
class StreamPass:
    """One subject passing the camera, what should come of it, and when things happened."""

    kind: str  # "plate" | "face"
    label: str  # "hotlisted" | "clean" | "enrolled" | "unenrolled"
    key: str  # the plate's canonical key, or the probe photo's file name
    entry_id: str | None  # the entry a true hit quotes; None: any hit is false
    seed: int = 0  # plates: the render seed
    image: Path | None = None  # faces: the probe photo
    entered_frame: int | None = None
    entered_at: float | None = None
    hits: list[str] = field(default_factory=list)  # event ids of the true hits


def plan_plate_passes(count: int, *, seed: int) -> list[StreamPass]:
    """`count` vehicle passes, every other one carrying a hotlisted plate."""
    from simulators.camera_scenes import render_pass

    passes = []
    for i in range(count):
        pass_seed = seed * 1000 + i
        truth = render_pass(random.Random(pass_seed), size=STREAM_SIZE).truth
        listed = i % 2 == 0
        passes.append(StreamPass(
            kind="plate", label="hotlisted" if listed else "clean", key=truth.canonical,
            entry_id=f"plate-{i}" if listed else None, seed=pass_seed,
        ))  # fmt: skip
    return passes


def face_people(directory: Path) -> list[list[str]]:
    """The photos of `directory` grouped by person from its ``pairs.csv`` (same = yes).

    Photos no pair names are left out (who they show is not known).
    """
    from simulators.bench_faces import load_pairs

    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            name = parent[name]
        return name

    for pair in load_pairs(directory / "pairs.csv"):
        a, b = root(pair.image_a), root(pair.image_b)
        if pair.same and a != b:
            parent[b] = a
    groups: dict[str, list[str]] = {}
    for name in list(parent):
        if (directory / name).is_file():
            groups.setdefault(root(name), []).append(name)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def plan_face_passes(
    directory: Path, count: int, *, seed: int
) -> tuple[list[StreamPass], dict[str, str]]:
    """Face passes and the enrolment photo of each enrolled person (entry id: file name).

    People with two photos or more alternate between enrolled (one photo
    enrolled, another walks past) and unenrolled (up to two photos walk
    past); people with one photo are unenrolled. At most `count` passes.
    """
    people = face_people(directory)
    random.Random(seed).shuffle(people)
    enrol: dict[str, str] = {}
    enrolled: list[StreamPass] = []
    unenrolled: list[StreamPass] = []
    for number, photos in enumerate(people):
        if len(photos) >= 2 and number % 2 == 0:
            entry = f"person-{len(enrol)}"
            enrol[entry] = photos[0]
            enrolled.append(StreamPass(kind="face", label="enrolled", key=photos[1],
                                       entry_id=entry, image=directory / photos[1]))  # fmt: skip
        else:
            unenrolled.extend(StreamPass(kind="face", label="unenrolled", key=photo,
                                         entry_id=None, image=directory / photo)
                              for photo in photos[:2])  # fmt: skip
    half = count // 2
    chosen = enrolled[:half] + unenrolled[: count - min(half, len(enrolled))]
    chosen_entries = {p.entry_id for p in chosen if p.entry_id}
    return chosen, {e: photo for e, photo in enrol.items() if e in chosen_entries}


def _face_crop(photo: Path, side: int) -> Any:
    """The largest face of `photo` with its head and shoulders, `side` px square (None: no face)."""
    import cv2

    from edge_agent.faces.models import YuNetDetector

    image = cv2.imread(str(photo))
    if image is None:
        return None
    faces = YuNetDetector().detect(image)
    if not faces:
        return None
    x, y, w, h = faces[0].box
    half = 1.1 * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    height, width = image.shape[:2]
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(width, int(cx + half)), min(height, int(cy + half))
    return cv2.resize(image[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA)


def pass_frames(one: StreamPass) -> tuple[list[Any], int]:
    """The frames of one pass and the index of the first frame with the subject in it."""
    import numpy as np

    from simulators.camera_scenes import render_pass

    if one.kind == "plate":
        return render_pass(random.Random(one.seed), size=STREAM_SIZE).frames, 3
    assert one.image is not None
    face = _face_crop(one.image, 220)
    width, height = STREAM_SIZE
    nrng = np.random.default_rng(abs(hash(one.key)) % 2**32)
    street = nrng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    frames = [street.copy() for _ in range(3)]
    if face is None:
        return frames, -1
    for i in range(10):
        frame = street.copy()
        x, y = 30 + 36 * i, 90 + 3 * i
        frame[y : y + 220, x : x + 220] = face
        frames.append(frame)
    frames += [street.copy() for _ in range(6)]
    return frames, 3


def _enrol(entries: dict[str, str], directory: Path) -> tuple[list[Any], dict[str, str]]:
    """Templates of the enrolment photos (the server's own enrolment code), and refusals."""
    import base64
    import hashlib

    from fleet_server.watchlists.enrolment import PhotoRefused, compute_template
    from fleet_server.watchlists.sealing import PlainTemplate

    templates: list[Any] = []
    refused: dict[str, str] = {}
    for entry, photo_name in entries.items():
        photo = (directory / photo_name).read_bytes()
        try:
            result = compute_template(photo)
        except PhotoRefused as exc:
            refused[photo_name] = str(exc)
            continue
        templates.append((result, PlainTemplate(
            entry_id=entry, vector=base64.b64decode(result.template),
            photo_sha256=hashlib.sha256(photo).hexdigest(),
        )))  # fmt: skip
    return templates, refused


def _person_bundle(signing: _Signing, templates: list[Any], node_key: Any, now: datetime) -> str:
    """The wanted-person list, its templates sealed for the bench node's key, signed."""
    from fleet_server.watchlists.sealing import Recipient, seal_faces
    from fleet_server.watchlists.signing import sign_bundle
    from proto.watchlist import WatchlistBody

    first = templates[0][0]
    faces = seal_faces(
        watchlist_id=WANTED, version=1, templates=[t for _, t in templates],
        recipients=[Recipient(node_id=STREAM_NODE, public_key=node_key.public_key())],
        model=first.model, model_sha256=first.model_sha256, dim=first.dim,
    )  # fmt: skip
    body = WatchlistBody(
        watchlist_id=WANTED, version=1, category="wanted_person", purpose="benchmark",
        owner_agency="bench", issued_at=now, expires_at=now + timedelta(days=1),
        districts=[DISTRICT], persons=len(templates), faces=faces,
    )  # fmt: skip
    return sign_bundle(body, signer=signing.signer).model_dump_json()


def _quantiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    if len(ordered) == 1:
        return {"n": 1, "p50": round(ordered[0], 1), "p99": round(ordered[0], 1)}
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"n": len(ordered), "p50": round(q[49], 1), "p99": round(q[98], 1),
            "max": round(ordered[-1], 1)}  # fmt: skip


async def _stream(
    *,
    work: Path,
    passes: list[StreamPass],
    plate_keys: list[str],
    plate_ids: list[str],
    templates: list[Any],
    fps: float,
    gap_s: float,
    settle_s: float,
) -> dict[str, Any]:
    """Play `passes` into the real camera pipeline of a real node; hits and their times."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from edge_agent.camera.pipeline import CameraFeed, CameraPipeline
    from edge_agent.config import CameraAnalyticsConfig, FacesConfig, config_from_dict
    from edge_agent.inference import builtin_manifest
    from edge_agent.node import build_node
    from edge_agent.outbox import StoredEvent
    from edge_agent.watchlist import WatchlistStore
    from hardware import SimBackend
    from hardware.camera import SimCamera
    from simulators.sse import alert_feed

    now = datetime.now(timezone.utc)
    signing = _Signing(work / "stream", now)
    node_key = ec.generate_private_key(ec.SECP256R1())
    store = WatchlistStore(
        trusted=signing.trusted, directory=work / "node" / "watchlists", district=DISTRICT,
        node_id=STREAM_NODE, node_key=node_key,
        model_sha256=builtin_manifest("sface").sha256 if templates else None,
    )  # fmt: skip
    for text in signing.bundles(plate_keys, now=now, ids=plate_ids):
        store.install(text, now=now)
    if templates:
        store.install(_person_bundle(signing, templates, node_key, now), now=now)
    lists = {WATCHLIST: "stolen_vehicle", **({WANTED: "wanted_person"} if templates else {})}
    written: dict[str, tuple[float, dict[str, Any]]] = {}
    arrived: dict[str, float] = {}
    frames_pushed = 0
    async with _stack(work, lists) as (broker, server, token):
        camera = SimCamera(camera_id="gate", max_queued=64)
        settings = CameraAnalyticsConfig.model_validate({
            "max_fps": fps, "queue_size": 16,
            "detector": "edge_agent.anpr.detector:OcrLineDetector",
            "reader": "edge_agent.anpr.reader:RapidOcrReader",
        })  # fmt: skip
        pipeline = CameraPipeline(
            [CameraFeed.of(camera, settings)], watchlists=store,
            faces=FacesConfig(allowed=bool(templates)),
        )  # fmt: skip
        config = config_from_dict(
            {
                "node_id": STREAM_NODE, "serial": "SN-BENCH-WL2",
                "district": DISTRICT, "site_id": "bench-site",
                "data_dir": str(work / "node"), "hardware": {"type": "sim"},
                "mqtt": {"url": broker.url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            }
        )  # fmt: skip
        node = build_node(config, backend=SimBackend(), components=[pipeline], renewal=False)

        def on_written(stored: StoredEvent) -> None:
            if stored.event_type == "watchlist_hit":
                payload = json.loads(stored.payload)
                written.setdefault(stored.event_id, (time.perf_counter(), payload))

        node.add_listener(on_written)
        up = asyncio.Event()
        node.subscribe(lambda signal: up.set() if signal.kind == "connected" else None)
        connected = asyncio.Event()

        async def watch() -> None:
            async for item in alert_feed(server.base_url, token, connected=connected):
                alert = item.data.get("alert") or {}
                if item.data.get("op") == "created" and alert.get("type") == "watchlist_hit":
                    arrived.setdefault(str(item.data.get("event_id")), time.perf_counter())

        def analysed_up() -> bool:
            worker = pipeline.workers.get("gate")
            return worker is not None and worker.queued == 0

        def play() -> None:
            nonlocal frames_pushed
            frame_s = 1.0 / fps
            street = None
            for one in passes:
                frames, entry = pass_frames(one)
                for index, frame in enumerate(frames):
                    if index == entry:
                        one.entered_frame, one.entered_at = frames_pushed, time.perf_counter()
                    camera.push_frame(frame)
                    frames_pushed += 1
                    time.sleep(frame_s)
                street = frames[-1]
                # Still street: the track ends and votes. On a loaded machine analysis lags
                # behind the camera, so the next pass waits (bounded) until every frame
                # pushed was analysed: a hit is then always written before the next subject
                # enters, and is attributed to the right pass.
                calm_until = time.monotonic() + 60.0
                for count in range(10_000):
                    if count >= round(gap_s * fps) and (
                        analysed_up() or time.monotonic() > calm_until
                    ):
                        break
                    camera.push_frame(street)
                    frames_pushed += 1
                    time.sleep(frame_s)

        feed = asyncio.ensure_future(watch())
        task = asyncio.ensure_future(node.run())
        try:
            await asyncio.wait_for(connected.wait(), 30)
            await asyncio.wait_for(up.wait(), 30)
            await asyncio.sleep(1.5)  # the pipeline's first poll hands the face plan over
            started = time.perf_counter()
            await asyncio.to_thread(play)
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline:
                if (
                    written
                    and set(written) <= set(arrived)
                    and time.monotonic() > deadline - (settle_s * 0.8)
                ):
                    break
                await asyncio.sleep(0.1)
        finally:
            node.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feed
    return _stream_figures(passes, written, arrived, started=started, frames=frames_pushed)


def _stream_figures(
    passes: list[StreamPass],
    written: dict[str, tuple[float, dict[str, Any]]],
    arrived: dict[str, float],
    *,
    started: float,
    frames: int,
) -> dict[str, Any]:
    """Hits found, false hits and entry → feed latency from what was played and written."""
    entered = sorted((p for p in passes if p.entered_at is not None),
                     key=lambda p: p.entered_at or 0.0)  # fmt: skip
    false_hits = {"plates": 0, "faces": 0}
    false_unenrolled = 0
    duplicates = 0
    latencies: dict[str, list[float]] = {"plate": [], "face": []}
    for event_id, (at, payload) in sorted(written.items(), key=lambda kv: kv[1][0]):
        owner = next((p for p in reversed(entered) if (p.entered_at or 0.0) <= at), None)
        is_face = payload.get("subject") == "person"
        if owner is None or owner.entry_id is None or payload.get("entry_id") != owner.entry_id:
            false_hits["faces" if is_face else "plates"] += 1
            if owner is not None and owner.label == "unenrolled" and is_face:
                false_unenrolled += 1
            continue
        owner.hits.append(event_id)
        if len(owner.hits) > 1:
            duplicates += 1
    per_pass = []
    for one in passes:
        first = one.hits[0] if one.hits else None
        feed_at = arrived.get(first) if first else None
        latency = None
        if feed_at is not None and one.entered_at is not None:
            latency = (feed_at - one.entered_at) * 1000.0
            latencies[one.kind].append(latency)
        per_pass.append({
            "kind": one.kind, "label": one.label, "subject": one.key,
            "entered_frame": one.entered_frame,
            "entered_s": round(one.entered_at - started, 3) if one.entered_at else None,
            "hit": first is not None,
            "on_feed_s": round(feed_at - started, 3) if feed_at else None,
            "entry_to_feed_ms": round(latency, 1) if latency is not None else None,
        })  # fmt: skip

    def half(kind: str, listed: str) -> dict[str, Any]:
        mine = [p for p in passes if p.kind == kind]
        expected = [p for p in mine if p.label == listed]
        return {
            "passes": len(mine), listed: len(expected),
            "expected": len(expected), "hits_found": sum(1 for p in expected if p.hits),
            "entry_to_feed_ms": _quantiles(latencies[kind]),
        }  # fmt: skip

    every = latencies["plate"] + latencies["face"]
    return {
        "frames": frames,
        "hits_found": sum(1 for p in passes if p.hits),
        "expected": sum(1 for p in passes if p.entry_id is not None),
        "false_hits": false_hits,
        "false_hits_on_unenrolled_faces": false_unenrolled,
        "duplicate_hits": duplicates,
        "hits_written": len(written),
        "hits_not_on_feed": sum(1 for e in written if e not in arrived),
        "entry_to_feed_ms": _quantiles(every),
        "plates": half("plate", "hotlisted"),
        "faces": half("face", "enrolled"),
        "per_pass": per_pass,
    }


def run_stream_bench(
    *,
    work: Path,
    plate_passes: int = 12,
    faces: Path | None = None,
    face_passes: int = 12,
    seed: int = 14,
    fps: float = 5.0,
    gap_s: float = 2.0,
    hotlist: int = 1_000,
    settle_s: float = 20.0,
) -> dict[str, Any]:
    """The stream figures (module docstring): the plate half, and faces when `faces` is given."""
    rng = random.Random(seed)
    passes = plan_plate_passes(plate_passes, seed=seed)
    played = {p.key for p in passes}
    listed = {f"plate-{i}": p.key for i, p in enumerate(passes) if p.entry_id}
    filler = unique_plates(rng, max(0, hotlist - len(listed)), avoid=played)
    plate_keys = list(listed.values()) + filler
    plate_ids = list(listed) + [f"filler-{j}" for j in range(len(filler))]
    templates: list[Any] = []
    refused: dict[str, str] = {}
    face_note = "off: no --faces directory given, so only the plate half ran"
    if faces is not None:
        face_list, enrol = plan_face_passes(faces, face_passes, seed=seed)
        templates, refused = _enrol(enrol, faces)
        kept = {t.entry_id for _, t in templates}
        face_list = [p for p in face_list if p.entry_id is None or p.entry_id in kept]
        passes += face_list
        face_note = f"on: photos from {faces}"
    random.Random(seed + 7).shuffle(passes)
    figures = asyncio.run(_stream(
        work=work, passes=passes, plate_keys=plate_keys, plate_ids=plate_ids, templates=templates,
        fps=fps, gap_s=gap_s, settle_s=settle_s,
    ))  # fmt: skip
    figures["face_half"] = face_note
    figures["enrolment_refused"] = refused
    figures["settings"] = {
        "plate_passes": plate_passes, "face_passes": face_passes if faces else 0, "seed": seed,
        "fps": fps, "gap_s": gap_s, "hotlist": len(plate_keys), "frame": list(STREAM_SIZE),
    }  # fmt: skip
    with contextlib.suppress(OSError):
        figures["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return figures


# ---------------------------------------------------------------------- CLI


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are whole numbers, got {text!r}") from None
    if not sizes or any(not 1 <= s <= 1_000_000 for s in sizes):
        raise argparse.ArgumentTypeError("each size must be 1 to 1,000,000 plates")
    return sizes


def register_watchlist(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench watchlist` to the bench subcommands."""
    parser = sub.add_parser(
        "watchlist", help="hotlist matching µs at 1k/10k/100k plates, false look-alike hits, "
        "hit → operator feed latency",
    )  # fmt: skip
    parser.add_argument(
        "--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="hotlist sizes, comma list"
    )
    parser.add_argument("--reads", type=int, default=20_000, help="reads timed per kind (≥ 100)")
    parser.add_argument(
        "--clean", type=int, default=20_000, help="random unlisted plates per size (≥ 100)"
    )
    parser.add_argument("--seed", type=int, default=14, help="the plate generator's seed")
    parser.add_argument("--hits", type=int, default=40, help="end-to-end hits (2-1000)")
    parser.add_argument(
        "--no-e2e", action="store_true", help="leave out the broker/server/node stack"
    )
    parser.add_argument(
        "--stream", action="store_true",
        help="instead: a simulated camera stream through the node's real camera pipeline "
        "(hotlisted and clean plates; with --faces, enrolled and unenrolled persons): "
        "hits found, false hits, entry into the frame → operator feed",
    )  # fmt: skip
    parser.add_argument(
        "--faces", type=Path, metavar="DIR",
        help="--stream: face photos with a pairs.csv (image_a,image_b,same); without it only "
        "the plate half runs",
    )  # fmt: skip
    parser.add_argument("--passes", type=int, default=12, help="--stream: vehicle passes (1-500)")
    parser.add_argument(
        "--face-passes", type=int, default=12, help="--stream: face passes at most (1-500)"
    )
    parser.add_argument(
        "--fps", type=float, default=5.0, help="--stream: frames pushed (and analysed) per s"
    )
    parser.add_argument("--work-dir", type=Path, help="keep the work files here")
    add_output_options(parser)
    parser.set_defaults(func=_watchlist)


def _watchlist(args: argparse.Namespace) -> int:
    if args.reads < 100 or args.clean < 100 or not 2 <= args.hits <= 1000:
        sys.stderr.write("bench watchlist: --reads and --clean ≥ 100, --hits 2-1000\n")
        return 2
    if args.stream:
        return _stream_cli(args)
    started = time.time()
    with bench_work_dir(args.work_dir, prefix="nb-bench-watchlist-") as work:
        figures = run_watchlist_bench(
            work=work, sizes=args.sizes, reads=args.reads, clean=args.clean, seed=args.seed,
            e2e_hits=args.hits, e2e=not args.no_e2e,
        )  # fmt: skip
    publish(bench_result("watchlist", figures, started_at=started), args)
    return 0


def _stream_cli(args: argparse.Namespace) -> int:
    """`bench watchlist --stream`: the stream figures under ``stream``."""
    from simulators.bench_faces import FacesBenchError
    from simulators.camera_scenes import anpr_missing

    if not 1 <= args.passes <= 500 or not 1 <= args.face_passes <= 500 or not 0.5 <= args.fps <= 30:
        sys.stderr.write("bench watchlist: --passes and --face-passes 1-500, --fps 0.5-30\n")
        return 2
    if args.faces is not None and not (args.faces / "pairs.csv").is_file():
        sys.stderr.write(f"bench watchlist: {args.faces} has no pairs.csv\n")
        return 2
    missing = anpr_missing()
    if missing is not None:
        sys.stderr.write(f"bench watchlist: the camera pipeline cannot run: {missing}\n")
        return 2
    started = time.time()
    try:
        with bench_work_dir(args.work_dir, prefix="nb-bench-watchlist-") as work:
            figures = run_stream_bench(
                work=work, plate_passes=args.passes, faces=args.faces,
                face_passes=args.face_passes, seed=args.seed, fps=args.fps,
            )  # fmt: skip
    except FacesBenchError as exc:
        sys.stderr.write(f"bench watchlist: {exc}\n")
        return 2
    publish(bench_result("watchlist", {"stream": figures}, started_at=started), args)
    return 0
