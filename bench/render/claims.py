"""Claims beside what was measured, from the one judgement of bench.analysis.claims (judge_claims):
the claims document (`bench claims`: every claim, its evidence, an appendix of the cells it cites) and
a report's claims section (the rows that cite the report's own cells, with the same verdicts).
Figures are formatted here; cell references become links (the report's or the document's appendix)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional

from bench import __version__
from bench.analysis.claims import (FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, MIN_UNITS, Cell, CellPair, ClaimResult,
                                   Figure, Judgement, Span, Untestable)
from bench.render.blocks import Block, Heading, Para, Raw, Table, render_markdown
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
                INCONCLUSIVE: "inconclusive"}


def _table_text(text: str) -> str:
    """Plain text inside a table cell: only '|' escaped (the evidence's words and names as written)."""
    return text.replace("|", "\\|")


def measured_markdown(evidence: Iterable[Span], cell_link: Callable[[str], str] = link) -> str:
    """A check's evidence as markdown: figures formatted, cells as `cell_link(ref)` ('[c1](#c1)/[c2](#c2)'
    for a pair: the baseline's cell, then the candidate's)."""
    out = []
    for span in evidence:
        if isinstance(span, Figure):
            out.append(FIGURE_FORMATS[span.unit](span.value))
        elif isinstance(span, Cell):
            out.append(cell_link(span.ref))
        elif isinstance(span, CellPair):
            out.append(f"{cell_link(span.reference)}/{cell_link(span.candidate)}")
        else:
            out.append(_table_text(span))
    return "".join(out)


def _rel(p: Path, out_dir: Path) -> str:
    """`p` relative to the document's folder, forward slashes (a working link)."""
    return Path(os.path.relpath(Path(p).resolve(), Path(out_dir).resolve())).as_posix()


def cell_key(entry) -> tuple:
    """What names one measured record across loads: its file, cell, host and repeat."""
    return str(Path(entry.path).resolve()), entry.record.cell_id, entry.host, entry.record.repeat


def evidence_used(judgement: Judgement, result: ClaimResult) -> str:
    """Which records a verdict rests on: '2 cells: t4 emulated on NVIDIA H100 (t4-emulated.jsonl); ...'."""
    counts: dict[tuple, int] = {}
    for e in judgement.cited(result):
        r = e.record
        where = f"{r.tier} {r.mode}" + (f" on {e.host}" if r.mode == "emulated" else "")
        key = (where, Path(e.path).name)
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{n} cell{'s' if n != 1 else ''}: {where} ({name})" for (where, name), n in counts.items()]
    if result.claim.rule["kind"] == "kernel_speedup" and judgement.inputs.benchmark:
        parts.append(f"micro-benchmark ({judgement.inputs.benchmark[0]})")
    kernels = [name for name, _ in judgement.inputs.kernels if f"kernels-check {name}" in str(result.evidence)]
    if kernels:
        parts.append(f"{len(kernels)} kernels-check result(s)")
    return md_escape("; ".join(parts)) if parts else "-"


def _claim_row(c: ClaimResult, judgement: Judgement, cell_link: Callable[[str], str]) -> list[str]:
    needs = c.claim.needs if c.verdict in (NOT_MEASURED, INCONCLUSIVE) else ""
    return [f"{c.claim.id}: {md_escape(c.claim.text)}", md_escape(c.claim.source),
            md_escape((c.claim.conditions + "; " if c.claim.conditions else "") + c.claim.checked_as),
            evidence_used(judgement, c), measured_markdown(c.evidence, cell_link), VERDICT_TEXT[c.verdict],
            md_escape(needs)]


CLAIM_HEADER = ["claim", "source", "conditions (stated; checked as)", "evidence used", "measured", "verdict",
                "what would settle it"]
HOW_TO_READ = (
    "A claim is \"not measured\" when no cell meets its stated conditions; it is never stretched to other models, "
    "tiers or sizes. A claim comparing two recipes is read against the baseline recipe the article compared "
    "against (named in its conditions), never another recipe standing in. Pairs that failed the parity check never "
    f"count. A verdict needs at least {MIN_UNITS} independent measurements (matched pairs or repeats) and its 95 % "
    "interval (bootstrap over repeats, then timed steps) clear of the claim's bounds; otherwise \"inconclusive\". "
    "Speed-ups here are median per-step tokens/s over the baseline's. Emulated tiers are labelled: their memory "
    "under the tier's cap is real, their speed the host GPU's.")


def _untestable(untestable: list[Untestable]) -> list[Block]:
    if not untestable:
        return []
    return [Para("Not testable by this suite: " + "; ".join(
        f"{u.id} ({md_escape(u.text)}: {md_escape(u.why)})" for u in untestable) + ".")]


def _sources_text(judgement: Judgement, out_dir: Path) -> str:
    return ", ".join(f"[{md_escape(Path(p).name)}]({_rel(p, out_dir)})" for p in judgement.inputs.sources)


def claims_document(judgement: Judgement, out: Path) -> list[Block]:
    """The claims document: one verdict per claim over every input, the evidence each rests on, the cells cited."""
    out_dir = Path(out).parent
    inputs = judgement.inputs
    counts = {v: sum(c.verdict == v for c in judgement.checked) for v in (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)}
    cited = list({e.ref: e for c in judgement.checked for e in judgement.cited(c)}.values())
    blocks: list[Block] = [
        Raw("<!-- Generated by `bench claims` from " + " ".join(_rel(p, out_dir) for p in inputs.sources)
            + " (paths relative to this file). Do not edit by hand: regenerate it. -->"),
        Heading(1, "Published claims against all the evidence"),
        Para(f"Each published claim (bench/data/claims.json) judged once, by qlora-bench {__version__} `bench claims`, "
             f"over every input: {len(inputs.entries)} records, {len(inputs.kernels)} kernels-check result(s)"
             f"{', one kernel micro-benchmark' if inputs.benchmark else ''}, from {_sources_text(judgement, out_dir)}. "
             "A report's claims section shows these verdicts (the same function over the same inputs) for the "
             "claims that cite its cells. " + HOW_TO_READ),
        Para("Verdicts: " + "; ".join(f"{VERDICT_TEXT[v].strip('*')}: {n}" for v, n in counts.items()) + "."),
        Table(CLAIM_HEADER, [_claim_row(c, judgement, link) for c in judgement.checked]),
        *_untestable(judgement.untestable),
        Heading(2, "Cells cited", "cells"),
        Table(["ref", "cell id", "results file", "tier, mode, host", "recipe", "repeat", "status"], [
            [f'<a id="{e.ref}"></a>{e.ref}', f"`{e.record.cell_id}`",
             f"[{md_escape(Path(e.path).name)}]({_rel(e.path, out_dir)})",
             md_escape(f"{e.record.tier}, {e.record.mode}, {e.host}"), e.record.recipe,
             f"{e.record.repeat + 1} of {e.record.repeats}", e.record.status] for e in cited]),
    ]
    return blocks


def report_claims_blocks(judgement: Judgement, report_entries: list, out_dir: Path,
                         claims_doc: Optional[Path] = None) -> list[Block]:
    """A report's 'Claims check' section: the judgement's rows that cite the report's cells (linked to its
    appendix; other files' cells named by file and cell id), the other claims' verdicts in one line."""
    local = {cell_key(e): e.ref for e in report_entries}
    by_ref = {e.ref: e for e in judgement.inputs.entries}

    def cell_link(ref: str) -> str:
        e = by_ref.get(ref)
        if e is None:
            return ref
        mine = local.get(cell_key(e))
        return link(mine) if mine else f"`{Path(e.path).name}:{e.record.cell_id}`"

    mine = [c for c in judgement.checked if any(cell_key(e) in local for e in judgement.cited(c))]
    others = [c for c in judgement.checked if c not in mine]
    doc = f" The claims document [{md_escape(Path(claims_doc).name)}]({_rel(claims_doc, out_dir)}) lists every claim." \
        if claims_doc else ""
    blocks: list[Block] = [
        Heading(2, "Claims check", "claims"),
        Para("Published claims (bench/data/claims.json) beside what was measured, each judged once over all of: "
             f"{_sources_text(judgement, out_dir)} (`bench claims` over the same inputs gives the same verdicts).{doc} "
             "Rows: the claims whose evidence cites this report's cells. " + HOW_TO_READ),
    ]
    if mine:
        blocks.append(Table(CLAIM_HEADER, [_claim_row(c, judgement, cell_link) for c in mine]))
    if others:
        blocks.append(Para("Claims whose evidence cites none of this report's cells: " + "; ".join(
            f"{c.claim.id} {VERDICT_TEXT[c.verdict]}" for c in others) + "."))
    return blocks + _untestable(judgement.untestable)


def write_claims_document(judgement: Judgement, out: Path) -> Path:
    """Write the claims document (markdown) to `out` through a temporary file; return `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_markdown(claims_document(judgement, out)), encoding="utf-8")
    tmp.replace(out)
    return out
