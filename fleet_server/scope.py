"""Who may see what: a user's (or API token's) scope of districts, and stated purposes.

Every node carries a `district`, and so does every alert (copied from its
node). A `Scope` is an agency and either a set of districts or every
district. Routes never compare districts themselves: they ask the scope
(`allows`, `filter`, `filter_nodes`), so one rule decides for the API, the
live feed and its replay. Rows without a district (a node registered but
not yet born, ingest counters for unknown nodes) are visible only to an
every-district scope: unknown is not "everyone's". See docs/access.md.

Evidence-like data (snapshots, watchlist hits) is viewed only with a stated
`Purpose` (a case or FIR number, an alert id, or a free-text note), and
every such view is recorded (`record_access`).

Errors::

    FleetServerError
     └── ScopeError
          └── PurposeInvalid      missing or malformed stated purpose
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.errors import FleetServerError
from fleet_server.models import DataAccess, Node, User, utcnow

logger = logging.getLogger(__name__)

__all__ = [
    "PURPOSE_KINDS",
    "Purpose",
    "PurposeInvalid",
    "Scope",
    "ScopeError",
    "parse_purpose",
    "record_access",
]

_Q = TypeVar("_Q")


class ScopeError(FleetServerError):
    """Root of scope and purpose refusals."""


class PurposeInvalid(ScopeError):
    """The stated purpose is missing or not one of the accepted forms."""


@dataclass(frozen=True)
class Scope:
    """An agency and the districts it may see; `districts is None` means every district."""

    agency: str | None
    districts: frozenset[str] | None

    @classmethod
    def everything(cls, *, agency: str | None = None) -> Scope:
        """The command centre's scope: every district."""
        return cls(agency=agency, districts=None)

    @classmethod
    def of(cls, *, agency: str | None, districts: Iterable[str] | None) -> Scope:
        """A scope from stored fields (user row or API token): None = every district."""
        return cls(agency=agency, districts=None if districts is None else frozenset(districts))

    @classmethod
    def for_user(cls, user: User) -> Scope:
        """The scope stored on a user row."""
        return cls.of(agency=user.agency, districts=user.districts)

    @property
    def is_all(self) -> bool:
        """True for an every-district (command centre) scope."""
        return self.districts is None

    def allows(self, district: str | None) -> bool:
        """May this scope see a row of `district`? A row with no district: only `all`."""
        if self.districts is None:
            return True
        return district is not None and district in self.districts

    def filter(self, query: _Q, column: Any) -> _Q:
        """`query` narrowed to rows whose `column` (a district column) is in scope."""
        if self.districts is None:
            return query
        return query.where(col(column).in_(sorted(self.districts)))  # type: ignore[attr-defined,no-any-return]

    def node_ids(self) -> Any:
        """A subquery of the node ids in scope (for tables keyed by node id)."""
        return self.filter(select(Node.node_id), Node.district)

    def filter_nodes(self, query: _Q, node_id_column: Any) -> _Q:
        """`query` narrowed to rows whose `node_id_column` names a node in scope."""
        if self.districts is None:
            return query
        return query.where(col(node_id_column).in_(self.node_ids()))  # type: ignore[attr-defined,no-any-return]

    def allows_node(self, session: Session, node_id: str) -> bool:
        """Is the node in scope? An unknown node is in scope only for `all`."""
        if self.districts is None:
            return True
        node = session.get(Node, node_id)
        return node is not None and self.allows(node.district)

    def covers(self, other: Scope) -> bool:
        """Does this scope include all of `other` (may it hand `other` out)?"""
        if self.districts is None:
            return True
        return other.districts is not None and other.districts <= self.districts


PURPOSE_KINDS = ("case", "fir", "alert", "note")
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ./_-]{0,63}$")
_ALERT_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
MIN_NOTE = 10
MAX_NOTE = 500


@dataclass(frozen=True)
class Purpose:
    """Why someone views evidence-like data: `kind` in PURPOSE_KINDS and its reference."""

    kind: str
    reference: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.reference}"


def parse_purpose(text: str | None) -> Purpose:
    """The purpose in `case:<no>`, `fir:<no>`, `alert:<id>` or `note:<text>`; else PurposeInvalid.

    A case or FIR number is letters, digits and ` ./_-` (up to 64); an alert id
    is a ULID; a note is free text of 10 to 500 characters, so "x" is not a reason.
    """
    if text is None or not text.strip():
        raise PurposeInvalid(
            "state a purpose: case:<number>, fir:<number>, alert:<id> or note:<text>"
        )
    kind, sep, reference = text.strip().partition(":")
    kind = kind.strip().lower()
    reference = reference.strip()
    if not sep or kind not in PURPOSE_KINDS:
        raise PurposeInvalid(f"purpose must start with one of {', '.join(PURPOSE_KINDS)} and ':'")
    if kind in ("case", "fir") and not _REFERENCE.match(reference):
        raise PurposeInvalid(f"{kind} number must be 1-64 letters, digits or ' ./_-'")
    if kind == "alert" and not _ALERT_ID.match(reference.upper()):
        raise PurposeInvalid("alert must be an alert id (26 characters)")
    if kind == "alert":
        reference = reference.upper()
    if kind == "note" and not MIN_NOTE <= len(reference) <= MAX_NOTE:
        raise PurposeInvalid(f"a note must say why in {MIN_NOTE} to {MAX_NOTE} characters")
    return Purpose(kind=kind, reference=reference)


def record_access(
    *,
    session: Session,
    actor: str,
    agency: str | None,
    resource: str,
    object_id: str,
    purpose: Purpose,
    alert_id: str | None = None,
) -> DataAccess:
    """Record (committed) that `actor` viewed `resource` `object_id` for `purpose`.

    Committed before the data is returned, so a view that was served is never
    missing from the record. The audit log (issue 15) appends the same fact,
    with the alert the view was for (`alert_id`) when there is one.
    """
    row = DataAccess(
        at=utcnow(),
        actor=actor[:128],
        agency=agency,
        resource=resource[:64],
        object_id=object_id[:128],
        purpose_kind=purpose.kind,
        purpose_ref=purpose.reference,
    )
    session.add(row)
    audit.record(
        session, actor=actor[:120] if ":" in actor else f"user:{actor}"[:120],
        action="data.viewed", object=f"{resource}:{object_id}"[:200], now=row.at,
        detail={"agency": agency, "purpose": purpose.kind, "reference": purpose.reference,
                **({"alert_id": alert_id} if alert_id else {})},
    )  # fmt: skip
    session.commit()
    logger.info("%s viewed %s %s for %s", actor, resource, object_id, purpose)
    return row
