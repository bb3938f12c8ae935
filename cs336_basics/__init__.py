"""cs336_basics: fast, resumable, self-explaining learning-rate sweeps of small Transformer LMs (CS336 A1)."""

import os

# torch's CPU threads (libgomp) spin between parallel regions before they sleep. When other processes want
# the same cores (a second sweep point, a test suite, a browser), the spinning threads take the time slices
# the working ones need: beside one busy process a demo run trained 7x slower (benchmarks/README.md,
# bench_omp_wait.py). Sleeping at once is set here, before any module loads torch; a user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
