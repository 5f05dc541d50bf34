"""One verdict per claim over all the evidence given: `judge_claims(inputs)`, the one function both the
claims document (`bench claims`) and a report's claims section call.

`ClaimsInputs` holds every piece of evidence, passed in explicitly: run records (results files, read
into one bench.analysis.results.Results, so that pairs never cross GPUs and the latest record of a
cell wins), kernels-check results (F1) and the kernel tests' micro-benchmark JSON (M4).
`load_claims_inputs` reads them from files by kind. A report given the same inputs shows the same
verdicts: it filters the rows, never judges again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from bench.analysis.claims.checks import ClaimResult, check_claims
from bench.analysis.claims.evidence import Cell, CellPair, evidence
from bench.analysis.claims.rules import CLAIMS_PATH, FAILS, HOLDS, INCONCLUSIVE, Untestable, load_claims
from bench.analysis.results import Entry, Results, load_results
from bench.schema.pairs import DEFAULT_REFERENCE
from bench.schema.record import ResultsError
from kernels_check.benchmarks import BenchmarkFileError, load_benchmark
from kernels_check.result import RESULT_FORMAT, validate_result
from kernels_check.trace import TraceError, read_json


@dataclass
class ClaimsInputs:
    """Everything a claims judgement reads."""

    results: Optional[Results]  # run records (None: no results file given)
    kernels: list[tuple[str, dict]] = field(default_factory=list)  # (file name, kernels-check result)
    benchmark: Optional[tuple[str, dict]] = None  # (file name, the kernel tests' pytest-benchmark JSON)
    sources: list[Path] = field(default_factory=list)  # every file or folder given, in order

    @property
    def entries(self) -> list[Entry]:
        return self.results.entries if self.results else []


@dataclass
class Judgement:
    inputs: ClaimsInputs
    checked: list[ClaimResult]
    untestable: list[Untestable]

    def cited(self, result: ClaimResult) -> list[Entry]:
        """The entries a claim's evidence cites, in evidence order, each once."""
        by_ref = {e.ref: e for e in self.inputs.entries}
        refs: list[str] = []
        for span in result.evidence:
            if isinstance(span, Cell):
                refs.append(span.ref)
            elif isinstance(span, CellPair):
                refs += [span.reference, span.candidate]
        return [by_ref[r] for r in dict.fromkeys(refs) if r in by_ref]


def _kernels_file(path: Path) -> Optional[dict]:
    data = read_json(path)
    return validate_result(data, str(path)) if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


def _read_json_input(path: Path, inputs: ClaimsInputs) -> None:
    data = read_json(path)
    if isinstance(data, dict) and data.get("format") == RESULT_FORMAT:
        inputs.kernels.append((path.name, validate_result(data, str(path))))
    elif isinstance(data, dict) and "benchmarks" in data:
        if inputs.benchmark is not None:
            raise ResultsError(f"{path}: a second kernel micro-benchmark file (give one)")
        inputs.benchmark = (path.name, load_benchmark(path))
    else:
        raise ResultsError(f"{path}: neither a kernels-check result nor a pytest-benchmark JSON")


def load_claims_inputs(paths: Sequence[Union[str, Path]], reference: str = DEFAULT_REFERENCE) -> ClaimsInputs:
    """Evidence from files by kind: results files (.jsonl), kernels-check results (a .json result, or a
    folder of them) and one pytest-benchmark JSON (the kernel tests'). ResultsError on bad input."""
    if not paths:
        raise ResultsError("no evidence files given")
    unique: list[Path] = []
    for p in map(Path, paths):
        if all(p.resolve() != q.resolve() for q in unique):
            unique.append(p)
    inputs = ClaimsInputs(None, sources=unique)
    results_files = []
    try:
        for p in inputs.sources:
            if p.is_dir():
                found = [(f.name, r) for f in sorted(p.glob("*.json")) if (r := _kernels_file(f)) is not None]
                if not found:
                    raise ResultsError(f"{p}: a folder without kernels-check results")
                inputs.kernels += found
            elif p.suffix == ".json":
                _read_json_input(p, inputs)
            else:
                results_files.append(p)
    except (TraceError, BenchmarkFileError) as exc:
        raise ResultsError(str(exc)) from None
    inputs.results = load_results(results_files, reference) if results_files else None
    return inputs


def _emulation_note(result: ClaimResult, cited: list[Entry]) -> ClaimResult:
    """A claim about specific GPU tiers judged on emulated cells only says so."""
    tiers = result.claim.rule.get("where", {}).get("tiers")
    if not tiers or not cited or result.verdict not in (HOLDS, FAILS, INCONCLUSIVE):
        return result
    if any(e.record.mode == "native" for e in cited):
        return result
    hosts = ", ".join(sorted({e.host for e in cited}))
    note = (f" Judged on emulation only ({' / '.join(tiers)} emulated on {hosts}): memory under the tier's cap is "
            f"real, speed is the host GPU's; no native {' / '.join(tiers)} was measured.")
    return ClaimResult(result.claim, result.verdict, evidence(result.evidence, note))


def judge_claims(inputs: ClaimsInputs, path: Path = CLAIMS_PATH) -> Judgement:
    """Every claim of the claims file judged once over all of `inputs`: GPU groups only (CPU cells never
    count); comparable pairs speak, pairs that are not matched are named as excluded."""
    claims, untestable = load_claims(path)
    gpu = [g for g in inputs.results.groups if g.mode != "cpu"] if inputs.results else []
    checked = check_claims(claims, inputs.entries, [g.entries for g in gpu], [p for g in gpu for p in g.pairs],
                           inputs.kernels, inputs.benchmark)
    judgement = Judgement(inputs, checked, untestable)
    judgement.checked = [_emulation_note(c, judgement.cited(c)) for c in checked]
    return judgement


def claims_results(results: Results, path: Path = CLAIMS_PATH) -> tuple[list[ClaimResult], list[Untestable]]:
    """(checked claims, untestable claims) judged over `results` alone (judge_claims)."""
    judgement = judge_claims(ClaimsInputs(results, sources=list(results.paths)), path)
    return judgement.checked, judgement.untestable
