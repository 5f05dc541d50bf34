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
