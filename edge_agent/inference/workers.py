"""Inference in a worker process: a camera's detector and reader run in a child, not in the agent.

The camera pipeline runs inference on its own analysis threads, so the
asyncio loop never waits for a model. A thread still shares the
interpreter: a model that spends its time in Python (or a native library
that forgets to release the GIL) slows every other thread of the agent,
the panic path included. With ``[analytics.<id>] inference = "processes"``
the camera's detector and reader are built *in a child process* from their
plugin names, and the analysis thread only sends frames and boxes over a
pipe and waits for the answer (waiting on a pipe releases the GIL).

`InferenceProcess` is that child, started lazily and restarted when it
dies; `detector` / `reader` are proxies with the plugins' own
``detect(frame, regions)`` / ``read(frame, box)`` signatures, so
`edge_agent.camera.analysis` does not know which mode it runs in (the
reader proxy sends only the plate's neighbourhood, not the frame). Every
call has a time limit (`timeout_s`): a model that hangs is killed and
restarted, and the call raises `InferenceError`, which the analysis counts
as an error and skips the frame (the camera goes on). A plugin that cannot
be built in the child, or raises, is an `InferenceError` naming it.

The child is started with the ``spawn`` method: forking a process that runs
threads (the agent's capture and analysis threads, paho's network thread)
can copy a held lock into the child.

`plugins_for` is what the pipeline calls: threads (plugins built here, as
before) or processes (proxies of a new `InferenceProcess`).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.inference import InferenceError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from edge_agent.anpr.types import Box, PlateDetector, PlateRead, PlateReader

__all__ = ["InferenceProcess", "ProcessDetector", "ProcessReader", "close_plugins", "plugins_for"]

logger = logging.getLogger(__name__)

Role = Literal["detector", "reader"]

# The child builds its plugins (rapidocr loads its models) before the first answer.
_START_TIMEOUT_S = 120.0


def _serve(conn: Connection, detector: str | None, reader: str | None) -> None:
    """The child: build the plugins by name, then answer calls until the pipe closes."""
    from edge_agent.camera.plugins import load_detector, load_reader

    plugins: dict[str, Any] = {}
    try:
        if detector:
            plugins["detector"] = load_detector(detector)
        if reader:
            plugins["reader"] = load_reader(reader)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            role, method, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            plugin = plugins[role]
            result = getattr(plugin, method)(*args)
        except Exception as exc:
            conn.send(("error", f"{role} {method}() raised {type(exc).__name__}: {exc}"))
            continue
        conn.send(("ok", result))


class InferenceProcess:
    """One child process holding a camera's detector and/or reader; see the module docstring."""

    def __init__(
        self,
        *,
        detector: str | None = None,
        reader: str | None = None,
        timeout_s: float = 30.0,
        name: str = "camera",
    ) -> None:
        if not detector and not reader:
            raise ValueError("an inference process needs a detector or a reader plugin name")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.detector_name = detector
        self.reader_name = reader
        self.timeout_s = timeout_s
        self.name = name
        self.starts = 0
        self.pid: int | None = None
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def detector(self) -> ProcessDetector | None:
        """A proxy for the child's detector (None when no detector was named)."""
        return ProcessDetector(self) if self.detector_name else None

    @property
    def reader(self) -> ProcessReader | None:
        """A proxy for the child's reader (None when no reader was named)."""
        return ProcessReader(self) if self.reader_name else None

    def start(self) -> None:
        """Start the child now (else the first call does); returns once it is running."""
        with self._lock:
            self._ensure_started()

    def call(self, role: Role, method: str, *args: Any) -> Any:
        """Run `role`.`method`(*args) in the child and return its result."""
        with self._lock:
            if self._closed:
                raise InferenceError(f"inference process {self.name} is closed")
            conn = self._ensure_started()
            try:
                conn.send((role, method, args))
                if not conn.poll(self.timeout_s):
                    self._kill()
                    raise InferenceError(
                        f"inference process {self.name}: {role} {method}() took longer than "
                        f"{self.timeout_s:g} s; the process was restarted"
                    )
                status, value = conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                self._kill()
                raise InferenceError(
                    f"inference process {self.name} died during {role} {method}() ({exc!r}); "
                    "it restarts on the next call"
                ) from exc
        if status == "error":
            raise InferenceError(f"inference process {self.name}: {value}")
        return value

    def close(self) -> None:
        """Stop the child for good (a call in flight raises `InferenceError` at once)."""
        self._closed = True
        process = self._process
        if process is not None and process.is_alive():
            # Without the lock: a call waiting on the child sees the pipe close and returns.
            process.terminate()
        with self._lock:
            self._kill()

    def alive(self) -> bool:
        """Whether the child is running now."""
        process = self._process
        return process is not None and process.is_alive()

    def _ensure_started(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self._kill()
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve,
            args=(child, self.detector_name, self.reader_name),
            name=f"nigehbaan-inference-{self.name}",
            daemon=True,  # never outlives the agent
        )
        process.start()
        child.close()
        self.starts += 1
        started = time.monotonic()
        if not parent.poll(_START_TIMEOUT_S):
            process.kill()
            parent.close()
            raise InferenceError(
                f"inference process {self.name} did not start within {_START_TIMEOUT_S:g} s"
            )
        try:
            status, value = parent.recv()
        except (EOFError, OSError) as exc:
            process.join(5.0)
            parent.close()
            raise InferenceError(
                f"inference process {self.name} ended while starting (exit code {process.exitcode})"
            ) from exc
        if status != "ready":
            process.join(5.0)
            parent.close()
            raise InferenceError(
                f"inference process {self.name} cannot build its plugins "
                f"(detector {self.detector_name!r}, reader {self.reader_name!r}): {value}"
            )
        self._process, self._conn, self.pid = process, parent, int(value)
        logger.info(
            "inference process %s started (pid %s, %.1f s)",
            self.name,
            value,
            time.monotonic() - started,
        )
        return parent

    def _kill(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None and process.is_alive():
            process.kill()
            process.join(5.0)


class ProcessDetector:
    """`PlateDetector` whose calls run in an `InferenceProcess`."""

    def __init__(self, process: InferenceProcess) -> None:
        self.process = process
        self.name = f"{process.detector_name} (process)"

    def detect(self, frame: Any, regions: list[Box] | None = None) -> list[Box]:
        return list(self.process.call("detector", "detect", frame, regions))

    def close(self) -> None:
        self.process.close()


class ProcessReader:
    """`PlateReader` whose calls run in an `InferenceProcess`."""

    def __init__(self, process: InferenceProcess) -> None:
        self.process = process
        self.name = f"{process.reader_name} (process)"

    def read(self, frame: Any, box: Box) -> PlateRead | None:
        # Only the plate's neighbourhood crosses the pipe (a 1280x720 frame is 2.7 MB,
        # the neighbourhood a few tens of kB): the box grown by its height on every
        # side covers any reader's margin. The read's box comes back in frame pixels.
        part, x0, y0 = _around(frame, box)
        local = dataclasses.replace(box, x=box.x - x0, y=box.y - y0)
        result: PlateRead | None = self.process.call("reader", "read", part, local)
        if result is None or result.box is None:
            return result
        found = result.box
        return dataclasses.replace(
            result, box=dataclasses.replace(found, x=found.x + x0, y=found.y + y0)
        )

    def close(self) -> None:
        self.process.close()


def _around(frame: Any, box: Box) -> tuple[Any, int, int]:
    """The part of `frame` around `box` (grown by the box's height), and its top-left corner."""
    shape = getattr(frame, "shape", None)
    if shape is None or len(shape) < 2:
        return frame, 0, 0
    height, width = int(shape[0]), int(shape[1])
    pad = max(1, box.h)
    x0, y0 = max(0, box.x - pad), max(0, box.y - pad)
    x1, y1 = min(width, box.x + box.w + pad), min(height, box.y + box.h + pad)
    if x1 <= x0 or y1 <= y0:
        return frame, 0, 0
    return frame[y0:y1, x0:x1], x0, y0


def plugins_for(
    *,
    inference: str,
    detector_name: str | None,
    reader_name: str | None,
    detector: PlateDetector | None = None,
    reader: PlateReader | None = None,
    timeout_s: float = 30.0,
    name: str = "camera",
) -> tuple[PlateDetector | None, PlateReader | None]:
    """A camera's detector and reader: built here (threads) or in a child (processes).

    Plugins handed in as objects (`detector`, `reader`: tests, embedders)
    run on the analysis thread either way: only a plugin *name* can be
    built in another process.
    """
    from edge_agent.camera.plugins import load_detector, load_reader

    if inference not in ("threads", "processes"):
        raise InferenceError(f"inference must be threads or processes, not {inference!r}")
    if inference == "processes":
        remote_detector = detector_name if detector is None else None
        remote_reader = reader_name if reader is None else None
        if remote_detector or remote_reader:
            process = InferenceProcess(
                detector=remote_detector, reader=remote_reader, timeout_s=timeout_s, name=name
            )
            detector = detector if detector is not None else process.detector
            reader = reader if reader is not None else process.reader
        return detector, reader
    if detector is None and detector_name:
        detector = load_detector(detector_name)
    if reader is None and reader_name:
        reader = load_reader(reader_name)
    return detector, reader


def close_plugins(*plugins: object) -> None:
    """Stop the processes behind any process proxies among `plugins` (others are left alone)."""
    for plugin in plugins:
        if isinstance(plugin, (ProcessDetector, ProcessReader)):
            plugin.close()
