"""Node-signed evidence upload: sign what was captured, send it over HTTPS, keep it until held.

Evidence files sit in the node's local store (`edge_agent.evidence`). This
component takes them to the fleet server (docs/evidence.md):

- **What goes.** Every event the node writes is looked at (an outbox
  listener, in the loop thread; a cheap byte check first) for
  ``snapshot_sha256`` / ``snapshot_sha256s`` and a hit's ``frame_sha256``
  (the frame its crop came from): each such file is indexed with
  its capture metadata, and queued for upload at once when the event's type
  is in ``auto_upload`` (watchlist hits and panic snapshots by default).
  Plate-read crops stay indexed on the node until the server asks for one
  (``upload`` in `/evidence/node/instructions`, polled over HTTPS). Code
  without an event says what a stored file is with
  `EvidenceStore.describe(sha, data_class=…, event_type="snapshot", alert_id=…)`
  (panic snapshots) or queues it itself with `EvidenceUploader.enqueue`.
- **Signed at capture.** A queued file gets an `proto.evidence.EvidenceClaim`
  (SHA-256, size, node, camera, time, event, data class) signed with the
  node's own private key — the one its client certificate is for — and the
  signed claim is written to a durable SQLite queue beside the outbox, so a
  restart resumes it. The file is pinned in the store until the server
  holds it (a hit's crop and frame and a panic snapshot were pinned already
  when the camera wrote them, uploader or not), so eviction never takes a
  hit's evidence.
- **Sent like the outbox.** A worker thread (never the loop, never the panic
  path) sends the claim (`POST /evidence/uploads`, mTLS with the node's
  client certificate), learns how many bytes the server already holds, and
  sends the rest in bounded chunks (`PUT /evidence/uploads/<sha256>?offset=`):
  resumable and idempotent by SHA-256. A transport failure retries with
  doubling backoff; a refusal is kept with its reason (a hash mismatch is
  retried from zero, a file that is gone is dropped and counted; a refusal the
  same claim would always get — too large, another node's, a signature that
  does not hold — leaves the queue, logged and counted; the node's copy of a
  hit's or panic's evidence stays pinned then, since it is the only one).
- **Retention and holds.** The node deletes its own copies by data class
  (``retention_*_days``) and whatever the server says it expired, keeps what
  the server says is held (legal hold), and reports each deletion back
  (`POST /evidence/node/deleted`), where it is audited.

Errors::

    AgentError
     └── UploadError          transport failure (retried)
          └── UploadRefused   the server refused (`reason`, `status`)
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.component import ComponentBase, Health, NodeContext
from edge_agent.errors import AgentError
from proto.evidence import EvidenceClaim, SignedClaim, signed_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from edge_agent.config import AgentConfig
    from edge_agent.evidence import EvidenceStore
    from edge_agent.outbox import StoredEvent

__all__ = [
    "EvidenceUploadConfig",
    "EvidenceUploader",
    "HttpsEvidenceClient",
    "UploadClient",
    "UploadError",
    "UploadQueue",
    "UploadRefused",
    "data_class_for",
    "evidence_store_for",
    "sign_claim",
]

logger = logging.getLogger(__name__)


class EvidenceUploadConfig(BaseModel):
    """``[evidence.upload]``: where evidence goes, what goes by itself, how long copies stay."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        pattern=r"^https://",
        max_length=255,
        description="https://host[:port]/api/v1/evidence of the fleet server; None: no upload",
    )
    auto_upload: list[str] = Field(
        default_factory=lambda: ["watchlist_hit", "panic_snapshot", "snapshot"],
        max_length=16,
        description="event types whose evidence is uploaded at once (others on request)",
    )
    poll_s: float = Field(
        default=30.0, ge=0.05, le=3600.0, description="how often to upload and ask for work"
    )
    chunk_kb: int = Field(default=256, ge=1, le=4096, description="bytes per upload request (KB)")
    retry_min_s: float = Field(default=5.0, gt=0.0, le=3600.0, description="first retry delay")
    retry_max_s: float = Field(
        default=600.0, gt=0.0, le=86_400.0, description="longest retry delay (doubling)"
    )
    max_pending: int = Field(
        default=10_000, ge=1, le=1_000_000, description="queued uploads at most (then refused)"
    )
    timeout_s: float = Field(default=30.0, gt=0.0, le=600.0, description="per HTTP request")
    retention_plate_crop_days: float | None = Field(
        default=30.0, gt=0.0, le=36_500.0, description="plate crops kept on the node; None: kept"
    )
    retention_face_crop_days: float | None = Field(
        default=30.0, gt=0.0, le=36_500.0, description="face crops kept on the node; None: kept"
    )
    retention_panic_snapshot_days: float | None = Field(
        default=90.0, gt=0.0, le=36_500.0, description="panic snapshots kept; None: kept"
    )

    def retention_days(self, data_class: str) -> float | None:
        """Days the node keeps a file of `data_class` (None: until the store needs the room)."""
        value: float | None = getattr(self, f"retention_{data_class}_days", None)
        return value


# Refusals that the same signed claim would get again: the file leaves the queue (kept on the
# node under its class's retention, no longer pinned) and the refusal is counted and logged.
PERMANENT_REFUSALS = frozenset({"too_large", "node_mismatch", "signature", "claim_invalid"})


class UploadError(AgentError):
    """The upload could not happen now (network, server down): try again later."""


class UploadRefused(UploadError):
    """The server answered and refused; `reason` is its stable code."""

    def __init__(self, reason: str, message: str, *, status: int, received: int | None = None):
        super().__init__(f"evidence refused ({status} {reason}): {message}")
        self.reason = reason
        self.status = status
        self.received = received


def data_class_for(event_type: str | None, payload: Mapping[str, Any]) -> str:
    """The retention class of a file by the event it came with."""
    if event_type and "panic" in event_type:
        return "panic_snapshot"
    if event_type == "face" or payload.get("subject") == "person":
        return "face_crop"
    return "plate_crop"


def sign_claim(key: ec.EllipticCurvePrivateKey, claim: EvidenceClaim) -> SignedClaim:
    """The claim signed with the node's key (ECDSA P-256 / SHA-256 over `signed_payload`)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec as _ec

    signature = key.sign(signed_payload(claim), _ec.ECDSA(hashes.SHA256()))
    return SignedClaim(claim=claim, signature=base64.b64encode(signature).decode("ascii"))


# --------------------------------------------------------------------------- the queue


@dataclass(frozen=True)
class Pending:
    """One queued upload."""

    sha256: str
    signed: SignedClaim
    attempts: int
    next_at: float
    last_error: str


class UploadQueue:
    """The durable queue of signed claims to upload, and the index of captured files.

    SQLite (WAL) beside the outbox; a lock makes it safe from the loop thread
    (enqueue) and the upload thread. Bounded: past `max_pending` an enqueue
    is refused and counted, never silently dropped.
    """

    def __init__(self, path: Path, *, max_pending: int = 10_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (sha256 TEXT PRIMARY KEY, claim TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,"
            " last_error TEXT NOT NULL DEFAULT '')"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS known (sha256 TEXT PRIMARY KEY, data_class TEXT NOT NULL,"
            " camera_id TEXT, event_id TEXT, event_type TEXT, captured_at TEXT NOT NULL,"
            " uploaded INTEGER NOT NULL DEFAULT 0, alert_id TEXT)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS held (sha256 TEXT PRIMARY KEY)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def index(
        self,
        sha256: str,
        *,
        data_class: str,
        camera_id: str | None,
        event_id: str | None,
        event_type: str | None,
        captured_at: datetime,
        alert_id: str | None = None,
        replace: bool = False,
    ) -> None:
        """Remember what a stored file is (for on-request uploads and retention).

        The first event to name a file wins, unless `replace`: a watchlist hit
        names the crop its plate event named a moment before, and the hit (the
        event an alert hangs on) is what the file is evidence of.
        """
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            self._db.execute(
                f"{verb} INTO known (sha256, data_class, camera_id, event_id, event_type,"
                " captured_at, alert_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    data_class,
                    camera_id,
                    event_id,
                    event_type,
                    captured_at.isoformat(),
                    alert_id,
                ),
            )

    def known(self, sha256: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data_class, camera_id, event_id, event_type, captured_at, alert_id"
                " FROM known WHERE sha256 = ?",
                (sha256,),
            ).fetchone()
        if row is None:
            return None
        keys = ("data_class", "camera_id", "event_id", "event_type", "captured_at", "alert_id")
        return dict(zip(keys, row, strict=True))

    def add(self, signed: SignedClaim) -> bool:
        """Queue a signed claim; False when the queue is full (already queued: True)."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM pending").fetchone()
            exists = self._db.execute(
                "SELECT 1 FROM pending WHERE sha256 = ?", (signed.claim.sha256,)
            ).fetchone()
            if exists:
                return True
            if count >= self.max_pending:
                return False
            self._db.execute(
                "INSERT INTO pending (sha256, claim) VALUES (?, ?)",
                (signed.claim.sha256, signed.model_dump_json()),
            )
        return True

    def due(self, now: float, *, limit: int = 50) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT sha256, claim, attempts, next_at, last_error FROM pending"
                " WHERE next_at <= ? ORDER BY next_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [
            Pending(sha, SignedClaim.model_validate_json(claim), attempts, next_at, error)
            for sha, claim, attempts, next_at, error in rows
        ]

    def pending(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT sha256 FROM pending").fetchall()]

    def done(self, sha256: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE sha256 = ?", (sha256,))
            self._db.execute("UPDATE known SET uploaded = 1 WHERE sha256 = ?", (sha256,))

    def forget_upload(self, sha256: str) -> None:
        """Stop trying to upload this file (a permanent refusal); its index entry stays."""
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE sha256 = ?", (sha256,))

    def retry(self, sha256: str, *, at: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE pending SET attempts = attempts + 1, next_at = ?, last_error = ?"
                " WHERE sha256 = ?",
                (at, error[:500], sha256),
            )

    def set_held(self, shas: Sequence[str]) -> None:
        """Replace the set of files the server holds (legal hold)."""
        with self._lock:
            self._db.execute("DELETE FROM held")
            self._db.executemany("INSERT INTO held (sha256) VALUES (?)", [(s,) for s in shas])

    def held(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT sha256 FROM held").fetchall()}

    def forget(self, sha256: str) -> None:
        """The file is gone: drop it from the index and the queue."""
        with self._lock:
            self._db.execute("DELETE FROM known WHERE sha256 = ?", (sha256,))
            self._db.execute("DELETE FROM pending WHERE sha256 = ?", (sha256,))
            self._db.execute("DELETE FROM held WHERE sha256 = ?", (sha256,))

    def expired(self, cutoffs: Mapping[str, datetime]) -> list[str]:
        """Indexed files older than their class's cutoff."""
        out: list[str] = []
        with self._lock:
            for data_class, cutoff in cutoffs.items():
                rows = self._db.execute(
                    "SELECT sha256 FROM known WHERE data_class = ? AND captured_at < ?",
                    (data_class, cutoff.isoformat()),
                ).fetchall()
                out += [r[0] for r in rows]
        return out


# --------------------------------------------------------------------------- transport


class UploadClient(Protocol):
    """The server's evidence API as the node uses it (HTTPS with mTLS in the field)."""

    def begin(self, signed: SignedClaim) -> tuple[int, str]:
        """Send the signed claim; (bytes the server holds, state)."""
        ...

    def put(self, sha256: str, offset: int, data: bytes) -> int:
        """Send bytes at `offset`; the bytes the server holds after."""
        ...

    def instructions(self) -> dict[str, list[str]]:
        """``upload`` (asked for), ``hold`` (legal hold), ``delete`` (expired on the server)."""
        ...

    def report_deleted(self, sha256s: Sequence[str], *, reason: str) -> None: ...


class HttpsEvidenceClient:
    """`UploadClient` over HTTPS with the node's client certificate (urllib3, as OTA uses)."""

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
        timeout: float = 30.0,
    ) -> None:
        import urllib3

        self.base = base_url.rstrip("/")
        self._pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file),
            cert_file=str(cert_file),
            key_file=str(key_file),
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
        )

    def _call(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = ""
    ) -> Any:
        import urllib3

        headers = {"Content-Type": content_type} if content_type else {}
        try:
            response = self._pool.request(method, self.base + path, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise UploadError(f"cannot reach {self.base}: {exc}") from exc
        if response.status >= 500:
            raise UploadError(f"{method} {path}: HTTP {response.status}")
        data: Any = None
        if response.data:
            try:
                data = json.loads(response.data)
            except ValueError:
                data = None
        if response.status >= 400:
            detail = data.get("detail") if isinstance(data, dict) else None
            reason = detail.get("reason", "refused") if isinstance(detail, dict) else "refused"
            message = detail.get("message", "") if isinstance(detail, dict) else str(detail)
            received = response.headers.get("X-Evidence-Received")
            raise UploadRefused(
                str(reason),
                str(message),
                status=response.status,
                received=int(received) if received and received.isdigit() else None,
            )
        return data

    def begin(self, signed: SignedClaim) -> tuple[int, str]:
        data = self._call(
            "POST",
            "/uploads",
            body=signed.model_dump_json().encode(),
            content_type="application/json",
        )
        return int(data["received"]), str(data["state"])

    def put(self, sha256: str, offset: int, data: bytes) -> int:
        out = self._call(
            "PUT",
            f"/uploads/{sha256}?offset={offset}",
            body=data,
            content_type="application/octet-stream",
        )
        return int(out["received"])

    def instructions(self) -> dict[str, list[str]]:
        data = self._call("GET", "/node/instructions")
        return {k: [str(s) for s in data.get(k, [])] for k in ("upload", "hold", "delete")}

    def report_deleted(self, sha256s: Sequence[str], *, reason: str) -> None:
        body = json.dumps({"sha256s": list(sha256s), "reason": reason}).encode()
        self._call("POST", "/node/deleted", body=body, content_type="application/json")


# --------------------------------------------------------------------------- the component


class EvidenceUploader(ComponentBase):
    """The ``evidence_upload`` component; see the module docstring."""

    name = "evidence_upload"

    def __init__(
        self,
        config: EvidenceUploadConfig,
        *,
        node_id: str,
        store: EvidenceStore,
        queue: UploadQueue,
        key: Callable[[], ec.EllipticCurvePrivateKey],
        client: Callable[[], UploadClient],
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.store = store
        self.queue = queue
        self._key_loader = key
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._client_factory = client
        self._client: UploadClient | None = None
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._work_lock = threading.Lock()
        self._close_when_done = False
        self.uploaded = 0
        self.refused = 0
        self.queue_full = 0
        self.deleted = 0
        self.last_error = ""
        store.add_describe_listener(self._on_describe)  # panic snapshots say what they are
        for sha in queue.pending():  # a restart keeps the queued files out of eviction
            store.pin(sha)
        for sha in queue.held():
            store.pin(sha)

    @classmethod
    def from_config(cls, config: AgentConfig, *, store: EvidenceStore) -> EvidenceUploader:
        """Built by `build_node` when ``[evidence.upload] url`` is set; mTLS files of ``[mqtt]``."""
        upload = config.evidence.upload
        mqtt = config.mqtt
        if upload.url is None or mqtt.cert_file is None or mqtt.key_file is None:
            raise AgentError("[evidence.upload] needs url and [mqtt] cert_file/key_file/ca_file")
        if mqtt.ca_file is None:
            raise AgentError("[evidence.upload] needs [mqtt] ca_file (the fleet CA)")
        url, ca, cert, key_file = upload.url, mqtt.ca_file, mqtt.cert_file, mqtt.key_file

        def load_key() -> ec.EllipticCurvePrivateKey:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec as _ec

            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, _ec.EllipticCurvePrivateKey):
                raise AgentError(f"{key_file} is not an EC key")
            return key

        return cls(
            upload,
            node_id=config.node_id,
            store=store,
            queue=UploadQueue(
                config.data_dir / "evidence-upload.sqlite3", max_pending=upload.max_pending
            ),
            key=load_key,
            client=lambda: HttpsEvidenceClient(
                url, ca_file=ca, cert_file=cert, key_file=key_file, timeout=upload.timeout_s
            ),
        )

    # -- the component protocol ------------------------------------------------------------

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        store = self.store.figures()
        detail = (
            f"uploaded {self.uploaded}, queued {len(self.queue.pending())}, refused "
            f"{self.refused}, queue full {self.queue_full}; store pinned "
            f"{store['pinned_files']} ({store['pinned_bytes']} B), evicted {store['evicted']}, "
            f"refused {store['refused']}, evidence refused {store['evidence_refused']}"
        )
        if self.last_error:
            detail += f"; last: {self.last_error}"
        return Health(True, detail[:200])

    async def run(self, ctx: NodeContext) -> None:
        try:
            while True:
                await asyncio.to_thread(self.work_once)
                await ctx.clock.sleep(self.config.poll_s)
        finally:
            # A round still running in its thread closes the queue when it ends; never
            # block the loop here waiting for an HTTP timeout.
            if self._work_lock.acquire(blocking=False):
                try:
                    self.queue.close()
                finally:
                    self._work_lock.release()
            else:
                self._close_when_done = True

    # -- capture side (loop thread) --------------------------------------------------------

    def on_event(self, stored: StoredEvent) -> None:
        """Outbox listener: index (and maybe queue) the files an event names."""
        if b"snapshot_sha256" not in stored.payload and b"frame_sha256" not in stored.payload:
            return
        try:
            payload = json.loads(stored.payload)
        except ValueError:
            return
        shas = [
            payload.get("snapshot_sha256"),
            payload.get("frame_sha256"),  # a hit's frame: evidence of the hit like its crop
            *(payload.get("snapshot_sha256s") or []),
        ]
        event_type = stored.event_type
        try:
            captured_at = datetime.fromisoformat(str(payload.get("ts")).replace("Z", "+00:00"))
        except ValueError:
            captured_at = self._now()
        data_class = data_class_for(event_type, payload)
        automatic = event_type in self.config.auto_upload
        for sha in shas:
            if not isinstance(sha, str) or len(sha) != 64:
                continue
            self.queue.index(
                sha,
                data_class=data_class,
                camera_id=payload.get("camera_id"),
                event_id=stored.event_id,
                event_type=event_type,
                captured_at=captured_at,
                replace=automatic,
            )
            if automatic:
                self.enqueue(sha)

    def _on_describe(self, sha256: str, meta: dict[str, Any]) -> None:
        """`EvidenceStore.describe` listener: index the file; upload it if its type says so."""
        captured_at = meta.get("captured_at")
        if isinstance(captured_at, str):
            captured_at = datetime.fromisoformat(captured_at.replace("Z", "+00:00"))
        event_type = meta.get("event_type")
        data_class = meta.get("data_class") or data_class_for(event_type, meta)
        self.queue.index(
            sha256,
            data_class=str(data_class),
            camera_id=meta.get("camera_id"),
            event_id=meta.get("event_id"),
            event_type=event_type,
            captured_at=captured_at if isinstance(captured_at, datetime) else self._now(),
            alert_id=meta.get("alert_id"),
        )
        if event_type in self.config.auto_upload or data_class in self.config.auto_upload:
            self.enqueue(sha256)

    def enqueue(
        self,
        sha256: str,
        *,
        data_class: str | None = None,
        camera_id: str | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
        captured_at: datetime | None = None,
        alert_id: str | None = None,
    ) -> bool:
        """Sign and queue one stored file for upload (pinned until the server holds it).

        Metadata not given comes from the index (what an event said of the
        file). False when the file is not in the store or the queue is full.
        """
        path = self.store.path(sha256)
        if path is None:
            return False
        meta = self.queue.known(sha256) or {}
        if data_class is not None or meta == {}:
            self.queue.index(
                sha256,
                data_class=data_class or "plate_crop",
                camera_id=camera_id,
                event_id=event_id,
                event_type=event_type,
                captured_at=captured_at or self._now(),
                alert_id=alert_id,
            )
            meta = self.queue.known(sha256) or {}
        suffix = path.suffix.lower()
        claim = EvidenceClaim(
            sha256=sha256,
            size=path.stat().st_size,
            content_type="image/png"
            if suffix == ".png"
            else "image/jpeg"
            if suffix == ".jpg"
            else "application/octet-stream",
            data_class=meta["data_class"],
            node_id=self.node_id,
            camera_id=meta.get("camera_id"),
            captured_at=datetime.fromisoformat(meta["captured_at"]),
            event_id=meta.get("event_id"),
            event_type=meta.get("event_type"),
            alert_id=meta.get("alert_id"),
        )
        if self._key is None:
            self._key = self._key_loader()
        signed = sign_claim(self._key, claim)
        if not self.queue.add(signed):
            self.queue_full += 1
            logger.warning("%s: evidence queue full; %s not queued", self.node_id, sha256)
            return False
        self.store.pin(sha256)
        return True

    # -- the worker thread -------------------------------------------------------------

    def work_once(self) -> int:
        """One round: ask for work, apply retention, upload what is due; files uploaded."""
        with self._work_lock:
            try:
                try:
                    client = self._client or self._client_factory()
                    self._client = client
                except Exception as exc:
                    self.last_error = f"client: {exc}"[:200]
                    return 0
                self._instructions(client)
                self._retention(client)
                return self._upload_due(client)
            finally:
                if self._close_when_done:
                    self.queue.close()

    def _instructions(self, client: UploadClient) -> None:
        try:
            todo = client.instructions()
        except UploadError as exc:
            self.last_error = str(exc)[:200]
            return
        held = list(todo.get("hold", []))
        self.queue.set_held(held)
        for sha in held:
            self.store.pin(sha)
        for sha in todo.get("upload", []):
            self.enqueue(sha)
        gone = [s for s in todo.get("delete", []) if s not in held and self._delete_local(s)]
        if gone:
            self._report(client, gone, reason="server_expired")

    def _delete_local(self, sha256: str) -> bool:
        found = self.store.delete(sha256)
        self.queue.forget(sha256)
        if found:
            self.deleted += 1
        return found

    def _retention(self, client: UploadClient) -> None:
        now = self._now()
        cutoffs = {}
        for data_class in ("plate_crop", "face_crop", "panic_snapshot"):
            days = self.config.retention_days(data_class)
            if days is not None:
                cutoffs[data_class] = now - timedelta(days=days)
        held = self.queue.held()
        pending = set(self.queue.pending())
        by_class: dict[str, list[str]] = {}
        for sha in self.queue.expired(cutoffs):
            if sha in held or sha in pending:
                continue  # legal hold, or not yet at the server
            meta = self.queue.known(sha) or {}
            if self._delete_local(sha):
                by_class.setdefault(str(meta.get("data_class")), []).append(sha)
            else:
                self.queue.forget(sha)
        for data_class, shas in by_class.items():
            self._report(client, shas, reason=f"retention:{data_class}")

    def _report(self, client: UploadClient, shas: list[str], *, reason: str) -> None:
        try:
            client.report_deleted(shas, reason=reason)
        except UploadError as exc:  # the deletion stands; the report is best effort
            self.last_error = str(exc)[:200]
            logger.warning("%s: could not report %d deletion(s): %s", self.node_id, len(shas), exc)

    def _upload_due(self, client: UploadClient) -> int:
        done = 0
        for item in self.queue.due(time.time()):
            try:
                self._upload(client, item)
            except UploadRefused as exc:
                self.refused += 1
                self.last_error = str(exc)[:200]
                if exc.reason == "deleted":  # the server expired it: nothing to send
                    self.queue.done(item.sha256)
                    self.store.unpin(item.sha256)
                    continue
                if exc.reason in PERMANENT_REFUSALS:  # sending it again cannot change the answer
                    logger.error(
                        "%s: evidence %s refused for good: %s", self.node_id, item.sha256, exc
                    )
                    self.queue.forget_upload(item.sha256)
                    if not self._is_hit_evidence(item.sha256):  # else the node's is the only copy
                        self.store.unpin(item.sha256)
                    continue
                self._backoff(item, str(exc))
                continue
            except (UploadError, OSError) as exc:
                self.last_error = str(exc)[:200]
                self._backoff(item, str(exc))
                continue
            self.queue.done(item.sha256)
            if item.sha256 not in self.queue.held():
                self.store.unpin(item.sha256)
            self.uploaded += 1
            done += 1
        return done

    def _is_hit_evidence(self, sha256: str) -> bool:
        """A hit's or panic's evidence (what goes by itself), not a crop sent on request."""
        meta = self.queue.known(sha256) or {}
        automatic = self.config.auto_upload
        return meta.get("event_type") in automatic or meta.get("data_class") in automatic

    def _backoff(self, item: Pending, error: str) -> None:
        delay = min(self.config.retry_max_s, self.config.retry_min_s * 2 ** min(item.attempts, 20))
        self.queue.retry(item.sha256, at=time.time() + delay, error=error)
        logger.info("%s: evidence %s retried in %.0fs: %s", self.node_id, item.sha256, delay, error)

    def _upload(self, client: UploadClient, item: Pending) -> None:
        path = self.store.path(item.sha256)
        if path is None:
            self.queue.forget(item.sha256)
            raise UploadError(f"{item.sha256} is no longer in the store")
        received, state = client.begin(item.signed)
        if state == "stored":
            return
        chunk = self.config.chunk_kb * 1024
        size = item.signed.claim.size
        with path.open("rb") as handle:
            offset = received
            for _ in range(size // chunk + 2):  # bounded: one pass over the file
                if offset >= size:
                    break
                handle.seek(offset)
                data = handle.read(chunk)
                if not data:
                    raise UploadError(f"{path} is shorter than its claim")
                try:
                    offset = client.put(item.sha256, offset, data)
                except UploadRefused as exc:
                    if exc.reason == "offset" and exc.received is not None:
                        offset = exc.received  # the server holds a different amount: continue there
                        continue
                    raise
        if offset < size:
            raise UploadError(f"{item.sha256}: {offset} of {size} bytes sent")


def evidence_store_for(config: AgentConfig) -> EvidenceStore:
    """The node's one local evidence store (``<data_dir>/evidence``), bounded by ``[evidence]``."""
    from edge_agent.evidence import EvidenceStore

    limits = config.evidence
    return EvidenceStore(
        config.data_dir / "evidence",
        max_bytes=int(limits.max_mb * 1024 * 1024),
        max_files=limits.max_files,
    )
