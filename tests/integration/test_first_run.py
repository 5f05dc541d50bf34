"""A new user's first run and bad input (issue 12), through the real CLI: exit codes, one-line messages,
and no finished or earlier data lost. Workers are real subprocesses; kills are real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.config.models import SHIPPED
from bench.schema.store import read_records
from tests.helpers import REPO, run_bench

pytestmark = pytest.mark.slow

SMALL = ["--gpu-tier", "t4", "--device", "cpu", "--seq-len", "16", "--batch-size", "1", "--steps", "2",
         "--warmup-steps", "1"]


def tiny_config(tmp_path: Path, name: str, **changes) -> str:
    """A copy of tiny-llama's config with `changes`, written as `<name>.json`; returns its path."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(dict(SHIPPED["tiny-llama"].config_dict(), **changes)))
    return str(path)


def one_line_error(proc) -> str:
    """The error a command printed: exactly one line on stderr."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def start_bench(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def is_worker(pid: int) -> bool:
    """Whether `pid` runs the suite's worker (`python -m bench.run.worker`), not another child of the launcher
    (a `git` it asks for the commit, say)."""
    try:
        return b"bench.run.worker" in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


def wait_for_worker(proc: subprocess.Popen, timeout: float = 120) -> int:
    """The pid of the first worker `proc` starts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        kids = [k for k in children_of(proc.pid) if is_worker(k)]
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("no worker started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


# --- data loss and exit codes ----------------------------------------------------------------------

def test_nan_loss_is_the_cells_status_and_the_run_goes_on(tmp_path, cache_dir):
    # A negative RMSNorm epsilon makes rsqrt(var + eps) NaN for small activations: a real non-finite loss.
    nan_model = tiny_config(tmp_path, "nan", rms_norm_eps=-1.0)
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", *SMALL, "--recipe", "hf-kbit", "--model", nan_model, "--seq-len", "16,32",
                     "--out", str(out), "--cache-dir", str(cache_dir))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # no cell ran ok
    records = read_records(out)  # both cells: the run went on after the first NaN, and both records are kept
    assert [(r.seq_len, r.status) for r in records] == [(16, "nan_loss"), (32, "nan_loss")]
    assert all("loss" in r.error and "not finite" in r.error for r in records)
    for line in out.read_text().splitlines():  # strict JSON: no NaN literal for other readers to choke on
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_a_run_in_which_nothing_ran_exits_3_with_the_cause(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = run_bench("run", *SMALL, "--recipe", "hf-kbit", "--model", "tiny-llama", "--out", str(out),
                     env={"QLORA_BENCH_CACHE": "/proc/no/such/cache"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (record,) = read_records(out)
    assert record.status == "error"
    assert "Traceback" not in record.error and "(log: " in record.error
    assert "FileNotFoundError" in record.error and "/proc/no" in record.error  # the exception's own line


def test_a_worker_killed_by_the_os_is_named_so_and_the_next_group_runs(tmp_path, cache_dir):
    first = tiny_config(tmp_path, "first")
    out = tmp_path / "r.jsonl"
    proc = start_bench("run", *SMALL, "--recipe", "hf-kbit", "--model", f"{first},tiny-llama", "--out", str(out),
                       "--cache-dir", str(cache_dir))
    os.kill(wait_for_worker(proc), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stdout + stderr
    by_model = {r.model: r for r in read_records(out)}
    assert by_model["first"].status == "error"
    assert by_model["first"].error.startswith("killed by the OS") and "(log: " in by_model["first"].error
    assert by_model["tiny-llama"].status == "ok"


def test_two_runs_on_one_results_file_the_second_is_refused(tmp_path, cache_dir):
    out = tmp_path / "r.jsonl"
    args = ["run", *SMALL, "--recipe", "hf-kbit", "--model", "tiny-llama", "--out", str(out),
            "--cache-dir", str(cache_dir)]
    first = start_bench(*args)
    wait_for_worker(first)  # the lock is taken before any worker starts
    second = run_bench(*args, "--resume")
    assert second.returncode == 2
    assert "being written by another bench run" in one_line_error(second)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stdout + stderr
    assert len(read_records(out)) == 1  # no duplicated cell


def test_resume_with_other_settings_is_refused_naming_them(cpu_results, tmp_path, cache_dir):
    out = tmp_path / "resumed.jsonl"
    out.write_bytes(cpu_results.read_bytes())
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--seq-len", "16,32",
                     "--batch-size", "1,2", "--backend", "hf", "--steps", "2", "--warmup-steps", "1",
                     "--lora-r", "32", "--out", str(out), "--resume", "--cache-dir", str(cache_dir))
    assert proc.returncode == 2
    message = one_line_error(proc)
    assert "other settings" in message and "lora_r 16 in the file, 32 now" in message
    assert out.read_bytes() == cpu_results.read_bytes()


def test_sigterm_stops_the_worker_and_leaves_no_job_files(tmp_path, cache_dir):
    out = tmp_path / "r.jsonl"
    proc = start_bench("run", *SMALL, "--recipe", "hf-kbit", "--model", "tiny-llama", "--out", str(out),
                       "--cache-dir", str(cache_dir))
    worker = wait_for_worker(proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "aborted" in stderr and "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), "the worker outlived the run"
    assert not list(out.with_suffix(".logs").glob("*.job.json"))
    assert not out.exists() or read_records(out) == []  # the cell in flight wrote no record


def test_an_interrupted_checkpoint_build_leaves_nothing_half_written(tmp_path):
    cache = tmp_path / "cache"
    proc = start_bench("run", *SMALL, "--recipe", "hf-kbit", "--model", "tiny-llama",
                       "--out", str(tmp_path / "r.jsonl"), "--cache-dir", str(cache))
    wait_for_worker(proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    # Whatever the moment of the kill: either a complete checkpoint or none, never an empty folder.
    for folder in cache.glob("*"):
        if folder.is_dir() and not folder.name.startswith("."):
            assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors")), folder


# --- writes that fail ------------------------------------------------------------------------------

BAD = "/proc/no/such/dir/out"


@pytest.mark.parametrize("command", [
    ["run", *SMALL, "--model", "tiny-llama", "--out", f"{BAD}.jsonl"],
    ["run", *SMALL, "--model", "tiny-llama", "--report", f"{BAD}.md"],
    ["estimate", "--gpu-tier", "t4", "--model", "tiny-llama", "--out", f"{BAD}.json"],
    ["fit", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--out", f"{BAD}.md"],
    ["fit", "--gpu-tier", "t4", "--device", "cpu", "--model", "tiny-llama", "--results", f"{BAD}.jsonl"],
    ["kernels-check", "--model", "tiny-llama", "--out", f"{BAD}.md"],
    ["kernels-check", "--model", "tiny-llama", "--save-dir", f"{BAD}"],
    ["scale-out", "--out", f"{BAD}.md", "{results}"],
    ["report", "{results}", "--out", f"{BAD}.md"],
    ["gate", "{results}", "--baseline", "{baseline}", "--summary-md", f"{BAD}.md"],
    ["baseline", "save", "{results}", "--out", f"{BAD}.json"],
])
def test_an_output_that_cannot_be_written_is_bad_input(command, cpu_results, cpu_baseline):
    names = {"{results}": str(cpu_results), "{baseline}": str(cpu_baseline)}
    proc = run_bench(*[names.get(a, a) for a in command], timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = one_line_error(proc)
    assert "/proc/no/such/dir" in message and "cannot" in message


def test_report_without_out_never_overwrites_a_committed_report(cpu_results, tmp_path):
    results = tmp_path / "t4-run.jsonl"
    results.write_bytes(cpu_results.read_bytes())
    before = {p: p.read_bytes() for p in (REPO / "reports").glob("*.md")}
    proc = run_bench("report", str(results))
    assert proc.returncode == 0, proc.stderr
    written = list(tmp_path.glob("report-t4-*.md"))
    assert len(written) == 1 and str(written[0]) in proc.stdout
    assert {p: p.read_bytes() for p in (REPO / "reports").glob("*.md")} == before


def test_baseline_of_another_tier_is_replaced_only_with_force(cpu_results, tmp_path):
    other = tmp_path / "l4.jsonl"
    other.write_text("".join(json.dumps(dict(json.loads(line), tier="l4")) + "\n"
                             for line in cpu_results.read_text().splitlines()))
    baseline = tmp_path / "baseline.json"
    assert run_bench("baseline", "save", str(cpu_results), "--out", str(baseline)).returncode == 0
    saved = baseline.read_bytes()
    proc = run_bench("baseline", "save", str(other), "--out", str(baseline))
    assert proc.returncode == 2 and "--force" in one_line_error(proc)
    assert baseline.read_bytes() == saved
    proc = run_bench("baseline", "save", str(other), "--out", str(baseline), "--force")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(baseline.read_text())["cells"][0]["key"]["tier"] == "l4"


# --- the first ten minutes -------------------------------------------------------------------------

def readme_block(after: str) -> str:
    """The first ```bash block of README.md after the line containing `after`."""
    text = (REPO / "README.md").read_text()
    rest = text[text.index(after):]
    return rest.split("```bash\n", 1)[1].split("```", 1)[0].strip()


def test_the_readme_cpu_smoke_command_works_with_cpu_sized_defaults(tmp_path, cache_dir):
    command = readme_block("No GPU?")
    assert "--model" not in command and "--seq-len" not in command  # the CPU defaults pick the sizes
    env = dict(os.environ, COLUMNS="80", PYTHONPATH=str(REPO), QLORA_BENCH_CACHE=str(cache_dir))
    proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = read_records(tmp_path / "smoke.jsonl")
    assert {r.model for r in records} == {"tiny-llama"} and all(r.seq_len <= 64 for r in records)
    assert {r.recipe for r in records} == {"hf-trl", "hf-kbit"} and all(r.ok for r in records)
    assert "left out on the CPU" in proc.stdout and "unsloth" in proc.stdout
    assert "RSS" in proc.stdout  # the CPU's memory, not empty GPU columns
    assert len(list(tmp_path.glob("report-t4-*.md"))) == 1


def test_readme_and_doctor_agree_on_the_tested_gpu_versions():
    from bench.analysis.doctor import known_good_combos

    readme = (REPO / "README.md").read_text()
    gpu_row = next(line for line in readme.splitlines() if line.startswith("| GPU"))
    for name, version in known_good_combos()[0]["versions"].items():
        assert f"{version}" in gpu_row, (name, version)
    ci = (REPO / ".ci" / "run").read_text()
    test_command = (REPO / "README.md").read_text().split("```bash\n")[2].split("```")[0]  # the second one
    pytest_command = "python -m pytest -q -n auto --dist loadfile"  # one worker per core, a test file per worker
    assert test_command.strip().endswith(pytest_command) and ci.strip().endswith(pytest_command)


@pytest.mark.parametrize("command,names", [
    (["models"], ["mistral-7b-v0.3", "llama-3.1-8b", "phi-3-mini", "tiny-llama"]),
    (["tiers"], ["a100-40gb", "a100-80gb", "rtx4090"]),
    (["recipes"], ["unsloth-lora16", "hf-liger", '".[liger]"']),  # extras survive rich markup
])
def test_listings_show_whole_names_at_80_columns(command, names):
    proc = run_bench(*command, env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    for name in names:
        assert name in proc.stdout


def test_bench_models_is_fast():
    """`bench models` imports neither torch nor transformers (parameter counts come from the configs): what
    makes it fast, checked on the imports rather than on a clock a loaded test machine would upset."""
    proc = run_bench("models", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "bench.cli" in imported and not {"torch", "transformers"} & imported


def test_gate_tolerance_without_a_unit_says_which_form_is_wanted(cpu_results, cpu_baseline):
    proc = run_bench("gate", str(cpu_results), "--baseline", str(cpu_baseline), "--max-vram-increase", "5")
    assert proc.returncode == 2  # bad input, never the gate's regression code
    assert "5%" in one_line_error(proc)


def test_estimate_refuses_bf16_on_a_t4_and_does_not_fit_is_not_bad_input():
    proc = run_bench("estimate", "--gpu-tier", "t4", "--model", "llama-3.1-8b", "--dtype", "bfloat16")
    assert proc.returncode == 2 and "bf16" in one_line_error(proc).lower()
    proc = run_bench("estimate", "--gpu-tier", "t4", "--model", "llama-3.1-8b", "--seq-len", "65536",
                     "--batch-size", "64")
    assert proc.returncode == 1, proc.stdout + proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--preset", "articles"], "unsloth needs a CUDA GPU"),  # checked for every part before any runs
    (["--preset", "articles/nope"], "has the parts s2-7b-lora16"),
    (["--preset", "articles", "--model", "tiny-llama"], "sets --model itself"),
    (["--preset", "articles", "--out", "x.jsonl"], "--out is a folder"),
    (["--data", "nope.json"], "no such file"),
])
def test_presets_and_data_are_checked_before_anything_runs(args, message, tmp_path):
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in one_line_error(proc)
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


def test_data_synthetic_is_the_default():
    from bench.config.request import RunRequest, to_config

    plain = to_config(RunRequest(tier="t4", device="cpu"))
    named = to_config(RunRequest(tier="t4", device="cpu", data="synthetic"))
    assert plain == named and named.train.data_path is None



def test_a_preset_runs_its_parts_into_one_folder_and_one_report(tmp_path, cache_dir):
    folder, report = tmp_path / "smoke", tmp_path / "smoke.md"
    proc = run_bench("run", "--gpu-tier", "t4", "--device", "cpu", "--preset", "smoke", "--out", str(folder),
                     "--report", str(report), "--cache-dir", str(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in folder.glob("*.jsonl"))
    assert files == ["lora16.jsonl", "qlora.jsonl"]
    recipes = {p.stem: {r.recipe for r in read_records(p)} for p in folder.glob("*.jsonl")}
    assert recipes == {"qlora": {"hf-kbit"}, "lora16": {"hf-lora16"}}
    assert all(r.steps == 2 for p in folder.glob("*.jsonl") for r in read_records(p))  # the part's settings
    text = report.read_text()
    assert "qlora.jsonl" in text and "lora16.jsonl" in text
