"""Worker subprocesses: their environment, and the pipe protocol the launchers talk to them over.

A worker is `python -m <module>` in a new process session (so a kill takes its children too), with
stdout and stderr going to a log file and JSON events coming back on a pipe; cells go in on stdin.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
_LIVE: set["WorkerProcess"] = set()  # workers not closed yet: killed if the launcher is interrupted
_LIVE_LOCK = threading.Lock()
#: Set once the launcher is stopping every worker (interrupted): a worker's exit then is no cell outcome.
INTERRUPTED = threading.Event()


def kill_all() -> int:
    """Kill every worker still running (their whole process groups) and remove their job files; the number
    killed. Called when the launcher is interrupted or exits, so no worker outlives it on a GPU."""
    INTERRUPTED.set()
    with _LIVE_LOCK:
        live = list(_LIVE)
    for w in live:
        w.close(kill=True)
    return len(live)


atexit.register(lambda: _LIVE and kill_all())


def worker_env(job: dict) -> dict:
    """The environment of a worker subprocess (bench's and kernels_check's): this package importable,
    unbuffered output, no Unsloth statistics, Unsloth's generated code beside the checkpoint cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    if job.get("cache_dir"):  # Unsloth writes generated code; keep it out of the user's cwd
        env.setdefault("UNSLOTH_COMPILE_LOCATION", str(Path(job["cache_dir"]) / "unsloth_compiled_cache"))
    env["CUDA_VISIBLE_DEVICES"] = first_visible_gpu(env.get("CUDA_VISIBLE_DEVICES"))
    return env


def first_visible_gpu(visible: Optional[str]) -> str:
    """A worker measures one GPU: the first that CUDA_VISIBLE_DEVICES=`visible` shows (GPU 0 when unset).
    On a host of several GPUs, Trainer would otherwise wrap the model in nn.DataParallel, which TRL's
    SFTTrainer refuses, and the memory read would span cards. `--gpus` pins each worker to its own."""
    if visible is None:
        return "0"
    return visible.split(",")[0].strip()


class WorkerProcess:
    """One `python -m bench.run.worker` child: cells in on stdin, JSON events out on a pipe."""

    def __init__(self, job: dict, log_path: Path, module: str = "bench.run.worker", extra_env: Optional[dict] = None):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # the job file lies beside the worker's log (not in /tmp) and is removed when the worker is closed
        self.job_file = tempfile.NamedTemporaryFile("w", suffix=".job.json", delete=False, dir=log_path.parent,
                                                    prefix=log_path.stem + ".")
        json.dump(job, self.job_file)
        self.job_file.close()
        read_fd, write_fd = os.pipe()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = open(log_path, "ab")
        env = dict(worker_env(job), **(extra_env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--job", self.job_file.name, "--event-fd", str(write_fd)],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
            start_new_session=True, env=env,
        )
        os.close(write_fd)
        self.read_fd = read_fd
        self.buffer = b""
        with _LIVE_LOCK:
            _LIVE.add(self)

    def next_event(self, timeout_s: float) -> Optional[dict]:
        """The next event, {"event": "exit", ...} when the worker is gone, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                rc = self.proc.wait()
                return {"event": "exit", "returncode": rc}
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def send(self, message: dict) -> None:
        """One JSON line on the worker's stdin (a cell, for bench.run.worker)."""
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def log_tail(self, n: int = 1500) -> str:
        try:
            data = self.log_path.read_bytes()[-n:]
            return data.decode(errors="replace").strip()
        except OSError:
            return ""

    def close(self, kill: bool = False) -> None:
        with _LIVE_LOCK:
            if self not in _LIVE:
                return
            _LIVE.discard(self)
        try:
            if kill:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, BrokenPipeError, OSError):
            pass
        self.proc.wait()
        os.close(self.read_fd)
        self.log.close()
        try:
            os.unlink(self.job_file.name)
        except OSError:
            pass
