"""The report's claims check section: claims beside what was measured, from the structured evidence
of bench.analysis.claims (figures formatted here, cell references as links to the appendix)."""

from __future__ import annotations

from typing import Callable, Iterable

from bench.analysis.claims import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Cell, CellPair, ClaimResult, Figure, Span,
                                   Untestable)
from bench.render.blocks import Block, Heading, Para, Table
from bench.render.text import fmt, gib, link, md_escape, pct

#: How each evidence figure unit reads (bench.analysis.claims.evidence.UNITS).
FIGURE_FORMATS: dict[str, Callable[[float], str]] = {
    "ratio": lambda v: fmt(v, ".2f", "x"),
    "percent": pct,
    "signed_percent": lambda v: fmt(v * 100, "+.0f", " %"),
    "points": lambda v: fmt(v * 100, ".0f"),
    "GiB": lambda v: fmt(v, ".2f", " GiB"),
    "bytes": gib,
    "MB": lambda v: fmt(v / 1e6, ".1f", " MB"),
    "count": lambda v: fmt(v, ","),
    "number": lambda v: fmt(v, "g"),
    "billions": lambda v: fmt(v / 1e9, "g"),
}
VERDICT_TEXT = {HOLDS: "**holds**", FAILS: "**does not hold**", NOT_MEASURED: "not measured",
                INCONCLUSIVE: "inconclusive (too little evidence)"}


def _table_text(text: str) -> str:
    """Plain text inside a table cell: only '|' escaped (the evidence's words and names as written)."""
    return text.replace("|", "\\|")


def measured_markdown(evidence: Iterable[Span]) -> str:
    """A check's evidence as markdown: figures formatted, cells as links ('[c1](#c1)/[c2](#c2)' for a pair:
    the baseline's cell, then the candidate's)."""
    out = []
    for span in evidence:
        if isinstance(span, Figure):
            out.append(FIGURE_FORMATS[span.unit](span.value))
        elif isinstance(span, Cell):
            out.append(link(span.ref))
        elif isinstance(span, CellPair):
            out.append(f"{link(span.reference)}/{link(span.candidate)}")
        else:
            out.append(_table_text(span))
    return "".join(out)


def claims_blocks(checked: list[ClaimResult], untestable: list[Untestable]) -> list[Block]:
    """The 'Claims check' section: heading, how to read it, the table, and the untestable claims."""
    blocks: list[Block] = [
        Heading(2, "Claims check", "claims"),
        Para("Published claims (bench/data/claims.json) beside what was measured here. A claim is "
             "\"not measured\" when no cell meets its stated conditions; it is never stretched to "
             "other models, tiers or sizes. A claim comparing two recipes is read against the baseline recipe "
             "the article compared against (named in its conditions), never another recipe standing in; where "
             "that baseline was not measured it is \"not measured\". Pairs that failed the parity check never "
             "count; too few pairs for the rule is \"inconclusive\"."),
        Table(["claim", "source", "conditions (stated; checked as)", "measured here", "verdict"], [
            [f"{c.claim.id}: {md_escape(c.claim.text)}", md_escape(c.claim.source),
             md_escape((c.claim.conditions + "; " if c.claim.conditions else "") + c.claim.checked_as),
             measured_markdown(c.evidence), VERDICT_TEXT[c.verdict]] for c in checked]),
    ]
    if untestable:
        blocks.append(Para("Not testable by this suite: " + "; ".join(
            f"{u.id} ({md_escape(u.text)}: {md_escape(u.why)})" for u in untestable) + "."))
    return blocks
