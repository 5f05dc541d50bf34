"""The one set of text helpers every renderer uses: number and unit formats, markdown escaping, links.

Pure functions of their arguments; sizes are bytes, fractions are 0..1.
"""

from __future__ import annotations

import re
from typing import Optional

from bench.analysis.stats import Interval
from bench.units import GiB, KiB, MiB


def gib(n: Optional[float]) -> str:
    """Bytes as GiB with two decimals ('14.41'), '-' for None."""
    return "-" if n is None else f"{n / GiB:.2f}"


def fmt(x: Optional[float], spec: str, suffix: str = "") -> str:
    """`x` in format `spec` plus `suffix`, '-' for None."""
    return "-" if x is None else f"{x:{spec}}{suffix}"


def mfu_hfu(mfu: Optional[float], hfu: Optional[float]) -> str:
    """MFU and HFU (fractions) in percent as one figure pair ('12.5 / 18.0 %' for
    0.125 and 0.18), '-' where neither is known
    (records before schema 3 have neither)."""
    if mfu is None and hfu is None:
        return "-"
    return f"{fmt(None if mfu is None else mfu * 100, '.1f')} / {fmt(None if hfu is None else hfu * 100, '.1f')} %"


def pct(x: Optional[float]) -> str:
    """A fraction as a whole percentage ('60 %'), '-' for None."""
    return "-" if x is None else f"{x * 100:.0f} %"


def fmt_interval(x: Optional[Interval], spec: str, suffix: str = "") -> str:
    """An estimate and its interval: '1,234 [1,200–1,260]' (spec ',.0f'), '1.42x [1.35–1.49]' (suffix 'x');
    the estimate alone when it has no interval, '-' for none."""
    if x is None or x.estimate is None:
        return "-"
    if not x.known:
        return f"{x.estimate:{spec}}{suffix}"
    return f"{x.estimate:{spec}}{suffix} [{x.low:{spec}}–{x.high:{spec}}]"


def pct_interval(x: Optional[Interval]) -> str:
    """A fraction and its interval as whole percentages ('42 % [40–44 %]'); the percentage alone without one."""
    if x is None or x.estimate is None:
        return "-"
    if not x.known:
        return pct(x.estimate)
    return f"{x.estimate * 100:.0f} % [{x.low * 100:.0f}–{x.high * 100:.0f} %]"


def usd(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"${x:.3f}" if x < 10 else f"${x:,.2f}"


def format_bytes(n: Optional[float]) -> str:
    """Bytes for people: '9.12 GiB', '512 MiB'."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n >= GiB:
        return f"{sign}{n / GiB:.2f} GiB"
    if n >= MiB:
        return f"{sign}{n / MiB:.0f} MiB"
    if n >= KiB:
        return f"{sign}{n / KiB:.0f} KiB"
    return f"{sign}{n:.0f} B"


def format_change(fraction: Optional[float]) -> str:
    """A relative change as a signed percentage ('+4.2%'), '-' for None."""
    return "-" if fraction is None else f"{fraction * 100:+.1f}%"


def link(ref: str) -> str:
    """A markdown link to the anchor `ref` ('[c3](#c3)')."""
    return f"[{ref}](#{ref})"


def md_escape(text: str) -> str:
    """One line of plain text, safe inside a markdown table cell."""
    text = " ".join(str(text).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_") \
        .replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def first_line(text: Optional[str], limit: int) -> str:
    """The first line of `text`, cut to `limit` characters ('(no message)' when empty)."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "(no message)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def slug(text: str) -> str:
    """A file-name-safe lower-case form ('H100 80GB' -> 'h100-80gb')."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "x"


def short_gpu(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100 80GB HBM3'."""
    return re.sub(r"^(NVIDIA|Tesla)\s+", "", name or "").strip() or "unknown GPU"


def plural(n: int, word: str) -> str:
    """'1 pair', '3 pairs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"
