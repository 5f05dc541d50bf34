"""The environment a result came from: GPU, driver, CUDA, library versions, suite commit."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import bench

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate", "unsloth", "unsloth_zoo",
            "triton", "safetensors", "nvidia-ml-py")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def package_versions(names=PACKAGES) -> dict[str, Optional[str]]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict[str, Any]:
    """The suite's commit. QLORA_BENCH_COMMIT wins when it is set: it is how a tree copied to another
    machine (the GPU box) names the commit it was copied from, and a stale .git there would name an older
    one (as it did for the results documented in reports/PROVENANCE.md). Else `git rev-parse HEAD`."""
    sha = os.environ.get("QLORA_BENCH_COMMIT")
    if sha:
        return {"git_commit": sha, "git_dirty": None, "commit_source": "env"}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"git_commit": sha, "git_dirty": dirty, "commit_source": "git"}
    except Exception:
        return {"git_commit": None, "git_dirty": None, "commit_source": None}


#: A commit id a record may name: 7 to 40 hexadecimal digits (git's abbreviations and full ids).
COMMIT_ID = re.compile("[0-9a-f]{7,40}")


def commits_not_in_repository(shas) -> list[str]:
    """Of the commit ids records name, those that name no one commit of this checkout, sorted: anything but an id
    of COMMIT_ID's form (a placeholder, "unknown") always; where there is a git checkout to ask, also a mistyped
    id, a commit never pushed, or an abbreviation that names several commits."""
    shas = sorted({str(s) for s in shas if s})
    malformed = [sha for sha in shas if not COMMIT_ID.fullmatch(sha)]
    try:
        subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO_ROOT, capture_output=True, timeout=10, check=True)
    except Exception:
        return malformed
    return sorted(malformed + [sha for sha in shas if sha not in malformed and subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=REPO_ROOT, capture_output=True, timeout=10).returncode != 0])


def gpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"gpu_name": None, "gpu_memory_bytes": None, "gpu_count": 0, "driver": None,
                            "compute_capability": None, "cuda": None}
    try:
        import torch

        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu_name=props.name, gpu_memory_bytes=int(props.total_memory),
                        gpu_count=torch.cuda.device_count(), compute_capability=f"{props.major}.{props.minor}")
    except Exception:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        drv = pynvml.nvmlSystemGetDriverVersion()
        info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        pynvml.nvmlShutdown()
    except Exception:
        pass
    return info


def collect_env() -> dict[str, Any]:
    """Everything a reader needs to know where a number came from."""
    env = {"suite_version": bench.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count()}
    env.update(gpu_info())
    env["packages"] = package_versions()
    env.update(git_commit())
    return env
