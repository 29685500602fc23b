"""The HTTPS enrollment contract: paths, request and answer bodies, refusal reasons.

A node enrolls before it has a certificate, so this part of the contract is
HTTPS, not MQTT (docs/provisioning.md): ``POST /api/v1/enroll`` with an
`EnrollRequest`, answered by an `EnrollResponse` (200), an `EnrollPending`
(202, the manual accept queue; the node polls ``GET /api/v1/enroll/<id>``)
or a refusal; ``POST /api/v1/enroll/renew`` with a `RenewRequest`, answered
the same way. The node (`edge_agent.enroll`) and the server
(`fleet_server.api.routes.enrollment`) both build and read these models;
neither spells a field, a path or a reason code by hand. Golden files and
JSON Schemas guard them like the MQTT payloads (`proto.catalog`).

Every refusal is ``{"detail": {"reason": CODE, "message": TEXT}}``
(`RefusalBody`) with the HTTP status `REFUSAL_STATUS` gives for the code: the
node acts on the code (retry after 429, give up on 4xx, try again later on
5xx) and shows the message to the technician with `REFUSAL_HINTS`.

Compatibility follows the rest of the contract, "server upgrades first":
request bodies are closed (an unknown key is refused, so a node newer than
its server is noticed), answers are read leniently (unknown keys ignored,
an unknown reason code kept as text), so a server upgraded first can add a
field or a code without stranding nodes that are enrolling.

Errors::

    ProtoError
    └── EnrollmentRefused    the server said no: .reason (code), .message, .status
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proto.bundle import Location
from proto.errors import ProtoError

__all__ = [
    "API_ROOT",
    "ENROLL_POLL_ROUTE",
    "ENROLL_RENEW_ROUTE",
    "ENROLL_ROUTE",
    "REFUSAL_HINTS",
    "REFUSAL_STATUS",
    "EnrollPending",
    "EnrollRequest",
    "EnrollResponse",
    "EnrollmentRefused",
    "Refusal",
    "RefusalBody",
    "RefusalReason",
    "RenewRequest",
    "enroll_path",
    "enroll_poll_path",
    "parse_refusal",
    "refusal_detail",
    "refusal_status",
    "renew_path",
]

# Routes as the server's API router declares them (under `API_ROOT`).
API_ROOT = "/api/v1"
ENROLL_ROUTE = "/enroll"
ENROLL_POLL_ROUTE = "/enroll/{request_id}"
ENROLL_RENEW_ROUTE = "/enroll/renew"


def enroll_path() -> str:
    """Where a node posts its `EnrollRequest`."""
    return API_ROOT + ENROLL_ROUTE


def enroll_poll_path(request_id: str) -> str:
    """Where a queued node asks again about its request."""
    return API_ROOT + ENROLL_POLL_ROUTE.format(request_id=request_id)


def renew_path() -> str:
    """Where a node posts its `RenewRequest`."""
    return API_ROOT + ENROLL_RENEW_ROUTE


class RefusalReason(str, Enum):
    """Why the server said no: the codes docs/provisioning.md lists, one per thing to do."""

    TOKEN_UNKNOWN = "token_unknown"  # noqa: S105 - reason codes, not secrets
    TOKEN_EXPIRED = "token_expired"  # noqa: S105
    TOKEN_USED = "token_used"  # noqa: S105
    WRONG_SCOPE = "wrong_scope"
    SERIAL_UNKNOWN = "serial_unknown"
    KEY_MISMATCH = "key_mismatch"
    BAD_CSR = "bad_csr"
    NODE_ID_TAKEN = "node_id_taken"
    NODE_ID_RESERVED = "node_id_reserved"
    BAD_NODE_ID = "bad_node_id"
    PENDING_APPROVAL = "pending_approval"  # a 202 answer's reason, not a refusal
    REJECTED = "rejected"
    REVOKED = "revoked"
    DECOMMISSIONED = "decommissioned"
    RATE_LIMITED = "rate_limited"
    CERT_INVALID = "cert_invalid"
    REQUEST_UNKNOWN = "request_unknown"
    REQUEST_DECIDED = "request_decided"
    NODE_UNKNOWN = "node_unknown"
    ILLEGAL_TRANSITION = "illegal_transition"
    FORBIDDEN = "forbidden"
    BAD_CSV = "bad_csv"
    PKI_UNAVAILABLE = "pki_unavailable"


_R = RefusalReason

# The HTTP status of each refusal: 4xx the node should not retry as it is,
# 429 it waits out (Retry-After), 5xx is the server's problem.
REFUSAL_STATUS: Mapping[RefusalReason, int] = {
    _R.TOKEN_UNKNOWN: 403,
    _R.TOKEN_EXPIRED: 403,
    _R.TOKEN_USED: 403,
    _R.WRONG_SCOPE: 403,
    _R.SERIAL_UNKNOWN: 403,
    _R.KEY_MISMATCH: 403,
    _R.BAD_CSR: 400,
    _R.NODE_ID_TAKEN: 409,
    _R.NODE_ID_RESERVED: 400,
    _R.BAD_NODE_ID: 400,
    _R.PENDING_APPROVAL: 202,
    _R.REJECTED: 403,
    _R.REVOKED: 403,
    _R.DECOMMISSIONED: 403,
    _R.RATE_LIMITED: 429,
    _R.CERT_INVALID: 403,
    _R.REQUEST_UNKNOWN: 404,
    _R.REQUEST_DECIDED: 409,
    _R.NODE_UNKNOWN: 404,
    _R.ILLEGAL_TRANSITION: 409,
    _R.FORBIDDEN: 403,
    _R.BAD_CSV: 400,
    _R.PKI_UNAVAILABLE: 503,
}

# What a technician at the pillar can do about each refusal a node may meet.
REFUSAL_HINTS: Mapping[RefusalReason, str] = {
    _R.TOKEN_UNKNOWN: "the enrollment token is not known to this server; check the bundle's "
    "server_url and make a new token",
    _R.TOKEN_EXPIRED: "the enrollment token has expired; make a new one and flash the bundle again",
    _R.TOKEN_USED: "the enrollment token was already used by another node; tokens are "
    "single-use, make a new one",
    _R.WRONG_SCOPE: "the token is scoped to another district/site; use a token for this site "
    "or correct --site/--district",
    _R.SERIAL_UNKNOWN: "this serial is not preauthorized; import it (serial + public key) or "
    "flash a bundle with a token",
    _R.KEY_MISMATCH: "the node's key does not match the key imported for this serial; "
    "re-import the node's public key",
    _R.BAD_CSR: "the server could not accept the node's certificate request (wrong key type or "
    "node id); check the bundle's node_id",
    _R.NODE_ID_TAKEN: "another node already uses this node id; choose another --node-id",
    _R.NODE_ID_RESERVED: "this node id is reserved; choose another --node-id",
    _R.PENDING_APPROVAL: "enrollment waits for an administrator to accept it",
    _R.REJECTED: "an administrator rejected this node's enrollment request",
    _R.REVOKED: "this node's certificate was revoked; it must be enrolled again with a new token",
    _R.DECOMMISSIONED: "this node is decommissioned; an administrator must register it again",
    _R.RATE_LIMITED: "too many enrollment attempts; wait a minute and try again",
    _R.CERT_INVALID: "the node's current certificate cannot be renewed (not ours, or expired "
    "too long ago); enroll again with a new token",
}


class _Request(BaseModel):
    """A body the node sends: closed, so the server notices a node newer than itself."""

    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    """A body the server sends: read leniently, so a server upgraded first may add fields."""

    model_config = ConfigDict(extra="ignore")


class EnrollRequest(_Request):
    """``POST /api/v1/enroll``: a node's certificate request and how it may enroll."""

    serial: str = Field(min_length=1, max_length=64, description="hardware serial")
    csr_pem: str = Field(
        min_length=1, max_length=8192, description="PKCS#10 request, CN = node id, PEM"
    )
    token: str | None = Field(
        default=None, max_length=200, description="enrollment token; None for preauthorized"
    )
    node_id: str | None = Field(default=None, max_length=64, description="requested node id")
    site_id: str | None = Field(default=None, max_length=64, description="site (pillar)")
    district: str | None = Field(default=None, max_length=64, description="district")
    location: Location | None = Field(default=None, description="where the pillar stands")


class RenewRequest(_Request):
    """``POST /api/v1/enroll/renew``: a new certificate for the same key."""

    certificate_pem: str = Field(
        min_length=1, max_length=16384, description="the node's current certificate, PEM"
    )
    csr_pem: str = Field(
        min_length=1, max_length=8192, description="PKCS#10 request on the same key, PEM"
    )


class EnrollResponse(_Answer):
    """200 to enroll, poll and renew: the node's certificate, and where to use it."""

    node_id: str = Field(description="the node id the certificate names (its CN)")
    certificate_pem: str = Field(description="the node's certificate, PEM")
    ca_chain_pem: str = Field(description="the fleet CA chain (issuing + root), PEM")
    broker_url: str = Field(description="mqtts:// URL of the node-facing broker")
    api_url: str = Field(description="the fleet server's API base for later renewals")
    not_after: datetime = Field(description="the certificate's expiry (UTC)")


class EnrollPending(_Answer):
    """202: the request waits in the manual accept queue; poll `enroll_poll_path`."""

    request_id: str = Field(min_length=1, description="what to poll with")
    reason: Literal[RefusalReason.PENDING_APPROVAL] = RefusalReason.PENDING_APPROVAL


class Refusal(_Answer):
    """What the server says when it refuses: a code to act on and a message for a person."""

    reason: RefusalReason
    message: str = Field(description="what went wrong and what to do, for a person")


class RefusalBody(_Answer):
    """A refusal as it travels: FastAPI's ``detail`` envelope around a `Refusal`."""

    detail: Refusal


def refusal_detail(reason: RefusalReason | str, message: str) -> dict[str, str]:
    """The ``detail`` of a refusal body, as the server answers it.

    The admin API's own codes (``reply_pending``, ``mqtt_disabled``, …) are
    no node's business and stay outside `RefusalReason`, but travel in the
    same shape so one client reads every refusal.
    """
    try:
        return Refusal(reason=RefusalReason(reason), message=message).model_dump(mode="json")
    except ValueError:
        return {"reason": str(reason), "message": message}


def parse_refusal(payload: Any) -> Refusal | None:
    """The `Refusal` in an answer's decoded JSON, or None if it is not one of ours."""
    try:
        return RefusalBody.model_validate(payload).detail
    except ValidationError:
        return None


class EnrollmentRefused(ProtoError):
    """The server refused an enrollment request (or an administrator's enrollment action).

    One class for both ends: the server's data functions raise it and its API
    answers it as a `RefusalBody` with `status`; the node's client raises it
    when it reads that answer. `reason` is the code as text, so a code from a
    newer server (or a fallback such as ``http_404``) survives on an older node.
    """

    def __init__(self, reason: RefusalReason | str, message: str, *, status: int | None = None):
        code = reason.value if isinstance(reason, RefusalReason) else str(reason)
        super().__init__(f"{code}: {message}" if message else code)
        self.reason = code
        self.message = message
        self.status = status if status is not None else refusal_status(code)

    @classmethod
    def from_answer(cls, reason: str, message: str, *, status: int) -> EnrollmentRefused:
        """The refusal as a node reports it: code, the server's message and what to do, one text."""
        refused = cls(reason, message, status=status)
        text = f"{refused.reason}: {message}" if message else refused.reason
        hint = refused.hint
        if hint and hint not in text:
            text = f"{text} ({hint})"
        refused.message = text
        refused.args = (text,)
        return refused

    @property
    def hint(self) -> str | None:
        """What a technician can do about it, when the code is one the node may meet."""
        try:
            return REFUSAL_HINTS.get(RefusalReason(self.reason))
        except ValueError:
            return None

    def body(self) -> Refusal:
        """The refusal as the server answers it (the code must be one of `RefusalReason`)."""
        return Refusal(reason=RefusalReason(self.reason), message=self.message)


def refusal_status(reason: RefusalReason | str) -> int:
    """The HTTP status for `reason`; 400 for a code this side does not know."""
    try:
        return REFUSAL_STATUS[RefusalReason(reason)]
    except ValueError:
        return 400
