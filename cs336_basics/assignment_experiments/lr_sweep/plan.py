"""The plan before a sweep: what will run, how long it will take on this device, and whether the disk has room.

``make_plan`` times a few real optimizer steps of the actual config (``TrainStep``, the trainer's own step, on
random token batches of the run's shape; warm-up and compile excluded and counted apart), then derives the
time per point (steps, evaluations, the stability measurements' ``sharpness_share`` of the wallclock), for
the sweep and for the points bracketing may add, and the disk the checkpoints and data will take. Nothing is
timed when every point is done. It writes nothing under the sweep directory. ``format_plan`` turns it into
the lines ``lr-sweep --plan`` and every sweep print before they start.
"""

from __future__ import annotations

import heapq
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.assignment_experiments.sweep.disk import DiskCheck, DiskNeed, check_disk, data_needs
from cs336_basics.basics.config import MODEL_FIELDS, ExperimentConfig
from cs336_basics.formatting import count, duration, size

BUSY_LOAD = 0.5  # load average per core above which a CPU timing is said to be shared with other work
RUN_FILES_BYTES = 1_000_000  # metrics.csv, logs, plots, json files of one point (generous)
MEASURE_BUDGET_S = 10.0  # timed steps stop once they pass this (at least one is timed)
# Fields that decide how fast one step runs (the learning rate does not): points equal in these are timed once.
_SPEED_FIELDS = (*MODEL_FIELDS, "batch_size", "max_steps", "device", "dtype", "compile", "tf32", "kernels")


@dataclass
class Measurement:
    """One short timing of a config on this device."""

    banner: str  # device, precision, compile (Runtime.banner)
    notes: list[str]
    warmup_steps: int
    timed_steps: int
    step_s: float  # seconds per optimizer step, warm-up excluded
    tokens_per_sec: float
    warmup_s: float  # wallclock of the warm-up steps (compile included)
    forward_s: float  # one eval batch (no-grad forward), measured
    eval_warmup_s: float  # the first eval forward (compiles the eval graph when compiling)
    params: int
    model_bytes: int  # model state_dict tensors
    optimizer_bytes: int  # AdamW state tensors
    device_name: str = ""
    device_type: str = "cpu"
    dtype: str = "fp32"
    tf32: bool = False
    expected_tokens_per_sec: float | None = None  # from the peak-FLOPs table (GPUs it knows)
    expected_note: str | None = None
    load_average: float = 0.0  # 1-minute load average of this machine when the timing started
    cores: int = 1  # the cores this process may run on

    @property
    def startup_s(self) -> float:
        """One-off cost per point beyond its steps: compile warm-up of training and of the eval graph."""
        train_compile = max(0.0, self.warmup_s - self.warmup_steps * self.step_s)
        eval_compile = max(0.0, self.eval_warmup_s - self.forward_s)
        return train_compile + eval_compile

    @property
    def checkpoint_bytes(self) -> int:
        """latest.pt + final.pt (model + AdamW state) + best.pt (model only); see Trainer.checkpoint."""
        return 2 * (self.model_bytes + self.optimizer_bytes) + self.model_bytes


@dataclass
class PointPlan:
    name: str
    done: bool
    steps: int
    start: int  # the step it resumes at (0: from scratch); the times count the steps after it
    tokens: int
    evals: int  # evaluations of eval_batches forward passes each
    eval_batches: int
    train_s: float
    eval_s: float
    measure_s: float  # sharpness and signals: up to sharpness_share of the point's wallclock
    startup_s: float
    measurement: int  # index into Plan.measurements, -1 when not timed

    @property
    def run_s(self) -> float:
        """The point's time from its first step, done or not."""
        return self.train_s + self.eval_s + self.measure_s + self.startup_s

    @property
    def seconds(self) -> float:
        """The time still to spend on it."""
        return 0.0 if self.done else self.run_s


@dataclass
class Plan:
    out_dir: Path
    points: list[PointPlan]
    measurements: list[Measurement]
    slots: int
    extra_points: int
    extra_point_s: float  # time of one point bracketing may add (same config as the grid's); 0: not timed
    remaining_s: float  # the not-done points, scheduled on ``slots``
    with_extra_s: float  # ... plus ``extra_points`` more
    disk: list[DiskNeed] = field(default_factory=list)
    disk_checks: list[DiskCheck] = field(default_factory=list)
    extra_disk_bytes: int = 0  # checkpoints of the points bracketing may add (included in disk_checks)
    unmeasured: str | None = None  # why nothing was timed although points are to run
    plan_s: float = 0.0  # how long the plan itself took

    @property
    def disk_ok(self) -> bool:
        return all(c.ok for c in self.disk_checks)


# ---- measuring -----------------------------------------------------------------------------------------
def measure_throughput(cfg: ExperimentConfig, *, measure_steps: int = 5) -> Measurement:
    """Time ``TrainStep`` on random batches of ``cfg``'s shape: 2 warm-up steps untimed when compiling, else 1
    (compile, allocator), then up to ``measure_steps`` timed (fewer once they pass ``MEASURE_BUDGET_S``, at
    least one), then the eval forward (after an untimed one when compiling)."""
    import torch

    from cs336_basics.basics.checkpoint import tensor_bytes
    from cs336_basics.basics.device import setup_runtime, synchronize
    from cs336_basics.basics.step import TrainStep

    cfg = cfg.resolved()
    runtime = setup_runtime(cfg.device, cfg.dtype, cfg.compile, cfg.tf32, run_tokens=cfg.total_tokens)
    step = TrainStep(cfg, runtime)
    device = runtime.device
    warmup_steps = 2 if runtime.compile else 1
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)

    def batch():
        xy = torch.randint(0, cfg.vocab_size, (2, cfg.batch_size, cfg.context_length), generator=gen)
        return xy[0].to(device), xy[1].to(device)

    load_average, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    start = time.perf_counter()
    for it in range(warmup_steps):
        loss, _, _ = step(it, *batch())
    loss.item()  # sync: the warm-up's work is done before the clock starts
    warmup_s = time.perf_counter() - start
    batches = [batch(), batch()]
    timed, start = 0, time.perf_counter()
    while timed < measure_steps:
        loss, _, _ = step(warmup_steps + timed, *batches[timed % 2])
        timed += 1
        if time.perf_counter() - start > MEASURE_BUDGET_S:
            break
    loss.item()
    synchronize(device)
    step_s = (time.perf_counter() - start) / timed

    model = step.model
    model.eval()
    with torch.no_grad(), runtime.autocast():
        start = time.perf_counter()
        if runtime.compile:  # the first no-grad call compiles the eval graph: a one-off, timed apart
            step.loss_fn(*batches[0]).item()
        eval_warmup_s = time.perf_counter() - start
        start = time.perf_counter()
        step.loss_fn(*batches[1]).item()
        forward_s = time.perf_counter() - start
    model.train()

    m = Measurement(
        banner=runtime.banner(),
        notes=list(runtime.notes),
        warmup_steps=warmup_steps,
        timed_steps=timed,
        step_s=step_s,
        tokens_per_sec=cfg.tokens_per_step / step_s,
        warmup_s=warmup_s,
        forward_s=forward_s,
        eval_warmup_s=eval_warmup_s,
        params=sum(p.numel() for p in model.parameters()),
        model_bytes=tensor_bytes(model.state_dict()),
        optimizer_bytes=tensor_bytes(step.optimizer.state_dict()["state"]),
        device_name=runtime.device_name(),
        device_type=device.type,
        dtype=runtime.dtype,
        tf32=runtime.tf32,
        load_average=load_average,
        cores=cores,
    )
    m.expected_tokens_per_sec, m.expected_note = expected_rate(cfg, m)
    del step, model, batches
    if device.type == "cuda":  # the sweep's points (maybe other processes on this GPU) get the memory back
        torch.cuda.empty_cache()
    return m


def expected_rate(cfg: ExperimentConfig, m: Measurement) -> tuple[float | None, str | None]:
    """Tokens/s this card should reach and how that was reckoned, as lr-diagnose's speed verdict reckons it
    (dense peak x realistic MFU / model FLOPs per token); on CUDA without a peak or an MFU, only why not."""
    from cs336_basics.assignment_experiments.lr_sweep.speed import RunFacts, speed_verdict
    from cs336_basics.basics.hardware import FLOPS_SHAPE

    if m.device_type != "cuda":
        return None, None
    shape = {k: getattr(cfg, k) for k in FLOPS_SHAPE}
    runtime = {"device": "cuda", "device_name": m.device_name, "dtype": m.dtype, "tf32": m.tf32}
    v = speed_verdict(RunFacts("plan", shape, runtime))
    if v.expected_tokens_per_sec is None:
        return None, v.notes[0]
    note = f"{v.peak_flops / 1e12:.0f} TFLOP/s {v.precision} peak x {v.assumed_mfu:.0%} realistic MFU"
    return v.expected_tokens_per_sec, note


# ---- the plan ------------------------------------------------------------------------------------------
def _speed_key(cfg: ExperimentConfig) -> tuple:
    return tuple(getattr(cfg, f) for f in _SPEED_FIELDS)


def _resume_step(run_dir: Path) -> int:
    """The step a point's next run starts at: its checkpoint's, as status.json records it (0: a new point)."""
    from cs336_basics.experiment_log import load_experiment_log

    return (load_experiment_log(run_dir).resume_step or 0) if run_dir.is_dir() else 0


def schedule(durations: list[float], slots: int) -> float:
    """Wallclock of running ``durations`` on ``slots`` parallel slots, each point to the first free slot."""
    finish = [0.0] * max(1, slots)
    for d in durations:
        heapq.heapreplace(finish, finish[0] + d)
    return max(finish)


def make_plan(
    points: list[tuple[str, ExperimentConfig]],
    out_dir: str | os.PathLike,
    *,
    done: set[str],
    extra_points: int,
    slots: int = 1,
    measure_steps: int = 5,
    unmeasured: str | None = None,
) -> Plan:
    """The plan for ``points`` ((run name, config); the sweep's lr grid and those already added), ``done`` the
    names already finished, ``extra_points`` the most bracketing may add, ``slots`` points run at once (each
    at the measured rate: one point per GPU; ``--concurrent`` on one device shares it). Each config that
    differs in speed and still has a point to run is timed once; none when every point is done or when
    ``unmeasured`` says why this machine can't time them. Writes nothing."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    points = [(name, cfg.resolved()) for name, cfg in points]
    measurements: list[Measurement] = []
    by_key: dict[tuple, int] = {}
    for name, cfg in points:
        key = _speed_key(cfg)
        if name not in done and key not in by_key and unmeasured is None:
            by_key[key] = len(measurements)
            measurements.append(measure_throughput(cfg, measure_steps=measure_steps))
    plans = [_point_plan(name, cfg, name in done, by_key.get(_speed_key(cfg), -1), measurements,
                         0 if name in done else _resume_step(out_dir / name)) for name, cfg in points]  # fmt: skip
    todo = [p.seconds for p in plans if not p.done]
    # A point bracketing adds is the sweep's config at another learning rate: it is timed and sized like the
    # last grid point, from step 0 whatever that point's own progress.
    last = plans[-1].measurement if plans else -1
    extra_point_s = _point_plan("", points[-1][1], False, last, measurements, 0).run_s if plans else 0.0
    disk = [
        DiskNeed(f"{p.name} checkpoints", out_dir / p.name, _point_bytes(measurements[p.measurement]))
        for p in plans
        if not p.done and p.measurement >= 0
    ]
    if points:
        disk.extend(data_needs(points[0][1]))
    extra_disk = extra_points * _point_bytes(measurements[last]) if extra_points and last >= 0 else 0
    extra_need = [DiskNeed("bracketing points", out_dir, extra_disk, optional=True)] if extra_disk else []
    return Plan(
        out_dir=out_dir,
        points=plans,
        measurements=measurements,
        slots=slots,
        extra_points=extra_points,
        extra_point_s=extra_point_s,
        remaining_s=schedule(todo, slots),
        with_extra_s=schedule(todo + [extra_point_s] * extra_points, slots),
        disk=disk,
        disk_checks=check_disk(disk + extra_need),
        extra_disk_bytes=extra_disk,
        unmeasured=unmeasured if todo else None,
        plan_s=time.perf_counter() - started,
    )


def _point_bytes(m: Measurement) -> int:
    return m.checkpoint_bytes + RUN_FILES_BYTES


def _point_plan(
    name: str, cfg: ExperimentConfig, done: bool, idx: int, measurements, start: int
) -> PointPlan:
    """One point's time from step ``start`` on (where it resumes), from its config and its measurement
    (``idx``; -1: not timed, all times 0)."""
    m = measurements[idx] if idx >= 0 else None
    evals = sum(map(cfg.evaluates_at, range(start + 1, cfg.max_steps + 1)))  # those after step start
    train_s = max(cfg.max_steps - start, 0) * m.step_s if m else 0.0
    eval_s = evals * cfg.eval_batches * m.forward_s if m else 0.0
    # The trainer spaces its sharpness measurements to keep them near sharpness_share of the wallclock.
    measure_s = (train_s + eval_s) * cfg.sharpness_share / (1 - cfg.sharpness_share)
    return PointPlan(
        name=name,
        done=done,
        steps=cfg.max_steps,
        start=start,
        tokens=cfg.total_tokens,
        evals=evals,
        eval_batches=cfg.eval_batches,
        train_s=train_s,
        eval_s=eval_s,
        measure_s=measure_s,
        startup_s=m.startup_s if m else 0.0,
        measurement=idx,
    )


# ---- output --------------------------------------------------------------------------------------------
def format_plan(plan: Plan) -> str:
    """The plan as the lines printed before a sweep (and by ``lr-sweep --plan``)."""
    n_done = sum(p.done for p in plan.points)
    n_todo = len(plan.points) - n_done
    lines = [
        f"plan for {plan.out_dir}: {len(plan.points)} point(s), {n_done} already done"
        + (f"; bracketing may add up to {plan.extra_points}" if plan.extra_points else "")
    ]
    for i, m in enumerate(plan.measurements):
        tag = f"config {i + 1}: " if len(plan.measurements) > 1 else ""
        lines.append(f"  {tag}{m.banner}")
        lines.extend(f"    {note}" for note in m.notes)
        lines.append(
            f"  {tag}measured {m.tokens_per_sec:,.0f} tokens/s ({1e3 * m.step_s:.1f} ms/step) over "
            f"{m.timed_steps} timed step(s) after {m.warmup_steps} warm-up step(s) ({duration(m.warmup_s)}); "
            f"eval {1e3 * m.forward_s:.1f} ms per batch (measured forward); {m.params / 1e6:.2f}M parameters"
        )
        if m.device_type == "cpu" and m.load_average > BUSY_LOAD * m.cores:
            lines.append(f"  {tag}timed at load average {m.load_average:.1f} on {m.cores} core(s): other processes "
                         "share this CPU, so these times hold only while that load lasts")  # fmt: skip
        if m.expected_tokens_per_sec:
            ratio = m.tokens_per_sec / m.expected_tokens_per_sec
            verdict = "as expected" if ratio >= 0.7 else "SLOWER than this card should be: check the set-up"
            lines.append(
                f"  {tag}expected on {m.device_name}: {m.expected_tokens_per_sec:,.0f} tokens/s "
                f"({m.expected_note}); measured/expected = {ratio:.2f} ({verdict})"
            )
        elif m.expected_note:
            lines.append(f"  {tag}{m.expected_note}")
    if plan.unmeasured:
        lines.append(f"  not timed: {plan.unmeasured}")
    for p in plan.points:
        if p.done:
            lines.append(f"  {p.name:<14} done")
            continue
        resumes = f", resumes at step {p.start}" if p.start else ""
        line = f"  {p.name:<14} {count(p.tokens)} tokens ({p.steps} steps{resumes})"
        if p.measurement >= 0:
            line += (
                f": {duration(p.seconds)} = train {duration(p.train_s)} + eval {duration(p.eval_s)} "
                f"({p.evals} x {p.eval_batches} batches) + stability measurements {duration(p.measure_s)}"
                + (f" + warm-up {duration(p.startup_s)}" if p.startup_s >= 0.05 else "")
            )
        lines.append(line)
    if n_todo == 0:
        sweep = "  sweep: every point is done"
    elif plan.unmeasured:
        sweep = f"  sweep: {n_todo} point(s) to run, time not estimated"
    else:
        slots = f" on {plan.slots} slots at once" if plan.slots > 1 else ""
        sweep = f"  sweep: {duration(plan.remaining_s)} for the {n_todo} point(s) to run{slots}"
    if plan.extra_points and plan.extra_point_s:
        sweep += (
            f"; up to {duration(plan.with_extra_s)} if bracketing adds {plan.extra_points} "
            f"({duration(plan.extra_point_s)} each; diverging points stop early)"
        )
    elif plan.extra_points:
        sweep += f"; bracketing may add {plan.extra_points} point(s) (not timed)"
    lines.append(sweep)
    lines += [f"  disk: {need.what}: {size(need.bytes)} in {need.path}" for need in plan.disk]
    if plan.extra_disk_bytes:
        lines.append(f"  disk: checkpoints of the bracketing points: up to {size(plan.extra_disk_bytes)}")
    for c in plan.disk_checks:
        needed = f"{size(c.needed)} needed"
        if c.optional:
            needed += f" (+ up to {size(c.optional)} for bracketing)"
        if c.ok:
            lines.append(f"  disk: {needed}, {size(c.free)} free under {c.mount}: ok")
        elif c.fits:
            lines.append(f"  disk: {needed}, {size(c.free)} free under {c.mount}: room for the points to run, "
                         "not for every point bracketing may add (--max-extra-points)")  # fmt: skip
        else:
            lines.append(f"  disk: NOT ENOUGH ROOM under {c.mount}: {needed}, {size(c.free)} free; "
                         "free some space or choose another --out / --data-dir")  # fmt: skip
    lines.append(f"  (planned in {duration(plan.plan_s)})")
    return "\n".join(lines)
