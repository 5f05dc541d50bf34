"""What every `bench` command module shares: the consoles, the usage error, the wide-table console."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class UsageFailure(Exception):
    """Bad input: one clear line, exit code 2."""


def wide_console(con: Console) -> Console:
    """`con`, or where it is not a terminal (CI logs, pipes) a console of at least 160 columns on the
    same file: rich would assume 80 columns there and squeeze the tables."""
    if con.is_terminal:
        return con
    return Console(file=con.file, width=max(con.width, 160))
