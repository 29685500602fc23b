"""Finding a node the way a technician at a pole can name it: node id, serial, or its QR label.

A node's QR label carries the technician page's URL with `?node=<node_id>`
(docs/console.md), so scanning it with a phone's camera opens the page on
that node; a scanner app that hands over the label's text instead pastes the
same URL, and `node_ids_in` reads the node id out of it. Typed text is tried
as an exact node id, then an exact serial (letter case ignored, as serials
are read off a sticker), then as the start of either, so the last step of a
search on a phone keyboard can be short.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qs, urlsplit

from sqlmodel import Session, col, func, or_, select

from fleet_server.models import Node

__all__ = ["MAX_MATCHES", "find_nodes", "label_text"]

MAX_MATCHES: Final = 20
_URN_PREFIX: Final = "nigehbaan:node:"


def label_text(text: str) -> str:
    """What to search for in scanned or typed `text`: the node id a label URL names, or the text."""
    text = text.strip()
    if text.lower().startswith(_URN_PREFIX):
        return text[len(_URN_PREFIX) :].strip()
    if "://" in text:
        node = parse_qs(urlsplit(text).query).get("node")
        if node and node[0].strip():
            return node[0].strip()
    return text


def find_nodes(*, session: Session, text: str, limit: int = MAX_MATCHES) -> list[Node]:
    """Nodes matching `text` (see the module docstring), best match first; empty for no text."""
    wanted = label_text(text)
    if not wanted:
        return []
    exact = session.get(Node, wanted)
    if exact is not None:
        return [exact]
    by_serial = session.exec(
        select(Node)
        .where(func.lower(col(Node.serial)) == wanted.lower())
        .order_by(col(Node.node_id))
        .limit(limit)
    ).all()
    if by_serial:
        return list(by_serial)
    # LIKE wildcards in what was typed are matched literally.
    escaped = wanted.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    prefix = f"{escaped}%"
    starts = session.exec(
        select(Node)
        .where(
            or_(
                func.lower(col(Node.node_id)).like(prefix, escape="\\"),
                func.lower(col(Node.serial)).like(prefix, escape="\\"),
            )
        )
        .order_by(col(Node.node_id))
        .limit(limit)
    ).all()
    return list(starts)
