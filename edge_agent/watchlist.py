"""Signed watchlists on the node: verify a bundle before use, match plates against hotlists.

A watchlist arrives as a `proto.watchlist.SignedWatchlist` (the ``watchlist``
command). Before anything in it is used the node checks, in order: the
format; that the signing certificate is a ``watchlist-signer`` (not a CA,
no extended key usage, valid now) issued by the fleet CA the node trusts
since enrolment (``identity/ca-chain.pem``), directly or through the issuing
CA the bundle carries; the signature over the canonical body; the expiry;
and that the version is newer than the one it holds. A refusal is an
exception with a stable ``reason`` (format, signer, signature, expired,
version, scope), answered in the command's reply and counted — the list the
node held stays in force.

Matching follows the issue: the voted plate's canonical key against every
held hotlist, exact first; only when nothing matches exactly, keys within
one look-alike character (proto.plates, the same table the server's plate
search uses), reported as ``confusable``. A match becomes a `WatchlistHitEvent`
through the durable outbox, beside the plate event it came from.

Accepted bundles are kept on disk as the signed JSON they arrived as and
verified again on load, so a file edited on the node's disk is refused at
the next start rather than trusted.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from edge_agent.component import CommandHandler, CommandRefused, ComponentBase, NodeContext
from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError
from proto.messages import CommandBase, EventBase, PlateEvent, WatchlistCommand, WatchlistHitEvent
from proto.plates import normalise_plate, one_confusion_variants
from proto.watchlist import SIGNER_NAME, SignedWatchlist, WatchlistBody, signed_payload

__all__ = [
    "BundleRefused",
    "PlateMatch",
    "WatchlistComponent",
    "WatchlistStore",
    "hit_builder",
    "load_trusted",
    "verify_bundle",
]

logger = logging.getLogger(__name__)

EXPIRY_CHECK_S = 60.0
RefusalReason = Literal["format", "signer", "signature", "expired", "version", "scope"]


class BundleRefused(AgentError):
    """A watchlist bundle the node will not use; `reason` is a stable code."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"watchlist bundle refused ({reason}): {detail}")
        self.reason: RefusalReason = reason
        self.detail = detail


def load_trusted(pem: bytes) -> list[x509.Certificate]:
    """The fleet CA certificates in a PEM file (the node's ``ca-chain.pem``)."""
    return list(x509.load_pem_x509_certificates(pem))


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _signer_problem(
    chain: Sequence[x509.Certificate], *, trusted: Sequence[x509.Certificate], now: datetime
) -> str | None:
    """Why `chain[0]` may not sign watchlists (None: it may)."""
    if not chain:
        return "no signing certificate"
    cert = chain[0]
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [SIGNER_NAME]:
        return f"signed by {cert.subject.rfc4514_string()}, not a {SIGNER_NAME}"
    if _is_ca(cert):
        return "the signing certificate is a CA certificate"
    try:
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        return "the signing certificate has an extended key usage (a node or service certificate)"
    except x509.ExtensionNotFound:
        pass
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        return "the signing certificate is not valid now"
    issuers = list(trusted) + [
        ca for ca in chain[1:] if _is_ca(ca) and any(_issued_by(ca, t) for t in trusted)
    ]
    if not any(_issued_by(cert, ca) for ca in issuers):
        return "the signing certificate was not issued by the fleet CA"
    return None


def verify_bundle(
    raw: bytes | str,
    *,
    trusted: Sequence[x509.Certificate],
    now: datetime,
    held_version: int | None = None,
    district: str | None = None,
    site_id: str | None = None,
) -> SignedWatchlist:
    """The bundle in `raw`, checked (see the module docstring); `BundleRefused` if not."""
    try:
        bundle = SignedWatchlist.model_validate_json(raw)
    except ValidationError as exc:
        detail = f"not a signed watchlist bundle ({exc.error_count()} errors)"
        raise BundleRefused("format", detail) from None
    try:
        chain = x509.load_pem_x509_certificates(bundle.signer_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise BundleRefused("signer", "the signing certificate cannot be read") from None
    problem = _signer_problem(chain, trusted=trusted, now=now)
    if problem is not None:
        raise BundleRefused("signer", problem)
    key = chain[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BundleRefused("signer", "the signing key is not an EC key")
    try:
        signature = base64.b64decode(bundle.signature, validate=True)
        key.verify(signature, signed_payload(bundle.body), ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        raise BundleRefused("signature", "the signature does not match the body") from None
    body = bundle.body
    if now >= body.expires_at:
        raise BundleRefused("expired", f"{body.watchlist_id} expired at {body.expires_at}")
    if held_version is not None and body.version <= held_version:
        raise BundleRefused(
            "version", f"{body.watchlist_id} v{body.version} is not newer than v{held_version}"
        )
    in_district = not body.districts or (district is not None and district in body.districts)
    in_site = not body.sites or (site_id is not None and site_id in body.sites)
    scoped = bool(body.districts or body.sites)
    if scoped and not ((body.districts and in_district) or (body.sites and in_site)):
        raise BundleRefused("scope", f"{body.watchlist_id} is not active at this node")
    return bundle


@dataclass(frozen=True)
class PlateMatch:
    """A voted plate that is on a held hotlist."""

    watchlist_id: str
    version: int
    entry_id: str
    listed: str
    match: Literal["exact", "confusable"]
    category: str


class WatchlistStore:
    """The watchlists this node holds (verified), kept on disk, with a plate index."""

    def __init__(
        self,
        *,
        trusted: Sequence[x509.Certificate],
        directory: Path | None = None,
        district: str | None = None,
        site_id: str | None = None,
    ) -> None:
        self.trusted = list(trusted)
        self.directory = directory
        self.district = district
        self.site_id = site_id
        self.lists: dict[str, WatchlistBody] = {}
        self._plates: dict[str, list[tuple[WatchlistBody, str]]] = {}  # key → (list, entry)
        self.refusals: dict[str, int] = {}

    # ----------------------------------------------------------------- bundles

    def install(self, raw: bytes | str, *, now: datetime) -> WatchlistBody:
        """Verify and hold `raw` (replacing an older version); `BundleRefused` if not."""
        held: int | None = None
        try:
            peek = json.loads(raw)
            held_body = self.lists.get(str(peek["body"]["watchlist_id"]))
            held = held_body.version if held_body is not None else None
        except (ValueError, KeyError, TypeError):
            pass  # verify_bundle says what is wrong with it
        try:
            bundle = verify_bundle(
                raw, trusted=self.trusted, now=now, held_version=held,
                district=self.district, site_id=self.site_id,
            )  # fmt: skip
        except BundleRefused as exc:
            self.refusals[exc.reason] = self.refusals.get(exc.reason, 0) + 1
            logger.warning("%s", exc)
            raise
        body = bundle.body
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{body.watchlist_id}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(raw if isinstance(raw, str) else raw.decode("utf-8"), encoding="utf-8")
            tmp.replace(path)
        self.lists[body.watchlist_id] = body
        self._reindex()
        logger.info("watchlist %s v%s held (%s plates)", body.watchlist_id, body.version,
                    len(body.plates))  # fmt: skip
        return body

    def load(self, *, now: datetime) -> list[str]:
        """Verify and hold the bundles kept on disk; return the ids of those refused."""
        refused: list[str] = []
        if self.directory is None or not self.directory.is_dir():
            return refused
        for path in sorted(self.directory.glob("*.json")):
            try:
                self.install(path.read_bytes(), now=now)
            except BundleRefused:
                refused.append(path.stem)
        return refused

    def drop_expired(self, *, now: datetime) -> list[str]:
        """Stop matching against lists past their expiry; return their ids."""
        gone = [wid for wid, body in self.lists.items() if now >= body.expires_at]
        for wid in gone:
            del self.lists[wid]
        if gone:
            self._reindex()
        return gone

    def versions(self) -> dict[str, int]:
        """Watchlist id → version held (what telemetry reports)."""
        return {wid: body.version for wid, body in sorted(self.lists.items())}

    def _reindex(self) -> None:
        index: dict[str, list[tuple[WatchlistBody, str]]] = {}
        for body in self.lists.values():
            for plate in body.plates:
                index.setdefault(plate.key, []).append((body, plate.entry_id))
        self._plates = index

    # ---------------------------------------------------------------- matching

    def match_plate(self, plate: str, *, now: datetime | None = None) -> list[PlateMatch]:
        """Hotlist entries for `plate`: exact matches, or else those one look-alike away."""
        key = normalise_plate(plate)
        if not key or not self._plates:
            return []
        found = self._matches(key, key, "exact", now)
        if found:
            return found
        for variant in one_confusion_variants(key):
            if variant != key:
                found += self._matches(variant, key, "confusable", now)
        return found

    def _matches(
        self, listed: str, read: str, how: Literal["exact", "confusable"], now: datetime | None
    ) -> list[PlateMatch]:
        return [
            PlateMatch(
                watchlist_id=body.watchlist_id,
                version=body.version,
                entry_id=entry_id,
                listed=listed,
                match=how,
                category=body.category,
            )
            for body, entry_id in self._plates.get(listed, [])
            if now is None or now < body.expires_at
        ]


def hit_builder(
    event: PlateEvent, match: PlateMatch, *, source_event_id: str | None = None
) -> Callable[[str, int], EventBase]:
    """An outbox builder for the hit `match` of the plate pass `event`."""
    read = normalise_plate(event.canonical or event.plate)[:16]

    def build(event_id: str, seq: int) -> EventBase:
        return WatchlistHitEvent(
            node_id=event.node_id, ts=event.ts, event_id=event_id, seq=seq,
            watchlist_id=match.watchlist_id, watchlist_version=match.version,
            entry_id=match.entry_id, subject="plate", match=match.match,
            camera_id=event.camera_id, track_id=event.track_id, plate=read or None,
            listed=match.listed, confidence=event.confidence, frames=event.frames,
            source_event_id=source_event_id, snapshot_sha256=event.snapshot_sha256,
        )  # fmt: skip

    return build


def write_hits(ctx: NodeContext, store: WatchlistStore, event: PlateEvent, source_id: str) -> int:
    """Write a hit event for every hotlist match of `event`; return how many."""
    matches = store.match_plate(event.canonical or event.plate, now=event.ts)
    for match in matches:
        ctx.counters["watchlist_hits"] += 1
        ctx.write_event(hit_builder(event, match, source_event_id=source_id))
    return len(matches)


def watchlist_store_for(config: AgentConfig) -> WatchlistStore | None:
    """The store a node with cameras matches against: trusts its fleet CA file; None without one.

    The CA file is the one enrolment wrote (``identity.ca_file``, else
    ``mqtt.ca_file``); a node with no CA file cannot verify a bundle, so it
    holds no watchlists at all rather than unverified ones.
    """
    ca_file = config.identity.ca_file or config.mqtt.ca_file
    if ca_file is None or not ca_file.is_file():
        logger.info("%s: no fleet CA file, so no watchlists", config.node_id)
        return None
    try:
        trusted = load_trusted(ca_file.read_bytes())
    except ValueError as exc:
        logger.warning("%s: cannot read %s (%s), so no watchlists", config.node_id, ca_file, exc)
        return None
    return WatchlistStore(
        trusted=trusted, directory=config.data_dir / "watchlists", district=config.district,
        site_id=config.site_id,
    )  # fmt: skip


class WatchlistComponent(ComponentBase):
    """Owns the ``watchlist`` command and reports the versions held in telemetry."""

    name = "watchlist"

    def __init__(self, store: WatchlistStore, *, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"watchlist": self._install}

    def telemetry(self) -> Mapping[str, Any]:
        versions = self.store.versions()
        return {"watchlists": versions} if versions else {}

    async def run(self, ctx: NodeContext) -> None:
        """Hold the bundles kept on disk (verified again), then let expired lists go."""
        if not self.store.lists:
            refused = self.store.load(now=ctx.clock.now())
            for watchlist_id in refused:
                ctx.counters["watchlist_refused_on_load"] += 1
                logger.warning("%s: kept watchlist %s refused on load", ctx.node_id, watchlist_id)
        while True:
            await ctx.clock.sleep(EXPIRY_CHECK_S)
            for watchlist_id in self.store.drop_expired(now=ctx.clock.now()):
                logger.info("%s: watchlist %s expired", ctx.node_id, watchlist_id)

    def _install(self, command: CommandBase) -> Mapping[str, Any] | None:
        if not isinstance(command, WatchlistCommand):
            raise CommandRefused("not a watchlist command")
        try:
            body = self.store.install(command.bundle, now=self.now())
        except BundleRefused as exc:
            raise CommandRefused(str(exc)) from None
        return {"watchlist_id": body.watchlist_id, "version": body.version}
