"""What tests share besides fixtures: the repository root, frozen inputs, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: GPU results files frozen for tests (a copy of reports/results/ at a known state): tests read these,
#: never the mutable reports/results/, so committing new evidence cannot change a test's inputs.
FROZEN_RESULTS = REPO / "tests" / "fixtures" / "results"


def run_bench(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run `python -m bench ...` as a real subprocess; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update({"COLUMNS": "200", "PYTHONPATH": str(REPO)})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def session_root(tmp_path_factory) -> Path:
    """The temp folder every pytest-xdist worker of this session shares (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def run_once(tmp_path_factory, name: str, *args: str, timeout: float = 600) -> tuple[Path, subprocess.CompletedProcess]:
    """`bench <args> --out <folder>/<name>.jsonl` run once per test session, whichever xdist worker asks
    first (the others wait on a file lock and read what it wrote): (results file, completed process)."""
    import fcntl
    import json

    folder = session_root(tmp_path_factory) / f"once-{name}"
    folder.mkdir(exist_ok=True)
    out, done = folder / f"{name}.jsonl", folder / "process.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            proc = run_bench(*args, "--out", str(out), timeout=timeout)
            done.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout,
                                        "stderr": proc.stderr}))
        saved = json.loads(done.read_text())
    return out, subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
