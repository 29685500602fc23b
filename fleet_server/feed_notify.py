"""The operator feed across N server workers: PostgreSQL LISTEN/NOTIFY between them.

Each worker announces its own committed alert changes to its own SSE clients
(`fleet_server.stream`). With several workers on one PostgreSQL database, a
console connected to worker B must also see the alert worker A just
acknowledged, escalated or created from a press. So, after the commit, the
worker that made a change also sends `NOTIFY` on the feed channel with what
changed — alert id, op and event id, never the alert itself (a payload must
stay under 8,000 bytes; a long list goes as several notifications) — and
every worker keeps one connection `LISTEN`ing on that channel. A worker
skips its own notifications (its clients already had the change), reads the
others' alerts by id, and publishes them to its local subscribers through
the same `Broadcaster`, with the alert's current state and `updated_at` as
the frame's cursor, so `Last-Event-ID` replay (`fleet_server.feed_replay`)
works as before.

Each notification also carries its sender's wall-clock time (`t`), so a
listener can tell how long the hop took: `FeedFanout.timings()` (in
`/healthz`) gives the recent lag from the sender's announce to this
listener's receipt and the time this worker took to read the alerts and hand
the frames to its clients. `nigehbaan bench panic --cluster` reads both, and
its own listener on the channel, for its per-hop breakdown (docs/cluster.md).

Delivery is at least once, like the rest of the feed: a notification that
could not be sent, or that arrived while a listener was reconnecting, is not
lost to a console: when the listener's connection comes back it sends its
clients an `event: resync` (re-read the list), and a reconnecting client is
replayed from its cursor, which lives in the database. The channel name
carries the schema, since channels are per database and tests (or staging)
keep several schemas in one database. SQLite has one process and no fan-out.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, cast, get_args

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from fleet_server.alerting import AlertNotice
from fleet_server.alerting.notices import Op
from fleet_server.models import Alert, AlertPublic
from fleet_server.stream import Broadcaster, alert_frame, resync_frame

__all__ = ["CHANNEL_PREFIX", "PAYLOAD_MAX", "FeedFanout", "channel_for", "feed_fanout_for"]

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "nb_alert_feed"
PAYLOAD_MAX = 7_900  # PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more
_OPS = frozenset(get_args(Op))
_RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # listener back-off, then every 5 s
TIMING_WINDOW = 1_000  # recent notifications `timings()` summarises


def channel_for(schema: str) -> str:
    """The feed's channel for the database schema the workers share (≤ 63 bytes)."""
    return f"{CHANNEL_PREFIX}_{schema}"[:63]


def _payloads(
    origin: str, notices: Sequence[AlertNotice], *, sent_at: float | None = None
) -> list[str]:
    """Notification payloads, each small:
    `{"w": origin, "t": sent_at, "c": [[alert_id, op, event_id], …]}`.

    `t` (the sender's `time.time()`, omitted when None) is for timing the hop;
    a listener that does not know it ignores it.
    """
    head: dict[str, object] = {"w": origin}
    if sent_at is not None:
        head["t"] = round(sent_at, 6)
    out: list[str] = []
    changes: list[list[str | None]] = []
    size = 0
    for n in notices:
        change = [n.alert.id, n.op, n.event_id]
        cost = len(json.dumps(change)) + 1
        if changes and size + cost > PAYLOAD_MAX - 96:
            out.append(json.dumps({**head, "c": changes}, separators=(",", ":")))
            changes, size = [], 0
        changes.append(change)
        size += cost
    if changes:
        out.append(json.dumps({**head, "c": changes}, separators=(",", ":")))
    return out


def _summary_ms(samples: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max of `samples` (seconds) in milliseconds (nearest rank)."""
    ordered = sorted(samples)
    out: dict[str, float | int | None] = {"n": len(ordered)}
    for name, pct in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        if not ordered:
            out[name] = None
            continue
        rank = max(1, min(len(ordered), math.ceil(pct / 100.0 * len(ordered))))
        out[name] = round(ordered[rank - 1] * 1000.0, 1)
    return out


def _detached(engine: Engine) -> Any:
    """A connection of `engine`'s own, outside its pool, in autocommit (psycopg 3)."""
    raw = engine.raw_connection()
    conn = raw.driver_connection
    raw.detach()
    if conn is None:
        raise RuntimeError("the engine gave no driver connection for the feed")
    conn.autocommit = True
    return conn


class FeedFanout:
    """This worker's end of the feed channel: `announce` what it committed, hear the others.

    `announce` runs wherever notices are announced (ingest thread, timer
    thread, API request threads) and sends on a connection of its own; the
    listener runs in a thread of its own from `start` to `stop`.
    """

    def __init__(self, engine: Engine, broadcaster: Broadcaster) -> None:
        self.engine = engine
        self.broadcaster = broadcaster
        self.origin = uuid.uuid4().hex[:12]  # this worker, to skip its own notifications
        self.sent = 0
        self.received = 0  # changes from other workers published to local clients
        self.send_failures = 0
        self.listening = threading.Event()  # set while the LISTEN connection is up
        self._send_lock = threading.Lock()
        self._sender: Any = None
        self._channel: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listener_pid: int | None = None  # the LISTEN connection's backend, while up
        # Recent hops, seconds: sender's announce → our receipt (needs the sender's
        # clock, i.e. the same machine or synced clocks); our receipt → frames handed on.
        self._lag: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._handling: deque[float] = deque(maxlen=TIMING_WINDOW)
        self._timing_lock = threading.Lock()  # the listener appends, /healthz reads
        self._reader: Connection | None = None  # the listener thread's reads (`_read_alerts`)

    def timings(self) -> dict[str, dict[str, float | int | None]]:
        """For /healthz: the last `TIMING_WINDOW` notifications from other workers, in ms.

        `notify_lag_ms`: from the sender's `announce` to this listener's receipt
        (PostgreSQL's delivery and this thread's wake-up); `handling_ms`: reading
        the alerts and handing the frames to the event loop.
        """
        with self._timing_lock:
            lag, handling = list(self._lag), list(self._handling)
        return {"notify_lag_ms": _summary_ms(lag), "handling_ms": _summary_ms(handling)}

    def channel(self) -> str:
        """The channel name (reads the schema once)."""
        if self._channel is None:
            with self.engine.connect() as conn:
                schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            self._channel = channel_for(str(schema))
        return self._channel

    def announce(self, notices: Sequence[AlertNotice]) -> None:
        """Tell the other workers about committed changes (never raises; one retry)."""
        if not notices:
            return
        payloads = _payloads(self.origin, notices, sent_at=time.time())
        with self._send_lock:
            for attempt in (1, 2):
                try:
                    if self._sender is None:
                        self._sender = _detached(self.engine)
                    channel = self.channel()
                    for payload in payloads:
                        self._sender.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                    self.sent += len(notices)
                    return
                except Exception as exc:
                    self._close_sender()
                    if attempt == 2:
                        self.send_failures += 1
                        logger.warning(
                            "feed notification to other workers failed (%s changes): %s",
                            len(notices), exc,
                        )  # fmt: skip

    def _close_sender(self) -> None:
        if self._sender is not None:
            try:
                self._sender.close()
            except Exception:
                logger.debug("closing the feed sender", exc_info=True)
        self._sender = None

    def start(self) -> None:
        """Start listening (a daemon thread; `stop` ends it)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen_loop, name="feed-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and close both connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._send_lock:
            self._close_sender()

    def _listen_loop(self) -> None:
        failures = 0
        lost = False
        while not self._stop.is_set():
            try:
                conn = _detached(self.engine)
            except Exception as exc:
                delay = _RECONNECT_S[min(failures, len(_RECONNECT_S) - 1)]
                failures += 1
                logger.warning("feed listener cannot connect (%s); again in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            try:
                conn.execute(f'LISTEN "{self.channel()}"')
                self.listener_pid = int(conn.info.backend_pid)
                self.listening.set()
                if lost:  # what was sent while we were away never reached our clients
                    self.broadcaster.publish_threadsafe(
                        [resync_frame("the feed's link to the other workers was interrupted")]
                    )
                failures = 0
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5, stop_after=200):
                        self._received(note.payload)
                    # notifies() returns on timeout or after a burst; loop to check stop.
            except Exception as exc:
                if not self._stop.is_set():
                    logger.warning("feed listener lost its connection: %s", exc)
                    lost = True
            finally:
                self.listening.clear()
                self.listener_pid = None
                self._close_reader()
                try:
                    conn.close()
                except Exception:
                    logger.debug("closing the feed listener", exc_info=True)

    def _received(self, payload: str) -> None:
        """Another worker's changes: read those alerts and publish them to our clients."""
        heard = time.time()
        try:
            body = json.loads(payload)
            if body.get("w") == self.origin:
                return
            sent_at = body.get("t")
            changes = [(str(c[0]), cast(Op, c[1]), c[2]) for c in body["c"]]
            if any(op not in _OPS or not isinstance(e, str | None) for _a, op, e in changes):
                raise ValueError("unknown op or event id")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            logger.warning("ignoring a malformed feed notification (%s): %.80r", exc, payload)
            return
        alerts = self._read_alerts({alert_id for alert_id, _op, _event in changes})
        frames = [
            alert_frame(AlertNotice(op=op, alert=alerts[alert_id], event_id=event_id))
            for alert_id, op, event_id in changes
            if alert_id in alerts
        ]
        if frames:
            self.received += len(frames)
            self.broadcaster.publish_threadsafe(frames)
        with self._timing_lock:
            if isinstance(sent_at, int | float) and not isinstance(sent_at, bool):
                self._lag.append(max(0.0, heard - sent_at))
            self._handling.append(time.time() - heard)

    def _read_alerts(self, ids: set[str]) -> dict[str, AlertPublic]:
        """The alerts by id, on the listener's own autocommit connection: one round trip.

        A pooled session added a pre-ping, BEGIN and ROLLBACK to every read, each
        a wake-up of this thread and of a PostgreSQL backend on the way to the
        operators' screens (docs/cluster.md, `bench panic --cluster`). A failed
        read is tried once more on a fresh connection; a second failure goes to
        the listener loop, which reconnects and tells the clients to resync.
        """
        for attempt in (1, 2):
            try:
                if self._reader is None:
                    reader = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    reader.detach()  # held by this thread, outside the pool's count
                    self._reader = reader
                with Session(bind=self._reader) as session:
                    return {
                        a.id: AlertPublic.model_validate(a)
                        for a in session.exec(select(Alert).where(col(Alert.id).in_(ids)))
                    }
            except Exception:
                self._close_reader()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - for mypy

    def _close_reader(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:
                logger.debug("closing the feed reader", exc_info=True)
        self._reader = None


def feed_fanout_for(engine: Engine, broadcaster: Broadcaster) -> FeedFanout | None:
    """The fan-out on PostgreSQL; None elsewhere (one process: the broadcaster is enough)."""
    return FeedFanout(engine, broadcaster) if engine.dialect.name == "postgresql" else None
