"""How a sweep point's process starts, stops, and dies with its parent: the one launcher of every executor.

- GPU slots are indices into the *parent's* visible devices (``visible_devices``), so a sweep started with
  ``CUDA_VISIBLE_DEVICES=2,3`` puts slot 0 on physical GPU 2.
- A child runs in its own session (``start_new_session``): the terminal's Ctrl-C reaches only the sweep,
  which forwards exactly one SIGINT (a second one means "stop now" to the trainer) and waits for the
  children's step-boundary checkpoints.
- Children running at once share the CPU's cores: each gets its share as its thread count (``OMP_NUM_THREADS``,
  unless the user set it; submitit's local jobs through ``PointJob``). Two children on 2 cores each with torch's default 2 threads ran a demo point 3.3x
  slower than with 1 thread each, and a tiny one 17x slower (benchmarks/README.md).
- A child dies with its parent: at its start it asks the kernel for SIGTERM when the parent goes
  (``PR_SET_PDEATHSIG``), and the trainer turns SIGTERM into a checkpoint and a clean stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cs336_basics.errors import Stopped, UserError

PARENT_ENV = "CS336_SWEEP_PARENT_PID"
PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 300.0  # the longest a child may take to reach its next step boundary after Ctrl-C


def visible_devices(parent: str | None, slots: list[str | None], count: int) -> list[str | None]:
    """Each slot's CUDA_VISIBLE_DEVICES: slot ``"i"`` is the parent's i-th visible device (the parent's
    variable, else the ``count`` devices torch sees; none where torch sees none, whatever the variable says);
    ``None`` keeps the parent's devices."""
    if count == 0:
        visible = []
    elif parent is None:
        visible = [str(i) for i in range(count)]
    else:
        visible = [d.strip() for d in parent.split(",") if d.strip()]
    out = []
    for slot in slots:
        if slot is None:
            out.append(slot)
        elif slot.isdigit() and int(slot) < len(visible):
            out.append(visible[int(slot)])
        elif not visible:
            raise UserError(f"--gpus {slot}: no CUDA GPU is visible to this process; leave out --gpus "
                            "(--concurrent N runs several points on one device)")  # fmt: skip
        else:
            seen = f" (CUDA_VISIBLE_DEVICES={parent})" if parent is not None else ""
            raise UserError(f"--gpus {slot}: this process sees {len(visible)} GPU(s){seen}; "
                            f"give ids from 0 to {len(visible) - 1}")  # fmt: skip
    return out


def child_threads(children: int, environ=os.environ) -> str | None:
    """``OMP_NUM_THREADS`` for each of ``children`` processes running at once: this process's cores split
    between them (at least 1); None (torch's default) for a lone child or where the user set the variable."""
    if children <= 1 or "OMP_NUM_THREADS" in environ:
        return None
    return str(max(1, len(os.sched_getaffinity(0)) // children))


def die_with_parent() -> None:
    """In a child: SIGTERM when the sweep that started it dies (Linux), or exit now if it is already gone."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        sys.exit("the sweep that started this point is gone")


def spawn(
    run_dir: Path, slot: str | None, log: Path, reference: bool, threads: str | None
) -> subprocess.Popen:
    """Start ``point --run-dir`` for a prepared run dir, output appended to ``log``."""
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    cmd = [sys.executable, "-m", "cs336_basics.assignment_experiments.sweep.point", "--run-dir", str(run_dir),
           "--no-progress", *(["--reference"] if reference else [])]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(procs: list[subprocess.Popen], wait_s: float = STOP_WAIT_S) -> None:
    """Forward one SIGINT to each child, wait for their checkpoints; kill what is still there after ``wait_s``."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + wait_s
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """Ctrl-C and SIGTERM (kill, a scheduler) stop the sweep alike: children get one SIGINT. SIGINT is
    caught explicitly, like the trainer does, because a sweep started from a background job (`cmd &` in a
    script) inherits it ignored and would otherwise never forward the stop to its children."""

    def handler(signum, frame):
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
