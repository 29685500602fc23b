"""Plate format rules as data: load a country's rules file, rank and correct OCR candidates.

A rules file (``pk.yaml``, ``br.yaml``, ``generic.yaml`` here, or any path)
names character classes — with the look-alikes OCR reads in their place —
and layouts, each one or more rows of a small pattern language (see
``pk.yaml``). `rank` aligns a read (its rows, and per-character
confidences where the reader has them) with every layout, corrects
look-alike characters where the layout needs a letter or a digit, and
orders the results by cost: corrections on confident characters cost more.
Rules rank and correct; they never filter — a read no layout fits comes
back as layout ``"unknown"`` with its own text as the key, because a hard
pattern drops real plates whenever OCR confuses 1 and I.

Everything here is pure: strings in, values out. The loader refuses a bad
file at load, naming the line (`RulesError`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from edge_agent.anpr.errors import RulesError

__all__ = [
    "BUILTIN_RULES",
    "CharClass",
    "Layout",
    "PlateRules",
    "Ranked",
    "Token",
    "builtin_rules",
    "load_rules",
    "normalise",
    "parse_rules",
    "rank",
]

BUILTIN_RULES = ("pk", "br", "generic")

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
# A read with a split the reader did not see (rows joined or guessed) costs a little.
_GUESSED_SPLIT_COST = 0.15
_MAX_ROWS = 3


def normalise(text: str) -> str:
    """Upper case, letters and digits only (separators, spaces and noise dropped)."""
    return _NOT_ALNUM.sub("", text.upper())


@dataclass(frozen=True)
class CharClass:
    """The characters a position may hold, and what OCR reads in their place."""

    name: str
    chars: frozenset[str]
    confusions: Mapping[str, str]
    key: bool = True
    attribute: str | None = None


@dataclass(frozen=True)
class Token:
    """One pattern element: a class repeated `counts` times, or one of fixed `literals`."""

    cls: str | None
    counts: tuple[int, ...] = (1,)
    literals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """One plate layout: rows of tokens, the province it belongs to, a small prior."""

    name: str
    rows: tuple[tuple[Token, ...], ...]
    province: str | None = None
    prior: float = 0.0
    guess_split: bool = True
    # Tried only when the province hint names `province` (a caption, the colours).
    needs_evidence: bool = False
    # Layouts of different provinces that look alike share a shape (see `rank`).
    shape: str | None = None


@dataclass(frozen=True)
class PlateRules:
    """A country's rules: character classes and layouts, most specific first."""

    country: str
    classes: Mapping[str, CharClass]
    layouts: tuple[Layout, ...]
    max_corrections: int = 2
    source: str = "<rules>"
    # Words printed small on plates that name a province (PUNJAB, SINDH, KARACHI).
    captions: Mapping[str, str] = field(default_factory=dict)
    # Without evidence, a same-shape reading of another province this close means
    # the read names no province.
    province_margin: float = 0.0


@dataclass(frozen=True)
class Ranked:
    """One interpretation of a read: the canonical key and what the layout says about it."""

    canonical: str
    text: str
    layout: str
    province: str | None
    cost: float
    corrections: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)


class _LineStr(str):
    """A YAML string that remembers its line, so errors can name it."""

    line: int = 0


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose strings carry their line numbers."""


def _construct_line_str(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> _LineStr:
    value = _LineStr(loader.construct_scalar(node))
    value.line = node.start_mark.line + 1
    return value


_LineLoader.add_constructor("tag:yaml.org,2002:str", _construct_line_str)


def _line_of(value: object, fallback: int) -> int:
    return value.line if isinstance(value, _LineStr) else fallback


def _parse_counts(spec: str, where: str) -> tuple[int, ...]:
    body = spec[1:-1]
    parts = body.split(",")
    if not 1 <= len(parts) <= 2 or not all(p.strip().isdigit() for p in parts):
        raise RulesError(f"{where}: bad repetition {spec!r} (use {{n}} or {{m,n}})")
    low, high = int(parts[0]), int(parts[-1])
    if not 0 < low <= high <= 12:
        raise RulesError(f"{where}: repetition {spec!r} out of range (1..12, m <= n)")
    return tuple(range(low, high + 1))


_TOKEN = re.compile(
    r"(?P<cls>[A-Z])(?P<rep>\{[^}]*\})?(?P<opt>\?)?|\((?P<alt>[^)]*)\)(?P<aopt>\?)?"
)


def parse_pattern(pattern: str, classes: Mapping[str, CharClass], where: str) -> tuple[Token, ...]:
    """One row pattern as tokens; `RulesError` naming `where` if it does not parse."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(pattern):
        if pattern[pos] in "- ":
            pos += 1
            continue
        match = _TOKEN.match(pattern, pos)
        if match is None:
            raise RulesError(
                f"{where}: bad pattern {pattern!r} at column {pos + 1} ({pattern[pos]!r})"
            )
        if match.group("alt") is not None:
            options = tuple(match.group("alt").split("|"))
            if not all(o and normalise(o) == o for o in options):
                raise RulesError(f"{where}: bad alternatives ({match.group('alt')}) in {pattern!r}")
            counts: tuple[int, ...] = (0, 1) if match.group("aopt") else (1,)
            tokens.append(Token(cls=None, counts=counts, literals=options))
        else:
            name = match.group("cls")
            if name not in classes:
                raise RulesError(f"{where}: pattern {pattern!r} uses undefined class {name!r}")
            rep = match.group("rep")
            counts = _parse_counts(rep, where) if rep else (1,)
            if match.group("opt"):
                counts = (0, *counts)
            tokens.append(Token(cls=name, counts=counts))
        pos = match.end()
    if not tokens:
        raise RulesError(f"{where}: empty pattern")
    return tuple(tokens)


def _require_mapping(value: object, what: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RulesError(f"{where}: {what} must be a mapping")
    return value


def parse_rules(text: str, *, source: str = "<rules>") -> PlateRules:
    """Rules from the text of a rules file; `RulesError` names `source` and the line."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise RulesError(f"{source}{line}: not valid YAML ({exc})") from exc
    top = _require_mapping(data, "the file", source)
    unknown = set(top) - {
        "country",
        "max_corrections",
        "classes",
        "layouts",
        "captions",
        "province_margin",
    }
    if unknown:
        raise RulesError(f"{source}: unknown keys {sorted(unknown)}")
    country = str(top.get("country", "XX"))
    max_corrections = top.get("max_corrections", 2)
    if not isinstance(max_corrections, int) or not 0 <= max_corrections <= 4:
        raise RulesError(f"{source}: max_corrections must be an integer 0-4")
    province_margin = top.get("province_margin", 0.0)
    if not isinstance(province_margin, (int, float)) or not 0 <= province_margin < 2:
        raise RulesError(f"{source}: province_margin must be a number in [0, 2)")
    classes: dict[str, CharClass] = {}
    for name, spec in _require_mapping(top.get("classes"), "classes", source).items():
        where = f"{source} line {_line_of(name, 0)}"
        if not (isinstance(name, str) and len(name) == 1 and name.isupper()):
            raise RulesError(f"{where}: class names are one uppercase letter, not {name!r}")
        spec = _require_mapping(spec, f"class {name}", where)
        chars = str(spec.get("chars", ""))
        if not chars or normalise(chars) != chars:
            raise RulesError(f"{where}: class {name} needs chars, letters and digits only")
        confusions = {
            str(k): str(v)
            for k, v in _require_mapping(spec.get("confusions", {}), "confusions", where).items()
        }
        for seen, meant in confusions.items():  # each must land inside the class
            if len(seen) != 1 or meant not in chars:
                raise RulesError(
                    f"{where}: class {name} confusion {seen!r} -> {meant!r} must map one "
                    "character to one of the class's chars"
                )
        attribute = spec.get("attribute")
        classes[name] = CharClass(
            name=name,
            chars=frozenset(chars),
            confusions=confusions,
            key=bool(spec.get("key", True)),
            attribute=str(attribute) if attribute is not None else None,
        )
    layouts: list[Layout] = []
    raw_layouts = top.get("layouts")
    if not isinstance(raw_layouts, list) or not raw_layouts:
        raise RulesError(f"{source}: layouts must be a non-empty list")
    for raw in raw_layouts:
        spec = _require_mapping(raw, "a layout", source)
        layout_name = spec.get("name")
        where = f"{source} line {_line_of(layout_name, 0)}"
        if not isinstance(layout_name, str) or not layout_name:
            raise RulesError(f"{where}: a layout needs a name")
        rows = spec.get("rows")
        if not isinstance(rows, list) or not 1 <= len(rows) <= _MAX_ROWS:
            raise RulesError(
                f"{where}: layout {layout_name} needs rows: a list of 1-{_MAX_ROWS} patterns"
            )
        parsed = tuple(
            parse_pattern(str(row), classes, f"{source} line {_line_of(row, 0)}") for row in rows
        )
        province = spec.get("province")
        guess_split = spec.get("guess_split", True)
        if not isinstance(guess_split, bool):
            raise RulesError(f"{where}: layout {layout_name} guess_split must be true or false")
        prior = spec.get("prior", 0.0)
        if not isinstance(prior, (int, float)) or not -1 < prior < 1:
            raise RulesError(f"{where}: layout {layout_name} prior must be a number in (-1, 1)")
        needs_evidence = spec.get("needs_evidence", False)
        if not isinstance(needs_evidence, bool):
            raise RulesError(f"{where}: layout {layout_name} needs_evidence must be true or false")
        if needs_evidence and province is None:
            raise RulesError(f"{where}: layout {layout_name} needs_evidence but names no province")
        shape = spec.get("shape")
        if shape is not None and (not isinstance(shape, str) or not shape.strip()):
            raise RulesError(f"{where}: layout {layout_name} shape must be a name")
        unknown_keys = set(spec) - {
            "name",
            "rows",
            "province",
            "prior",
            "guess_split",
            "needs_evidence",
            "shape",
        }
        if unknown_keys:
            raise RulesError(
                f"{where}: layout {layout_name} has unknown keys {sorted(unknown_keys)}"
            )
        layouts.append(
            Layout(
                name=layout_name,
                rows=parsed,
                province=str(province) if province is not None else None,
                prior=float(prior),
                guess_split=guess_split,
                needs_evidence=needs_evidence,
                shape=str(shape) if shape is not None else None,
            )
        )
    captions = {
        normalise(str(word)): str(province)
        for word, province in _require_mapping(top.get("captions", {}), "captions", source).items()
    }
    return PlateRules(
        captions=captions,
        country=country,
        classes=classes,
        layouts=tuple(layouts),
        max_corrections=max_corrections,
        source=source,
        province_margin=float(province_margin),
    )


@lru_cache(maxsize=8)
def builtin_rules(name: str) -> PlateRules:
    """One of the rules files shipped with the package (`BUILTIN_RULES`)."""
    if name not in BUILTIN_RULES:
        raise RulesError(f"no built-in rules {name!r} (have {', '.join(BUILTIN_RULES)})")
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return parse_rules(text, source=f"{name}.yaml")


def load_rules(name_or_path: str | Path) -> PlateRules:
    """Built-in rules by name (``pk``, ``br``, ``generic``) or a rules file by path."""
    if isinstance(name_or_path, str) and name_or_path in BUILTIN_RULES:
        return builtin_rules(name_or_path)
    path = Path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc}") from exc
    return parse_rules(text, source=str(path))


# --- ranking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    cost: float
    corrections: int
    text: str
    key: str
    attributes: tuple[tuple[str, str], ...]


def _char_cost(confidence: float | None) -> float:
    # Correcting a character the reader was sure of is dearer than one it doubted.
    return 0.5 + (0.5 if confidence is None else max(0.0, min(1.0, confidence)))


def _fit_row(
    tokens: tuple[Token, ...],
    text: str,
    confs: Sequence[float | None],
    rules: PlateRules,
) -> _Fit | None:
    """The cheapest alignment of `text` with a row's tokens, or None."""
    best: _Fit | None = None

    def walk(
        ti: int,
        pos: int,
        cost: float,
        fixes: int,
        out: str,
        key: str,
        attrs: tuple[tuple[str, str], ...],
    ) -> None:
        nonlocal best
        if fixes > rules.max_corrections or (best is not None and cost >= best.cost):
            return
        if ti == len(tokens):
            if pos == len(text):
                best = _Fit(cost, fixes, out, key, attrs)
            return
        token = tokens[ti]
        if token.cls is None:
            options = list(token.literals)
            if 0 in token.counts:
                walk(ti + 1, pos, cost, fixes, out, key, attrs)
            for literal in options:
                piece = text[pos : pos + len(literal)]
                if len(piece) != len(literal):
                    continue
                extra = 0.0
                n = 0
                for i, (seen, meant) in enumerate(zip(piece, literal, strict=True)):
                    if seen != meant:
                        if not any(c.confusions.get(seen) == meant for c in rules.classes.values()):
                            break
                        extra += _char_cost(confs[pos + i])
                        n += 1
                else:
                    walk(
                        ti + 1,
                        pos + len(literal),
                        cost + extra,
                        fixes + n,
                        out + literal,
                        key + literal,
                        attrs,
                    )
            return
        cls = rules.classes[token.cls]
        for count in token.counts:
            piece = text[pos : pos + count]
            if len(piece) != count:
                continue
            fixed = []
            extra = 0.0
            n = 0
            for i, seen in enumerate(piece):
                if seen in cls.chars:
                    fixed.append(seen)
                    continue
                correction = cls.confusions.get(seen)
                if correction is None:
                    break
                fixed.append(correction)
                extra += _char_cost(confs[pos + i])
                n += 1
            else:
                chunk = "".join(fixed)
                new_attrs = attrs
                if cls.attribute and chunk:
                    new_attrs = (*attrs, (cls.attribute, chunk))
                walk(
                    ti + 1,
                    pos + count,
                    cost + extra,
                    fixes + n,
                    out + chunk,
                    key + (chunk if cls.key else ""),
                    new_attrs,
                )

    walk(0, 0, 0.0, 0, "", "", ())
    return best


def _splits(text: str, rows: int) -> list[list[str]]:
    if rows == 1:
        return [[text]]
    return [
        [text[a:b] for a, b in itertools.pairwise((0, *cuts, len(text)))]
        for cuts in itertools.combinations(range(1, len(text)), rows - 1)
    ]


def rank(
    rules: PlateRules,
    rows: Sequence[str] | str,
    *,
    confidences: Sequence[Sequence[float] | None] | None = None,
    province_hint: str | None = None,
) -> list[Ranked]:
    """Every layout a read fits, cheapest first; the read itself as "unknown" comes last.

    `rows` is what the reader saw, one string per plate row it found (top
    first) or one string; `confidences` optionally gives per-character
    confidences for each row. A layout with a different number of rows is
    tried on every split of the joined text, at a small cost. A
    `province_hint` (a caption on the plate, its colours) lowers the cost of
    that province's layouts a little and is what lets a `needs_evidence`
    layout be tried at all. Without a hint, when the best reading's layout
    has a `shape` and a layout of another province with the same shape reads
    the same key within the rules' `province_margin`, the best reading is
    returned with the shape as its layout and no province: which province
    issued a plate of that shape is then a guess, and a wrong province is
    worse than none.
    """
    row_list = [rows] if isinstance(rows, str) else list(rows)
    clean_rows: list[str] = []
    clean_confs: list[list[float | None]] = []
    for index, raw in enumerate(row_list):
        conf_row = (
            confidences[index] if confidences is not None and index < len(confidences) else None
        )
        kept_chars: list[str] = []
        kept_confs: list[float | None] = []
        for i, char in enumerate(raw.upper()):
            if normalise(char):
                kept_chars.append(char)
                kept_confs.append(
                    conf_row[i] if conf_row is not None and i < len(conf_row) else None
                )
        if kept_chars:
            clean_rows.append("".join(kept_chars))
            clean_confs.append(kept_confs)
    joined = "".join(clean_rows)
    joined_confs = [c for row in clean_confs for c in row]
    results: list[Ranked] = []
    shapes: dict[str, str | None] = {}
    for layout in rules.layouts:
        if layout.needs_evidence and (province_hint is None or layout.province != province_hint):
            continue
        candidates: list[tuple[list[str], list[list[float | None]], float]] = []
        if len(clean_rows) == len(layout.rows):
            candidates.append((clean_rows, clean_confs, 0.0))
        elif layout.guess_split:
            for parts in _splits(joined, len(layout.rows)):
                confs: list[list[float | None]] = []
                start = 0
                for part in parts:
                    confs.append(joined_confs[start : start + len(part)])
                    start += len(part)
                candidates.append((parts, confs, _GUESSED_SPLIT_COST))
        best: Ranked | None = None
        for parts, confs, split_cost in candidates:
            fits = [
                _fit_row(tokens, part, conf, rules)
                for tokens, part, conf in zip(layout.rows, parts, confs, strict=True)
            ]
            if any(f is None for f in fits):
                continue
            done = [f for f in fits if f is not None]
            cost = sum(f.cost for f in done) + split_cost - layout.prior
            if province_hint is not None and layout.province == province_hint:
                cost -= 0.2
            attributes: dict[str, str] = {}
            for f in done:
                attributes.update(f.attributes)
            ranked = Ranked(
                canonical="".join(f.key for f in done),
                text="".join(f.text for f in done),
                layout=layout.name,
                province=layout.province,
                cost=round(cost, 4),
                corrections=sum(f.corrections for f in done),
                attributes=attributes,
            )
            if best is None or ranked.cost < best.cost:
                best = ranked
        if best is not None:
            results.append(best)
            shapes[best.layout] = layout.shape
    results.sort(key=lambda r: r.cost)
    if province_hint is None and results:
        results[0] = _unless_ambiguous(rules, results, shapes)
    results.append(
        Ranked(canonical=joined, text=joined, layout="unknown", province=None, cost=float("inf"))
    )
    return results


def _unless_ambiguous(
    rules: PlateRules, results: Sequence[Ranked], shapes: Mapping[str, str | None]
) -> Ranked:
    """The best reading, or the same with no province when a same-shape rival is as likely."""
    best = results[0]
    shape = shapes.get(best.layout)
    if shape is None or best.province is None:
        return best
    for rival in results[1:]:
        if rival.cost - best.cost > rules.province_margin:
            break
        if (
            shapes.get(rival.layout) == shape
            and rival.province not in (None, best.province)
            and rival.canonical == best.canonical
        ):
            return Ranked(
                canonical=best.canonical,
                text=best.text,
                layout=shape,
                province=None,
                cost=best.cost,
                corrections=best.corrections,
                attributes=best.attributes,
            )
    return best
