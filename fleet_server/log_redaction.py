"""Keeps bearer tokens out of the server's logs.

The console's live feed is an EventSource, which cannot set headers, so its
token travels as `?access_token=…` and would otherwise be written verbatim
into uvicorn's access log — where anyone who can read logs could replay it
until it expires. This filter rewrites such values to `***` in every record
of the loggers it is attached to.
"""

from __future__ import annotations

import logging
import re

_TOKEN_IN_QUERY = re.compile(r"(?i)((?:access_token|token)=)[^&\s\"']+")


def redact(text: str) -> str:
    """`text` with every `access_token=`/`token=` query value replaced by `***`."""
    return _TOKEN_IN_QUERY.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """A logging filter that redacts tokens in the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install(logger_names: tuple[str, ...] = ("uvicorn.access", "uvicorn.error")) -> None:
    """Attach the filter to the named loggers (idempotent)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
