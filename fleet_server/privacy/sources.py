"""A private camera's source as the registration API takes it: stream URL, ONVIF address, device.

The node opens the source itself (docs/privacy.md): an RTSP/HTTP URL, a
``/dev/videoN`` device, or an ONVIF device address
``onvif://user:password@host[:port][/profile]`` that the node resolves to
its stream through ONVIF (`edge_agent.camera.onvif`, which parses the same
form). `source_problem` says what is wrong with a source in words an admin
can act on — and never repeats it, since it may carry a password. The
server never imports the node's code, so the ONVIF form's rules are
written here again; `tests/unit/test_onvif_source_validation.py` holds the
two to the same cases.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["ONVIF_FORM", "SOURCE_PATTERN", "is_onvif", "source_problem"]

SOURCE_PATTERN = r"^((rtsp|rtsps|http|https|onvif)://\S+|/dev/video[0-9]{1,2})$"
ONVIF_FORM = "onvif://user:password@host[:port][/profile]"


def is_onvif(source: str) -> bool:
    return source.startswith("onvif://")


def source_problem(source: str) -> str | None:
    """What is wrong with `source` (None: the node can try to open it)."""
    if not re.fullmatch(SOURCE_PATTERN, source):
        return (
            "source must be an rtsp://, rtsps://, http:// or https:// URL, an ONVIF device "
            f"({ONVIF_FORM}), or /dev/videoN"
        )
    return _onvif_problem(source) if is_onvif(source) else None


def _onvif_problem(source: str) -> str | None:
    try:
        parts = urlsplit(source)
    except ValueError:
        return f"the ONVIF source has a bad host: {ONVIF_FORM}"
    if parts.query or parts.fragment or "@" in parts.path:
        return (
            "the ONVIF source has a '/', '?', '#' or '@' in the user or password: percent-encode "
            f"them (%2F, %3F, %23, %40): {ONVIF_FORM}"
        )
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError:
        return f"the ONVIF source has a bad port (1-65535): {ONVIF_FORM}"
    if not parts.hostname:
        return f"the ONVIF source names no host: {ONVIF_FORM}"
    if "@" in parts.netloc and not parts.username:
        return f"the ONVIF source has an '@' but no user: {ONVIF_FORM}"
    path = parts.path.strip("/")
    if "/" in path:
        return (
            "the ONVIF source's path is one profile token or name (percent-encode a '/' in the "
            f"password as %2F): {ONVIF_FORM}"
        )
    if path and len(unquote(path)) > 64:
        return "an ONVIF profile token or name is at most 64 characters"
    return None
