"""The timed window and --repeats on the CPU, with a real tiny model: both drivers stop at the minimum steps
when no minimum time is asked and run on until it is met when it is; `bench run --repeats 2` measures each
cell in two worker processes and --resume runs only the repeats that did not finish."""

from pathlib import Path

import pytest

from bench.analysis.stats import step_stats
from bench.config.models import TARGET_MODULES, resolve_model
from bench.run.checkpoint import ensure_synthetic_checkpoint
from bench.run.drivers import TrainSpec, train
from bench.run.recipes import RecipeSettings, load_recipe
from bench.schema.store import finished_cell_ids, read_records
from tests.helpers import run_bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """tiny-llama through the hf-trl recipe (TRL's trainer needs its tokenizer), on the CPU."""
    ref = resolve_model("tiny-llama")
    path, _ = ensure_synthetic_checkpoint(ref, cache_dir=cache_dir)
    settings = RecipeSettings(dtype="float32", device="cpu", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                              target_modules=TARGET_MODULES["llama"], checkpointing="none", max_seq_len=16, seed=1)
    return load_recipe("hf-trl", str(path), settings), ref


def _spec(ref, min_seconds: float, total_steps: int = 2, max_steps: int = 40) -> TrainSpec:
    return TrainSpec(device="cpu", dtype="float32", optimizer="adamw_torch", learning_rate=1e-4, seed=1, batch_size=1,
                     seq_len=8, grad_accum=1, total_steps=total_steps, vocab_size=ref.vocab_size, checkpointing="none",
                     recipe="hf-trl", warmup_steps=1, min_seconds=min_seconds, max_steps=max_steps)


@pytest.mark.parametrize("driver", ["loop", "trainer"])
def test_window_stops_at_min_steps_without_min_seconds_and_runs_on_with_them(tiny, driver):
    loaded, ref = tiny
    steps = []
    short = train(driver, loaded.model, loaded.tokenizer, _spec(ref, 0.0), on_step=lambda i, s, loss: steps.append(i))
    assert len(short.step_s) == len(short.losses) == len(short.step_tokens) == 2 and steps == [0, 1]
    # three times one timed step: the minimum of one timed step cannot close the window alone
    want = 3 * short.step_s[1]
    long = train(driver, loaded.model, loaded.tokenizer, _spec(ref, want))
    timed = long.step_s[1:]
    assert len(timed) >= 2 and sum(timed) >= want  # ran past the minimum steps until the time was met ...
    assert sum(timed[:-1]) < want  # ... and stopped at the first step that met it
    assert len(long.losses) == len(long.step_tokens) == len(long.step_s)
    assert all(t == 8 for t in long.step_tokens)  # every step counted its own tokens, past the synthetic rows too
    assert long.fingerprint["lr_per_step"] == [1e-4] * len(long.step_s)  # the constant rate, whatever the bound
    assert step_stats(timed).n == len(timed)


def test_window_stops_at_max_steps_whatever_min_seconds_asks(tiny):
    loaded, ref = tiny
    capped = train("trainer", loaded.model, loaded.tokenizer, _spec(ref, 3600.0, total_steps=2, max_steps=3))
    assert len(capped.step_s) == 3


def test_repeats_run_in_fresh_workers_and_resume_runs_only_unfinished_repeats(tmp_path, cache_dir):
    out = tmp_path / "r.jsonl"
    args = ["run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--recipe", "hf-kbit",
            "--driver", "loop", "--seq-len", "8", "--batch-size", "1", "--min-steps", "1", "--warmup-steps", "1",
            "--repeats", "2", "--out", str(out), "--cache-dir", str(cache_dir)]
    proc = run_bench(*args, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_records(out)
    assert [(r.repeat, r.repeats) for r in records] == [(0, 2), (1, 2)]
    assert len({r.cell_id for r in records}) == 1 and all(r.ok for r in records)
    assert len({r.backend_info["worker_pid"] for r in records}) == 2  # two worker processes, two model loads
    assert all(r.load_s > 0 for r in records)
    for r in records:  # the window's statistics, from the timed steps the record stores
        stats = step_stats(r.step_s[r.warmup_steps:])
        assert r.timed_steps == stats.n == r.steps == 1 and r.step_s_median == stats.median_s
        assert r.min_seconds == 0.0 and r.step_s_cv is None  # one step has no spread
    assert {p.name for p in out.with_suffix(".logs").glob("*.log")} == {"hf-kbit-tiny-llama-repeat0.log",
                                                                     "hf-kbit-tiny-llama-repeat1.log"}
    assert "repeat 2/2" in proc.stdout
    # a run that stopped after repeat 0: --resume measures repeat 1 only
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n")
    assert finished_cell_ids(out) == set()
    proc = run_bench(*args, "--resume", timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resumed = read_records(out)
    assert [r.repeat for r in resumed] == [0, 1] and resumed[0].run_id != resumed[1].run_id
    assert finished_cell_ids(out) == {records[0].cell_id}
    proc = run_bench(*args, "--resume", timeout=400)  # every repeat finished: nothing runs
    assert proc.returncode == 0 and len(read_records(out)) == 2 and "1 finished cells kept" in proc.stdout
    other = [a if a != "2" or args[i - 1] != "--repeats" else "3" for i, a in enumerate(args)]
    proc = run_bench(*other, "--resume")
    assert proc.returncode == 2 and "--repeats 2" in proc.stderr


def test_cpu_records_carry_their_window(cpu_results: Path):
    for r in read_records(cpu_results):
        assert r.timed_steps == r.steps == len(r.step_s) - r.warmup_steps
        assert r.step_s_p20 <= r.step_s_median <= r.step_s_p80 and r.step_s_cv is not None and r.min_seconds == 0.0


def test_cpu_records_carry_the_hosts_cpu_load_over_their_timed_steps(cpu_results: Path):
    import os

    for r in read_records(cpu_results):
        host = r.host_cpu
        assert host["cores"] == os.cpu_count() and 0 < host["seconds"] <= sum(r.step_s[r.warmup_steps:]) + 5
        assert host["own_cores"] > 0 and host["other_cores"] == pytest.approx(max(0.0, host["busy_cores"] - host["own_cores"]), abs=0.02)
