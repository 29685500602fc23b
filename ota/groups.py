"""A node's own OTA group, from its node id: the same on the node and on the server.

A group name is what TUF's director role is named after (`group-<g>`, paths
`groups/<g>/*`): lower-case letters, digits and '-', at most 63 characters.
Node ids also allow '_' and run to 64 characters, so the id cannot always be
the group as it is. The mapping is one-to-one in practice: an id that is
already a group name is its own group; any other id becomes a readable
prefix and 16 hex digits of its SHA-256, so `a_b` and `a-b`, or two 64-character
ids that differ only in their last character, never share a group (a shared
group is only ever made on purpose, by an `ota-group:<g>` tag and the node's
`[ota] group`).
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["GROUP_PATTERN", "is_group_name", "own_group"]

GROUP_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_GROUP = re.compile(GROUP_PATTERN)
_HASH_DIGITS = 16


def is_group_name(text: str) -> bool:
    """Whether `text` may name a group as it is."""
    return _GROUP.match(text) is not None


def own_group(node_id: str) -> str:
    """The group a node is in unless it is given a shared one: see the module docstring."""
    if is_group_name(node_id):
        return node_id
    digest = hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:_HASH_DIGITS]
    readable = re.sub(r"[^a-z0-9-]", "-", node_id.lower())[: 63 - _HASH_DIGITS - 1]
    return f"{readable}-{digest}"
