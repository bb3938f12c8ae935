"""Benchmark ``lr-sweep --concurrent 2`` on a CPU: the children's thread count, side by side in one run.

    uv run python benchmarks/bench_concurrent.py [--max-steps 60] [--repeats 2]

Three ways to run the same two demo-preset points (lr 1e-3 and 1e-2, ``--max-steps`` steps each, no
stability measurements), each a fresh sweep directory, each timed as the whole sweep command's wallclock:

- ``in-process``: one point after the other (the default);
- ``concurrent, all cores each``: ``--concurrent 2`` with ``OMP_NUM_THREADS`` = every core in each child
  (torch's default, what the launcher did before it split the cores);
- ``concurrent, cores split``: ``--concurrent 2`` as it runs now (``launcher.child_threads``).

Each point's training wallclock (summary.json's ``wallclock_s``) is printed too. The demo data is prepared
once in a temporary directory, outside the timings. Best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = [sys.executable, "-m", "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep"]


def run_sweep(
    data_dir: Path, out: Path, steps: int, extra: list[str], env: dict
) -> tuple[float, list[float]]:
    cmd = [*SWEEP, "--preset", "demo", "--out", str(out), "--learning-rates", "1e-3", "1e-2",
           "--max-steps", str(steps), "--sharpness-share", "0", "--no-extend", "--no-progress",
           "--data-dir", str(data_dir), *extra]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"sweep failed ({done.returncode}): {done.stderr[-1000:]}")
    points = [
        json.loads((out / d / "summary.json").read_text())["wallclock_s"] for d in ("lr_1e_03", "lr_1e_02")
    ]
    return seconds, points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    from cs336_basics.data import prepare_dataset

    cores = len(os.sched_getaffinity(0))
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    ways = {
        "in-process": ([], base),
        "concurrent, all cores each": (["--concurrent", "2"], {**base, "OMP_NUM_THREADS": str(cores)}),
        "concurrent, cores split": (["--concurrent", "2"], base),
    }
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        prepare_dataset("demo", data_dir, progress=False)
        best: dict[str, tuple[float, list[float]]] = {}
        for r in range(args.repeats):
            for name, (extra, env) in ways.items():  # interleaved: a noisy moment hits every way alike
                result = run_sweep(
                    data_dir, Path(tmp) / f"{r}-{name.replace(' ', '_')}", args.max_steps, extra, env
                )
                if name not in best or result[0] < best[name][0]:
                    best[name] = result
    print(f"{cores} cores, demo preset, 2 points x {args.max_steps} steps, best of {args.repeats}")
    reference = best["in-process"][0]
    for name, (seconds, points) in best.items():
        per_point = ", ".join(f"{s:.1f} s" for s in points)
        print(f"  {name:<28} sweep {seconds:6.1f} s ({seconds / reference:.2f}x in-process); "
              f"points' training {per_point}")  # fmt: skip


if __name__ == "__main__":
    main()
