"""A 405's `Allow` header that lists every method the path supports.

FastAPI makes one route per method, and Starlette answers a 405 from the
first route whose path matched, so `OPTIONS /api/v1/nodes` said `Allow: GET`
although `POST` works too. HTTP (RFC 9110, 15.5.6) wants the full list; the
fuzzer flagged the difference. This ASGI middleware rewrites the header of a
405 from the OpenAPI document's paths (a public, version-stable view of the
routes); a path outside the document keeps Starlette's header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AllowHeaderMiddleware", "allowed_methods"]

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def allowed_methods(paths: Mapping[str, Mapping[str, Any]], path: str) -> list[str]:
    """The methods the document gives every path template matching `path`, sorted."""
    methods: set[str] = set()
    for template, item in paths.items():
        regex: re.Pattern[str] = compile_path(template)[0]
        if regex.match(path):
            methods |= {m.upper() for m in item if m in HTTP_METHODS}
    return sorted(methods)


class AllowHeaderMiddleware:
    """Replace a 405's `Allow` with the methods `paths()` documents for the request's path."""

    def __init__(self, app: ASGIApp, *, paths: Callable[[], Mapping[str, Mapping[str, Any]]]):
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = allowed_methods(self.paths(), scope["path"])
                if methods:
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"
                    ]
                    headers.append((b"allow", ", ".join(methods).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_allow)
