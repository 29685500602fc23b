"""The signed watchlist bundle: what the server delivers and a node verifies before use.

A watchlist reaches a node as one JSON document: the `WatchlistBody` (what
to look for, where, until when, at which version) and an ECDSA P-256 /
SHA-256 signature over its canonical encoding (`signed_payload`), with the
signing certificate and the issuing CA that issued it. The signer is a
dedicated server key whose certificate the fleet's issuing CA issues (CN
``watchlist-signer``, no extended key usage, so no node or service
certificate can pass for it); a node trusts it because it chains to the
fleet CA certificates the node already holds from enrolment.

It lives in `proto` because both sides depend on it and neither may import
the other. Unknown keys are refused and ``format`` is checked, so a node
never half-understands a bundle made by a newer server. Face templates are
carried sealed (`WatchlistFaces`): each template is AES-256-GCM encrypted
under a key made for this bundle, and that key is wrapped once per node in
scope (ECDH P-256 with the node certificate's key, HKDF-SHA256, AES-GCM), so
a template is never plaintext in the bundle, on the wire or on a node's disk.
The byte strings both sides feed the ciphers (`key_info`, `template_aad`) are
defined here, once; the ciphers live on each side (proto imports no crypto).
A body without faces encodes exactly as before the field existed, so nodes
that predate it verify plate-only bundles as they always did.

The sealed faces also carry the list's face-match threshold (`threshold`,
cosine similarity of the embedder the bundle names): the category's entry in
`FACE_THRESHOLDS` unless an admin set another in the server's settings. A
node applies it to that list's templates and refuses a bundle whose
threshold is outside `FACE_THRESHOLD_RANGE`; a bundle made before the field
existed (no `threshold` key) still verifies, and the node then uses its own
copy of the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from proto.codec import encode_canonical
from proto.messages import Name, Sha256Hex, ShortText, UtcDatetime

__all__ = [
    "CATEGORIES",
    "FACE_SCHEME",
    "FACE_THRESHOLDS",
    "FACE_THRESHOLD_RANGE",
    "PAYLOAD_TYPE",
    "SIGNER_NAME",
    "Category",
    "SealedKey",
    "SealedTemplate",
    "SignedWatchlist",
    "WatchlistBody",
    "WatchlistFaces",
    "WatchlistPlate",
    "key_info",
    "signed_payload",
    "template_aad",
]

PAYLOAD_TYPE = "nigehbaan.watchlist.bundle.v1"
SIGNER_NAME = "watchlist-signer"

Category = Literal[
    "wanted_person", "stolen_vehicle", "missing_person", "missing_child", "suspect", "other"
]
CATEGORIES: tuple[str, ...] = (
    "wanted_person", "stolen_vehicle", "missing_person", "missing_child", "suspect", "other",
)  # fmt: skip
# Face-match thresholds per category (SFace int8bq cosine, the shipped embedder), set from
# the false-accept rates `nigehbaan bench faces --impostors all` measured on the dev photos
# (docs/faces.md, "Thresholds"): stricter where a false accept sends police after the wrong
# person, looser where a miss costs more than a second look.
FACE_THRESHOLDS: dict[str, float] = {
    "wanted_person": 0.46,
    "suspect": 0.46,
    "missing_person": 0.40,
    "missing_child": 0.40,
    "other": 0.42,
    "stolen_vehicle": 0.42,  # a vehicle list carries no faces; here so every category has one
}
# What a node accepts from a bundle: below 0.30 impostors pass at several percent on the dev
# photos, above 0.80 hardly any genuine pair passes; either is a mistake, not a policy.
FACE_THRESHOLD_RANGE: tuple[float, float] = (0.30, 0.80)
PlateKey = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")]
MAX_BUNDLE_PLATES = 50_000  # 10,000-plate lists travel over HTTPS (the command has a URL)
MAX_BUNDLE_PERSONS = 5_000
MAX_RECIPIENTS = 20_000
FACE_SCHEME: Literal["ecdh-p256-hkdf-sha256-aes256gcm"] = "ecdh-p256-hkdf-sha256-aes256gcm"
B64 = r"^[A-Za-z0-9+/]*={0,2}$"
# District and site names as the fleet stores them (nodes registered through the API may
# carry "Gulberg"; a birth's are lower-case names): compared as they are.
ScopeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WatchlistPlate(_Model):
    """One hotlisted plate: its canonical key and the entry it came from."""

    entry_id: Name = Field(description="the server's entry id, quoted back in a hit")
    key: PlateKey = Field(description="canonical key (proto.plates.normalise_plate)")
    note: ShortText | None = None


class SealedKey(_Model):
    """The bundle's template key wrapped for one node (ECDH with its certificate's key)."""

    node_id: Name
    key_sha256: Sha256Hex = Field(
        description="SHA-256 of the node certificate's public key (DER SubjectPublicKeyInfo)"
    )
    ephemeral: Annotated[str, StringConstraints(min_length=88, max_length=88, pattern=B64)] = Field(
        description="base64 of the server's one-time P-256 public point (uncompressed)"
    )
    nonce: Annotated[str, StringConstraints(min_length=16, max_length=16, pattern=B64)]
    wrapped: Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=B64)] = Field(
        description="base64 AES-256-GCM of the 32-byte template key (+16 tag)"
    )


class SealedTemplate(_Model):
    """One person's face template, AES-256-GCM under the bundle's template key."""

    entry_id: Name = Field(description="the server's entry id, quoted back in a hit")
    photo_sha256: Sha256Hex | None = Field(
        default=None, description="the enrolment photo the template came from"
    )
    nonce: Annotated[str, StringConstraints(min_length=16, max_length=16, pattern=B64)]
    ciphertext: Annotated[str, StringConstraints(min_length=8, max_length=8192, pattern=B64)] = (
        Field(description="base64 AES-256-GCM of the little-endian float32 vector (+16 tag)")
    )


class WatchlistFaces(_Model):
    """The person entries' templates, sealed for the nodes in scope, and the model they need."""

    scheme: Literal["ecdh-p256-hkdf-sha256-aes256gcm"] = FACE_SCHEME
    model: ShortText = Field(description="embedder name and version (the manifest's)")
    model_sha256: Sha256Hex = Field(description="the embedder file's SHA-256 the node must run")
    dim: Annotated[int, Field(ge=1, le=2048)] = 128
    recipients: Annotated[list[SealedKey], Field(max_length=MAX_RECIPIENTS)] = Field(
        default_factory=list
    )
    templates: Annotated[list[SealedTemplate], Field(max_length=MAX_BUNDLE_PERSONS * 8)] = Field(
        default_factory=list
    )
    threshold: Annotated[float, Field(ge=-1.0, le=1.0)] | None = Field(
        default=None,
        description="cosine similarity a face must reach for this list (the node checks it "
        "against FACE_THRESHOLD_RANGE); left out of the encoding when none",
    )

    @model_serializer(mode="wrap")
    def _without_empty_threshold(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        # A bundle signed before `threshold` existed must encode byte for byte as it was signed.
        data = handler(self)
        if isinstance(data, dict) and data.get("threshold", 0) is None:
            del data["threshold"]
        return data


class WatchlistBody(_Model):
    """What a signature covers: one watchlist at one version."""

    format: Literal[1] = Field(default=1, description="bundle format; refused when unknown")
    watchlist_id: Name
    version: Annotated[int, Field(ge=1, le=2**63 - 1)] = Field(
        description="grows with every change; a node refuses a version at or below its own"
    )
    category: Category
    purpose: ShortText
    owner_agency: ShortText
    issued_at: UtcDatetime
    expires_at: UtcDatetime
    districts: Annotated[list[ScopeName], Field(max_length=256)] = Field(default_factory=list)
    sites: Annotated[list[ScopeName], Field(max_length=1024)] = Field(default_factory=list)
    plates: Annotated[list[WatchlistPlate], Field(max_length=MAX_BUNDLE_PLATES)] = Field(
        default_factory=list
    )
    persons: Annotated[int, Field(ge=0)] = Field(
        default=0, description="person entries on the list"
    )
    faces: WatchlistFaces | None = Field(
        default=None, description="sealed face templates (left out of the encoding when none)"
    )

    @model_serializer(mode="wrap")
    def _without_empty_faces(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> Any:
        # A plate-only body must encode (and so sign) byte for byte as before `faces`
        # existed, and carry no key an older node's extra="forbid" would refuse.
        data = handler(self)
        if isinstance(data, dict) and data.get("faces", 0) is None:
            del data["faces"]
        return data


class SignedWatchlist(_Model):
    """A body, its signature and the certificates to check it against the fleet CA."""

    body: WatchlistBody
    signature: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        description="base64 DER ECDSA-SHA256 over signed_payload(body)"
    )
    signer_pem: Annotated[str, StringConstraints(min_length=64, max_length=16 * 1024)] = Field(
        description="the signing certificate, then the issuing CA certificate (PEM)"
    )


def signed_payload(body: WatchlistBody) -> bytes:
    """The bytes a bundle's signature covers: canonical JSON of the typed body."""
    return encode_canonical({"type": PAYLOAD_TYPE, "body": body.model_dump(mode="json")})


def is_expired(body: WatchlistBody, *, now: datetime) -> bool:
    """Whether `body` is past its expiry at `now`."""
    return now >= body.expires_at


def key_info(*, watchlist_id: str, version: int, node_id: str) -> bytes:
    """HKDF info and AES-GCM associated data of one node's wrapped template key."""
    return f"nigehbaan.watchlist.key.v1|{watchlist_id}|{version}|{node_id}".encode()


def template_aad(*, watchlist_id: str, version: int, entry_id: str) -> bytes:
    """AES-GCM associated data of one sealed template (binds it to its list and entry)."""
    return f"nigehbaan.watchlist.template.v1|{watchlist_id}|{version}|{entry_id}".encode()
