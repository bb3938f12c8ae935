"""``ExperimentConfig``: every knob of one run, in one typed place. Presets, JSON and the command line derive from it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cs336_basics.errors import UserError


@dataclass
class ExperimentConfig:
    """One training run. ``None`` means "derived from other fields" (see ``resolved()``)."""

    preset: str = "full"
    # Model: the CS336 assignment-1 TinyStories model (~17M non-embedding parameters).
    vocab_size: int = 10_000
    context_length: int = 256
    d_model: int = 512
    d_ff: int = 1344
    num_layers: int = 4
    num_heads: int = 16
    rope_theta: float = 10_000.0
    # Optimisation.
    batch_size: int = 128
    max_steps: int = 10_000
    max_lr: float = 1e-3
    min_lr: float | None = None  # default 0.1 * max_lr
    warmup_steps: int | None = None  # default 10% of max_steps
    cosine_cycle_steps: int | None = None  # default max_steps - 1: the last step runs at exactly min_lr
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # Logging, evaluation, checkpoints (in optimizer steps).
    log_interval: int = 50
    eval_interval: int = 500
    eval_batches: int = 16
    checkpoint_interval: int = 1000
    target_val_loss: float | None = 1.45
    # Divergence rule (see divergence.py): non-finite, exploded, rebounded, or stalled far above where it should be.
    divergence_check_after: float = 0.25  # fraction of max_steps before a stall can be declared
    divergence_explode_factor: float = 1.5  # loss above this x the initial loss = exploded
    divergence_rebound_margin: float = 1.0  # smoothed loss this far (nats) above its lowest = rebounded
    divergence_stall_fraction: float = 0.9  # smoothed loss above this x initial after the check = stalled
    divergence_stall_margin: float = 1.0  # nats above the best smaller-LR run at the same step = stalled
    divergence_min_steps: int = 200  # no stall is called before this step (short runs are too noisy to judge)
    # Data: a dataset name for cs336_basics.data.prepare_dataset, or explicit token files.
    dataset: str = "tinystories"
    data_dir: str = "data"
    train_data: str | None = None
    val_data: str | None = None
    tokenizer_path: str | None = None
    # System: "auto" picks the fastest correct choice for the device (device.py) and records it.
    seed: int = 0
    device: str = "auto"  # auto | cuda | cuda:N | mps | cpu
    dtype: str = "auto"  # auto | bf16 | fp32
    tf32: bool = True
    compile: str = "auto"  # auto | on | off
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. sweep point metadata)

    # ---- derived values -------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.max_steps

    def resolved(self) -> ExperimentConfig:
        """A copy with every derived default filled in; validates the values."""
        self._check_types()
        cfg = dataclasses.replace(self, extra=dict(self.extra))
        if cfg.min_lr is None:
            cfg.min_lr = 0.1 * cfg.max_lr
        if cfg.warmup_steps is None:
            cfg.warmup_steps = max(1, round(0.1 * cfg.max_steps))
        if cfg.cosine_cycle_steps is None:
            cfg.cosine_cycle_steps = max(cfg.max_steps - 1, cfg.warmup_steps)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        self._check_types()
        positive = [
            "vocab_size",
            "context_length",
            "d_model",
            "d_ff",
            "num_layers",
            "num_heads",
            "batch_size",
            "max_steps",
            "log_interval",
            "eval_interval",
            "eval_batches",
            "checkpoint_interval",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}")
        if not (self.max_lr > 0 and math.isfinite(self.max_lr)):
            raise UserError(f"--lr must be a positive number, got {self.max_lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise UserError(f"--beta1/--beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not self.eps > 0 or not self.grad_clip > 0 or self.weight_decay < 0:
            raise UserError(
                "--eps and --grad-clip must be > 0 and --weight-decay >= 0; "
                f"got {self.eps}, {self.grad_clip}, {self.weight_decay}"
            )
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.max_steps:
            raise UserError(
                f"--warmup-steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}"
            )
        if self.min_lr is not None and not 0 <= self.min_lr <= self.max_lr:
            raise UserError(f"--min-lr must be in [0, lr={self.max_lr}], got {self.min_lr}")
        if self.d_model % self.num_heads:
            raise UserError(f"--d-model {self.d_model} must be divisible by --num-heads {self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise UserError(
                f"head size d_model/num_heads = {self.d_model // self.num_heads} must be even for RoPE"
            )
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise UserError(f"--dtype must be one of auto, bf16, fp32; got {self.dtype!r}")
        if self.compile not in ("auto", "on", "off"):
            raise UserError(f"--compile must be one of auto, on, off; got {self.compile!r}")

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _scalar_type(hints[f.name])
            if value is None or kind not in (int, float, str, bool):
                continue
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if not ok or (kind in (int, float) and isinstance(value, bool)):
                raise UserError(f"config field {f.name} must be {kind.__name__}, got {value!r}")

    # ---- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(
                f"unknown config field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read config {path}: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"config {path} is not a JSON object of config fields")
        values = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for name in data.get("derived_fields", []):  # a run's config.json: re-derive from the new values
            values[name] = None
        return cls.from_dict(values)


# Model-shape fields: what a checkpoint's weights need to be loaded.
MODEL_FIELDS = ("vocab_size", "context_length", "d_model", "d_ff", "num_layers", "num_heads", "rope_theta")
# Fields that default to None and are derived by resolved(); config.json lists which ones were derived.
DERIVED_FIELDS = ("min_lr", "warmup_steps", "cosine_cycle_steps")

PRESETS: dict[str, dict[str, Any]] = {
    # 128 x 10,000 x 256 = 327.68M tokens, the assignment's full budget.
    "full": dict(
        batch_size=128, max_steps=10_000, target_val_loss=1.45, eval_interval=500, checkpoint_interval=1000
    ),
    # 32 x 5,000 x 256 = 40.96M tokens, the low-resource (CPU / Apple) budget.
    "low-resource": dict(
        batch_size=32, max_steps=5_000, target_val_loss=2.00, eval_interval=250, checkpoint_interval=500
    ),
    # The real model shape on a handful of steps: checks a set-up end to end in about a minute.
    "quick-test": dict(
        batch_size=8,
        max_steps=10,
        context_length=128,
        log_interval=5,
        eval_interval=10,
        eval_batches=1,
        checkpoint_interval=5,
        target_val_loss=None,
    ),
    # A small model on the embedded synthetic corpus: minutes on a laptop CPU, no download.
    "demo": dict(
        dataset="demo",
        vocab_size=2048,
        context_length=128,
        d_model=128,
        d_ff=384,
        num_layers=2,
        num_heads=4,
        batch_size=16,
        max_steps=200,
        max_lr=1e-2,
        log_interval=10,
        eval_interval=50,
        eval_batches=4,
        checkpoint_interval=50,
        target_val_loss=1.0,
        divergence_min_steps=50,
    ),
}


def create_experiment_config(preset: str = "full", **overrides: Any) -> ExperimentConfig:
    """The preset's config with ``overrides`` applied (field names of ``ExperimentConfig``; ``lr`` = ``max_lr``)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if "lr" in overrides:
        overrides["max_lr"] = overrides.pop("lr")
    values = {**PRESETS[preset], **overrides, "preset": preset}
    return ExperimentConfig.from_dict(values)


# ---- command line, derived from the dataclass ---------------------------------------------------
def _flag(name: str) -> str:
    return name.replace("_", "-")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ExperimentConfig)


def _scalar_type(tp: Any) -> Any:
    """int | None -> int, etc."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _parse_optional(kind: Any):
    def parse(text: str):
        if text.lower() in ("none", "null", ""):
            return None
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per ExperimentConfig field (defaults left to the preset), plus ``--lr``."""
    group = parser.add_argument_group("run configuration (any ExperimentConfig field; default: the preset's)")
    hints = _field_types()
    for f in dataclasses.fields(ExperimentConfig):
        if f.name in ("preset", "extra") or f.name in skip:
            continue
        kind = _scalar_type(hints[f.name])
        flag = f"--{_flag(f.name)}"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(
                flag, dest=f.name, type=_parse_optional(kind), default=None, metavar=kind.__name__.upper()
            )
    if "max_lr" not in skip:
        group.add_argument(
            "--lr", dest="max_lr", type=float, default=None, help="peak learning rate (= --max-lr)"
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (those not left at None)."""
    names = {f.name for f in dataclasses.fields(ExperimentConfig)} - {"preset", "extra"}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
