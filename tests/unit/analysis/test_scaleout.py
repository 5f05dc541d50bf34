"""The scale-out comparison on the frozen GPU records: pure functions, real records."""

from dataclasses import replace

from bench.analysis.scaleout import RunSummary, compare_runs, speed_verdicts, timed_cv
from bench.schema.store import load
from tests.helpers import FROZEN_RESULTS

T4 = FROZEN_RESULTS / "t4-emulated.jsonl"


def _run(label, records):
    return RunSummary(label, records, None)


def test_a_run_against_itself_is_the_same_and_a_slower_copy_differs():
    base = [r for r in load([T4]) if r.ok]
    same = speed_verdicts([_run("a", base), _run("b", base)], compare_runs([_run("a", base), _run("b", base)]))
    assert same[0].verdict == "no consistent difference beyond noise" and same[0].median_ratio == 1.0
    assert same[0].max_memory_diff_bytes == 0
    slow = [replace(r, tokens_per_s=r.tokens_per_s / 2) for r in base]  # far beyond any cell's own noise
    runs = [_run("a", base), _run("slow", slow)]
    cells = compare_runs(runs)
    (v,) = speed_verdicts(runs, cells)
    assert v.verdict == "differs" and v.median_ratio == 0.5 and v.beyond_noise == len(cells)


def test_noise_is_the_cells_own_timed_steps():
    r = next(r for r in load([T4]) if r.ok)
    steps = r.step_s[r.warmup_steps:]
    assert timed_cv(r) > 0 and len(steps) >= 2
    assert timed_cv(replace(r, step_s=r.step_s[: r.warmup_steps + 1])) is None  # one timed step: no spread
