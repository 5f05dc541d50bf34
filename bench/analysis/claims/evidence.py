"""What a claim check measured, as structured evidence: plain-text spans, figures and cell references.

Evidence is a tuple of spans read in order: a `str` (plain text, no markup), a `Figure` (a number
and its unit; the renderer formats it), a `Cell` (a report cell reference such as "c3") or a
`CellPair` (the baseline and candidate cells of a matched pair). bench.render.claims turns it into the
claims table's markdown (figures formatted, references as links).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

#: Figure units: what `Figure.value` holds, and how it reads.
UNITS = {
    "ratio": "a ratio, '1.84x'",
    "percent": "a fraction, as a whole percentage '60 %'",
    "signed_percent": "a fraction, as a signed percentage '+34 %'",
    "points": "a difference of fractions, as whole percentage points '12'",
    "GiB": "a size in GiB, '7.21 GiB'",
    "bytes": "a size in bytes, as GiB without the unit '14.41'",
    "MB": "a size in bytes, as MB (10^6 bytes) '16.9 MB'",
    "count": "an integer, with thousands separators '41,943,040'",
    "number": "a stated figure, in its shortest form '4.2'",
    "billions": "a count, in billions '6.5'",
}


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str  # a key of UNITS


@dataclass(frozen=True)
class Cell:
    ref: str  # the report's cell reference, "c3"


@dataclass(frozen=True)
class CellPair:
    reference: str  # cell references of a pair's two sides: the baseline recipe's, the candidate's
    candidate: str


Span = Union[str, Figure, Cell, CellPair]
Evidence = tuple  # tuple[Span, ...]


def evidence(*parts: Union[Span, Iterable[Span]]) -> Evidence:
    """Spans and lists of spans flattened into one Evidence, adjacent text merged."""
    out: list[Span] = []
    for part in parts:
        for span in ([part] if isinstance(part, (str, Figure, Cell, CellPair)) else part):
            if isinstance(span, str) and out and isinstance(out[-1], str):
                out[-1] += span
            elif not (isinstance(span, str) and not span):
                out.append(span)
    return tuple(out)


def joined(items: Iterable[Iterable[Span]], sep: str) -> list[Span]:
    """The spans of `items` with `sep` between consecutive items."""
    out: list[Span] = []
    for i, item in enumerate(items):
        if i:
            out.append(sep)
        out.extend(item)
    return out


def pair_cells(pair) -> CellPair:
    """The cell references of a Pair of report entries."""
    return CellPair(pair.reference.ref, pair.candidate.ref)


def rule_spans(rule: dict, unit: str) -> list[Span]:
    """The rule's comparison: 'at least 1.36x', 'between 5 % and 25 %', 'within 15 % of 2.00x'."""
    op = rule.get("op")
    if op == "at_least":
        return ["at least ", Figure(rule["threshold"], unit)]
    if op == "at_most":
        return ["at most ", Figure(rule["threshold"], unit)]
    if op == "between":
        return ["between ", Figure(rule["lo"], unit), " and ", Figure(rule["hi"], unit)]
    if op == "approx":
        if "target" in rule:
            return ["within ", Figure(rule["rel_tol"], "percent"), " of ", Figure(rule["target"], unit)]
        return ["within ", Figure(rule["rel_tol"], "percent"), " of each stated figure"]
    return []
