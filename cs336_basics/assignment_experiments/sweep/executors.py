"""Where sweep points run: in this process, as worker processes (one per slot), or as submitit jobs.

Every executor gets prepared run dirs (``Launch``: config.json already written) and reports each point with
``on_start(launch)`` and ``on_done(launch, result)``, ``result`` being ``point.run_point``'s dict; the engine
(the only writer of sweep.json) records both. Worker processes start through ``launcher``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.assignment_experiments.sweep import launcher
from cs336_basics.assignment_experiments.sweep.point import PointJob, failed, run_point
from cs336_basics.errors import UserError


@dataclass(frozen=True)
class Launch:
    name: str
    run_dir: Path
    reference: bool  # the stall rule compares against smaller learning rates (learning-rate sweeps)


@dataclass
class InProcessExecutor:
    """One point after another in this process (the default on one device; exact resume on CPU)."""

    progress: bool = True
    name: str = field(default="in-process")
    elsewhere = False  # the points run on this machine: its devices are theirs

    def run(self, launches, on_start, on_done) -> None:
        for job in launches:
            on_start(job)
            on_done(job, run_point(job.run_dir, reference=job.reference, progress=self.progress))


@dataclass
class WorkerExecutor:
    """Up to ``len(slots)`` points at once, each a child process; a slot is a child's CUDA_VISIBLE_DEVICES
    (``launcher.visible_devices``), or None (the parent's devices, for ``--concurrent N``). Output:
    ``<sweep>/logs/<name>.log``."""

    slots: list[str | None]
    poll_s: float = 0.5
    name: str = field(default="subprocess")
    elsewhere = False

    def run(self, launches, on_start, on_done) -> None:
        queue, running = list(launches), {}
        free, threads = list(self.slots), launcher.child_threads(len(self.slots))
        with launcher.stop_signals_as_interrupt():
            try:
                while queue or running:
                    while queue and free:
                        job, slot = queue.pop(0), free.pop(0)
                        log = job.run_dir.parent / "logs" / f"{job.name}.log"
                        log.parent.mkdir(exist_ok=True)
                        start = log.stat().st_size if log.exists() else 0  # this attempt's output only
                        proc = launcher.spawn(job.run_dir, slot, log, job.reference, threads)
                        running[proc] = (job, slot, log, start)
                        on_start(job)
                        print(f"{job.name}: training in a worker process, its output in {log}", flush=True)
                    for proc in [p for p in running if p.poll() is not None]:
                        job, slot, log, start = running.pop(proc)
                        free.append(slot)
                        result = _result(proc.returncode, log, start)
                        print(f"{job.name}: {result['state']} (output in {log})", flush=True)
                        on_done(job, result)
                    time.sleep(self.poll_s)
            except KeyboardInterrupt:
                launcher.stop(list(running))
                raise


def _result(returncode: int, log: Path, start: int) -> dict:
    """The child's last JSON line, else a failure naming its exit code and last output lines."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    for line in reversed(lines[-5:]):
        if line.startswith("{") and '"state"' in line:
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    tail = " | ".join(lines[-3:])
    return failed(f"process exited with code {returncode}; see {log}: {tail}")


@dataclass
class SubmititExecutor:
    """Each point a submitit job (SLURM, as one job array; or ``cluster="local"``: real local processes).
    Preempted or timed-out SLURM jobs are requeued by submitit and resume from their last checkpoint."""

    cluster: str = "slurm"
    parameters: dict = field(default_factory=dict)
    name: str = field(default="submitit")

    @property
    def elsewhere(self) -> bool:
        """SLURM jobs run on other machines: this one's devices and speed say nothing about theirs."""
        return self.cluster == "slurm"

    def run(self, launches, on_start, on_done) -> None:
        import submitit

        if not launches:
            return
        folder = launches[0].run_dir.parent / "submitit"
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        executor.update_parameters(name=f"sweep_{folder.parent.name}", **self.parameters)
        # The local executor starts every job at once on this machine: they split its cores.
        threads = launcher.child_threads(len(launches)) if self.cluster == "local" else None
        with executor.batch():  # one job array on SLURM
            jobs = [(job, executor.submit(PointJob(job.run_dir.resolve(), job.reference, threads)))
                    for job in launches]  # fmt: skip
        for job, handle in jobs:
            print(f"submitted {job.name} as job {handle.job_id} ({self.cluster}); logs in {folder}")
            on_start(job)
        for job, handle in jobs:
            try:
                result = handle.result()
            except Exception as err:  # FailedJobError / UncompletedJobError: the job died
                result = failed(f"job {handle.job_id}: " + " | ".join(str(err).strip().splitlines()[-3:]))
            on_done(job, result)
        with contextlib.suppress(OSError):  # submitit makes a folder named by the template itself, left empty
            (folder / "%j").rmdir()


# The job flags' defaults: a flag whose value differs from its default was given (and must be used).
JOB_FLAGS = {"time": None, "partition": None, "account": None, "slurm_option": None, "gpus_per_job": 1}


def add_executor_arguments(p) -> None:
    g = p.add_argument_group("where points run")
    g.add_argument("--executor", choices=["auto", "local", "slurm"], default="auto",
                   help="auto: this machine (one point at a time, or one per GPU with several GPUs); "
                   "local / slurm: each point a submitit job on this machine / a SLURM cluster")  # fmt: skip
    g.add_argument("--gpus", default=None, help="GPU ids for one point per GPU at a time, e.g. 0,1,2,3 "
                   "(indices into this process's visible GPUs; default: all of them)")  # fmt: skip
    g.add_argument("--concurrent", type=int, default=1, help="points at once per device (default 1; on a CPU "
                   "they split its cores, which is rarely faster than one at a time)")  # fmt: skip
    g.add_argument("--partition", default=JOB_FLAGS["partition"], help="SLURM partition")
    g.add_argument(
        "--time",
        default=JOB_FLAGS["time"],
        help="time limit per point (SLURM, local): minutes, MM:SS, HH:MM:SS or D-HH:MM:SS (sbatch --time; "
        "0 = none, the default for local; SLURM's default is the partition's)",
    )
    g.add_argument(
        "--gpus-per-job", type=int, default=JOB_FLAGS["gpus_per_job"], help="GPUs per SLURM job (default 1)"
    )
    g.add_argument("--account", default=JOB_FLAGS["account"], help="SLURM account")
    g.add_argument("--slurm-option", action="append", default=JOB_FLAGS["slurm_option"], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-option qos=high; repeatable")  # fmt: skip
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


NO_LIMIT_MIN = 60 * 24 * 365  # submitit's local executor has no "none": a year
TIME_FORMATS = (
    "minutes (90), MM:SS, HH:MM:SS (01:30:00) or D-HH[:MM[:SS]] (1-12), as sbatch --time reads them"
)


def _minutes(text: str | None) -> int | None:
    """sbatch's --time in whole minutes, seconds rounded up as SLURM does; 0 means no limit."""
    if text is None:
        return None
    try:
        day_text, dash, clock = text.partition("-")
        days, parts = (int(day_text), clock) if dash else (0, text)
        fields = [int(x) for x in parts.split(":")]
        if len(fields) > 3 or min(days, *fields) < 0:
            raise ValueError
        if dash:  # days-hours[:minutes[:seconds]]
            h, m, s = (fields + [0, 0])[:3]
        elif len(fields) == 1:  # minutes
            h, m, s = 0, fields[0], 0
        else:  # minutes:seconds or hours:minutes:seconds
            h, m, s = ([0] + fields)[-3:]
        return days * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise UserError(f"--time {text!r}: give {TIME_FORMATS}") from None


def slurm_parameters(partition, time_min, gpus_per_job, account, extra: list[str]) -> dict:
    """submitit parameters from the SLURM flags; ``extra`` items are KEY=VALUE sbatch options."""
    params: dict = {"gpus_per_node": gpus_per_job, "tasks_per_node": 1}
    optional = {"timeout_min": time_min, "slurm_partition": partition, "slurm_account": account}
    params.update({k: v for k, v in optional.items() if v is not None})  # --time 0: no limit, as in sbatch
    additional = {}
    for item in extra:
        key, _, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise UserError(f"--slurm-option {item!r}: give an sbatch option as KEY=VALUE, e.g. qos=high")
        additional[key] = value.strip()
    if additional:
        params["slurm_additional_parameters"] = additional
    return params


def _refuse_unused(args, executor: str, names: tuple[str, ...]) -> None:
    """A job flag the chosen executor would ignore is one line, not silently dropped."""
    # (--time 0, no limit, is what a point run by this machine gets anyway)
    given = [n for n in names if getattr(args, n) != JOB_FLAGS[n] and (n, args.time) != ("time", "0")]
    if not given:
        return
    takes = "local" if given == ["time"] else "slurm"  # a time limit is for local jobs too
    flags = ", ".join(f"--{n.replace('_', '-')}" for n in given)
    verb, it = ("is", "it") if len(given) == 1 else ("are", "them")
    raise UserError(
        f"{flags} {verb} for --executor slurm{' or local' if takes == 'local' else ''}, not "
        f"--executor {executor}; add --executor {takes}, or leave {it} out"
    )


def choose_executor(args):
    if args.concurrent < 1:
        raise UserError(f"--concurrent must be >= 1, got {args.concurrent}")
    if args.executor == "slurm":
        if not (shutil.which("sbatch") and shutil.which("srun")):
            raise UserError("--executor slurm: no SLURM on this machine (sbatch / srun not on PATH); run the "
                            "sweep from a SLURM login node, or use --executor auto (this machine)")  # fmt: skip
        params = slurm_parameters(
            args.partition, _minutes(args.time), args.gpus_per_job, args.account, args.slurm_option or []
        )
        return SubmititExecutor("slurm", params)
    if args.executor == "local":  # submitit's local jobs get 2 minutes unless told: no limit unless --time
        _refuse_unused(args, "local", ("partition", "account", "slurm_option", "gpus_per_job"))
        return SubmititExecutor("local", {"timeout_min": _minutes(args.time) or NO_LIMIT_MIN})
    _refuse_unused(args, "auto", ("time", "partition", "account", "slurm_option", "gpus_per_job"))
    gpus = None
    if args.gpus is not None:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if not gpus or not all(g.isdigit() for g in gpus):
            raise UserError(f"--gpus {args.gpus!r}: give GPU ids separated by commas, e.g. 0,1,2,3")
    import torch

    count = torch.cuda.device_count()
    if gpus is None and count > 1:
        gpus = [str(i) for i in range(count)]
    if gpus or args.concurrent > 1:
        slots = launcher.visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), gpus or [None], count)
        return WorkerExecutor([g for g in slots for _ in range(args.concurrent)])
    return InProcessExecutor(progress=not args.no_progress)
