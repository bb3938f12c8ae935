"""Where sweep points run: in this process, in one subprocess per GPU slot, or as submitit jobs (SLURM or local).

Each executor calls ``on_start(lr)`` when a point starts and ``on_done(lr, result)`` with ``run_point``'s result
dict ({"state", "reason", "error"}) when it ends; the sweep (the only writer of sweep.json) records both.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name
from cs336_basics.assignment_experiments.lr_sweep.point import PointJob, run_point

OnStart = Callable[[float], None]
OnDone = Callable[[float, dict], None]


@dataclass
class InProcessExecutor:
    """One point after another in this process (the default on one device; exact resume on CPU)."""

    progress: bool = True
    name: str = field(default="in-process")

    def run(self, sweep_dir: Path, lrs: list[float], on_start: OnStart, on_done: OnDone) -> None:
        for lr in lrs:
            on_start(lr)
            on_done(lr, run_point(sweep_dir, lr, progress=self.progress))


@dataclass
class SubprocessExecutor:
    """Up to ``len(slots)`` points at once, each in its own process; a slot is a CUDA device id (pinned with
    CUDA_VISIBLE_DEVICES) or None (same device as the parent, for ``--concurrent N`` on one device).
    Each point's output goes to ``<sweep>/logs/<lr_name>.log``."""

    slots: list[str | None]
    poll_s: float = 1.0
    name: str = field(default="subprocess")

    def run(self, sweep_dir: Path, lrs: list[float], on_start: OnStart, on_done: OnDone) -> None:
        queue, running = list(lrs), {}
        free = list(self.slots)
        (sweep_dir / "logs").mkdir(exist_ok=True)
        try:
            while queue or running:
                while queue and free:
                    lr, slot = queue.pop(0), free.pop(0)
                    log = sweep_dir / "logs" / f"{lr_dir_name(lr)}.log"
                    env = dict(os.environ)
                    if slot is not None:
                        env["CUDA_VISIBLE_DEVICES"] = slot
                    cmd = [
                        sys.executable,
                        "-m",
                        "cs336_basics.assignment_experiments.lr_sweep.point",
                        "--sweep-dir",
                        str(sweep_dir),
                        "--lr",
                        repr(lr),
                        "--no-progress",
                    ]
                    with open(log, "ab") as out:
                        start = out.tell()  # earlier attempts stay above; only this attempt's output is read
                        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
                    running[proc] = (lr, slot, log, start)
                    on_start(lr)
                for proc in [p for p in running if p.poll() is not None]:
                    lr, slot, log, start = running.pop(proc)
                    free.append(slot)
                    on_done(lr, self._result(proc.returncode, log, start))
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            # Ask every child to stop at its next step boundary (it saves a checkpoint), then wait for all.
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 120
            for proc in running:
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise

    @staticmethod
    def _result(returncode: int, log: Path, start: int = 0) -> dict:
        try:
            with open(log, "rb") as f:
                f.seek(start)
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        if returncode in (0, 1):
            for line in reversed(lines[-5:]):
                if line.startswith("{") and '"state"' in line:
                    with contextlib.suppress(json.JSONDecodeError):
                        return json.loads(line)
        tail = " | ".join(lines[-5:])
        return {
            "state": "failed",
            "reason": None,
            "error": f"process exited with code {returncode}; see {log}: {tail}",
        }


@dataclass
class SubmititExecutor:
    """Each point a submitit job (SLURM, as one job array; or ``cluster="local"``: real local subprocesses).
    Preempted or timed-out SLURM jobs are requeued by submitit and resume from their last checkpoint."""

    cluster: str = "slurm"
    parameters: dict = field(default_factory=dict)
    name: str = field(default="submitit")

    def run(self, sweep_dir: Path, lrs: list[float], on_start: OnStart, on_done: OnDone) -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=sweep_dir / "submitit" / "%j", cluster=self.cluster)
        executor.update_parameters(name=f"lr_sweep_{sweep_dir.name}", **self.parameters)
        jobs = []
        with executor.batch():  # one job array on SLURM
            for lr in lrs:
                jobs.append((lr, executor.submit(PointJob(sweep_dir.resolve(), lr))))
        for lr, job in jobs:
            print(
                f"submitted lr {lr:g} as job {job.job_id} ({self.cluster}); logs in {sweep_dir / 'submitit'}"
            )
            on_start(lr)
        for lr, job in jobs:
            try:
                result = job.result()
            except Exception as err:  # FailedJobError / UncompletedJobError: the job died
                text = str(err).strip().splitlines()
                result = {
                    "state": "failed",
                    "reason": None,
                    "error": f"job {job.job_id}: " + " | ".join(text[-5:]),
                }
            on_done(lr, result)


def slurm_parameters(
    partition: str | None, time_min: int | None, gpus_per_job: int, account: str | None, extra: list[str]
) -> dict:
    """submitit parameters from the sweep's SLURM flags; ``extra`` items are KEY=VALUE sbatch options."""
    params: dict = {"gpus_per_node": gpus_per_job, "tasks_per_node": 1}
    if time_min:
        params["timeout_min"] = time_min
    if partition:
        params["slurm_partition"] = partition
    if account:
        params["slurm_account"] = account
    additional = {}
    for item in extra:
        key, _, value = item.partition("=")
        additional[key.strip().lstrip("-").replace("-", "_")] = value.strip() if value else ""
    if additional:
        params["slurm_additional_parameters"] = additional
    return params
