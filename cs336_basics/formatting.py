"""The small formatters every printed line and table uses: durations, counts, byte sizes, values, tables."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """3.2 s, 4.5 min, 2.10 h; ``–`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def value_repr(value) -> str:
    """repr, with a float's binary noise cut: 0.00030000000000000003 -> 0.0003."""
    return repr(float(f"{value:.12g}")) if isinstance(value, float) else repr(value)


def count(n: float | None) -> str:
    """12,345 / 3.30M / 1.20B."""
    if n is None or not math.isfinite(n):
        return "–"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n:,.0f}"


def plural(n: int, noun: str) -> str:
    """1 thread / 2 threads."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def size(n: float) -> str:
    """Bytes as 512 B / 27.6 MB / 1.2 GB (decimal units, as ``df -H``)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def fmt(x, spec: str = ".3f", none: str = "-") -> str:
    """``format(x, spec)``, or ``none`` for missing / NaN values: the one small formatter of every table."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return format(x, spec)


def loss_text(mean: float | None, std: float | None, spec: str = ".3f") -> str:
    """``1.234`` or ``1.234 ± 0.012`` (several seeds)."""
    return fmt(mean, spec) + (f" ± {std:{spec}}" if std is not None else "")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (``|`` inside a cell escaped)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
