"""sweep.json and the sweep lock: what a sweep knows that its run directories can't.

sweep.json holds the sweep's id (made once, kept across resumes: its W&B group), the swept field and its
grid, the seeds, who added each point and why (``grid`` or ``bracketing`` + reason), launch errors (time,
attempt, error), the sweep-level config and settings (the W&B project, ...) and its own state. A
point's state, losses and timing live in its run dir only (``view.py``). Only the sweep process writes
sweep.json (atomically); ``.sweep.lock`` is an flock the kernel drops when its holder dies, so a lock left by
a dead sweep is simply free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

from cs336_basics.atomic import atomic_write_json
from cs336_basics.errors import UserError
from cs336_basics.experiment_log.reader import (
    SWEEP_FILE,
    finite_or_none,
    read_json_dict,
    refuse_run_dir,
    utc_timestamp,
)

LOCK_FILE = ".sweep.lock"
VERSION = 2
REPAIR = "move it aside, or start the sweep over (lr-sweep or batch-size-sweep with --fresh)"


def flag_text(value) -> str:
    """The value as a flag gives it back exactly (``--restart 0.00123456789``; ``:g`` would round it to
    0.00123457, which is no point of the sweep)."""
    return str(value) if isinstance(value, int) else repr(float(value))


def value_text(value) -> str:
    """A lossless, readable name part: 16 -> ``16``; 1e-4 -> ``1e_04``, 2.5e-4 -> ``2p5e_04`` (``_`` after
    ``e`` is a minus sign, ``p`` the point)."""
    if isinstance(value, int):
        return str(value)
    if not value > 0:
        raise ValueError(f"a swept value must be positive, got {value}")
    text = next(t for t in (f"{value:.{d}e}" for d in range(17)) if float(t) == value)
    mantissa, exponent = text.split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    return f"{mantissa.replace('.', 'p')}e{'_' if exponent[0] == '-' else ''}{exponent[1:].zfill(2)}"


def point_name(prefix: str, value, seed: int = 0) -> str:
    """A point's run-dir name: ``lr_3e_04``; seed k > 0 adds ``_sk`` (seed 0 keeps the plain name)."""
    return f"{prefix}_{value_text(value)}" + (f"_s{seed}" if seed else "")


def seed_of(name: str) -> int:
    """The seed index k of a point's run-dir name (``lr_3e_04_s2`` -> 2; 0 without the suffix): its config's
    seed is the sweep's base seed + k."""
    match = re.search(r"_s(\d+)$", name)
    return int(match[1]) if match else 0


def read_sweep_json(sweep_dir: Path) -> dict:
    """sweep.json as a version-2 dict ({} when absent); version 1 (one entry per lr, states inside) is read
    as what it knows; anything structurally wrong is one UserError line."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        return {}
    meta = read_json_dict(path)
    bad = (
        meta is None
        or not isinstance(meta.get("points", []), list)
        or not isinstance(meta.get("config", {}), dict)
    )
    bad = bad or not all(isinstance(p, dict) for p in meta.get("points", []))
    if bad:
        raise UserError(f"{path} is not a sweep record (corrupt or edited); {REPAIR}")
    if meta.get("version", 1) == 1:
        meta = _from_version_1(meta)
    for p in meta["points"]:
        value = _value(p.get("value"))
        if value is None or not isinstance(p.get("name"), str):
            raise UserError(
                f"{path}: a point whose value is not a number or whose name is not a string ({p}); {REPAIR}"
            )
        p["value"] = value
    return meta


def _value(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else finite_or_none(v)


def _from_version_1(meta: dict) -> dict:
    """The learning-rate sweep's first format: its failed points' errors become launch errors."""
    points, errors = [], []
    for p in meta.get("points", []):
        added = "bracketing" if p.get("added_by") == "extension" else "grid"
        points.append(
            {"value": p.get("lr"), "seed": 0, "name": p.get("name"), "added_by": added, "why": p.get("why")}
        )
        if p.get("state") == "failed" and p.get("error"):
            errors.append(
                {"name": p.get("name"), "at": p.get("finished_at"), "attempt": 1, "error": p["error"]}
            )
    return {**meta, "version": VERSION, "field": "max_lr", "values": meta.get("learning_rates", []),
            "points": points, "launch_errors": errors}  # fmt: skip


def sweep_id(meta: dict, sweep_dir: Path) -> str:
    """The sweep's id (its W&B group): the one sweep.json keeps, else (a sweep from before ids) the dir's name."""
    return meta.get("id") or Path(sweep_dir).resolve().name


def sweep_json_over(sweep_dir: Path, field: str) -> dict:
    """``read_sweep_json``, refusing a sweep.json of a sweep over another field (a batch-size sweep's --out
    given to the lr sweep or its readers): before any plan, data, point or table treats its values as this
    sweep's."""
    refuse_run_dir(sweep_dir)
    meta = read_sweep_json(sweep_dir)
    if meta and meta.get("field", field) != field:
        raise UserError(
            f"{sweep_dir} holds a sweep over {meta['field']}, not {field}; choose another directory"
        )
    return meta


class SweepRecord:
    """The sweep process's handle on sweep.json: every change is saved at once."""

    def __init__(self, sweep_dir: Path, meta: dict):
        self.path, self.meta = Path(sweep_dir) / SWEEP_FILE, meta

    @classmethod
    def open(cls, sweep_dir: Path, field: str, config: dict, **settings) -> SweepRecord:
        meta = sweep_json_over(sweep_dir, field)
        for stale in ("state", "learning_rates", "best_lr", "target_met", "bracketing", "finished_at"):
            meta.pop(stale, None)  # derived from the run dirs, or version-1 leftovers
        meta = {
            "version": VERSION,
            "id": f"{Path(sweep_dir).resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}",
            "created_at": utc_timestamp(),
            "points": [],
            "launch_errors": [],
            "values": [],
            **meta,
        }
        meta.update(field=field, config=config, preset=config.get("preset"), state="running", **settings)
        record = cls(sweep_dir, meta)
        record.save()
        return record

    def point(self, name: str) -> dict | None:
        return next((p for p in self.meta["points"] if p["name"] == name), None)

    def add_point(self, name: str, value, seed: int, added_by: str, why: str | None = None) -> None:
        if self.point(name) is None:
            self.meta["points"].append({"value": value, "seed": seed, "name": name, "added_by": added_by,
                                        "why": why, "attempts": 0})  # fmt: skip
            self.meta["points"].sort(key=lambda p: (p["value"], p["seed"]))
            if added_by == "grid" and value not in self.meta["values"]:
                self.meta["values"] = sorted([*self.meta["values"], value])
        self.save()

    def launched(self, name: str) -> int:
        p = self.point(name)
        p["attempts"] = p.get("attempts", 0) + 1
        self.save()
        return p["attempts"]

    def launch_error(self, name: str, attempt: int, error: str) -> None:
        self.meta["launch_errors"].append(
            {"name": name, "at": utc_timestamp(), "attempt": attempt, "error": error}
        )
        self.save()

    def save(self, **values) -> None:
        self.meta.update(values, updated_at=utc_timestamp())
        atomic_write_json(self.path, self.meta)


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path):
    """``with sweep_lock(dir):`` holds ``dir/.sweep.lock``; a second holder gets a UserError naming the first.
    An flock: the kernel drops it when the holder dies (even by kill -9)."""
    path = Path(sweep_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:  # closing drops the flock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise UserError(
                f"another sweep ({read_holder(handle.read())}) is using {path.parent}; wait for it to finish, "
                "or stop it (it resumes when re-run)"
            ) from None
        handle.seek(0)
        handle.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}, handle)
        handle.flush()
        yield


def read_holder(text: str) -> str:
    try:
        h = json.loads(text)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started_at", 0)))
        return f"pid {h.get('pid')} on {h.get('host')}, started {started}"
    except (json.JSONDecodeError, AttributeError):
        return "another process"
