"""The shared formatters: durations, counts, byte sizes, missing values and Markdown tables, by hand."""

from __future__ import annotations

import math

from cs336_basics.formatting import count, duration, fmt, loss_text, md_table, plural, size


def test_duration_count_size():
    assert [duration(3.21), duration(270), duration(7560)] == ["3.2 s", "4.5 min", "2.10 h"]
    assert duration(None) == duration(math.inf) == "–"
    assert [count(12345), count(3.3e6), count(1.2e9), count(None)] == ["12,345", "3.30M", "1.20B", "–"]
    assert [size(512), size(27.6e6), size(1.2e9), size(1.2e12), size(5e15)] == [
        "512 B", "27.6 MB", "1.2 GB", "1.2 TB", "5000.0 TB"]  # fmt: skip
    assert [plural(1, "thread"), plural(2, "thread"), plural(0, "point")] == [
        "1 thread",
        "2 threads",
        "0 points",
    ]


def test_fmt_loss_text_and_md_table():
    assert [fmt(None), fmt(math.nan), fmt(1.23456), fmt(1234.5, ",.0f")] == ["-", "-", "1.235", "1,234"]
    assert loss_text(1.23456, None) == "1.235" and loss_text(1.23456, 0.0123, ".2f") == "1.23 ± 0.01"
    assert md_table(["a", "b"], [["x|y", 1]]) == "| a | b |\n|---|---|\n| x\\|y | 1 |"
