"""Plate text as both sides compare it: normalising, and the look-alike characters.

A plate read is compared by its canonical key (letters and digits, upper
case, no separators). OCR on Pakistani plates confuses a few characters with
each other (O/0/D/Q, I/1/L, Z/2, S/5, B/8, G/6); the server's fuzzy search
("within one confusable character") uses `LOOKALIKE_GROUPS` below, so the
table is the wire contract's, shared by the fleet server and anything on the
node that needs it. The node's position-aware corrections (a 0 in a letter
position is a D, a B in a digit position an 8) are data in the plate rules
files (``edge_agent/anpr/rules/*.yaml``); a unit test keeps those consistent
with this table.
"""

from __future__ import annotations

__all__ = [
    "LOOKALIKE_GROUPS",
    "MAX_PLATE_KEY",
    "lookalikes",
    "normalise_plate",
    "one_confusion_variants",
]

# Characters OCR mistakes for one another on these plates; each group is interchangeable.
LOOKALIKE_GROUPS: tuple[frozenset[str], ...] = (
    frozenset("O0DQ"),
    frozenset("I1L"),
    frozenset("Z2"),
    frozenset("S5"),
    frozenset("B8"),
    frozenset("G6"),
)
MAX_PLATE_KEY = 16  # PlateEvent.plate and .canonical are at most 16 characters

_GROUP_OF: dict[str, frozenset[str]] = {ch: g for g in LOOKALIKE_GROUPS for ch in g}


def normalise_plate(text: str) -> str:
    """`text` as a key: upper case, letters and digits only (``lea-1234`` → ``LEA1234``)."""
    return "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())


def lookalikes(ch: str) -> frozenset[str]:
    """The characters `ch` may have been read as (without `ch` itself; empty when none)."""
    group = _GROUP_OF.get(ch.upper())
    return group - {ch.upper()} if group is not None else frozenset()


def one_confusion_variants(text: str) -> list[str]:
    """`text` (normalised) and every key that differs from it in one look-alike character.

    Sorted, `text` included; at most 1 + 3 × len(text) keys, so a search can
    send them as one ``IN (…)`` list against an indexed column.
    """
    key = normalise_plate(text)
    variants = {key}
    for i, ch in enumerate(key):
        for other in lookalikes(ch):
            variants.add(key[:i] + other + key[i + 1 :])
    return sorted(variants)
