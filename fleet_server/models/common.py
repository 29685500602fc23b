"""Column types and helpers every table shares.

Timestamps are stored as naive UTC (SQLite has no time zone type) and handed
back as aware UTC datetimes, so no code compares an aware time with a naive
one, whatever the backend.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from ulid import ULID


class UtcDateTime(TypeDecorator[datetime]):
    """A DateTime column that always round-trips aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh time-ordered id (ULID) for server-made rows such as alerts."""
    return str(ULID())
