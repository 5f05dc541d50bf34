"""What every command module shares: the consoles, the bad-input exception and the errors that mean bad input."""

from __future__ import annotations

from rich.console import Console

from bench.config.models import ModelError
from bench.config.settings import ConfigError
from bench.config.tiers import TierError
from bench.schema.record import ResultsError

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
