"""Claims about Unsloth's kernels: F1 (which architectures have them), F2 (the fallback heuristic), M4
(the RoPE kernel's speed) (pure).

F1 reads the fast-path summaries of Unsloth run records and, passed in explicitly, kernels-check results
(kernels_check.result: a profiled step's kernels, classified on read). F2 reads matched pairs of unsloth
against its baseline: it is judged only when both sides of the heuristic were seen (a pair whose fast
path fell back, and one whose did not); while only fast-path pairs exist it is "inconclusive". M4 reads
the kernel tests' pytest-benchmark JSON (each implementation's timed rounds).
"""

from __future__ import annotations

from typing import Optional

from bench.analysis.claims.base import Inputs, candidate_record, claim_pairs, judge, or_default, pairs_noun
from bench.analysis.claims.conditions import fell_back, model_family, model_fast_path, ran_unsloth_kernels, select
from bench.analysis.claims.evidence import Cell, Figure, Span, joined, pair_cells
from bench.analysis.claims.measure import MIN_UNITS, Measurement
from bench.analysis.claims.rules import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED
from bench.analysis.stats import bootstrap_ratio
from kernels_check.result import analyse, result_recipe


def _coverage_items(inp: Inputs) -> list[tuple[str, Optional[str], dict, list[Span]]]:
    """(model, model_type, fast_paths, where) of every Unsloth summary: run records, then kernels-check results."""
    items = [(e.record.model, model_family(e.record.model), e.record.fast_paths, [Cell(e.ref)])
             for e in inp.entries if e.record.backend == "unsloth" and fell_back(e.record.fast_paths) is not None]
    for source, result in inp.kernels:
        if result.get("status") != "ok" or result_recipe(result) not in ("unsloth", "unsloth-lora16"):
            continue
        paths = analyse(result).fast_paths
        if fell_back(paths) is not None:
            items.append((result.get("model", "?"), result.get("model_type") or model_family(result.get("model", "")),
                          paths, [f"kernels-check {source}"]))
    return items


def check_fast_path_coverage(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    items = _coverage_items(inp)
    if not items:
        return NOT_MEASURED, ["no Unsloth record carries a fast-path summary (fast_paths) and no kernels-check "
                              "result was given; needs `bench kernels-check` of a listed and an unlisted architecture."]
    parts, bad, sides = [], 0, set()
    for model, family, paths, where in items:
        if family is None:
            continue
        k, n = ran_unsloth_kernels(paths)
        expected = family in rule["families"]
        ok = fell_back(paths) is not expected
        bad += not ok
        sides.add(expected)
        parts.append([f"{model} ({family}, {'listed' if expected else 'not listed'}): "
                      f"{k}/{n} fast paths on Unsloth kernels{'' if ok else ' (contradicts)'} (", *where, ")"])
    if not parts:
        return NOT_MEASURED, ["fast-path summaries only for architectures of unknown family."]
    text = [*joined(parts, "; "), ". Rule: a listed architecture ran Unsloth's kernel on every fast path that has "
                                  "one; any other fell back on at least one."]
    if bad:
        return FAILS, text
    if len(sides) < 2:
        return INCONCLUSIVE, [*text, " Only " + ("listed" if True in sides else "unlisted")
                              + " architectures were seen: the other half of the claim is untested."]
    return HOLDS, text


def _fallback_class(record) -> Optional[tuple[bool, str]]:
    """(fell back, evidence) of an unsloth record: its fast_paths, else the shipped architecture's flag."""
    traced = fell_back(record.fast_paths)
    if traced is not None:
        return traced, "fast_paths"
    flag = model_fast_path(record.model)
    return (not flag, "unsloth_fast_path flag") if flag is not None else None


def check_fallback(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    pairs, _, absent = claim_pairs(rule, inp)
    if absent:
        return NOT_MEASURED, [*absent, "."]
    kept, why = select(pairs, rule.get("where", {}), candidate_record, pairs_noun(rule), inp.params)
    parts, bad, classes, sources = [], 0, set(), set()
    for p in kept:
        v = p.memory_reduction(rule["memory"])
        un = p.candidate.record
        known = _fallback_class(un)
        if v is None or known is None:
            continue
        fallback, source = known
        ok = (v < rule["threshold"]) == fallback
        bad += not ok
        classes.add(fallback)
        sources.add(source)
        parts.append([f"{un.model} s{un.seq_len} b{un.batch_size}: ", Figure(v, "percent"),
                      f" saved, {'fallback' if fallback else 'fast path'} per {source}"
                      f"{'' if ok else ' (heuristic wrong)'} (", pair_cells(p), ")"])
    if not parts:
        return NOT_MEASURED, [*or_default(why, "no matched pair of an architecture whose fast-path state is known"), "."]
    text = [*joined(parts, "; "), ". Rule: saving below ", Figure(rule["threshold"], "percent"),
            f" exactly when the architecture fell back. Evidence: {', '.join(sorted(sources))}."]
    if True not in classes:
        return INCONCLUSIVE, [*text, " Only fast-path pairs were measured (no pair whose fast path fell back): the "
                                     "heuristic's claim about fallbacks is untested; needs a matched pair of an "
                                     "architecture without an Unsloth fast path (e.g. pythia-1b)."]
    if len(parts) < MIN_UNITS:
        return INCONCLUSIVE, [*text, f" A verdict needs at least {MIN_UNITS} matched pairs."]
    return (FAILS if bad else HOLDS), text


def _benchmarks_of(data: dict, kernel: str) -> dict[str, dict[str, list[float]]]:
    """group (kernel and dtype) -> implementation -> timed rounds (s), for the groups of `kernel`."""
    out: dict = {}
    for b in data.get("benchmarks", []):
        group = b.get("group") or b.get("name", "")
        if group.split(" ")[0] != kernel:
            continue
        impl = str((b.get("params") or {}).get("impl") or b.get("param"))
        out.setdefault(group, {})[impl] = list((b.get("stats") or {}).get("data") or [])
    return out


def check_kernel_speedup(rule: dict, inp: Inputs) -> tuple[str, list[Span]]:
    """The candidate implementation's speed-up over the baseline one (baseline time over candidate time,
    bootstrapped over the timed rounds), one measurement per dtype group."""
    if inp.benchmark is None:
        return NOT_MEASURED, ["no kernel micro-benchmark given (the kernel tests' pytest-benchmark JSON: "
                              "`bench claims ... reports/kernels-benchmark.json`)."]
    source, data = inp.benchmark
    ms = []
    for group, impls in sorted(_benchmarks_of(data, rule["kernel"]).items()):
        base, cand = impls.get(rule["baseline_impl"]), impls.get(rule["candidate_impl"])
        if base and cand:
            iv = bootstrap_ratio([base], [cand])
            if iv.estimate is not None:
                ms.append(Measurement(iv.estimate, iv, 1, [f"{group}, {len(cand)} / {len(base)} rounds"]))
    if not ms:
        return NOT_MEASURED, [f"{source} times no {rule['kernel']} kernel as both {rule['candidate_impl']} and "
                              f"{rule['baseline_impl']}."]
    verdict, text = judge(rule, ms, "ratio", f"dtype groups ({rule['candidate_impl']} over {rule['baseline_impl']}, "
                                             f"{source}; GPU not recorded in the file)")
    return verdict, text
