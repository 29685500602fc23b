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

Person entries arrive as face templates sealed for this node
(`proto.watchlist.WatchlistFaces`): the bundle's template key is wrapped
for each node in scope with ECDH P-256 against the node certificate's key,
HKDF-SHA256 and AES-256-GCM. `open_faces` unwraps it with the node's own
private key and decrypts the templates **in memory only**; the file on disk
is the bundle as signed (ciphertext), so no plaintext template is ever on
the node's disk, and nothing here sends a template anywhere. A bundle
sealed for another node (``recipient``), one whose ciphertext does not
decrypt (``decrypt``) or one made for another face model (``model``) is
refused like a bad signature. A face hit (`write_face_hit`) is the same
`watchlist_hit` event a plate hit is, ``subject: person``, ``match: face``.

Large lists arrive as a ``watchlist`` command that names an HTTPS URL, a
size and a SHA-256 (`proto.messages.WatchlistFetch`): the component fetches
the bytes with the node's client certificate off the event loop, checks
size and hash, then verifies the bundle exactly as if it had come in the
command; a refusal or a failed fetch (after bounded retries) is reported as
a ``node_fault`` event (component ``watchlist``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from edge_agent.component import CommandHandler, CommandRefused, ComponentBase, NodeContext
from edge_agent.config import AgentConfig
from edge_agent.errors import AgentError
from proto.messages import (
    CommandBase,
    EventBase,
    NodeFaultEvent,
    PlateEvent,
    WatchlistCommand,
    WatchlistFetch,
    WatchlistHitEvent,
)
from proto.plates import normalise_plate, one_confusion_variants
from proto.watchlist import (
    FACE_THRESHOLD_RANGE,
    SIGNER_NAME,
    SignedWatchlist,
    WatchlistBody,
    key_info,
    signed_payload,
    template_aad,
)

if TYPE_CHECKING:
    from edge_agent.faces.matching import FaceHit, Template

__all__ = [
    "BundleRefused",
    "PlateMatch",
    "WatchlistComponent",
    "WatchlistStore",
    "hit_builder",
    "key_sha256",
    "load_trusted",
    "open_faces",
    "verify_bundle",
    "write_face_hit",
]

logger = logging.getLogger(__name__)

EXPIRY_CHECK_S = 60.0
RefusalReason = Literal[
    "format",
    "signer",
    "signature",
    "expired",
    "version",
    "scope",
    "recipient",
    "decrypt",
    "model",
    "threshold",
    "fetch",
]
FETCH_ATTEMPTS = 5
FETCH_RETRY_S = (2.0, 10.0, 30.0, 60.0)
BundleFetcher = Callable[[str, int], bytes]  # (url, max bytes) → the bytes; raises on failure


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
    threshold = body.faces.threshold if body.faces is not None else None
    low, high = FACE_THRESHOLD_RANGE
    if threshold is not None and not low <= threshold <= high:
        # Signed, yet not to be applied: 0.05 would make every passer-by a hit.
        raise BundleRefused(
            "threshold", f"{body.watchlist_id}: face threshold {threshold} is outside {low}..{high}"
        )
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


def key_sha256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """SHA-256 hex of the public key's DER SubjectPublicKeyInfo (what the server records)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def open_faces(
    body: WatchlistBody,
    *,
    node_id: str,
    node_key: ec.EllipticCurvePrivateKey | None,
    model_sha256: str | None = None,
) -> list[Template]:
    """The body's face templates decrypted in memory for this node; `BundleRefused` if not.

    Nothing is written anywhere: the vectors live in the returned objects only.
    """
    faces = body.faces
    if faces is None:
        return []
    import numpy as np

    from edge_agent.faces.matching import Template

    if model_sha256 is not None and faces.model_sha256 != model_sha256:
        raise BundleRefused(
            "model", f"{body.watchlist_id}: templates are for {faces.model}, not this node's model"
        )
    if node_key is None:
        raise BundleRefused("recipient", "this node has no private key to open face templates")
    mine = key_sha256(node_key)
    sealed = next(
        (r for r in faces.recipients if r.node_id == node_id and r.key_sha256 == mine), None
    )
    if sealed is None:
        raise BundleRefused(
            "recipient", f"{body.watchlist_id} v{body.version} was not sealed for {node_id}'s key"
        )
    info = key_info(watchlist_id=body.watchlist_id, version=body.version, node_id=node_id)
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), base64.b64decode(sealed.ephemeral)
        )
        shared = node_key.exchange(ec.ECDH(), ephemeral)
        kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        key = AESGCM(kek).decrypt(
            base64.b64decode(sealed.nonce), base64.b64decode(sealed.wrapped), info
        )
        aead = AESGCM(key)
        templates = []
        for item in faces.templates:
            aad = template_aad(
                watchlist_id=body.watchlist_id, version=body.version, entry_id=item.entry_id
            )
            plain = aead.decrypt(
                base64.b64decode(item.nonce), base64.b64decode(item.ciphertext), aad
            )
            vector = np.frombuffer(plain, dtype="<f4").astype(np.float32)
            if vector.shape[0] != faces.dim:
                raise ValueError(f"template of {item.entry_id} has {vector.shape[0]} numbers")
            templates.append(
                Template(
                    entry_id=item.entry_id,
                    category=body.category,
                    vector=vector,
                    watchlist_id=body.watchlist_id,
                    version=body.version,
                    threshold=faces.threshold,  # None (an older bundle): the node's table
                )
            )
    except (InvalidTag, ValueError) as exc:
        detail = (
            "a sealed template or key does not decrypt" if isinstance(exc, InvalidTag) else str(exc)
        )
        raise BundleRefused("decrypt", f"{body.watchlist_id}: {detail}") from None
    return templates


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
        node_id: str = "",
        node_key: ec.EllipticCurvePrivateKey | None = None,
        model_sha256: str | None = None,
        faces_allowed: bool = True,
    ) -> None:
        self.trusted = list(trusted)
        # The site's face policy: where faces are not allowed the templates are never even
        # opened (the list's plates still count; its sealed part stays ciphertext).
        self.faces_allowed = faces_allowed
        self.directory = directory
        self.district = district
        self.site_id = site_id
        self.node_id = node_id
        self.node_key = node_key  # opens the sealed face templates (in memory only)
        self.model_sha256 = model_sha256  # the embedder the node runs; None: not checked
        self.lists: dict[str, WatchlistBody] = {}
        self._plates: dict[str, list[tuple[WatchlistBody, str]]] = {}  # key → (list, entry)
        self._faces: dict[str, list[Template]] = {}  # list id → its decrypted templates
        self.generation = 0  # grows whenever the templates held change
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
            templates: list[Template] = []
            if self.faces_allowed:
                templates = open_faces(
                    bundle.body, node_id=self.node_id, node_key=self.node_key,
                    model_sha256=self.model_sha256,
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
        if templates or body.watchlist_id in self._faces:
            self._faces[body.watchlist_id] = templates
            self.generation += 1
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
            if self._faces.pop(wid, None) is not None:
                self.generation += 1
        if gone:
            self._reindex()
        return gone

    def templates(self, *, now: datetime | None = None) -> list[Template]:
        """Every face template held (decrypted, in memory), of lists not yet expired."""
        return [
            t
            for wid, templates in self._faces.items()
            if now is None or now < self.lists[wid].expires_at
            for t in templates
        ]

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
    event: PlateEvent,
    match: PlateMatch,
    *,
    source_event_id: str | None = None,
    frame_sha256: str | None = None,
) -> Callable[[str, int], EventBase]:
    """An outbox builder for the hit `match` of the plate pass `event` (and its frame)."""
    read = normalise_plate(event.canonical or event.plate)[:16]

    def build(event_id: str, seq: int) -> EventBase:
        return WatchlistHitEvent(
            node_id=event.node_id, ts=event.ts, event_id=event_id, seq=seq,
            watchlist_id=match.watchlist_id, watchlist_version=match.version,
            entry_id=match.entry_id, subject="plate", match=match.match,
            camera_id=event.camera_id, track_id=event.track_id, plate=read or None,
            listed=match.listed, confidence=event.confidence, frames=event.frames,
            source_event_id=source_event_id, snapshot_sha256=event.snapshot_sha256,
            frame_sha256=frame_sha256,
        )  # fmt: skip

    return build


def write_hits(
    ctx: NodeContext,
    store: WatchlistStore,
    event: PlateEvent,
    source_id: str,
    *,
    frame_sha256: str | None = None,
) -> int:
    """Write a hit event for every hotlist match of `event`; return how many.

    `frame_sha256`: the stored frame the pass's best crop came from (hit evidence).
    """
    matches = store.match_plate(event.canonical or event.plate, now=event.ts)
    for match in matches:
        ctx.counters["watchlist_hits"] += 1
        ctx.write_event(
            hit_builder(event, match, source_event_id=source_id, frame_sha256=frame_sha256)
        )
    return len(matches)


def write_face_hit(
    ctx: NodeContext,
    hit: FaceHit,
    *,
    camera_id: str,
    snapshot_sha256: str | None,
    frame_sha256: str | None = None,
) -> None:
    """A face track's hit as a `watchlist_hit` event (subject person, match face)."""
    node_id, clock = ctx.node_id, ctx.clock
    score = min(1.0, max(0.0, hit.score))

    def build(event_id: str, seq: int) -> EventBase:
        return WatchlistHitEvent(
            node_id=node_id, ts=clock.now(), event_id=event_id, seq=seq,
            watchlist_id=hit.watchlist_id, watchlist_version=max(1, hit.version),
            entry_id=hit.entry_id, subject="person", match="face", camera_id=camera_id,
            track_id=hit.track_id[:64], confidence=score, score=score,
            frames=max(1, min(10_000, len(hit.frames))), snapshot_sha256=snapshot_sha256,
            frame_sha256=frame_sha256,
        )  # fmt: skip

    ctx.counters["watchlist_hits"] += 1
    ctx.counters["watchlist_face_hits"] += 1
    ctx.write_event(build)


def _node_key(path: Path | None) -> ec.EllipticCurvePrivateKey | None:
    """The node's own private key (its certificate's), or None when it cannot be read."""
    if path is None or not path.is_file():
        return None
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        logger.warning("cannot read the node key %s (%s): no face templates", path, exc)
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _face_model_sha256() -> str | None:
    """The SHA-256 of the embedder the node runs (the sface manifest), None if unknown."""
    try:
        from edge_agent.inference import builtin_manifest

        return builtin_manifest("sface").sha256
    except Exception:  # no manifest: nothing to compare against
        return None


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
        site_id=config.site_id, node_id=config.node_id, node_key=_node_key(config.mqtt.key_file),
        model_sha256=_face_model_sha256(), faces_allowed=config.faces.allowed,
    )  # fmt: skip


def https_fetcher(config: AgentConfig) -> BundleFetcher | None:
    """GET over HTTPS with the node's client certificate (ota.transport); None without a CA.

    A relative URL is taken against ``identity.server_url`` (the API the node enrolled with).
    """
    ca_file = config.identity.ca_file or config.mqtt.ca_file
    if ca_file is None:
        return None
    from ota.transport import HttpsTransport

    transport = HttpsTransport(
        ca_file=ca_file, cert_file=config.mqtt.cert_file, key_file=config.mqtt.key_file
    )
    base = (config.identity.server_url or "").rstrip("/")

    def fetch(url: str, max_bytes: int) -> bytes:
        if url.startswith("/"):
            if not base:
                raise BundleRefused("fetch", "a relative bundle URL and no identity.server_url")
            url = base + url
        download = transport.open(url)
        data = bytearray()
        for chunk in download.chunks:
            data += chunk
            if len(data) > max_bytes:
                raise BundleRefused("fetch", f"{url} sent more than the {max_bytes} bytes named")
        return bytes(data)

    return fetch


class WatchlistComponent(ComponentBase):
    """Owns the ``watchlist`` command and reports the versions held in telemetry.

    A command that carries the bundle is answered with the version now held
    (or the refusal). A command that names an HTTPS fetch is answered
    ``fetching`` at once (a download never runs on the event loop); the
    outcome is the version in telemetry, or a ``node_fault`` event naming the
    refusal reason.
    """

    name = "watchlist"

    def __init__(
        self,
        store: WatchlistStore,
        *,
        now: Callable[[], datetime],
        fetcher: BundleFetcher | None = None,
    ) -> None:
        self.store = store
        self.now = now
        self.fetcher = fetcher  # None: built from the node's config when the component runs
        self._fetches: asyncio.Queue[WatchlistFetch] | None = None
        self.fetched = 0

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"watchlist": self._install}

    def telemetry(self) -> Mapping[str, Any]:
        versions = self.store.versions()
        return {"watchlists": versions} if versions else {}

    async def run(self, ctx: NodeContext) -> None:
        """Hold the bundles kept on disk (verified again), fetch what commands name, expire."""
        if self.fetcher is None:
            self.fetcher = https_fetcher(ctx.config)
        self._fetches = asyncio.Queue()
        if not self.store.lists:
            refused = self.store.load(now=ctx.clock.now())
            for watchlist_id in refused:
                ctx.counters["watchlist_refused_on_load"] += 1
                logger.warning("%s: kept watchlist %s refused on load", ctx.node_id, watchlist_id)
        fetching = asyncio.ensure_future(self._fetch_loop(ctx, self._fetches))
        try:
            while True:
                await ctx.clock.sleep(EXPIRY_CHECK_S)
                for watchlist_id in self.store.drop_expired(now=ctx.clock.now()):
                    logger.info("%s: watchlist %s expired", ctx.node_id, watchlist_id)
        finally:
            fetching.cancel()

    async def _fetch_loop(self, ctx: NodeContext, queue: asyncio.Queue[WatchlistFetch]) -> None:
        while True:
            fetch = await queue.get()
            await self._fetch_one(ctx, fetch)

    async def _fetch_one(self, ctx: NodeContext, fetch: WatchlistFetch) -> None:
        """Download, check size and hash, verify and hold; report a refusal as a node fault."""
        held = self.store.lists.get(fetch.watchlist_id)
        if held is not None and held.version >= fetch.version:
            return  # a newer command's fetch already did it
        error: BundleRefused | None = None
        for attempt in range(FETCH_ATTEMPTS):
            try:
                if self.fetcher is None:
                    raise BundleRefused("fetch", "no fleet CA to fetch bundles over HTTPS")
                raw = await asyncio.to_thread(self.fetcher, fetch.url, fetch.size)
                if len(raw) != fetch.size or hashlib.sha256(raw).hexdigest() != fetch.sha256:
                    raise BundleRefused(
                        "fetch", f"{fetch.url}: {len(raw)} bytes not matching the SHA-256 named"
                    )
                body = self.store.install(raw, now=ctx.clock.now())
            except BundleRefused as exc:
                error = exc
                if exc.reason != "fetch":
                    break  # the bytes arrived and are bad: fetching again will not help
            except Exception as exc:  # transport failure: retried
                error = BundleRefused("fetch", f"{fetch.url}: {exc}")
            else:
                self.fetched += 1
                ctx.counters["watchlist_fetched"] += 1
                logger.info("%s: fetched watchlist %s v%s", ctx.node_id, body.watchlist_id,
                            body.version)  # fmt: skip
                return
            if attempt + 1 < FETCH_ATTEMPTS:
                await ctx.clock.sleep(FETCH_RETRY_S[min(attempt, len(FETCH_RETRY_S) - 1)])
        assert error is not None
        ctx.counters["watchlist_refused"] += 1
        self._report(ctx, error, fetch)

    def _report(self, ctx: NodeContext, error: BundleRefused, fetch: WatchlistFetch) -> None:
        node_id, clock = ctx.node_id, ctx.clock

        def build(event_id: str, seq: int) -> EventBase:
            return NodeFaultEvent(
                node_id=node_id, ts=clock.now(), event_id=event_id, seq=seq,
                component=self.name, code=f"watchlist_{error.reason}", active=True,
                detail=f"{fetch.watchlist_id} v{fetch.version}: {error.detail}"[:1000],
            )  # fmt: skip

        ctx.write_event(build)

    def _install(self, command: CommandBase) -> Mapping[str, Any] | None:
        if not isinstance(command, WatchlistCommand):
            raise CommandRefused("not a watchlist command")
        if command.fetch is not None:
            if self._fetches is None:
                raise CommandRefused("the watchlist component is not running")
            self._fetches.put_nowait(command.fetch)
            return {"watchlist_id": command.fetch.watchlist_id, "version": command.fetch.version,
                    "fetching": True}  # fmt: skip
        try:
            body = self.store.install(command.bundle or "", now=self.now())
        except BundleRefused as exc:
            raise CommandRefused(str(exc)) from None
        return {"watchlist_id": body.watchlist_id, "version": body.version}
