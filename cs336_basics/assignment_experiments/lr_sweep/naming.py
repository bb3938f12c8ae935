"""Learning rates on the command line and in run-directory names (``lr_3e_04``, ``lr_2p5e_04``, ``lr_3e_04_s1``)."""

from __future__ import annotations

from cs336_basics.assignment_experiments.sweep.engine import value_text
from cs336_basics.errors import UserError


def lr_dir_name(lr: float, seed: int = 0) -> str:
    """1e-4 -> lr_1e_04, 2.5e-4 -> lr_2p5e_04; seed k > 0 adds ``_sk`` (seed 0 keeps the plain name)."""
    return f"lr_{value_text(float(lr))}" + (f"_s{seed}" if seed else "")


def parse_learning_rates(values: list[str] | list[float], flag: str = "--learning-rates") -> list[float]:
    """Positive, finite, de-duplicated, sorted ascending; one clear line for anything else (or nothing)."""
    rates: list[float] = []
    for v in values:
        try:
            lr = float(v)
        except (TypeError, ValueError):
            raise UserError(f"{flag}: {v!r} is not a number; give positive numbers like 1e-4 3e-4") from None
        if not 0 < lr < float("inf"):
            raise UserError(f"{flag}: {v!r} is not a positive finite number; learning rates must be > 0")
        if lr not in rates:
            rates.append(lr)
    if not rates:
        raise UserError(f"{flag}: give at least one learning rate, e.g. {flag} 1e-3 3e-3")
    return sorted(rates)
