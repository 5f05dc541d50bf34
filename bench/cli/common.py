"""What every command module shares: the consoles, the bad-input exception and the errors that mean bad input."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from rich.console import Console

from bench.config.models import ModelError
from bench.config.settings import ConfigError
from bench.config.tiers import TierError
from bench.run.env import commits_not_in_repository
from bench.schema.record import ResultsError
from bench.schema.store import read_records

console = Console()
err_console = Console(stderr=True)


class UsageFailure(Exception):
    """Bad input: one clear line, exit code 2."""


#: Exceptions the library raises for bad input; `bench.cli.main` prints them as one line, exit code 2.
USAGE_ERRORS: tuple[type[Exception], ...] = (UsageFailure, ConfigError, ModelError, ResultsError, TierError)


def wide_console(con: Console) -> Console:
    """`con`, or where it is not a terminal (CI logs, pipes) a console of at least 160 columns on the
    same file: rich would assume 80 columns there and squeeze the tables."""
    if con.is_terminal:
        return con
    return Console(file=con.file, width=max(con.width, 160))


def check_writable(path: Optional[Path], option: str) -> None:
    """Refuse an output the command could not write, before any long work: one line, exit code 2.

    Creates the parent folder and writes (then removes) a probe file beside the target, which also
    catches read-only file systems where permission bits would say yes (as for root)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageFailure(f"{option} {path}: is a directory, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-check-"):
            pass
        if path.exists():
            with open(path, "a"):
                pass
    except OSError as exc:
        raise UsageFailure(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


def warn_unknown_commits(results_files: list[Path]) -> None:
    """Say which suite commits the records name that this repository does not have: such a record cannot be
    traced to its code (reports/PROVENANCE.md; scripts/gpu/regen_all.sh re-measures at one commit)."""
    shas = {r.env.get("git_commit") for p in results_files for r in read_records(p)}
    missing = commits_not_in_repository(shas)
    if missing:
        err_console.print(f"[yellow]warning:[/] records name suite commits this repository does not have: "
                          f"{', '.join(m[:12] for m in missing)} (their code cannot be checked out; see "
                          "reports/PROVENANCE.md, and re-measure with scripts/gpu/regen_all.sh)")
