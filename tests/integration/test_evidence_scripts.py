"""The GPU evidence scripts' CPU-side plumbing: what a part packs, and the commit its files name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

from tests.helpers import REPO


def test_pack_logs_packs_only_the_parts_own_worker_logs(tmp_path):
    """Two parts share /tmp/qb-work on a warm machine (and beside each other on two GPUs): a part's
    logs-<part>.tgz holds the worker logs of the runs it started, not every *.logs folder there."""
    work, out = tmp_path / "work", tmp_path / "out"
    for name in ("mine.logs", "articles/s2.logs", "other-part.logs"):
        (work / name).mkdir(parents=True)
        (work / name / "worker.log").write_text("log\n")
    script = ('. scripts/gpu/_lib.sh; LOGS+=(mine.logs never-ran.logs); '
              'for l in "$WORK"/articles/*.logs; do LOGS+=("articles/${l##*/}"); done; pack_logs')
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "PART": "articles"}
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out / "logs-articles.tgz") as tar:
        folders = {m.name.split("/worker.log")[0] for m in tar.getmembers() if m.name.endswith("worker.log")}
    assert folders == {"mine.logs", "articles/s2.logs"}


def test_benchmark_files_name_the_commit_the_gpu_tree_was_copied_from(tmp_path):
    """A pytest-benchmark file written on the GPU box (reports/kernels-benchmark.json) names
    QLORA_BENCH_COMMIT, as the results records do, not the commit of a stale .git there."""
    (tmp_path / "test_timed.py").write_text("def test_timed(benchmark):\n    benchmark(sum, [1, 2, 3])\n")
    sha = "8d69091efc7bb1e4b5f38fc07a18d2b2fa097bf1"
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not an xdist worker's session
    env.update(QLORA_BENCH_COMMIT=sha, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "tests.conftest", str(tmp_path / "test_timed.py"), f"--benchmark-json={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    commit = json.loads(out.read_text())["commit_info"]
    assert commit["id"] == sha and commit["dirty"] is None


def test_install_refuses_ids_that_name_no_single_commit_here(tmp_path):
    """`regen_all.sh install` refuses records whose commit is a placeholder, a mistyped id or too short to
    name one commit; a full id or an abbreviation of a commit of this repository passes."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    named = [head, head[:7], "PLACEHOLDER", "unknown", "9cd5d8e1c5c4f2e5b3dd7d3ee0f3e9b1fba2a1d0", head[:4]]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps({"env": {"git_commit": sha}}) + "\n" for sha in named))
    proc = subprocess.run([sys.executable, "scripts/gpu/evidence_files.py", "bad-commits", str(results)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split("\n")) - {""} == {"PLACEHOLDER", "unknown", named[4], head[:4]}


def test_install_checks_the_commits_of_the_files_it_takes_and_refuses_before_copying(tmp_path):
    """`regen_all.sh install` reads the commits of what it would copy (results/, kernels/, the benchmark file),
    not of a part's other outputs (a gate's summary JSON names none), and copies nothing when one is refused."""
    folder = tmp_path / "part"
    (folder / "results" / "gate").mkdir(parents=True)
    (folder / "results" / "gate" / "refused.jsonl").write_text(json.dumps({"env": {"git_commit": "PLACEHOLDER"}}) + "\n")
    (folder / "gate-fail.json").write_text(json.dumps({"verdict": "fail"}))
    proc = subprocess.run(["bash", "scripts/gpu/regen_all.sh", "install", str(folder)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["records name commit 'PLACEHOLDER', which is not in this repository: refused"]
    assert not (REPO / "reports" / "results" / "gate" / "refused.jsonl").exists()
