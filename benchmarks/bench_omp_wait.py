"""Benchmark OpenMP's wait policy for CPU training: torch's CPU threads spin or sleep between parallel regions.

    uv run python benchmarks/bench_omp_wait.py [--max-steps 40] [--rounds 3] [--policies unset spin=300000 PASSIVE ...]

Each way is a fresh ``cs336-train --preset demo`` subprocess (``--max-steps`` steps, fp32, no stability
measurements) with every core's worth of threads, under one environment:

- ``unset``: neither variable set: what a user gets (the package's own default, if any);
- ``spin=300000``: libgomp's default (``GOMP_SPINCOUNT`` 300,000, what it uses when neither variable is set):
  a waiting thread spins that many iterations before it sleeps;
- ``PASSIVE``: ``OMP_WAIT_POLICY=PASSIVE``: it sleeps at once;
- ``spin=N``: ``GOMP_SPINCOUNT=N``.

Two scenarios: ``alone`` and ``beside a busy process`` (one pure-Python busy loop on the side, as a browser,
a compile or another user's job would be). The ways take turns, the order rotating each round; the training
throughput is the run's own (``ExperimentLog.tokens_per_sec``, the median of its log intervals), the median
over the rounds is printed, and the load average at the start of each scenario. Each way sets one of the two
variables, so the package keeps it as given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = [sys.executable, "-m", "cs336_basics.basics.run_experiment", "--preset", "demo", "--dtype", "fp32",
         "--sharpness-share", "0", "--no-signals", "--no-progress", "--log-interval", "5", "--compile", "off"]  # fmt: skip
BUSY = [sys.executable, "-c", "while True: pass"]


def environment(way: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if way == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif way.startswith("spin="):
        env["GOMP_SPINCOUNT"] = way.removeprefix("spin=")
    return env


def train(way: str, steps: int, data_dir: Path, out: Path) -> float:
    from cs336_basics.experiment_log.reader import load_experiment_log

    cmd = [*TRAIN, "--max-steps", str(steps), "--eval-interval", str(steps), "--data-dir", str(data_dir),
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=environment(way))
    if done.returncode != 0:
        sys.exit(f"{way}: cs336-train failed ({done.returncode}): {done.stderr[-800:]}")
    return load_experiment_log(out).tokens_per_sec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--policies", nargs="+", default=["spin=300000", "PASSIVE", "spin=10000", "unset"])
    args = p.parse_args()
    from cs336_basics.data import prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        prepare_dataset("demo", data_dir, progress=False)
        print(f"{os.cpu_count()} CPUs; demo preset, {args.max_steps} steps, fp32, {args.rounds} rounds")
        for scenario in ("alone", "beside a busy process"):
            busy = subprocess.Popen(BUSY) if scenario != "alone" else None
            try:
                print(f"\n{scenario} (load average {os.getloadavg()[0]:.1f} at the start)")
                rates: dict[str, list[float]] = {way: [] for way in args.policies}
                for r in range(args.rounds):
                    order = args.policies[r % len(args.policies) :] + args.policies[: r % len(args.policies)]
                    for way in order:
                        rates[way].append(
                            train(way, args.max_steps, data_dir, Path(tmp) / f"{scenario}-{way}-{r}")
                        )
                base = statistics.median(rates[args.policies[0]])
                for way, values in rates.items():
                    rate = statistics.median(values)
                    print(f"  {way:>12}: {rate / 1e3:6.1f}k train tok/s (median of {len(values)}), "
                          f"{rate / base:.2f}x {args.policies[0]}")  # fmt: skip
            finally:
                if busy is not None:
                    busy.kill()


if __name__ == "__main__":
    main()
