"""HTTP Range for target downloads, as pure functions (RFC 9110 §14).

A node on LTE resumes a cut download with `Range: bytes=<done>-` and
`If-Range: "<sha256>"`: the server answers 206 with the rest, 200 with the
whole file when the validator no longer matches, and 416 for a range that
starts past the end. One range per request: a multi-range request gets the
whole file (a server may ignore Range), which no node sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ByteRange", "RangeNotSatisfiable", "parse_range"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ValueError):
    """The range lies wholly outside the file (HTTP 416)."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start`..`end` inclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, *, size: int) -> ByteRange | None:
    """The range to send, or None for the whole file.

    A header that is not one well-formed byte range is ignored (whole file);
    one that is well formed but unsatisfiable raises `RangeNotSatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"bytes=-{suffix} of {size}")
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid: ignored (RFC 9110 §14.1.1)
    end = int(last) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(f"bytes={start}- of {size}")
    return ByteRange(start, min(end, size - 1))
