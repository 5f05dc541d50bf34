"""The max-fit search: the pure bisection on predicates and measured tables, reading the table from
records, and once end to end through the real launcher with a CPU worker."""

from __future__ import annotations

import pytest

from bench.analysis.fit import max_fit_rows
from bench.render.fit import render_max_fit_markdown
from bench.run.fit import FitError, run_fit, search_max
from bench.schema.store import load, read_records
from tests.helpers import FROZEN_RESULTS, run_bench


def threshold_probe(limit: int, log: list):
    def probe(x: int) -> bool:
        log.append(x)
        return x <= limit
    return probe


@pytest.mark.parametrize("limit", [256, 1000, 2304, 2560, 30_000, 65_536])
@pytest.mark.parametrize("seed_factor", [None, 0.3, 0.9, 1.0, 1.1, 3.0])
def test_search_finds_the_exact_limit_given_enough_steps(limit, seed_factor):
    log: list[int] = []
    seed = None if seed_factor is None else int(limit * seed_factor)
    res = search_max(threshold_probe(limit, log), 256, 65_536, seed, multiple_of=256, max_bisect_steps=20)
    expected = limit // 256 * 256
    assert res.max_fit == expected
    assert res.min_fail == (None if expected == 65_536 else expected + 256)
    assert len(log) == len(set(log)) == len(res.probes)  # no point probed twice
    assert res.stopped is None
    if seed_factor in (0.9, 1.0, 1.1) and limit >= 2304:
        assert len(log) <= 9  # a good seed brackets at once: a handful of probes, not a scan


def test_search_with_few_bisection_steps_keeps_a_true_bracket():
    for limit in range(300, 40_000, 997):
        log: list[int] = []
        res = search_max(threshold_probe(limit, log), 256, 65_536, int(limit * 1.05), multiple_of=256,
                         max_bisect_steps=2)
        assert res.max_fit is not None and res.max_fit <= limit < res.min_fail
        assert len(log) <= 2 + 8 + 2
        if res.resolved_to > 256:
            assert res.stopped.startswith("bisection steps used up")


def test_search_edges_nothing_fits_and_everything_fits():
    res = search_max(lambda x: False, 256, 8192, 4096, multiple_of=256)
    assert res.max_fit is None and res.min_fail == 256 and res.stopped is None
    res = search_max(lambda x: True, 1, 64, 8)
    assert res.max_fit == 64 and res.min_fail is None
    with pytest.raises(FitError):
        search_max(lambda x: True, 300, 400, None, multiple_of=256)


def test_search_on_a_measured_table_only_asks_measured_points():
    """A table of measured outcomes (HF llama-3.1-8b, emulated T4, batch 2, from the suite's committed
    records) drives the search; it must stay on the table's grid."""
    files = sorted(FROZEN_RESULTS.glob("t4-emulated*.jsonl"))
    if not files:
        pytest.skip("no committed T4 GPU results")
    recs = [r for r in load(files) if r.recipe == "hf-kbit" and r.model == "llama-3.1-8b" and r.batch_size == 2]
    table = {r.seq_len: r.fits_tier for r in recs if r.status in ("ok", "oom")}
    monotone_max = max((s for s, ok in table.items() if ok and all(v for t, v in table.items() if t < s)), default=None)

    def probe(x):
        return table[x]  # KeyError if the search asks for an unmeasured point

    grid = sorted(table)
    res = search_max(probe, grid[0], grid[-1], 2500, multiple_of=1024, max_bisect_steps=4)
    assert res.max_fit == monotone_max


def test_search_stops_when_told_and_says_why():
    calls = []

    def stop():
        return "time budget of 0 s spent" if len(calls) >= 2 else None

    def probe(x):
        calls.append(x)
        return x <= 5000

    res = search_max(probe, 256, 65_536, 1000, multiple_of=256, should_stop=stop)
    assert len(calls) == 2 and res.stopped == "time budget of 0 s spent"
    assert res.max_fit == max(calls)  # both probes fit; nothing is claimed beyond them


# -- the table from records ------------------------------------------------------------------------


def test_max_fit_rows_read_brackets_from_records(cpu_results):
    records = load([cpu_results])  # tiny-llama hf-kbit (loop), seq 16/32 x batch 1/2, all ok (CPU smoke)
    rows = max_fit_rows(records, lambda tier: 1, lambda tier: 16)
    assert len(rows) == 1
    r = rows[0]
    assert (r.tier, r.mode, r.recipe, r.driver, r.max_seq_len, r.seq_fail, r.max_batch_size, r.batch_fail) == \
        ("t4", "cpu", "hf-kbit", "loop", 32, None, 2, None)
    assert r.predicted_max_seq_len is None  # no GPU prediction beside a CPU smoke run
    # An out-of-memory record closes the bracket; a larger ok record above it is not believed.
    oom = records[0].__class__(**{**vars(records[0]), "seq_len": 24, "batch_size": 1, "cell_id": "x-oom",
                                  "status": "oom"})
    r = max_fit_rows(records + [oom], lambda tier: 1, lambda tier: 16)[0]
    assert (r.max_seq_len, r.seq_fail, r.seq_fail_status) == (16, 24, "oom")
    md = render_max_fit_markdown([r], ["cpu.jsonl"])
    assert "| t4 | cpu | hf-kbit | loop | tiny-llama | 1 | 16 | 24 (oom) |" in md
    # Another driver's probes are another search: never one bracket with these.
    trainer = [records[0].__class__(**{**vars(x), "driver": "trainer", "cell_id": x.cell_id + "-t"}) for x in records]
    assert [(x.recipe, x.driver) for x in max_fit_rows(records + trainer, lambda t: 1, lambda t: 16)] == \
        [("hf-kbit", "loop"), ("hf-kbit", "trainer")]


# -- end to end through the launcher (real CPU worker) -----------------------------------------------


@pytest.mark.slow
def test_fit_probes_run_through_the_launcher_and_resume(tmp_path, cache_dir):
    from bench.config.settings import RunConfig, TrainSettings

    out = tmp_path / "fit.jsonl"
    config = RunConfig(tier="t4", models=["tiny-llama"], recipes=["hf-kbit"], seq_lens=[32], batch_sizes=[1],
                       train=TrainSettings(steps=1, warmup_steps=1, driver="loop", min_seconds=0.0), device="cpu")
    seen = []
    outcomes = run_fit(config, out, batch_size=1, seq_len=32, max_seq_len=512, max_batch_size=2,
                       cache_dir=cache_dir, on_probe=lambda b, p: seen.append(p))
    (o,) = outcomes
    # Nothing runs out of memory on the CPU: both searches end at their upper bound.
    assert o.seq.max_fit == 512 and o.batch.max_fit == 2 and o.mode == "cpu"
    assert (o.recipe, o.driver) == ("hf-kbit", "loop")
    records = read_records(out)
    assert [(r.seq_len, r.batch_size) for r in records] == [(p.seq_len, p.batch_size) for p in seen]
    assert all(r.status == "ok" and r.steps == 1 and r.warmup_steps == 1 for r in records)
    assert {(r.recipe, r.driver) for r in records} == {("hf-kbit", "loop")}  # records as the runner writes them
    assert not any(p.reused for p in seen)
    before = out.read_text()
    with pytest.raises(Exception, match="--resume"):
        run_fit(config, out, batch_size=1, seq_len=32, max_seq_len=512, max_batch_size=2, cache_dir=cache_dir)
    again = []
    run_fit(config, out, batch_size=1, seq_len=32, max_seq_len=512, max_batch_size=2, cache_dir=cache_dir,
            resume=True, on_probe=lambda b, p: again.append(p))
    assert out.read_text() == before and again and all(p.reused for p in again)  # nothing re-run
    # The table renders from the probe file alone (no GPU, no worker).
    md = tmp_path / "max-fit.md"
    proc = run_bench("fit", "--from-results", str(out), "--seq-len", "32", "--out", str(md))
    assert proc.returncode == 0, proc.stderr
    assert "| t4 | cpu | hf-kbit | loop | tiny-llama | 1 | 512 | none found |" in md.read_text()


@pytest.mark.parametrize("args, message", [
    (["--gpu-tier", "t4", "--model", "nope", "--device", "cpu"], "unknown model"),
    (["--gpu-tier", "t9", "--device", "cpu"], "unknown GPU tier"),
    (["--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--batch-size", "0"], "must be > 0"),
    (["--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--seq-len", "5000"], "positions"),
    (["--gpu-tier", "t4", "--model", "tiny-llama"], "no CUDA GPU"),
    (["--from-results"], "needs probe JSONL"),
    (["--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--recipe", "hf-fast"], "unknown recipe"),
    (["--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--recipe", "unsloth"], "needs a CUDA GPU"),
    (["--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--driver", "deepspeed"], "unknown driver"),
])
def test_fit_bad_input_exits_2(args, message):
    proc = run_bench("fit", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_fit_refuses_to_overwrite_probes(tmp_path):
    out = tmp_path / "probes.jsonl"
    out.write_text("")
    proc = run_bench("fit", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--results", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_fit_out_of_time_exits_3_and_runs_nothing(tmp_path):
    out = tmp_path / "probes.jsonl"
    proc = run_bench("fit", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--backend", "hf",
                     "--results", str(out), "--time-budget", "0")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "time budget" in proc.stdout and "--resume" in proc.stdout and not out.exists()


def test_fit_takes_recipes_and_the_driver(tmp_path):
    """--recipe / --driver name what the probes run (CPU: the default recipes are those a CPU runs)."""
    out = tmp_path / "probes.jsonl"
    proc = run_bench("fit", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--results", str(out),
                     "--time-budget", "0")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "hf-trl, hf-kbit (trainer driver)" in proc.stdout
    proc = run_bench("fit", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--recipe", "hf-lora16",
                     "--driver", "loop", "--results", str(out), "--time-budget", "0")
    assert proc.returncode == 3 and "hf-lora16 (loop driver)" in proc.stdout
