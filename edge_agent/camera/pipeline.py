"""The camera pipeline as a node component: capture and analysis threads per camera.

`CameraPipeline` (component name ``camera``) runs one `CameraWorker` per
`CameraFeed`. A worker has two threads, so neither capture nor a slow model
ever runs on the node's asyncio loop (a panic press is never behind a frame):

- capture: ``source.read()`` into a bounded queue of `queue_size` frames;
  when the queue is full the new frame is dropped and counted (capture never
  waits for analysis). A source that fails (`CameraReadError`, or it cannot
  be opened) or stalls (no frame for `stall_after_s`) is retried with a
  doubling backoff from `retry_min_s` to `retry_max_s` (a camera built from
  the config is closed and opened again) and reported once as a
  ``node_fault`` event (code ``camera_lost`` / ``camera_stalled``, detail
  naming the camera), and once more with ``active=false`` when frames flow
  again.
- analysis: takes frames off the queue at most `max_fps` × the power
  policy's analytics rate per second (the rest are skipped and counted) and
  runs `CameraAnalysis` on each. A finished vehicle pass is handed to the
  loop with `NodeContext.call_soon_threadsafe` and written there as one
  `PlateEvent` through the durable outbox; that hand-over is unbounded, so
  no event is ever dropped. When no frame has come for `stall_after_s` (or
  the power policy stopped the camera) open tracks are ended and their
  passes sent; on stop every open track is ended and its pass written before
  the component returns.

The power policy (`edge_agent.power`) is obeyed from the node state's
``power_step``: a step's `analytics_rate` slows analysis, ``cameras =
false`` stops capture (config-built cameras are closed), and what is shed is
in the component's health and `stats()`. Telemetry gets ``frames_dropped``
(all cameras), ``cameras_total`` and, per camera, ``cameras``: frames in and
dropped, motion ratio, detector and reader ms p50/p95, plates per hour, what
power shed and the open fault. A report lists at most
`proto.messages.MAX_TELEMETRY_CAMERAS` cameras; a node with more takes turns
(`cameras_in_turn`), so each is reported within ceil(n / 8) intervals. `stats()` has
the same figures and more; the health detail that ``ping`` carries has them
shortened. A plate event carries the best read's box, province, layout and
the rules' canonical key.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.camera.errors import CameraError
from edge_agent.component import CommandHandler, Health, NodeContext
from edge_agent.snapshot import Still
from edge_agent.watchlist import write_hits
from hardware.camera import CameraConfig, CameraReadError, CameraSource, Frame
from hardware.clock import Clock
from hardware.errors import HardwareError
from proto.messages import (
    MAX_TELEMETRY_CAMERAS,
    Capability,
    EventBase,
    NodeFaultEvent,
    PlateEvent,
)
from proto.plates import MAX_PLATE_KEY, normalise_plate

if TYPE_CHECKING:
    from edge_agent.anpr.types import PlateDetector, PlateReader
    from edge_agent.camera.analysis import CameraAnalysis, CameraStats, PlatePass
    from edge_agent.camera.privacy import PrivacyGuard
    from edge_agent.camera.standards import Standards, StandardsCheck, Verdict
    from edge_agent.config import AgentConfig, CameraAnalyticsConfig, FacesConfig
    from edge_agent.evidence import EvidenceStore
    from edge_agent.faces.models import Detector, Embedder
    from edge_agent.faces.stage import StagedHit
    from edge_agent.faces.work import FaceWork
    from edge_agent.watchlist import WatchlistStore

__all__ = ["CameraFeed", "CameraPipeline", "CameraWorker", "cameras_in_turn"]

logger = logging.getLogger(__name__)

FaultReport = Callable[[str, bool, str], None]


@dataclass
class CameraFeed:
    """One camera for the pipeline: how to open it, its settings, and (optionally) its models.

    `open` returns the source; `reopen` says whether a failed source may be
    closed and opened again (true for cameras built from the config; false
    for a source a test hands in). `detector`/`reader` None: the plugins
    the settings name are loaded when the pipeline starts.
    """

    camera_id: str
    open: Callable[[], CameraSource]
    settings: CameraAnalyticsConfig
    detector: PlateDetector | None = None
    reader: PlateReader | None = None
    reopen: bool = True

    @classmethod
    def of(
        cls,
        source: CameraSource,
        settings: CameraAnalyticsConfig,
        *,
        detector: PlateDetector | None = None,
        reader: PlateReader | None = None,
    ) -> CameraFeed:
        """A feed around an already open source (tests, simulators)."""
        return cls(
            camera_id=source.camera_id,
            open=lambda: source,
            settings=settings,
            detector=detector,
            reader=reader,
            reopen=False,
        )


class CameraWorker:
    """One camera's capture and analysis threads; see the module docstring."""

    def __init__(
        self,
        feed: CameraFeed,
        *,
        analysis: CameraAnalysis,
        on_pass: Callable[[PlatePass], None],
        on_fault: FaultReport,
        privacy: PrivacyGuard | None = None,
        faces: FaceWork | None = None,
        on_face_hit: Callable[[StagedHit, Any], None] | None = None,
    ) -> None:
        self.feed = feed
        self.privacy = privacy  # masks and private-camera terms, applied before the queue
        self.faces = faces  # face work (edge_agent.faces.work); None: faces never run here
        self._on_face_hit = on_face_hit
        self.camera_id = feed.camera_id
        self.settings = feed.settings
        self.analysis = analysis
        self.stats: CameraStats = analysis.stats
        self._on_pass = on_pass
        self._on_fault = on_fault
        self._queue: collections.deque[Frame] = collections.deque()
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._power_changed = threading.Event()
        self.analytics_rate = 1.0
        self.cameras_on = True
        self.source: CameraSource | None = None
        self.capturing = False  # reading frames (false before the first read and while shed)
        self.fault: str | None = None  # the active fault code, if any
        self.fault_detail = ""
        self.last_frame_at: float | None = None  # time.monotonic() of the last frame
        self.latest: Frame | None = None  # the newest frame read (edge_agent.snapshot)
        self.final_passes: list[PlatePass] = []
        self.plates_withheld = 0  # frames the plate stage skipped: private terms (issue 15)
        self.standards: Verdict | None = None  # the last standards check's verdict (issue 15)
        self._check: StandardsCheck | None = None  # measuring since the source was opened
        self._reopen = threading.Event()  # a new source: close and open again (issue 15)
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        for name, target in (("capture", self._capture), ("analysis", self._analyse)):
            thread = threading.Thread(
                target=target, name=f"camera-{self.camera_id}-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._power_changed.set()
        with self._ready:
            self._ready.notify_all()

    def join(self, timeout_s: float) -> bool:
        """Wait for both threads (at most `timeout_s` in all); True when both ended."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def set_power(self, *, analytics_rate: float, cameras_on: bool) -> None:
        """Obey a power step: share of frames analysed, and whether the camera runs at all."""
        self.analytics_rate = analytics_rate
        if cameras_on != self.cameras_on:
            self.cameras_on = cameras_on
            self._power_changed.set()

    def reopen(self, open_source: Callable[[], CameraSource]) -> None:
        """Open the camera from `open_source` from now on (a third-party source that changed)."""
        self.feed.open = open_source
        self._reopen.set()

    def shed(self) -> bool:
        """True while the power policy has the camera off (set from the loop thread)."""
        return not self.cameras_on

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---------------------------------------------------------------- capture

    def _report(self, code: str, detail: str) -> None:
        if self.fault == code:
            return
        self.fault = code
        self.fault_detail = detail
        logger.warning("camera %s: %s (%s)", self.camera_id, code, detail)
        self._on_fault(code, True, detail)

    def _recovered(self) -> None:
        if self.fault is None:
            return
        code, self.fault = self.fault, None
        logger.info("camera %s: frames flow again after %s", self.camera_id, code)
        self._on_fault(code, False, f"{self.camera_id}: frames flow again")

    def _close_source(self) -> None:
        if self.source is not None and self.feed.reopen:
            try:
                self.source.close()
            except Exception:
                logger.exception("camera %s: close failed", self.camera_id)
            self.source = None

    def _capture(self) -> None:
        settings = self.settings
        backoff = settings.retry_min_s
        waiting_since = time.monotonic()
        try:
            while not self._stop.is_set():
                if self._reopen.is_set():  # the feed's source changed: a new connection
                    self._reopen.clear()
                    self._close_source()
                    self.standards = None  # judged again on the new connection
                if not self.cameras_on:
                    self._close_source()
                    self.capturing = False
                    self._power_changed.wait(1.0)
                    self._power_changed.clear()
                    waiting_since = time.monotonic()
                    continue
                if self.source is None:
                    try:
                        self.source = self.feed.open()
                        self.analysis.gate.reset()
                        self._begin_standards()
                    except (HardwareError, CameraError) as exc:  # CameraError: ONVIF refused
                        code = getattr(exc, "fault_code", "camera_lost")
                        self._report(code, f"{self.camera_id}: cannot open: {exc}")
                        self._stop.wait(backoff)
                        backoff = min(settings.retry_max_s, backoff * 2)
                        continue
                try:
                    frame = self.source.read(timeout_s=min(0.5, settings.stall_after_s))
                except (CameraReadError, HardwareError) as exc:
                    self._report("camera_lost", f"{self.camera_id}: {exc}")
                    self._close_source()
                    self._stop.wait(backoff)
                    backoff = min(settings.retry_max_s, backoff * 2)
                    continue
                now = time.monotonic()
                self.capturing = True
                if frame is not None and self.shed():
                    continue  # read while the power step came in: shed, not analysed
                if frame is None:
                    if self._check is not None:
                        self._judge(self._check.poll(now))
                    stalled = now - (self.last_frame_at or waiting_since)
                    if stalled > settings.stall_after_s:
                        self._report(
                            "camera_stalled", f"{self.camera_id}: no frame for {stalled:.0f}s"
                        )
                        if self.feed.reopen:
                            self._close_source()
                            self._stop.wait(backoff)
                            backoff = min(settings.retry_max_s, backoff * 2)
                            waiting_since = time.monotonic()
                    continue
                self.last_frame_at = now
                backoff = settings.retry_min_s
                self._recovered()
                self.stats.frames_in += 1
                if not self._meets_standards(frame, now):
                    self.stats.frames_skipped += 1  # measuring, or below standard: not analysed
                    continue
                if self.privacy is not None:  # issue 15: nothing downstream sees masked pixels
                    image = self.privacy.admit(self.camera_id, frame.image)
                    if image is None:
                        self.stats.frames_skipped += 1
                        self.latest = None  # not for analysis: not for a snapshot either
                        continue
                    frame = dataclasses.replace(frame, image=image)
                self.latest = frame  # masked, as everything downstream sees it
                with self._ready:
                    if len(self._queue) >= settings.queue_size:
                        self.stats.frames_dropped += 1
                        continue
                    self._queue.append(frame)
                    self._ready.notify()
        finally:
            self._close_source()

    # ------------------------------------------------------- standards (issue 15)

    def _begin_standards(self) -> None:
        """On every connect: measure a private camera with minimums before analysing it."""
        standards = self.privacy.standards(self.camera_id) if self.privacy is not None else None
        if standards is None:
            self._check = None
            return
        from edge_agent.camera.standards import StandardsCheck

        self._check = StandardsCheck(standards, started=time.monotonic())

    def _meets_standards(self, frame: Frame, now: float) -> bool:
        """False while the check measures and after a failed verdict (live view only)."""
        if self._check is None and self.standards is None and not self._terms_dropped():
            self._begin_standards()  # minimums that arrived after the source was opened
        if self._check is not None:
            source = self.source
            self._judge(
                self._check.add(
                    width=int(frame.image.shape[1]),
                    height=int(frame.image.shape[0]),
                    t=now,
                    source_time=source.source_time if source is not None else None,
                    node_time=source.clock.now() if source is not None else None,
                )
            )
            if self._check is not None:
                return False
        verdict = self.standards
        return verdict is None or verdict.passed or self._terms_dropped()

    def _terms_dropped(self) -> bool:
        """The camera's terms no longer ask for a check (the server removed its minimums)."""
        return self.privacy is None or self.privacy.standards(self.camera_id) is None

    def _judge(self, verdict: Verdict | None) -> None:
        if verdict is None:
            return
        from edge_agent.camera.standards import FAULT_CODE

        self._check = None
        before, self.standards = self.standards, verdict
        if verdict.passed:
            logger.info("camera %s meets its standards: %s", self.camera_id, verdict.summary())
            if before is not None and not before.passed:
                self._on_fault(FAULT_CODE, False, f"{self.camera_id}: {verdict.summary()}")
        else:
            logger.warning("camera %s below standard: %s", self.camera_id, verdict.summary())
            self._on_fault(FAULT_CODE, True, f"{self.camera_id}: {verdict.summary()}")

    # --------------------------------------------------------------- analysis

    def _next_frame(self) -> Frame | None:
        with self._ready:
            self._ready.wait_for(lambda: bool(self._queue) or self._stop.is_set(), 0.5)
            if self._stop.is_set() or not self._queue:
                return None
            return self._queue.popleft()

    def _analyse(self) -> None:
        settings = self.settings
        last_t: float | None = None
        credit = 0.0
        last_frame_at = time.monotonic()
        try:
            while not self._stop.is_set():
                frame = self._next_frame()
                if frame is None:
                    # No frame for a while (stalled, or shed by power) with a vehicle in
                    # view: end its pass now rather than when frames come back.
                    quiet = time.monotonic() - last_frame_at
                    if quiet > settings.stall_after_s or self.shed():
                        for plate_pass in self.analysis.flush():
                            self._on_pass(plate_pass)
                    continue
                last_frame_at = time.monotonic()
                rate = self.analytics_rate if settings.enabled else 0.0
                if rate <= 0.0:
                    self.stats.frames_skipped += 1
                    continue
                if settings.max_fps > 0:
                    interval = 1.0 / (settings.max_fps * rate)
                    if last_t is not None and frame.t - last_t < interval * 0.999:
                        self.stats.frames_skipped += 1
                        continue
                else:  # every frame, thinned by the power step's rate
                    credit += rate
                    if credit < 1.0:
                        self.stats.frames_skipped += 1
                        continue
                    credit -= 1.0
                last_t = frame.t
                motion_before = self.stats.motion_frames
                # Issue 15: plates are switchable per camera at run time (a private camera
                # whose agreement allows faces but not plates never runs the plate stage).
                plates_on = self.privacy is None or self.privacy.allows(self.camera_id, "plates")
                try:
                    passes = self.analysis.process(frame.image) if plates_on else []
                except Exception:  # the analysis guards its plugins; this is a bug
                    self.stats.errors += 1
                    logger.exception("camera %s: analysis failed; frame skipped", self.camera_id)
                    continue
                if not plates_on:
                    self.plates_withheld += 1
                    for plate_pass in self.analysis.flush():  # terms changed mid-pass:
                        self._on_pass(plate_pass)  # the pass read while allowed ends now
                for plate_pass in passes:
                    self._on_pass(plate_pass)
                if self.faces is not None and self._on_face_hit is not None:
                    # After the plates, on the same frames (power's rate thins both); the
                    # motion counter moving says this frame had motion (no plate stage,
                    # no motion gate: every frame is looked at).
                    moving = not plates_on or self.stats.motion_frames > motion_before
                    for staged in self.faces.process(frame.image, moving=moving):
                        self._on_face_hit(staged, frame.image)  # the frame that decided it
        finally:
            self.final_passes.extend(self.analysis.flush())

    # ----------------------------------------------------------------- health

    def health(self) -> Health:
        stats = self.stats
        if not self.cameras_on:
            return Health(True, f"{self.camera_id}: off (power)")
        if self.fault is not None:
            return Health(False, self.fault_detail)
        if self.last_frame_at is None:
            return Health(False, f"{self.camera_id}: no frame yet")
        age = time.monotonic() - self.last_frame_at
        if age > self.settings.stall_after_s:
            return Health(False, f"{self.camera_id}: no frame for {age:.0f}s")
        if self.standards is not None and not self.standards.passed:  # issue 15
            return Health(False, f"{self.camera_id}: below standard, live view only")
        return Health(
            True,
            f"{self.camera_id}: {stats.frames_in} in, {stats.frames_dropped} dropped, "
            f"motion {stats.motion_ratio:.3f}, {stats.plates} plates",
        )


class CameraPipeline:
    """The camera pipeline component; see the module docstring."""

    name = "camera"

    def __init__(
        self,
        feeds: Sequence[CameraFeed],
        *,
        evidence: EvidenceStore | None = None,
        poll_s: float = 1.0,
        watchlists: WatchlistStore | None = None,
        faces: FacesConfig | None = None,
        face_models: Callable[[], tuple[Detector, Embedder]] | None = None,
    ) -> None:
        if not feeds:
            raise ValueError("a camera pipeline needs at least one camera")
        ids = [f.camera_id for f in feeds]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must be unique: {ids}")
        self.feeds = list(feeds)
        self.evidence = evidence
        self.poll_s = poll_s
        self.watchlists = watchlists  # hotlists a pass is matched against (edge_agent.watchlist)
        self.faces = faces  # the site's face policy; None or not allowed: no face work at all
        self.face_models = face_models  # detector/embedder factory (tests); None: YuNet + SFace
        self.workers: dict[str, CameraWorker] = {}
        self.shed = ""  # what the power policy has shed, for health and stats
        self.sheds = 0
        self._evidence_fault: str | None = None  # open fault code: a hit's evidence not kept
        self.privacy: PrivacyGuard | None = None  # set in run (edge_agent.camera.privacy)
        self._sources: dict[str, str] = {}  # third-party camera id → the source it runs
        self._telemetry_turn = 0  # where the next report's share of cameras starts

    @classmethod
    def from_config(
        cls, config: AgentConfig, *, clock: Clock, watchlists: WatchlistStore | None = None
    ) -> CameraPipeline:
        """One feed per ``[[cameras]]`` entry, opened (and reopened) from its config.

        Imports neither numpy nor the plugins: a camera that cannot load fails
        in `run` as this component's fault, never the node's start.
        """
        from hardware.camera import load_camera

        def opener(camera: CameraConfig) -> Callable[[], CameraSource]:
            return lambda: load_camera(camera, clock=clock)

        feeds = [
            CameraFeed(
                camera_id=camera.id,
                open=opener(camera),
                settings=config.camera_analytics(camera.id),
            )
            for camera in config.cameras
        ]
        return cls(feeds, watchlists=watchlists, faces=config.faces)

    # ------------------------------------------------------------- component

    @property
    def capabilities(self) -> Sequence[Capability]:
        plates = any(f.detector is not None or f.settings.detector for f in self.feeds)
        found = [Capability.CAMERA, Capability.ANPR] if plates else [Capability.CAMERA]
        if self.watchlists is not None and any(self._face_allowed(f.camera_id) for f in self.feeds):
            found.append(Capability.FACE)  # the site's policy allows faces (docs/faces.md)
        return tuple(found)

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    def telemetry(self) -> Mapping[str, Any]:
        if not self.workers:
            return {}
        evidence = {"evidence": self.evidence.figures()} if self.evidence is not None else {}
        now = time.monotonic()
        share, self._telemetry_turn = cameras_in_turn(
            list(self.workers), start=self._telemetry_turn, limit=MAX_TELEMETRY_CAMERAS
        )
        cameras = [_camera_health(camera_id, self.workers[camera_id], now) for camera_id in share]
        return {
            "frames_dropped": sum(w.stats.frames_dropped for w in self.workers.values()),
            "cameras": cameras,
            "cameras_total": len(self.workers),
            "privacy_version": self.privacy.version if self.privacy is not None else None,
            **evidence,
        }

    def health(self) -> Health:
        if not self.workers:
            return Health(False, "not started")
        parts = [w.health() for w in self.workers.values()]
        detail = "; ".join(p.detail for p in parts)
        pressure = self._evidence_pressure()
        if pressure:  # first: the per-camera details may be cut at 200 characters
            detail = f"{pressure}; {detail}"
        if self.shed:
            detail = f"shed: {self.shed}; {detail}"
        return Health(all(p.ok for p in parts), detail[:200])

    def stats(self) -> dict[str, Any]:
        """Per-camera figures (see the module docstring), plus what power has shed."""
        now = time.monotonic()
        cameras = {}
        for camera_id, worker in self.workers.items():
            figures = worker.stats.as_dict(now)
            figures["queued"] = worker.queued
            figures["fault"] = worker.fault
            figures["analytics_rate"] = worker.analytics_rate
            figures["camera_on"] = worker.cameras_on
            figures["plates_withheld"] = worker.plates_withheld
            figures["standards"] = worker.standards.as_dict() if worker.standards else None
            if worker.faces is not None:
                figures["faces"] = worker.faces.stats()
            cameras[camera_id] = figures
        privacy = self.privacy.stats() if self.privacy is not None else None
        return {"cameras": cameras, "shed": self.shed or None, "privacy": privacy}

    async def run(self, ctx: NodeContext) -> None:
        from edge_agent.camera.privacy import PrivacyGuard
        from edge_agent.inference.workers import close_plugins

        self.privacy = PrivacyGuard(
            lambda: ctx.config.privacy.policy,
            now=ctx.clock.now,
            path=ctx.config.data_dir / "privacy.json",
        )

        if self.evidence is None:
            from edge_agent.evidence import EvidenceStore

            limits = ctx.config.evidence
            self.evidence = EvidenceStore(
                ctx.config.data_dir / "evidence",
                max_bytes=int(limits.max_mb * 1024 * 1024),
                max_files=limits.max_files,
            )
        for feed in self.feeds:
            self._add_worker(ctx, feed)
        self._obey_power(ctx)
        for worker in self.workers.values():
            worker.start()
        try:
            while True:
                await ctx.clock.sleep(self.poll_s)
                self._adopt_private_sources(ctx)
                self._obey_power(ctx)
        finally:
            for worker in self.workers.values():
                worker.stop()
            workers = list(self.workers.values())
            await asyncio.to_thread(lambda: [w.join(5.0) for w in workers])
            close_plugins(*(p for w in workers for p in (w.analysis.detector, w.analysis.reader)))
            for worker in workers:
                for plate_pass in worker.final_passes:
                    self._write_pass(ctx, plate_pass)
                worker.final_passes.clear()

    def _add_worker(self, ctx: NodeContext, feed: CameraFeed) -> CameraWorker:
        """Build one camera's analysis and worker (not started)."""
        from edge_agent.camera.analysis import CameraAnalysis
        from edge_agent.inference.workers import plugins_for

        settings = feed.settings
        # Built here (threads) or in a child process (`inference = "processes"`).
        detector, reader = plugins_for(
            inference=settings.inference,
            detector_name=settings.detector,
            reader_name=settings.reader,
            detector=feed.detector,
            reader=feed.reader,
            timeout_s=settings.inference_timeout_s,
            name=feed.camera_id,
        )
        analysis = CameraAnalysis(
            camera_id=feed.camera_id,
            settings=settings,
            detector=detector,
            reader=reader,
            evidence=self.evidence,
            hit_check=self._hit_check(ctx),
        )
        self.workers[feed.camera_id] = CameraWorker(
            feed, analysis=analysis, on_pass=self._hand_over(ctx), on_fault=self._fault(ctx),
            privacy=self.privacy,
            faces=self._face_work(feed.camera_id),
            on_face_hit=self._face_hand_over(ctx, feed.camera_id),
        )  # fmt: skip
        return self.workers[feed.camera_id]

    # ------------------------------------------ third-party cameras (issue 15)

    def _adopt_private_sources(self, ctx: NodeContext) -> None:
        """Start a camera for each private camera whose terms name a source this node opens.

        A hotel's or plaza's camera registered to this node on the server
        arrives in the privacy policy (``set_config privacy.policy``) with its
        RTSP/HTTP URL or device; it gets the same worker as a configured
        camera — masks, terms, standards check, evidence retention — from the
        next poll. Its URL is never logged or reported (`redact`).
        """
        policy = self.privacy.current() if self.privacy is not None else None
        if policy is None:
            return
        for camera_id, camera in policy.cameras.items():
            source = camera.private.source if camera.private is not None else None
            if source is None:
                continue
            if camera_id in self.workers:
                if self._sources.get(camera_id, source) != source:
                    logger.info("camera %s: third-party source changed; reconnecting", camera_id)
                    self._sources[camera_id] = source
                    feed = self._private_feed(ctx, camera_id, source)
                    self.workers[camera_id].reopen(feed.open)
                continue
            if len(self.workers) >= MAX_TELEMETRY_CAMERAS:
                logger.error("camera %s: no room for another camera; not started", camera_id)
                continue
            feed = self._private_feed(ctx, camera_id, source)
            self._sources[camera_id] = source
            self.feeds.append(feed)
            worker = self._add_worker(ctx, feed)
            logger.info("camera %s: third-party source added", camera_id)
            ctx.counters["private_sources_added"] += 1
            worker.start()

    def _private_feed(self, ctx: NodeContext, camera_id: str, source: str) -> CameraFeed:
        """The feed for a third-party source (the node's default analytics settings)."""

        def standards() -> Standards | None:  # an ONVIF camera's profile is chosen by them
            return self.privacy.standards(camera_id) if self.privacy is not None else None

        return CameraFeed(
            camera_id=camera_id,
            open=_private_opener(camera_id, source, ctx.clock, standards=standards),
            settings=ctx.config.camera_analytics(camera_id),
        )

    def _hand_over(self, ctx: NodeContext) -> Callable[[PlatePass], None]:
        """From a worker thread: write the pass in the loop (unbounded: never dropped)."""

        def hand_over(plate_pass: PlatePass) -> None:
            ctx.call_soon_threadsafe(lambda: self._write_pass(ctx, plate_pass))

        return hand_over

    def _face_allowed(self, camera_id: str) -> bool:
        policy = self.faces
        if self.privacy is not None and not self.privacy.allows(camera_id, "faces"):
            return False  # a private camera whose agreement does not allow faces (issue 15)
        return bool(
            policy and policy.allowed and (not policy.cameras or camera_id in policy.cameras)
        )

    def _face_work(self, camera_id: str) -> FaceWork | None:
        """Face work for a camera the site's policy allows faces on (None: never on this one)."""
        if not self._face_allowed(camera_id) or self.watchlists is None:
            return None
        from edge_agent.faces.work import FaceWork, default_models

        return FaceWork(camera_id, models=self.face_models or default_models)

    def _face_hand_over(self, ctx: NodeContext, camera_id: str) -> Callable[[StagedHit, Any], None]:
        """From a worker thread: keep the hit's evidence here (JPEG work off the loop),
        then write the face hit in the loop (unbounded: never dropped)."""

        def hand_over(staged: StagedHit, image: Any) -> None:
            kept = self._keep_face_evidence(staged, image, camera_id)
            ctx.call_soon_threadsafe(lambda: self._write_face_hit(ctx, staged, camera_id, kept))

        return hand_over

    def _hit_check(self, ctx: NodeContext) -> Callable[[str], bool] | None:
        """For the analysis thread: is this voted plate listed (its pass a hit)?"""
        watchlists = self.watchlists
        if watchlists is None:
            return None
        return lambda plate: bool(watchlists.match_plate(plate, now=ctx.clock.now()))

    def _fault(self, ctx: NodeContext) -> FaultReport:
        def report(code: str, active: bool, detail: str) -> None:
            ctx.call_soon_threadsafe(lambda: self._write_fault(ctx, code, active, detail))

        return report

    # -------------------------------------------- snapshots (edge_agent.snapshot)

    def snapshot_cameras(self) -> list[str]:
        """The camera ids a ``snapshot`` command may name."""
        return [feed.camera_id for feed in self.feeds]

    def latest_still(self, camera_id: str) -> Still | str:
        """The camera's newest frame and its age, or why there is none."""
        worker = self.workers.get(camera_id)
        if worker is None:
            return "not_started"
        if not worker.cameras_on:
            return "off"
        frame, at = worker.latest, worker.last_frame_at
        if frame is None or at is None:
            return "no_frame"
        return Still(image=frame.image, age_s=max(0.0, time.monotonic() - at))

    def evidence_store(self) -> EvidenceStore | None:
        """The store crops and snapshots go to (set when the pipeline starts)."""
        return self.evidence

    # ------------------------------------------------------------------ power

    def _obey_power(self, ctx: NodeContext) -> None:
        step = ctx.state.power_step
        steps = ctx.config.power.steps
        policy = steps[step - 1] if 0 < step <= len(steps) else None
        rate = policy.analytics_rate if policy is not None else 1.0
        cameras_on = policy.cameras if policy is not None else True
        if policy is None:
            shed = ""
        elif not cameras_on:
            shed = f"cameras off ({policy.name})"
        elif rate < 1.0:
            shed = f"analytics at {rate:.0%} ({policy.name})"
        else:
            shed = ""
        if shed != self.shed:
            self.sheds += 1
            ctx.counters["camera_power_changes"] += 1
            logger.info("%s: camera pipeline %s", ctx.node_id, shed or "back to full rate")
            self.shed = shed
        for worker in self.workers.values():
            worker.set_power(analytics_rate=rate, cameras_on=cameras_on)
        self._plan_faces(policy is None or policy.face_recognition)

    def _plan_faces(self, power_allows_faces: bool) -> None:
        """Tell each camera's face work whether it may run (policy, list in scope, power)."""
        from edge_agent.faces.work import plan_for

        workers = [w for w in self.workers.values() if w.faces is not None]
        if not workers or self.watchlists is None:
            return
        templates = self.watchlists.templates()
        for worker in workers:
            assert worker.faces is not None
            worker.faces.set_plan(
                plan_for(
                    site_allows_faces=self._face_allowed(worker.camera_id),
                    templates=templates,
                    generation=self.watchlists.generation,
                    power_allows_faces=power_allows_faces,
                )
            )

    # ----------------------------------------------------------------- events

    def _write_pass(self, ctx: NodeContext, plate_pass: PlatePass) -> None:
        node_id, clock = ctx.node_id, ctx.clock

        def build(event_id: str, seq: int) -> EventBase:
            return PlateEvent(
                node_id=node_id,
                ts=clock.now(),
                event_id=event_id,
                seq=seq,
                camera_id=plate_pass.camera_id,
                track_id=plate_pass.track_id,
                plate=plate_pass.plate,
                country=plate_pass.country,
                confidence=plate_pass.confidence,
                frames=min(10_000, plate_pass.frames),
                snapshot_sha256=plate_pass.snapshot_sha256,
                **_plate_details(plate_pass),
            )

        ctx.counters["plate_events"] += 1
        stored = ctx.write_event(build)
        hits = 0
        if self.watchlists is not None and stored is not None:
            hits = write_hits(ctx, self.watchlists, PlateEvent.model_validate_json(stored.payload),
                              stored.event_id, frame_sha256=plate_pass.frame_sha256)  # fmt: skip
        self._settle_plate_evidence(ctx, plate_pass, hits)

    # ------------------------------------------------------ a hit's evidence

    def _settle_plate_evidence(self, ctx: NodeContext, plate_pass: PlatePass, hits: int) -> None:
        """Reconcile what the analysis thread pinned with the hits the loop wrote.

        The analysis asked the hotlist when the pass ended; a list that changed
        in between (rare) is settled here: a hit whose crop was kept unpinned
        has it pinned now, a pinned pass that is no hit any more is unpinned.
        """
        fault = plate_pass.evidence_fault
        store = self.evidence
        if hits and not plate_pass.hit_evidence and store is not None and plate_pass.crop_jpeg:
            from edge_agent.evidence import EvidenceError, EvidenceStoreFull

            try:
                store.put(plate_pass.crop_jpeg, pin=True)
            except EvidenceError as exc:
                code = "evidence_store_full" if isinstance(exc, EvidenceStoreFull) else (
                    "evidence_not_kept")  # fmt: skip
                fault = (code, f"{plate_pass.camera_id}: a plate hit's crop not kept: {exc}")
        elif not hits and plate_pass.hit_evidence and store is not None:
            for digest in (plate_pass.snapshot_sha256, plate_pass.frame_sha256):
                if digest is not None:
                    store.unpin(digest)
            fault = None  # no hit: nothing of a hit's was lost
        if hits:
            self._hit_evidence_outcome(ctx, fault)

    def _keep_face_evidence(self, staged: StagedHit, image: Any, camera_id: str) -> _Kept:
        """A face hit's best crop and its frame, stored pinned (a worker thread)."""
        from edge_agent.camera.analysis import encode_frame
        from edge_agent.evidence import EvidenceError, EvidenceStoreFull

        store = self.evidence
        if store is None:
            return _Kept()
        import cv2

        # The frame the best crop came from when the face stage keeps it; else the
        # frame whose vote completed the hit (the same track, seen in it).
        frame = getattr(staged, "frame", None)
        frame = image if frame is None else frame
        kept = _Kept()
        for what in ("crop", "frame"):
            try:
                if what == "crop":
                    ok, encoded = cv2.imencode(".jpg", staged.crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    data = encoded.tobytes() if ok else None
                else:
                    data = encode_frame(frame) if frame is not None else None
                if data is None:
                    continue
                digest = store.put(data, pin=True)
            except EvidenceError as exc:
                code = "evidence_store_full" if isinstance(exc, EvidenceStoreFull) else (
                    "evidence_not_kept")  # fmt: skip
                logger.error("camera %s: a face hit's %s not kept: %s", camera_id, what, exc)
                kept.fault = kept.fault or (
                    code,
                    f"{camera_id}: a face hit's {what} not kept: {exc}",
                )
                continue
            except Exception as exc:
                logger.exception("camera %s: cannot keep a face hit's %s", camera_id, what)
                kept.fault = kept.fault or (
                    "evidence_not_kept",
                    f"{camera_id}: face hit {what}: {exc}",
                )
                continue
            if what == "crop":
                kept.crop = digest
            else:
                kept.frame = digest
        return kept

    def _write_face_hit(
        self, ctx: NodeContext, staged: StagedHit, camera_id: str, kept: _Kept | None = None
    ) -> None:
        """A face track's hit as a `watchlist_hit` event, its crop and frame already kept."""
        from edge_agent.watchlist import write_face_hit

        kept = kept or _Kept()
        write_face_hit(
            ctx, staged.hit, camera_id=camera_id, snapshot_sha256=kept.crop,
            frame_sha256=kept.frame,
        )  # fmt: skip
        self._hit_evidence_outcome(ctx, kept.fault)

    def _hit_evidence_outcome(self, ctx: NodeContext, fault: tuple[str, str] | None) -> None:
        """A hit's evidence not kept is a fault (the hit itself went); kept again: recovered."""
        if fault is not None:
            code, detail = fault
            ctx.counters["hit_evidence_refused"] += 1
            self._evidence_fault = code
            self._write_fault(ctx, code, True, detail)
        elif self._evidence_fault is not None:
            code, self._evidence_fault = self._evidence_fault, None
            self._write_fault(ctx, code, False, "a hit's evidence is kept again")

    def _evidence_pressure(self) -> str:
        """What the evidence store gave way or refused, for health ('' while nothing did)."""
        if self.evidence is None:
            return ""
        f = self.evidence.figures()
        if not (f["evicted"] or f["refused"] or f["evidence_refused"]):
            return ""
        return (
            f"evidence store: {f['evidence_refused']} hit evidence refused, {f['refused']} "
            f"frames refused, {f['evicted']} evicted, {f['pinned_files']} pinned "
            f"({f['pinned_bytes']} B)"
        )

    def _write_fault(self, ctx: NodeContext, code: str, active: bool, detail: str) -> None:
        node_id, clock = ctx.node_id, ctx.clock

        def build(event_id: str, seq: int) -> EventBase:
            return NodeFaultEvent(
                node_id=node_id,
                ts=clock.now(),
                event_id=event_id,
                seq=seq,
                component=self.name,
                code=code,
                active=active,
                detail=detail[:1000],
            )

        ctx.counters["camera_faults" if active else "camera_recoveries"] += 1
        ctx.write_event(build)


@dataclass
class _Kept:
    """A face hit's evidence as stored: crop and frame SHA-256, or what went wrong."""

    crop: str | None = None
    frame: str | None = None
    fault: tuple[str, str] | None = None  # (code, detail)


def _plate_details(plate_pass: PlatePass) -> dict[str, Any]:
    """The best read's box, province, layout and canonical key, as `PlateEvent` fields."""
    best = plate_pass.best
    box = best.box
    canonical = normalise_plate(best.canonical or plate_pass.plate)[:MAX_PLATE_KEY]
    return {
        "province": best.province[:32] if best.province else None,
        "layout": best.layout[:48] if best.layout else None,
        "box": (
            {"x": max(0, box.x), "y": max(0, box.y), "w": max(1, box.w), "h": max(1, box.h)}
            if box is not None
            else None
        ),
        "canonical": canonical or None,
    }


def cameras_in_turn(camera_ids: Sequence[str], *, start: int, limit: int) -> tuple[list[str], int]:
    """The cameras one telemetry report lists, and where the next report starts.

    A report holds at most `limit` cameras (`MAX_TELEMETRY_CAMERAS`); a node
    with more lists `limit` of them from `start` on, wrapping round, and the
    next report goes on from there, so every camera is in one of
    ceil(n / limit) consecutive reports (the rest of the time the server
    keeps its last figures) instead of the same ones always missing.
    """
    if len(camera_ids) <= limit:
        return list(camera_ids), 0
    start %= len(camera_ids)
    share = [camera_ids[(start + i) % len(camera_ids)] for i in range(limit)]
    return share, (start + limit) % len(camera_ids)


def _camera_health(camera_id: str, worker: CameraWorker, now: float) -> dict[str, Any]:
    """One `proto.messages.CameraHealth` entry from a worker's figures."""
    from edge_agent.camera.analysis import percentiles  # numpy: only once cameras run

    stats = worker.stats
    rate = worker.analytics_rate
    if not worker.cameras_on:
        shed = "stopped"
    elif rate < 1.0:
        shed = "slowed"
    else:
        shed = "none"
    return {
        "camera_id": camera_id,
        "frames_in": stats.frames_in,
        "frames_dropped": stats.frames_dropped,
        "motion_ratio": min(1.0, max(0.0, round(stats.motion_ratio, 4))),
        "detector_ms": percentiles(stats.detector_ms),
        "reader_ms": percentiles(stats.reader_ms),
        "plates_per_hour": stats.plates_per_hour(now),
        "shed": shed,
        "analytics_rate": min(1.0, max(0.0, rate)),
        "fault": worker.fault or _below_standard(worker),
    }


def _private_opener(
    camera_id: str, source: str, clock: Clock, *, standards: Callable[[], Standards | None]
) -> Callable[[], CameraSource]:
    """Open a third-party source with OpenCV; a failure names it without its credentials.

    An ``onvif://`` source is resolved to its stream on every open
    (`edge_agent.camera.onvif`, against the camera's minimums of the moment).
    """
    from edge_agent.camera.privacy import redact
    from hardware.camera import OpenCvCamera, OpenCvCameraConfig, load_camera

    if source[:8].lower() == "onvif://":
        from edge_agent.camera.onvif import open_camera

        return lambda: open_camera(camera_id, source, clock=clock, standards=standards())
    if source.startswith("/dev/video"):
        config = OpenCvCameraConfig(type="opencv", id=camera_id, device=int(source[10:]))
    else:
        config = OpenCvCameraConfig(type="opencv", id=camera_id, url=source)

    def open_source() -> CameraSource:
        try:
            camera = load_camera(config, clock=clock)
        except HardwareError as exc:
            message = str(exc).replace(source, redact(source))
            raise type(exc)(message) from None
        if isinstance(camera, OpenCvCamera):
            camera.source = redact(source)  # what its read errors name (it reads `_target`)
        return camera

    return open_source


def _below_standard(worker: CameraWorker) -> str | None:
    """A camera that failed its standards check is live view only: say so in telemetry."""
    verdict = worker.standards
    if verdict is None or verdict.passed:
        return None
    from edge_agent.camera.standards import FAULT_CODE

    return FAULT_CODE
