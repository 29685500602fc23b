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
not part of this format yet (see docs/watchlists.md: person entries are
counted, never carried in plaintext).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from proto.codec import encode_canonical
from proto.messages import Name, ShortText, UtcDatetime

__all__ = [
    "CATEGORIES",
    "PAYLOAD_TYPE",
    "SIGNER_NAME",
    "Category",
    "SignedWatchlist",
    "WatchlistBody",
    "WatchlistPlate",
    "signed_payload",
]

PAYLOAD_TYPE = "nigehbaan.watchlist.bundle.v1"
SIGNER_NAME = "watchlist-signer"

Category = Literal[
    "wanted_person", "stolen_vehicle", "missing_person", "missing_child", "suspect", "other"
]
CATEGORIES: tuple[str, ...] = (
    "wanted_person", "stolen_vehicle", "missing_person", "missing_child", "suspect", "other",
)  # fmt: skip
PlateKey = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")]
MAX_BUNDLE_PLATES = 5_000
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
        default=0, description="person entries on the list (templates are not carried yet)"
    )


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
