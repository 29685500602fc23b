"""Globally unique, time-ordered identifiers (ULIDs) for events and requests.

ULIDs sort by creation time, are 26 characters of Crockford base32, and are
generated offline on the node, which is what an at-least-once outbox needs:
the id is fixed when the event is first written and survives every resend.
"""

from __future__ import annotations

import re

from ulid import ULID

ULID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"
_ULID_RE = re.compile(ULID_PATTERN)


def new_event_id() -> str:
    """A fresh event id; monotonic within one millisecond on this process."""
    return str(ULID())


def new_request_id() -> str:
    """A fresh id for a server→node command and its reply."""
    return str(ULID())


def is_ulid(value: str) -> bool:
    """True when `value` is a canonical (upper-case) ULID string."""
    return bool(_ULID_RE.match(value))


def ulid_millis(value: str) -> int:
    """The creation time (Unix milliseconds) encoded in a ULID."""
    return int(ULID.from_str(value).milliseconds)
