"""Bearer tokens never reach the server's log (the feed carries one in its URL)."""

from __future__ import annotations

import logging

import pytest

from fleet_server.log_redaction import RedactTokens, redact


def test_query_tokens_are_redacted_and_the_rest_kept() -> None:
    line = '127.0.0.1:5 - "GET /api/v1/stream/alerts?access_token=eyJ.abc.def&x=1 HTTP/1.1" 200'
    assert redact(line) == (
        '127.0.0.1:5 - "GET /api/v1/stream/alerts?access_token=***&x=1 HTTP/1.1" 200'
    )


def test_the_filter_redacts_uvicorn_style_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction.access")
    logger.addFilter(RedactTokens())
    with caplog.at_level(logging.INFO, logger="test.redaction.access"):
        logger.info('%s - "%s %s"', "127.0.0.1", "GET", "/feed?access_token=SECRET123")
    assert "SECRET123" not in caplog.text
    assert "access_token=***" in caplog.text
