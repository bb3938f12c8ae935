"""cs336_basics: fast, resumable, self-explaining learning-rate sweeps of small Transformer LMs (CS336 A1)."""

import os

BUSY_LOAD = 1.0  # load average (runnable processes, 1-minute mean) at which the CPU counts as shared


def cpu_wait_policy(environ, load: float, cores: int) -> tuple[dict[str, str], str | None]:
    """The OpenMP wait setting for torch's CPU threads (libgomp), as (variables to set, a note for the banner).

    Between parallel regions libgomp's threads spin before they sleep. On a CPU another process is using, the
    spinning threads take the time slices the working ones need: beside one busy process a demo run trained
    16x slower; sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) won that back but cost 27% on an idle machine
    (benchmarks/README.md, bench_omp_wait.py). So threads sleep while they wait when the machine is already
    busy at start (load average >= BUSY_LOAD), and spin otherwise; a user's own setting wins.
    """
    given = {k: environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in environ}
    if given:
        shown = ", ".join(f"{k}={v}" for k, v in given.items())
        return {}, f"CPU threads wait as the environment says ({shown})"
    if load >= BUSY_LOAD:
        note = f"CPU busy at start (load {load:.1f} on {cores} cores): threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE)"
        return {"OMP_WAIT_POLICY": "PASSIVE"}, note
    return {}, None


# Set before any module of the package loads torch (libgomp reads the variables when it loads).
_SET, CPU_WAIT_NOTE = cpu_wait_policy(os.environ, os.getloadavg()[0], os.cpu_count() or 1)
os.environ.update(_SET)
