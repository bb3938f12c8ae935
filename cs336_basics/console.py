"""The console scripts of pyproject.toml. Each imports its command's module with Ctrl-C held back: Ctrl-C
while torch or matplotlib loads (the first second or two) is one line once the import is done, as it is when
the command runs (``cli_entry``), instead of an import traceback (or, landing in torch's C++ start-up, an
abort)."""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable


def _command(module: str) -> Callable[[list[str] | None], int]:
    def run(argv: list[str] | None = None) -> int:
        asked: list[int] = []  # a handler that only notes it: no KeyboardInterrupt is raised inside an import
        previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
        try:
            main = importlib.import_module(module).main
        finally:
            signal.signal(signal.SIGINT, previous)
        if asked:
            print("interrupted by the user (Ctrl-C) while starting: nothing was done", file=sys.stderr)
            raise SystemExit(128 + signal.SIGINT)
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
