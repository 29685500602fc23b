"""Per-track voting: many imperfect reads of one plate → one text, how sure, and the best crop.

A reader gets a plate wrong in a character or two on some frames (blur, a
shadow across a digit, 1 read as I). `Voter` collects every read of one
track and votes per character position, each read weighing its confidence:
first the text length with the most weight, then at each position the
character with the most weight among reads of that length. The result's
`frames` is how many reads agree exactly with the voted text; its
`confidence` is the mean winning share per position times the mean
confidence of the reads that voted, so a plate read the same way on many
frames scores high and a split vote scores low. The best crop is the most
confident read that agrees (or, when none agrees exactly, the closest one).

The province is voted too, over the reads that agree: a caption or the
plate's colours may be legible on some frames only, so one frame naming
Islamabad beats three that named none; reads naming different provinces
leave the pass with none, unless one province holds at least
`PROVINCE_SHARE` of the weight that named any. The best read is then the
most confident agreeing read naming the voted province (its layout with
it), or the best read with no province.
Pure: reads in, a result out; the caller decides what to keep of the crops.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import Generic, TypeVar

from edge_agent.anpr.types import PlateRead

__all__ = ["PROVINCE_SHARE", "Vote", "Voter"]

C = TypeVar("C")

# The share of the province-naming weight one province needs to name the pass.
PROVINCE_SHARE = 2 / 3


@dataclass(frozen=True)
class Vote(Generic[C]):
    """The outcome of one track's vote."""

    text: str
    confidence: float
    frames: int
    reads: int
    best: PlateRead
    crop: C | None


class Voter(Generic[C]):
    """Collects one track's reads (with an optional crop each); see the module docstring."""

    def __init__(self) -> None:
        self.reads: list[tuple[PlateRead, C | None]] = []

    def __len__(self) -> int:
        return len(self.reads)

    def add(self, read: PlateRead, crop: C | None = None) -> None:
        self.reads.append((read, crop))

    @staticmethod
    def key(read: PlateRead) -> str:
        """What is voted on: the rules' canonical text, else the raw text, alphanumerics only."""
        text = read.canonical or read.text
        return "".join(ch for ch in text.upper() if ch.isalnum())

    def result(self) -> Vote[C] | None:
        """The voted text, or None when no read had any characters."""
        usable = [(r, c, self.key(r)) for r, c in self.reads]
        usable = [(r, c, k) for r, c, k in usable if k]
        if not usable:
            return None
        by_length: dict[int, float] = defaultdict(float)
        for read, _, key in usable:
            by_length[len(key)] += _weight(read)
        length = max(by_length, key=lambda n: (by_length[n], n))
        voters = [(r, c, k) for r, c, k in usable if len(k) == length]
        chars: list[str] = []
        shares: list[float] = []
        for i in range(length):
            weights: dict[str, float] = defaultdict(float)
            for read, _, key in voters:
                weights[key[i]] += _weight(read)
            total = sum(weights.values())
            winner = max(weights, key=lambda ch: (weights[ch], ch))
            chars.append(winner)
            shares.append(weights[winner] / total if total else 0.0)
        text = "".join(chars)
        agreeing = [(r, c) for r, c, k in voters if k == text]
        if agreeing:
            best, crop = max(agreeing, key=lambda rc: rc[0].confidence)
        else:
            best, crop, _ = max(
                voters, key=lambda rck: (_agreement(rck[2], text), rck[0].confidence)
            )
        best, crop = _with_province(agreeing or [(best, crop)], best, crop)
        mean_share = sum(shares) / len(shares)
        mean_conf = sum(min(1.0, max(0.0, r.confidence)) for r, _, _ in voters) / len(voters)
        return Vote(
            text=text,
            confidence=round(min(1.0, mean_share * mean_conf), 4),
            frames=max(1, len(agreeing)),
            reads=len(usable),
            best=best,
            crop=crop,
        )


def _weight(read: PlateRead) -> float:
    # A zero-confidence read still counts a little: otherwise a reader that
    # gives no confidences could never win a vote.
    return max(0.01, min(1.0, read.confidence))


def _agreement(key: str, text: str) -> int:
    return sum(1 for a, b in zip(key, text, strict=False) if a == b)


def _with_province(
    reads: list[tuple[PlateRead, C | None]], best: PlateRead, crop: C | None
) -> tuple[PlateRead, C | None]:
    """The best read (and its crop) carrying the province the reads vote for, or none."""
    weights: dict[str, float] = defaultdict(float)
    for read, _ in reads:
        if read.province:
            weights[read.province] += _weight(read)
    if not weights:
        return best, crop
    province = max(weights, key=lambda p: (weights[p], p))
    if weights[province] < PROVINCE_SHARE * sum(weights.values()):
        return dataclasses.replace(best, province=None), crop
    if best.province == province:
        return best, crop
    named = [(r, c) for r, c in reads if r.province == province]
    return max(named, key=lambda rc: rc[0].confidence)
