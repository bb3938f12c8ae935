"""Where a learning-rate sweep goes by default, and the learning rates of the command line."""

from __future__ import annotations

from pathlib import Path

from cs336_basics.assignment_experiments.sweep.record import point_name
from cs336_basics.errors import UserError

DEFAULT_SWEEP_DIR = Path("runs/lr_sweep")
LR_PREFIX = "lr"  # run dirs lr_1e_04, lr_2p5e_04, lr_3e_04_s1


def lr_dir_name(lr: float, seed: int = 0) -> str:
    """The run dir of a learning rate in a sweep: 1e-4 -> lr_1e_04, 2.5e-4 -> lr_2p5e_04, seed 1 -> lr_1e_04_s1."""
    return point_name(LR_PREFIX, float(lr), seed)


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
