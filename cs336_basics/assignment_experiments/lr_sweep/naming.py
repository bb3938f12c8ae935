"""Run-directory names for learning rates: readable and lossless (``lr_3e_04``, ``lr_2p5e_04``)."""

from __future__ import annotations

import re

from cs336_basics.errors import UserError

_NAME = re.compile(r"^lr_(\d+)(?:p(\d+))?e(_?)(\d+)$")


def lr_dir_name(lr: float) -> str:
    """The shortest scientific form that round-trips exactly: 1e-4 -> lr_1e_04, 2.5e-4 -> lr_2p5e_04,
    3.125e-3 -> lr_3p125e_03, 10.0 -> lr_1e01. '_' after 'e' stands for a minus sign, 'p' for the point."""
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    for digits in range(17):
        text = f"{lr:.{digits}e}"
        if float(text) == lr:
            break
    mantissa, exponent = text.split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    sign, power = ("_" if exponent[0] == "-" else ""), exponent[1:].zfill(2)
    return f"lr_{mantissa.replace('.', 'p')}e{sign}{power}"


def lr_from_dir_name(name: str) -> float | None:
    """Inverse of ``lr_dir_name`` (None for names it did not make)."""
    m = _NAME.match(name)
    if not m:
        return None
    whole, frac, minus, power = m.groups()
    return float(f"{whole}{'.' + frac if frac else ''}e{'-' if minus else ''}{power}")


def parse_learning_rates(values: list[str] | list[float]) -> list[float]:
    """Positive, de-duplicated, sorted ascending; a clear error for anything else."""
    rates: list[float] = []
    for v in values:
        try:
            lr = float(v)
        except (TypeError, ValueError):
            raise UserError(
                f"--learning-rates: {v!r} is not a number; give positive numbers like 1e-4 3e-4"
            ) from None
        if not lr > 0 or lr != lr or lr == float("inf"):
            raise UserError(
                f"--learning-rates: {v!r} is not a positive finite number; learning rates must be > 0"
            )
        if lr not in rates:
            rates.append(lr)
    if not rates:
        raise UserError("--learning-rates: give at least one learning rate, e.g. --learning-rates 1e-3 3e-3")
    return sorted(rates)
