"""The console scripts of pyproject.toml. Each imports its command's module inside a guard: Ctrl-C while
torch or matplotlib loads (the first second or two) is one line, as it is once the command runs (``cli_entry``),
instead of an import traceback."""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable


def _command(module: str) -> Callable[[list[str] | None], int]:
    def run(argv: list[str] | None = None) -> int:
        try:
            main = importlib.import_module(module).main
        except KeyboardInterrupt:
            print("interrupted by the user (Ctrl-C) while starting: nothing was done", file=sys.stderr)
            raise SystemExit(128 + signal.SIGINT) from None
        return main(argv)

    run.__doc__ = f"``{module}.main``"
    return run


data = _command("cs336_basics.data.cli")
train = _command("cs336_basics.basics.run_experiment")
generate = _command("cs336_basics.basics.generate")
bench = _command("cs336_basics.basics.bench")
lr_sweep = _command("cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep")
lr_diagnose = _command("cs336_basics.assignment_experiments.lr_sweep.diagnose_lr_sweep")
lr_analyze = _command("cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep")
batch_size_sweep = _command("cs336_basics.assignment_experiments.batch_size.batch_size_sweep")
