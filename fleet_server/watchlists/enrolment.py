"""Enrolment photos: kept by SHA-256, checked and turned into templates by the node's own code.

**Same model as the nodes, one code path.** The server may not import
`edge_agent` (the import contracts) and should not load a face model into
its own process, so it runs the node's template command as a subprocess
(`edge_agent.faces.template`: ``python -m edge_agent.faces.template -``,
the photo on stdin) and reads its one JSON line: the template, the
embedder's name, version and SHA-256, and the quality figures, or a
refusal with a stable reason. The command is configurable
(``NIGEHBAAN_FACE_TEMPLATE_COMMAND``, a JSON list), so a server host
without the face models can point it at a node image's interpreter.
docs/decisions.md records the choice.

**Photos are evidence-grade.** `PhotoStore` keeps each photo as a file
named by its SHA-256 (written to a temporary name, then renamed) and checks
the hash again on every read, so a photo changed on disk is refused rather
than shown; who reads it is recorded by the API (a stated purpose).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_server.watchlists.errors import WatchlistError

__all__ = [
    "MAX_PHOTO_BYTES",
    "PhotoRefused",
    "PhotoStore",
    "TemplateResult",
    "compute_template",
    "template_command",
]

logger = logging.getLogger(__name__)

MAX_PHOTO_BYTES = 20 * 1024 * 1024
TEMPLATE_TIMEOUT_S = 120.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PhotoRefused(WatchlistError):
    """An enrolment photo that cannot give a template; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str, *, quality: dict[str, Any] | None = None) -> None:
        super().__init__(f"photo refused ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.quality = quality or {}


@dataclass(frozen=True)
class TemplateResult:
    """What the node's template command said about one photo that passed."""

    template: str  # base64 of the little-endian float32 vector
    dim: int
    model: str
    model_sha256: str
    quality: dict[str, Any]


def template_command() -> list[str]:
    """The command that turns a photo on stdin into one JSON line (module docstring)."""
    configured = os.environ.get("NIGEHBAAN_FACE_TEMPLATE_COMMAND")
    if configured:
        value = json.loads(configured)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise WatchlistError("NIGEHBAAN_FACE_TEMPLATE_COMMAND must be a JSON list of strings")
        return list(value)
    return [sys.executable, "-m", "edge_agent.faces.template", "-"]


def compute_template(photo: bytes, *, command: list[str] | None = None) -> TemplateResult:
    """The photo's template from the node's own code; `PhotoRefused` with the reason if not."""
    if not photo or len(photo) > MAX_PHOTO_BYTES:
        raise PhotoRefused("not_an_image", f"a photo must be 1 byte to {MAX_PHOTO_BYTES} bytes")
    argv = command or template_command()
    try:
        done = subprocess.run(
            argv, input=photo, capture_output=True, timeout=TEMPLATE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WatchlistError(f"the face template command could not run: {exc}") from None
    lines = [ln for ln in done.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        tail = done.stderr.decode("utf-8", "replace")[-300:]
        raise WatchlistError(f"the face template command failed ({done.returncode}): {tail}")
    if not result.get("ok"):
        reason = str(result.get("reason") or "refused")
        if reason == "models_missing":
            raise WatchlistError(f"the face models are not available: {result.get('detail')}")
        detail = str(result.get("detail") or reason)
        raise PhotoRefused(reason, detail, quality=result.get("quality"))
    try:
        vector = base64.b64decode(str(result["template"]), validate=True)
        dim = int(result["dim"])
        model_sha256 = str(result["model_sha256"])
        model = f"{result['model']} {result.get('model_version', '')}".strip()[:200]
    except (KeyError, TypeError, ValueError) as exc:
        raise WatchlistError(f"the face template command answered badly: {exc}") from None
    if len(vector) != 4 * dim or not _SHA256.match(model_sha256):
        raise WatchlistError("the face template command answered a template of the wrong size")
    return TemplateResult(
        template=str(result["template"]),
        dim=dim,
        model=model,
        model_sha256=model_sha256,
        quality=dict(result.get("quality") or {}),
    )


class PhotoStore:
    """Enrolment photos as files named by their SHA-256, checked again on every read."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise WatchlistError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Keep `data` (once per content); its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.is_file():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        return digest

    def get(self, sha256: str) -> bytes:
        """The photo; `WatchlistError` when it is missing or no longer matches its hash."""
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except OSError:
            raise WatchlistError(f"photo {sha256} is not in the store") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            logger.error("enrolment photo %s no longer matches its SHA-256", sha256)
            raise WatchlistError(f"photo {sha256} was altered on disk; refused")
        return data
