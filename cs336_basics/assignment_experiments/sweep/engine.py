"""The sweep loop, generic over the swept ExperimentConfig field: prepare every point, launch, record, extend.

Data flows one way: the command line gives a base config and a ``SweepSpec``; each point's config is resolved
from them and written once into its run dir as config.json before anything starts (an existing one is checked
with the trainer's resume policy, as cs336-train does); executors launch run dirs, never values; states are
read back from the run dirs; sweep-level settings (the W&B project, ...) travel in sweep.json, which each
point reads. Settings every point would trip over (a device that isn't there, unreadable data, a --min-lr
above a point's learning rate) fail once, before any point starts, and so does the client's ``plan`` check
(the lr sweep's time and disk plan), which sees every point before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cs336_basics.assignment_experiments.sweep.executors import Launch
from cs336_basics.assignment_experiments.sweep.record import (
    LOCK_FILE,
    SweepRecord,
    flag_text,
    point_name,
    seed_of,
    sweep_json_over,
    sweep_lock,
)
from cs336_basics.assignment_experiments.sweep.view import SweepView, load_sweep
from cs336_basics.atomic import atomic_write_json
from cs336_basics.basics.config import ExperimentConfig, resume_differences
from cs336_basics.errors import UserError
from cs336_basics.experiment_log import load_experiment_log
from cs336_basics.experiment_log.reader import (
    BUSY,
    CONFIG_FILE,
    DONE_STATES,
    RUN_LOCK_FILE,
    make_dirs,
    move_aside,
    read_json_dict,
    refuse_run_dir,
    removed_if_refused,
    run_dir_lock,
)


@dataclass
class SweepSpec:
    """What is swept: ``field`` over ``values`` at ``seeds`` seeds each (seed k = the base seed + k: it changes
    the initialisation and the data order). ``configure(base, value)`` builds a point's config when more than
    the field changes (default: only the field); ``reference``: the stall rule compares each point against the
    smaller values beside it (learning rates)."""

    field: str
    prefix: str
    values: list
    seeds: int = 1
    configure: Callable[[ExperimentConfig, object], ExperimentConfig] | None = None
    reference: bool = False
    restart_flag: str = "--restart"

    def name(self, value, seed: int = 0) -> str:
        return point_name(self.prefix, value, seed)

    def config(self, base: ExperimentConfig, value, seed: int) -> ExperimentConfig:
        cfg = (
            self.configure(base, value)
            if self.configure
            else dataclasses.replace(base, **{self.field: value})
        )
        return dataclasses.replace(cfg, seed=base.seed + seed, extra=dict(cfg.extra))


def prepare_data(config: ExperimentConfig) -> ExperimentConfig:
    """Prepare (download, tokenize) and check the data once for all points; the config points at the files."""
    from cs336_basics.data.run_data import load_run_data, with_data_files

    cfg = with_data_files(config)
    load_run_data(cfg.resolved())  # validates the files (vocab, length) once, before any point starts
    return cfg


def prepare_point(
    spec: SweepSpec, base: ExperimentConfig, value, seed: int, run_dir: Path, write=True
) -> None:
    """Resolve the point's config and write it as config.json (unless ``write`` is False), or check the one
    there like cs336-train does (data paths may differ: they are resumable)."""
    restart = f"{spec.restart_flag} {flag_text(value)}"
    cfg = spec.config(base, value, seed)
    try:
        resolved = cfg.resolved()
    except UserError as err:
        raise UserError(f"{run_dir.name}: {err}") from None
    path = run_dir / CONFIG_FILE
    if path.exists():
        saved = read_json_dict(path)
        if saved is None:
            raise UserError(f"{path} is unreadable (not a JSON object of config fields): retrain the point "
                            f"with {restart}, or use --fresh / --out DIR")  # fmt: skip
        diffs = resume_differences(saved, resolved, saved_as=CONFIG_FILE)
        if diffs:
            settings = "the settings it was made with"  # another preset: the flag that names them
            if saved.get("preset") not in (None, resolved.preset):
                settings = f"--preset {saved['preset']} ({settings})"
            raise UserError(f"{path} is from a different config ({'; '.join(map(str, diffs[:4]))}); re-run with "
                            f"{settings}, retrain it with {restart}, or use --fresh / --out DIR")  # fmt: skip
        return
    if not write:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**resolved.to_dict(), "derived_fields": cfg.underived()})


def wait_if_live(run_dir: Path) -> None:
    """Block until no other process trains ``run_dir`` (its run lock is free), saying so once."""
    lock = run_dir / RUN_LOCK_FILE
    if not lock.exists():
        return
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            print(f"{run_dir.name} {BUSY} {handle.read().strip() or 'another process'}: waiting for it to end "
                  "(Ctrl-C stops waiting; nothing is lost)", flush=True)  # fmt: skip
            fcntl.flock(handle, fcntl.LOCK_SH)


def sweep_values(spec: SweepSpec, out_dir: Path) -> list[tuple]:
    """(value, added_by, why) of every value the sweep starts with: the grid's, then those sweep.json already
    holds (added by bracketing), each once."""
    values = {v: (v, "grid", None) for v in spec.values}
    for p in sweep_json_over(out_dir, spec.field).get("points", []):
        values.setdefault(p["value"], (p["value"], p["added_by"], p.get("why")))
    return list(values.values())


def sweep_points(spec: SweepSpec, base: ExperimentConfig, out_dir: str | Path, *, fresh: bool = False):
    """Every point the sweep starts with (``sweep_values`` at every seed; only the grid's when ``fresh``, as
    --fresh moves ``out_dir`` aside) as (run name, config), and the names of those already done (finished or
    diverged). Reads only: ``out_dir`` may not exist."""
    out_dir = Path(out_dir)
    values = spec.values if fresh else [v for v, _, _ in sweep_values(spec, out_dir)]
    points = [(spec.name(v, s), spec.config(base, v, s)) for v in values for s in range(spec.seeds)]
    if fresh or not out_dir.is_dir():
        return points, set()
    return points, {p.name for p in load_sweep(out_dir).points if p.state in DONE_STATES}


def check_sweep(spec: SweepSpec, base: ExperimentConfig, out_dir: Path, *, restart: tuple = (), fresh: bool = False,
                device_check: bool = True) -> tuple[list, set[str]]:  # fmt: skip
    """Everything the sweep refuses before its plan, reading only (``--plan`` refuses what the run would): an
    --out that is a file, another field's sweep or a training run's dir, a restart value that is no point, a
    device no point could use, a point whose config.json holds another config. Returns ``sweep_points``'
    lists, restarted points not done (``fresh``: as after --fresh moved ``out_dir`` aside)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir} is a file, not a sweep directory; choose another --out")
    if out_dir.is_dir() and fresh:  # moved aside whatever its sweep.json holds, unless it is a run's dir
        refuse_run_dir(out_dir)
    values = [(v, "grid", None) for v in spec.values] if fresh else sweep_values(spec, out_dir)
    unknown = sorted(set(restart) - {v for v, _, _ in values})
    if unknown:  # before the plan and the data: a typo costs nothing
        raise UserError(f"{spec.restart_flag} {flag_text(unknown[0])}: not a point of this sweep; points: "
                        + ", ".join(flag_text(v) for v in sorted(v for v, _, _ in values)))  # fmt: skip
    if device_check:  # before the data is prepared: a mistake every point would hit is the only line
        from cs336_basics.basics.device import resolve_device

        resolve_device(base.device)
    for value, _, _ in [] if fresh else values:
        if value in restart:
            continue  # its old config.json goes aside unchecked
        for seed in range(spec.seeds):
            prepare_point(spec, base, value, seed, out_dir / spec.name(value, seed), write=False)
    points, done = sweep_points(spec, base, out_dir, fresh=fresh)
    return points, done - {name for v in restart for name in restart_names(spec, out_dir, v)}


def restart_names(spec: SweepSpec, out_dir: Path, value) -> list[str]:
    """The run dirs ``--restart value`` retrains: its points at this sweep's seeds, and any other seed of it
    sweep.json holds (from a run with more --seeds)."""
    names = [spec.name(value, seed) for seed in range(spec.seeds)]
    recorded = [
        p["name"] for p in sweep_json_over(out_dir, spec.field).get("points", []) if p["value"] == value
    ]
    return names + [n for n in recorded if n not in names]


def run_sweep(spec: SweepSpec, base: ExperimentConfig, out_dir: str | Path, executor, *, propose=None,
              max_extra_points: int = 0, restart: tuple = (), fresh: bool = False,
              settings: dict | None = None, plan=None, wandb: dict | None = None) -> tuple[SweepView, list[str]]:  # fmt: skip
    """Run (or resume) the sweep in ``out_dir``. ``propose(view)`` -> (value, why) or None adds points after
    the grid (bracketing), at most ``max_extra_points`` values. ``plan(points, done)`` (``sweep_points``'
    lists, restarted points not done) sees the sweep before its data is prepared or any point written, and may
    refuse it with a UserError. ``wandb``: the W&B project, entity and mode every point logs to (see
    ``point.point_wandb``). Returns the final view and one line per point that did not end finished or
    diverged."""
    out_dir = Path(out_dir)
    points, done = check_sweep(
        spec, base, out_dir, restart=restart, fresh=fresh, device_check=not executor.elsewhere
    )
    if fresh and out_dir.exists():
        with (
            sweep_lock(out_dir),
            contextlib.ExitStack() as live,
        ):  # no sweep, no point trainer uses what moves
            for run_dir in sorted(lock.parent for lock in out_dir.glob(f"*/{RUN_LOCK_FILE}")):
                live.enter_context(run_dir_lock(run_dir))  # a point whose sweep is gone (SLURM) counts too
            print(f"moved the previous sweep {out_dir} to {move_aside(out_dir)}")
    created = make_dirs(out_dir)
    with sweep_lock(out_dir), removed_if_refused(created, LOCK_FILE):
        if plan is not None:
            plan(points, done)
        values = sweep_values(spec, out_dir)
        base = prepare_data(base)
        wandb = {k: wandb[k] for k in ("project", "entity", "mode")} if wandb else None
        record = SweepRecord.open(out_dir, spec.field, base.to_dict(), seeds=spec.seeds, executor=executor.name,
                                  prefix=spec.prefix, wandb=wandb, **(settings or {}))  # fmt: skip
        for value in restart:  # each of its points moved aside, then its config.json written afresh
            for name in restart_names(spec, out_dir, value):
                if not (out_dir / name).is_dir() or load_experiment_log(out_dir / name).state == "pending":
                    (out_dir / name / CONFIG_FILE).unlink(missing_ok=True)  # all a pending point holds
                    print(f"restarting {name}: it had not started, nothing to move aside")
                else:
                    with run_dir_lock(out_dir / name):  # a live trainer of it is one line, not moved under it
                        moved = move_aside(out_dir / name)
                    print(f"restarting {name} (previous run moved to {moved})")
                prepare_point(spec, base, value, seed_of(name), out_dir / name)
        for value, added_by, why in values:
            add_value(spec, base, record, out_dir, value, added_by, why)
        busy = []

        def on_start(job: Launch) -> None:
            job_attempt[job.name] = record.launched(job.name)
            print(f"\n=== {job.name} ===", flush=True)

        def on_done(job: Launch, result: dict) -> None:
            error = result.get("error")
            if result["state"] != "failed":
                return
            if BUSY in (error or ""):  # lost the run lock to a live process: not a failure of the point
                busy.append(f"{job.name}: {error}")
                return
            if result.get("start_over"):  # its checkpoint can't continue: the way is this sweep's --restart
                value = flag_text(record.point(job.name)["value"])
                error = f"{error}; retrain this point with {spec.restart_flag} {value}"
            record.launch_error(job.name, job_attempt[job.name], error or "failed")
            print(f"{job.name} failed: {error} (the sweep goes on)", file=sys.stderr)

        job_attempt: dict[str, int] = {}
        attempted: set[str] = set()
        try:
            while True:
                view = load_sweep(out_dir)
                todo = [p for p in view.points if p.state not in DONE_STATES and p.name not in attempted]
                if todo:
                    attempted.update(p.name for p in todo)
                    for p in todo:
                        wait_if_live(out_dir / p.name)
                    executor.run(
                        [Launch(p.name, out_dir / p.name, spec.reference) for p in todo], on_start, on_done
                    )
                    continue
                proposal = propose(view) if propose else None
                if proposal is None:
                    break
                value, why = proposal
                extra = {g.value for g in view.groups if g.is_extension}
                if len(extra) >= max_extra_points or view.group(value) is not None:
                    print(f"\nbracketing stops: {why}, but " + (f"{value:g} is already a point" if view.group(value)
                          else f"{len(extra)} point(s) were added already (--max-extra-points {max_extra_points})"))  # fmt: skip
                    break
                print(f"\nbracketing: {why}: adding {value:g}")
                try:
                    add_value(spec, base, record, out_dir, value, "bracketing", why)
                except UserError as err:
                    print(f"bracketing stops: {err}")
                    break
        except KeyboardInterrupt:
            record.save(state="interrupted")
            raise
        view = load_sweep(out_dir)
        problems = [f"{p.name} {p.state}: {p.reason or 'no reason recorded'}" for p in view.points
                    if p.state not in DONE_STATES and not any(b.startswith(p.name + ":") for b in busy)]  # fmt: skip
        record.save(state="finished" if not problems and not busy else "incomplete")
    return view, problems + busy


def add_value(spec, base, record: SweepRecord, out_dir: Path, value, added_by: str, why=None) -> None:
    """Every seed of ``value`` as a prepared point (config.json written or checked), then in sweep.json."""
    for seed in range(spec.seeds):
        name = spec.name(value, seed)
        prepare_point(spec, base, value, seed, out_dir / name)
        record.add_point(name, value, seed, added_by, why)
