"""`bench run` end to end on the CPU: real worker subprocesses, real NF4 via bitsandbytes, real files."""

import json
import shutil

import pytest

from bench.config.models import SHIPPED
from bench.schema.store import read_records
from tests.helpers import run_bench

pytestmark = pytest.mark.slow


def test_cpu_run_writes_complete_records(cpu_results):
    records = read_records(cpu_results)
    assert {(r.seq_len, r.batch_size) for r in records} == {(16, 1), (16, 2), (32, 1), (32, 2)}
    for r in records:
        assert r.mode == "cpu" and r.backend == "hf" and r.status == "ok"
        assert r.peak_allocated_bytes is None and r.peak_device_bytes is None  # no GPU figures on CPU
        assert r.peak_rss_bytes > 0 and r.load_s > 0 and r.first_step_s > 0
        assert len(r.step_s) == len(r.losses) == r.warmup_steps + r.steps
        assert r.tokens_per_s > 0 and r.loss_first > 0 and r.trainable_params > 0
        assert r.quantization["bnb_4bit_quant_type"] == "nf4" and r.quantization["bnb_4bit_use_double_quant"]
        assert r.backend_info["linear4bit_modules"] == 14  # 7 projections x 2 layers quantised
        assert r.env["packages"]["bitsandbytes"] and r.env["python"]
        # FLOPs per token are the model's (known on a CPU); utilisation, energy and the GPU's state are not
        assert r.flops_per_token > 0 and r.hardware_flops_per_token >= r.flops_per_token
        assert (r.hardware_flops_per_token > r.flops_per_token) == (r.gradient_checkpointing != "none")
        assert r.mfu is r.hfu is r.energy_j is r.joules_per_1k_tokens is r.gpu_state is None
    assert (cpu_results.with_suffix(".logs") / "hf-kbit-tiny-llama.log").is_file()


def test_resume_skips_finished_cells_and_refuses_to_overwrite(cpu_results, tmp_path, cache_dir):
    out = tmp_path / "resumed.jsonl"
    shutil.copy(cpu_results, out)
    args = ["run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--seq-len", "16,32",
            "--batch-size", "1,2", "--backend", "hf", "--steps", "2", "--warmup-steps", "1", "--out", str(out),
            "--cache-dir", str(cache_dir)]
    proc = run_bench(*args)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert out.read_text() == cpu_results.read_text()
    proc = run_bench(*args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "4 finished cells kept" in proc.stdout
    assert out.read_text() == cpu_results.read_text()  # nothing re-run, nothing appended


def test_load_failure_and_timeout_become_cell_statuses_and_the_run_goes_on(tmp_path, cache_dir):
    # The timed cell asks for 20,000 optimizer steps of tiny-llama: at least ~5 ms each on any CPU (a
    # step is a forward and backward pass through bitsandbytes' CPU NF4 path), so at least 100 s of work
    # against the 3 s cell limit; the worker is killed at the limit, so the test waits 3 s, not the steps.
    # The broken model fails at load, before any cell; the run goes on to the next model either way.
    broken = dict(SHIPPED["tiny-llama"].config_dict(), hidden_act="no_such_activation")
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--recipe", "hf-kbit", "--driver", "loop",
                     "--model", f"{tmp_path / 'broken.json'},tiny-llama", "--seq-len", "16", "--batch-size", "1",
                     "--steps", "20000", "--warmup-steps", "1", "--cell-timeout", "3", "--out", str(out),
                     "--cache-dir", str(cache_dir), timeout=400)
    assert proc.returncode == 3, proc.stderr  # no cell ran ok
    status = {r.model: r for r in read_records(out)}
    assert status["broken"].status == "error" and "no_such_activation" in status["broken"].error
    assert status["tiny-llama"].status == "timeout" and "over 3 s" in status["tiny-llama"].error
    assert "timeout" in proc.stdout and "error" in proc.stdout  # the console shows each outcome


@pytest.mark.parametrize("args,message", [
    (["--gpu-tier", "v100"], "unknown GPU tier"),
    (["--model", "no-such-model"], "unknown model"),
    (["--backend", "hf,vllm"], "unknown backend"),
    (["--recipe", "hf-trl,vllm"], "unknown recipe"),
    (["--seq-len", "32,1"], "cannot train"),
    (["--seq-len", "0"], "seq-len must be > 0"),
    (["--batch-size", "-1"], "batch-size must be > 0"),
    (["--seq-len", "2048"], "over tiny-llama's 1024 positions"),
    (["--steps", "0"], "steps must be > 0"),
    (["--seq-len", "1k"], "not a whole number"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path):
    out = tmp_path / "never.jsonl"
    base = {"--gpu-tier": "t4", "--model": "tiny-llama", "--seq-len": "16", "--batch-size": "1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    proc = run_bench("run", "--device", "cpu", *flat, "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3
    assert not out.exists()


def test_gpu_tier_without_a_gpu_points_to_estimate(tmp_path):
    proc = run_bench("run", "--gpu-tier", "t4", "--model", "tiny-llama", "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "bench estimate" in proc.stderr


def test_unreadable_resume_file_exits_2(tmp_path):
    out = tmp_path / "bad.jsonl"
    out.write_text("{broken\n")
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--seq-len", "16",
                     "--batch-size", "1", "--backend", "hf", "--out", str(out), "--resume")
    assert proc.returncode == 2 and "cannot resume" in proc.stderr
    assert out.read_text() == "{broken\n"


def test_tiers_and_models_commands():
    proc = run_bench("tiers")
    assert proc.returncode == 0 and "a100-80gb" in proc.stdout and "present GPU: none" in proc.stdout
    proc = run_bench("models")
    assert proc.returncode == 0 and "pythia-1b" in proc.stdout and "gpt_neox" in proc.stdout
