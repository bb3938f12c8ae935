"""Weights & Biases mirror of a run directory: optional, never required, never able to stop training.

The run directory stays the source of truth; W&B gets a copy of every metrics row (same step numbers), the
summary, and for a sweep's analysis (``log_sweep_analysis``) its plots, report and results table. ``wandb``
is imported only when asked for (``uv sync --extra wandb``); ``wandb_options`` checks it is there before any
work. The W&B run id is kept in ``<run_dir>/wandb_id``, so a resumed run continues the
same W&B run. Any W&B failure (no login, outage, init timeout) prints one warning and turns the sink into a
no-op; offline mode (``--wandb-mode offline``, synced later with ``wandb sync``) needs no login.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import secrets
import string
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cs336_basics.atomic import atomic_write_text
from cs336_basics.errors import UserError

MODES = ("online", "offline", "disabled")
ID_FILE = "wandb_id"
INSTALL_HINT = (
    "--wandb needs the optional wandb package: run `uv sync --extra wandb` once, "
    "or use `uv run --extra wandb ...` (or drop --wandb)"
)
# Why not W&B's defaults: our own progress bar would be captured as console logs (console="off"); the local
# files already hold the code and environment (no git/requirements/code capture). System stats stay on.
_SETTINGS: dict[str, Any] = dict(
    console="off",
    save_code=False,
    disable_git=True,
    x_save_requirements=False,
    init_timeout=60.0,
)


def default_mode() -> str:
    mode = os.environ.get("WANDB_MODE", "online").strip().lower() or "online"
    return {"dryrun": "offline", "run": "online"}.get(mode, mode)


def add_wandb_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wandb PROJECT``, ``--wandb-entity``, ``--wandb-mode`` (an argument group of ``parser``)."""
    g = parser.add_argument_group("Weights & Biases (optional: uv sync --extra wandb)")
    g.add_argument(
        "--wandb",
        metavar="PROJECT",
        default=None,
        help="also log each run to this W&B project (metrics rows, summary; the run dir stays the source of truth)",
    )
    g.add_argument("--wandb-entity", default=None, help="W&B team or user (default: your default entity)")
    g.add_argument(
        "--wandb-mode",
        choices=MODES,
        default=default_mode(),
        help="online, offline (no login; `wandb sync` later) or disabled (default: $WANDB_MODE, else online)",
    )


def _scalar(value: Any) -> Any:
    """W&B-loggable form of a metrics value, or None to leave it out (empty CSV cells)."""
    if value is None or value == "":
        return None
    if isinstance(value, (bool, int, float)):
        return value
    try:
        return float(value)  # numpy / torch scalars, numeric strings read back from the CSV
    except (TypeError, ValueError):
        return None


def _guarded(what: str):
    """A ``WandbSink`` method that does nothing once the sink is quiet, and whose W&B failures are
    ``_warn``-ed as ``what`` instead of raised (W&B never stops the run)."""

    def decorate(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs) -> None:
            if self.run is None:
                return
            try:
                method(self, *args, **kwargs)
            except Exception as err:
                self._warn(err, what)

        return guarded

    return decorate


class WandbSink:
    """One W&B run mirroring one run directory. Use ``open``; a sink whose run failed does nothing."""

    def __init__(self, run: Any, wandb_module: Any = None) -> None:
        self.run, self._wandb = run, wandb_module
        self.run_id: str | None = None if run is None else run.id
        self._warned = False
        # The highest step this run has logged; online, a resumed W&B run starts after its last step (the
        # replayed steps before it are skipped).
        self._last_step = int(getattr(run, "starting_step", 0) or 0)

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike,
        project: str | None,
        entity: str | None = None,
        mode: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: Iterable[str] = (),
        config: dict | None = None,
        *,
        job_type: str | None = None,
        settings: dict | None = None,
    ) -> WandbSink | None:
        """The sink for ``run_dir``, or None when W&B is not asked for (no project, or mode disabled).

        Raises ``UserError`` only if wandb is not installed; every W&B failure after that is a warning and a
        no-op sink. ``settings`` overrides entries of ``wandb.Settings`` (the tests use it to skip stats).
        """
        mode = mode or default_mode()
        if mode not in MODES:
            raise UserError(f"--wandb-mode must be one of {', '.join(MODES)}; got {mode!r}")
        if not project or mode == "disabled":
            return None
        try:
            import wandb
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        run_dir = Path(run_dir)
        try:
            run = wandb.init(
                project=project,
                entity=entity,
                mode=mode,
                id=_run_id(run_dir),
                resume="allow",  # same id: a resumed run continues the same W&B run
                reinit="create_new",  # sweep points in one process are separate runs
                name=name or run_dir.name,
                group=group,
                tags=[str(t) for t in tags] or None,
                job_type=job_type,
                config=config or {},
                dir=os.environ.get("WANDB_DIR") or str(run_dir),
                settings=_settings(wandb, settings),
            )
        except Exception as err:  # no login, outage, init timeout, bad entity: never stop the run for it
            sink = cls(None, wandb)
            sink._warn(err, "could not start the W&B run")
            return sink
        return cls(run, wandb)

    @property
    def active(self) -> bool:
        return self.run is not None

    @_guarded("W&B log failed")
    def log_row(self, row: dict) -> None:
        """One metrics.csv row at W&B step ``row["step"]`` (empty cells left out)."""
        values = {k: v for k, v in ((k, _scalar(v)) for k, v in row.items() if k != "step") if v is not None}
        step = int(row["step"])
        # Same step again (sharpness after the metrics row): W&B merges it into that step's row. An earlier
        # step (a resumed run replays from its checkpoint; W&B already holds those) W&B would refuse.
        if step >= self._last_step:
            self.run.log(values, step=step)
            self._last_step = step

    @_guarded("W&B summary failed")
    def log_summary(self, summary: dict) -> None:
        self.run.summary.update({k: _summary_value(v) for k, v in summary.items()})

    @_guarded("W&B file upload failed")
    def attach_files(self, paths: Iterable[str | os.PathLike]) -> None:
        """Upload files (report, CSV) with the run, under their own names."""
        for path in map(Path, paths):
            if path.is_file():
                self.run.save(str(path.resolve()), base_path=str(path.resolve().parent), policy="now")

    @_guarded("W&B image upload failed")
    def log_images(self, paths: Iterable[str | os.PathLike]) -> None:
        """Log PNGs as W&B images, keyed by file stem."""
        logged = {Path(p).stem: self._wandb.Image(str(p)) for p in paths if Path(p).is_file()}
        if logged:
            self.run.log(logged)

    @_guarded("W&B table upload failed")
    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        """A ``wandb.Table`` under ``key``."""
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    @_guarded("W&B finish failed")
    def finish(self, exit_code: int = 0) -> None:
        """End the W&B run (uploads pending data when online); safe to call twice."""
        run, self.run = self.run, None
        run.finish(exit_code=exit_code)

    def _warn(self, err: BaseException, what: str) -> None:
        """First failure: one warning, then the sink goes quiet (the run dir keeps everything)."""
        self.run = None
        if self._warned:
            return
        self._warned = True
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        print(
            f"warning: {what} ({type(err).__name__}: {detail}); training goes on without W&B, "
            "the run directory keeps every metric (try --wandb-mode offline, then `wandb sync`)",
            file=sys.stderr,
            flush=True,
        )


def _run_id(run_dir: Path) -> str:
    """The W&B id kept in ``run_dir/wandb_id``, created (atomically) on first use."""
    path = run_dir / ID_FILE
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    # W&B's own id shape: 8 characters of [a-z0-9].
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    atomic_write_text(path, run_id + "\n")
    return run_id


def _settings(wandb: Any, overrides: dict | None) -> Any:
    values = {**_SETTINGS, **(overrides or {})}
    try:
        return wandb.Settings(**values)
    except Exception:  # a wandb release without one of the optional knobs: keep only the public ones
        public = {k: v for k, v in values.items() if not k.startswith("x_")}
        return wandb.Settings(**public)


def _summary_value(value: Any) -> Any:
    if isinstance(value, Path) or (isinstance(value, float) and not math.isfinite(value)):
        return str(value)  # JSON has no paths and no NaN/inf; W&B would reject the whole update
    return value


def wandb_options(args: argparse.Namespace, *, tags=(), group: str | None = None) -> dict | None:
    """The ``WandbSink.open`` arguments from the ``--wandb*`` flags, or None when W&B is not asked for.
    Asked for but not installed: the install hint as a UserError, now, before the command does any work."""
    if not getattr(args, "wandb", None):
        return None
    # argparse checks a given --wandb-mode: this one is the default, from the env
    if args.wandb_mode not in MODES:
        raise UserError(f"$WANDB_MODE={os.environ.get('WANDB_MODE')!r} is not a W&B mode ({', '.join(MODES)}); "
                        "unset it or pass --wandb-mode")  # fmt: skip
    if args.wandb_mode != "disabled" and importlib.util.find_spec("wandb") is None:
        raise UserError(INSTALL_HINT)
    return dict(
        project=args.wandb, entity=args.wandb_entity, mode=args.wandb_mode, group=group, tags=list(tags)
    )


def log_sweep_analysis(analysis, options: dict | None) -> None:
    """Attach an ``lr-analyze`` result (``AnalysisOutputs``) to one W&B run in its sweep's group, named
    ``<sweep>-analysis`` (job type "analysis"; its id kept beside the report, so a re-run updates that run):
    every file the analysis wrote (PNGs also as images) and the results table, one row per point, as a
    ``wandb.Table``. Does nothing when ``options`` is None (no --wandb)."""
    if not options:
        return
    from cs336_basics.assignment_experiments.sweep.record import sweep_id

    view = analysis.view
    options = {**options, "group": sweep_id(view.meta, view.path)}
    sink = WandbSink.open(analysis.out_dir, name=f"{view.path.resolve().name}-analysis",
                          config=view.config, job_type="analysis", **options)  # fmt: skip
    if sink is None:
        return
    sink.log_images([p for p in analysis.written if p.suffix == ".png"])
    sink.attach_files(analysis.written)
    sink.log_table("results", *_results(view))
    sink.finish()


def _results(view) -> tuple[list[str], list[list]]:
    """The sweep's points as table rows: what lr-sweep's table shows, per seed, in the run dirs' units."""
    columns = [view.field, "seed", "name", "state", "added_by", "final_train_loss", "best_val_loss",
               "final_val_loss", "tokens", "wallclock_s", "tokens_per_sec"]  # fmt: skip
    rows = [[getattr(p, "value" if c == view.field else c) for c in columns] for p in view.points]
    return columns, rows
