"""A node's signed evidence claim: what the node says it captured, and the bytes it signs.

Evidence files (plate crops, watchlist-hit crops, panic snapshots) never
travel over MQTT: the node uploads them over HTTPS with its client
certificate (docs/evidence.md). Before that, the node signs an
`EvidenceClaim` — the file's SHA-256 and size, and the capture metadata
(node, camera, time, the event it belongs to, its data class) — with its own
private key (ECDSA P-256 / SHA-256 over `signed_payload`, the claim's
canonical JSON). The server verifies the signature against the node's
certificate on arrival, and an export bundle carries the claim, the
signature and the certificate chain, so a court can check it offline with
only the fleet CA certificate.

It lives in `proto` because the node signs it and the server (and the
offline verifier) check it, and neither side may import the other. Unknown
keys are refused, so a node never signs something a server half-understands.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from proto.codec import encode_canonical
from proto.messages import Name, NodeId, Sha256Hex, Ulid, UtcDatetime

__all__ = [
    "CLAIM_FORMAT",
    "DATA_CLASSES",
    "MAX_EVIDENCE_BYTES",
    "DataClass",
    "EvidenceClaim",
    "SignedClaim",
    "signed_payload",
]

CLAIM_FORMAT: Final = "nigehbaan.evidence.claim.v1"
# The data classes retention is configured by (docs/evidence.md). A claim names
# what the file is; "case evidence" is not a capture class but a state on the
# server (attached to a case), so it is not here.
DataClass = Literal["plate_crop", "face_crop", "panic_snapshot"]
DATA_CLASSES: tuple[str, ...] = ("plate_crop", "face_crop", "panic_snapshot")
# The largest file a claim may describe (a full-resolution JPEG frame is far smaller).
MAX_EVIDENCE_BYTES = 64 * 1024 * 1024
ContentType = Literal["image/jpeg", "image/png", "application/octet-stream"]


class EvidenceClaim(BaseModel):
    """What the node signs: the file by hash and size, and where, when and why it was captured."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    format: Literal["nigehbaan.evidence.claim.v1"] = CLAIM_FORMAT
    sha256: Sha256Hex
    size: Annotated[int, Field(ge=1, le=MAX_EVIDENCE_BYTES)]
    content_type: ContentType = "image/jpeg"
    data_class: DataClass
    node_id: NodeId
    camera_id: Name | None = None
    captured_at: UtcDatetime
    event_id: Ulid | None = Field(default=None, description="the event this file belongs to")
    event_type: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] | None = None
    alert_id: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_.:-]{1,64}$")] | None = Field(
        default=None, description="the alert a snapshot was taken for (the snapshot command's)"
    )


class SignedClaim(BaseModel):
    """A claim with the node's base64 DER ECDSA-SHA256 signature over `signed_payload`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    claim: EvidenceClaim
    signature: Annotated[str, StringConstraints(min_length=8, max_length=256)]


def signed_payload(claim: EvidenceClaim) -> bytes:
    """The exact bytes the node signs and every verifier checks (canonical JSON)."""
    return encode_canonical(claim.model_dump(mode="json", exclude_none=True))
