"""``ExperimentConfig``: every knob of one run, in one typed place. Presets, JSON and the command line derive from it.

Each field's docstring (the string right under it) is its documentation: the command line's ``--help`` is built
from it, so the two cannot drift. A docstring ends with the field's unit in brackets, ``[none]`` where it has none.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cs336_basics.errors import UserError
from cs336_basics.formatting import value_repr


@dataclass
class ExperimentConfig:
    """One training run. ``None`` means "derived from other fields" (see ``resolved()``)."""

    preset: str = "full"
    """Preset the other fields' defaults come from: full, low-resource, quick-test or demo. [none]"""

    # ---- model: the CS336 assignment-1 TinyStories model (~17M non-embedding parameters) ----
    vocab_size: int = 10_000
    """Tokenizer vocabulary size (the BPE tokenizer is trained to it). [tokens]"""
    context_length: int = 256
    """Length of one training window. [tokens]"""
    d_model: int = 512
    """Width of the residual stream. [features]"""
    d_ff: int = 1344
    """Hidden width of the SwiGLU feed-forward. [features]"""
    num_layers: int = 4
    """Number of Transformer blocks. [count]"""
    num_heads: int = 16
    """Attention heads per block; d_model / num_heads must be even (RoPE). [count]"""
    rope_theta: float = 10_000.0
    """RoPE base theta (pair k at position p rotates by p * theta^(-2k/d_head)). [none]"""

    # ---- optimisation ----
    batch_size: int = 128
    """Windows per optimizer step. [sequences]"""
    max_steps: int = 10_000
    """Length of the run. [optimizer steps]"""
    max_lr: float = 1e-3
    """Peak learning rate of AdamW, reached at the end of warm-up. [none]"""
    min_lr: float | None = None
    """Learning rate at the end of the cosine decay; derived: 0.1 x max_lr. [none]"""
    warmup_steps: int | None = None
    """Linear warm-up from 0 to max_lr; derived: 10% of max_steps. [optimizer steps]"""
    cosine_cycle_steps: int | None = None
    """Step where the cosine reaches min_lr; derived: max_steps - 1 (the last step runs at min_lr). [optimizer steps]"""
    beta1: float = 0.9
    """AdamW first-moment decay. [none]"""
    beta2: float = 0.95
    """AdamW second-moment decay. [none]"""
    eps: float = 1e-8
    """AdamW denominator guard. [none]"""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (each step: w -= lr * weight_decay * w). [per unit lr]"""
    grad_clip: float = 1.0
    """Gradients are rescaled to at most this global L2 norm. [L2 norm]"""

    # ---- logging, evaluation, checkpoints ----
    log_interval: int = 50
    """A metrics.csv row (and a divergence check) every this many steps. [optimizer steps]"""
    eval_interval: int = 500
    """Validation loss every this many steps (and at the end). [optimizer steps]"""
    eval_batches: int = 16
    """Batches of the fixed validation set per evaluation. [batches]"""
    checkpoint_interval: int = 1000
    """checkpoints/latest.pt every this many steps. [optimizer steps]"""
    target_val_loss: float | None = 1.45
    """Validation loss the run is judged against (summary.json target_met); none = no target. [nats]"""

    # ---- divergence rule (divergence.py): non-finite, exploded, rebounded, or stalled ----
    divergence_check_after: float = 0.25
    """No stall is called before this fraction of max_steps. [fraction of max_steps]"""
    divergence_explode_factor: float = 1.5
    """Exploded: train loss above this multiple of the initial loss. [x initial loss]"""
    divergence_rebound_margin: float = 1.0
    """Rebounded: smoothed loss this far above its lowest. [nats]"""
    divergence_stall_fraction: float = 0.9
    """Stalled: smoothed loss still above this multiple of the initial loss after the check. [x initial loss]"""
    divergence_stall_margin: float = 1.0
    """Stalled (sweeps): smoothed loss this far above the best smaller-lr run at the same step. [nats]"""
    divergence_min_steps: int = 200
    """No stall is called before this step (short runs are too noisy to judge). [optimizer steps]"""

    # ---- data: a dataset name for cs336_basics.data.prepare_dataset, or explicit token files ----
    dataset: str = "tinystories"
    """Dataset to prepare: tinystories, demo (the embedded synthetic corpus) or the path of a .txt file. [none]"""
    data_dir: str = "data"
    """Directory of the prepared dataset (downloads, tokenizer, token files). [path]"""
    train_data: str | None = None
    """Training token file (.npy); none = the prepared dataset's. [path]"""
    val_data: str | None = None
    """Validation token file (.npy); none = the prepared dataset's. [path]"""
    tokenizer_path: str | None = None
    """Tokenizer (tokenizer.json) of the token files; none = found beside them. [path]"""

    # ---- system: "auto" picks the fastest correct choice for the device (device.py) and records it ----
    seed: int = 0
    """Seed of the initial weights and of the batches (a batch is a function of seed and step). [none]"""
    device: str = "auto"
    """Device to train on: auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps. [none]"""
    dtype: str = "auto"
    """Autocast precision: auto, bf16 or fp32 (weights stay fp32). [none]"""
    tf32: bool = True
    """TF32 matmuls on CUDA. [none]"""
    compile: str = "auto"
    """torch.compile of model and loss: auto, on or off. [none]"""
    kernels: str = "fast"
    """Model kernels: fast (fused attention and loss) or reference (the from-scratch CS336 functions). [none]"""

    # ---- measurements that never change the trajectory ----
    sharpness_share: float = 0.05
    """Cap on the share of wallclock spent measuring preconditioned sharpness; 0 = off. [fraction of wallclock]"""
    sharpness_iters: int = 20
    """Lanczos iterations (Hessian-vector products) per sharpness measurement. [count]"""
    signals: bool = True
    """Instability signals (attention logits and entropy, log-normaliser, update size) at log steps. [none]"""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes (e.g. sweep point metadata). [none]"""

    # ---- derived values -------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.max_steps

    def evaluates_at(self, step: int) -> bool:
        """Whether the trainer evaluates after ``step``: every eval_interval steps and at the last step."""
        return step % self.eval_interval == 0 or step == self.max_steps

    def underived(self) -> list[str]:
        """The derived fields still None here: config.json lists them, so a reuse of it derives them again."""
        return [name for name in DERIVED_FIELDS if getattr(self, name) is None]

    def resolved(self) -> ExperimentConfig:
        """A copy with every derived default filled in; validates the values."""
        self._check_fields(FIELD_NAMES)
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
        """Every value checked: one line per problem saying which flag, the value, the rule, and an example."""
        self._check_fields(FIELD_NAMES)
        refuse = functools.partial(_refuse, preset=self.preset)  # its hints quote this preset's values
        if self.min_lr is not None and not self.min_lr <= self.max_lr:
            refuse("min_lr", self.min_lr, f"in [0, max_lr = {self.max_lr:g}]")
        if self.warmup_steps is not None and not self.warmup_steps <= self.max_steps:
            refuse("warmup_steps", self.warmup_steps, f"in [0, max_steps = {self.max_steps}]")
        if self.cosine_cycle_steps is not None and self.cosine_cycle_steps < (self.warmup_steps or 0):
            refuse("cosine_cycle_steps", self.cosine_cycle_steps, f">= warmup_steps = {self.warmup_steps}")
        if self.d_model % self.num_heads:
            raise UserError(f"--d-model {self.d_model} must be divisible by --num-heads {self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise UserError(
                f"head size d_model/num_heads = {self.d_model // self.num_heads} must be even for RoPE; "
                "change --d-model or --num-heads"
            )

    def _check_fields(self, names) -> None:
        """Each of ``names`` on its own: its type, then its range (``RANGES``) or choices (``CHOICES``)."""
        for name in names:
            value, kind = getattr(self, name), _scalar_type(_HINTS[name])
            if value is None and not _optional(_HINTS[name]):
                raise UserError(f"config field {name} cannot be none; give a value of type {kind.__name__}")
            if value is None:
                continue
            ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
            if not ok or (kind in (int, float) and isinstance(value, bool)):
                none = " (JSON null for none)" if _optional(_HINTS[name]) and isinstance(value, str) else ""
                raise UserError(f"config field {name} must be {kind.__name__}{none}, got {value!r}")
            if name in RANGES and not (math.isfinite(value) and _RULES[RANGES[name]](value)):
                rule = RANGES[name]
                _refuse(
                    name, value, f"a finite number {rule}" if isinstance(value, float) else rule, self.preset
                )
            if name in CHOICES and value not in CHOICES[name]:
                _refuse(name, value, f"one of {', '.join(CHOICES[name])}", self.preset)

    # ---- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ExperimentConfig:
        """Exactly the given fields (the rest at the dataclass defaults); an unknown key is an error."""
        unknown = sorted(set(data) - set(FIELD_NAMES))
        if sum(_nearest(k) is None for k in unknown) > 3:  # another JSON file (a sweep.json): one sentence
            raise UserError(f"{source} is not a config: {len(unknown)} of its keys ({', '.join(unknown[:3])}, ...) "
                            "are not config fields; give a run's config.json or a JSON object of config fields")  # fmt: skip
        if unknown:
            raise UserError(f"{source}: {'; '.join(map(_unknown_key, unknown))}; fix or remove it")
        return cls(**data)

    @classmethod
    def load(
        cls, path: str | Path, preset: str | None = None, device: str | None = None, given=()
    ) -> ExperimentConfig:
        """A config JSON file: some fields (the rest from its ``preset``), or a run's config.json.

        The fields the file leaves out come from the preset it names, else from ``preset`` (``--preset``; a
        file naming another is refused), else from ``default_preset`` of ``device`` (``--device``, else the
        file's). A run's config.json holds every field plus the RUN_INFO_KEYS the trainer adds; the fields it
        lists in ``derived_fields`` are derived again. Any other key is refused with the nearest field name.
        Each value of the file that no flag of ``given`` replaces is checked on its own here, naming the file;
        the rules between fields wait for the flags (``resolved``).
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read config {path}: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"config {path} is not a JSON object of config fields")
        values = {k: v for k, v in data.items() if k not in RUN_INFO_KEYS}
        values |= {name: None for name in data.get("derived_fields") or [] if name in DERIVED_FIELDS}
        named = values.get("preset")
        if named is not None and preset is not None and named != preset:
            raise UserError(f"{path} names preset {named!r} but --preset {preset} was given: the fields the file "
                            "leaves out come from one preset; give --preset only with a file that names none")  # fmt: skip
        base = named or preset or default_preset(device or values.get("device") or "auto")
        cfg = cls.from_dict({"preset": base, **_over_preset(base, values, f"{path}: ")}, source=str(path))
        try:
            cfg._check_fields([name for name in values if name in FIELD_NAMES and name not in given])
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        return cfg


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(ExperimentConfig))
# The field annotations, evaluated: int | None, dict[str, Any], ...
_HINTS = typing.get_type_hints(ExperimentConfig)
# Model-shape fields: what a checkpoint's weights need to be loaded (in TransformerLM's argument order).
MODEL_FIELDS = ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff", "rope_theta")
# Fields that default to None and are derived by resolved(); config.json lists which ones were derived.
DERIVED_FIELDS = ("min_lr", "warmup_steps", "cosine_cycle_steps")
# What the trainer writes into a run's config.json besides the config fields (provenance.run_info; a test checks).
RUN_INFO_KEYS = ("runtime", "provenance", "parameters", "non_embedding_parameters", "train_tokens")
RUN_INFO_KEYS += ("val_tokens", "derived_fields")
CHOICES = {"dtype": ("auto", "bf16", "fp32"), "compile": ("auto", "on", "off")}
CHOICES["kernels"] = ("fast", "reference")

_RULES: dict[str, Callable[[Any], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "> 1": lambda v: v > 1,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
}
_POSITIVE = ("vocab_size", "context_length", "d_model", "d_ff", "num_layers", "num_heads", "batch_size")
_POSITIVE += ("max_steps", "log_interval", "eval_interval", "eval_batches", "checkpoint_interval")
_POSITIVE += ("sharpness_iters", "max_lr", "rope_theta", "eps", "grad_clip", "target_val_loss")
_POSITIVE += ("divergence_rebound_margin", "divergence_stall_margin")
_NON_NEGATIVE = ("warmup_steps", "cosine_cycle_steps", "min_lr", "weight_decay", "seed")
_NON_NEGATIVE += ("divergence_min_steps",)
# The allowed range (a rule of _RULES) of every numeric field; NaN and inf never pass; None passes where allowed.
RANGES: dict[str, str] = {
    **dict.fromkeys(_POSITIVE, "> 0"),
    **dict.fromkeys(_NON_NEGATIVE, ">= 0"),
    **dict.fromkeys(("beta1", "beta2", "sharpness_share"), "in [0, 1)"),
    "divergence_check_after": "in [0, 1]",
    "divergence_explode_factor": "> 1",
    "divergence_stall_fraction": "in (0, 1]",
}

# The one policy for resuming: a checkpoint continues only the run it came from, so every field not listed
# here must match. Listed: fields that leave the training trajectory as it is, or (how it runs) change it by
# floating-point rounding only, so a checkpoint may move to another machine.
_SAME_MATH = "how the same math runs: numbers agree to rounding (the same bytes need the same value)"
RESUMABLE_FIELDS = {
    **dict.fromkeys(("device", "compile", "tf32"), _SAME_MATH),
    **dict.fromkeys(("data_dir", "train_data", "val_data", "tokenizer_path"), "paths: the files may move"),
    **dict.fromkeys(("eval_interval", "checkpoint_interval"), "when evaluations and checkpoints happen"),
    "eval_batches": "changes the validation estimate (and best.pt) after the resume, not the training",
    "target_val_loss": "what summary.json judges against, not what training computes",
    **dict.fromkeys(("sharpness_share", "sharpness_iters", "signals"), "measurements: never touch training"),
    "extra": "free-form notes",
}
# Not listed, on purpose: dtype (the precision of every activation) and kernels (another implementation of
# the model's math) change the numbers beyond rounding; log_interval moves the divergence checks.


def resume_differences(
    saved: dict[str, Any], cfg: ExperimentConfig, saved_as: str = "checkpoint"
) -> list[str]:
    """``"field: checkpoint X vs now Y"`` for every field that differs and may not change on resume.

    ``saved`` is the config dict stored with a run (checkpoint or config.json, named by ``saved_as``); a field it
    lacks (written before the field existed) counts as that field's default. Derived fields (min_lr from
    max_lr, ...) are only named, last, when other fields differ too: they follow from those.
    """
    differ = {k: (saved.get(k, _DEFAULTS[k]), v) for k, v in cfg.to_dict().items()
              if k not in RESUMABLE_FIELDS and saved.get(k, _DEFAULTS[k]) != v}  # fmt: skip
    shown = [k for k in differ if k not in DERIVED_FIELDS] or list(differ)
    lines = [f"{k}: {saved_as} {value_repr(differ[k][0])} vs now {value_repr(differ[k][1])}" for k in shown]
    also = [k for k in differ if k not in shown]
    return lines + ([f"also {', '.join(also)}"] if also else [])


# A table: one line per kind of setting reads better than one line per value.
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {
    # 128 x 10,000 x 256 = 327.68M tokens, the assignment's full budget.
    "full": dict(batch_size=128, max_steps=10_000, target_val_loss=1.45, eval_interval=500, checkpoint_interval=1000),
    # 32 x 5,000 x 256 = 40.96M tokens, the low-resource (CPU / Apple) budget.
    "low-resource": dict(batch_size=32, max_steps=5_000, target_val_loss=2.00, eval_interval=250, checkpoint_interval=500),
    # The real model shape on a handful of steps: checks a set-up end to end in about a minute.
    "quick-test": dict(
        batch_size=8, max_steps=10, context_length=128, target_val_loss=None,
        log_interval=5, eval_interval=10, eval_batches=1, checkpoint_interval=5,
    ),
    # A small model on the embedded synthetic corpus: minutes on a laptop CPU, no download.
    "demo": dict(
        dataset="demo", vocab_size=2048, context_length=128, d_model=128, d_ff=384, num_layers=2, num_heads=4,
        batch_size=16, max_steps=200, max_lr=1e-2, target_val_loss=1.0,
        log_interval=10, eval_interval=50, eval_batches=4, checkpoint_interval=50,
        divergence_min_steps=50, sharpness_share=0.3, sharpness_iters=12,
    ),
}
# fmt: on


# A validation loss compares only on the same text and tokenizer: changing one of these drops the preset's target.
_TARGET_DATA_FIELDS = ("dataset", "train_data", "val_data", "vocab_size")


def create_experiment_config(preset: str = "full", **overrides: Any) -> ExperimentConfig:
    """The preset's config with ``overrides`` applied (field names of ``ExperimentConfig``; ``lr`` = ``max_lr``)."""
    if "lr" in overrides:
        overrides["max_lr"] = overrides.pop("lr")
    return ExperimentConfig.from_dict(_over_preset(preset, {**overrides, "preset": preset}))


def _over_preset(preset: str, values: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``values`` over the preset's (flags, a partial config file: ``where`` prefixes its errors); the preset's
    target validation loss only while its data and tokenizer are kept, unless ``values`` sets a target of its own."""
    if preset not in PRESETS:
        raise UserError(f"{where}unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    base = {k: PRESETS[preset].get(k, _DEFAULTS[k]) for k in _TARGET_DATA_FIELDS}
    merged = {**PRESETS[preset], **values}
    if "target_val_loss" not in values and any(merged.get(k, _DEFAULTS[k]) != v for k, v in base.items()):
        merged["target_val_loss"] = None
    return merged


def default_preset(device: str = "auto") -> str:
    """The preset a command starts from when none is given: full where ``device`` (the --device flag) resolves to
    CUDA, low-resource elsewhere (a CPU or Apple machine, or ``--device cpu`` on a GPU machine)."""
    # imported here: the read-only commands import this module without torch
    from cs336_basics.basics.device import resolve_device

    return "full" if resolve_device(device).type == "cuda" else "low-resource"


_DEFAULTS = ExperimentConfig().to_dict()


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _refuse(name: str, value: Any, rule: str, preset: str = "full") -> typing.NoReturn:
    """One line: the flag (both spellings of the learning rate's), the rule, the value, and the preset's value."""
    preset = preset if preset in PRESETS else "full"
    default = PRESETS[preset].get(name, _DEFAULTS[name])
    shown = _flag_value(default)
    flag = "--max-lr (--lr)" if name == "max_lr" else f"--{_flag(name)}"
    example = f"use e.g. --{_flag(name)} {shown} (the {preset} preset's)"
    hint = example if shown else "leave it out to derive it"
    what = re.split(r"[,;(]", field_docs()[name][0])[0].strip().rstrip(".")
    raise UserError(f"{flag} must be {rule}, got {value!r} ({what}); {hint}")


def _nearest(key: str) -> str | None:
    """The field a mistyped key most likely means (``weight_decy``, ``d-model``, ``lr``), or None."""
    candidates = {**{n: n for n in FIELD_NAMES}, **{_flag(n): n for n in FIELD_NAMES}, "lr": "max_lr"}
    near = difflib.get_close_matches(key.lower(), candidates, n=1, cutoff=0.6)
    return candidates[near[0]] if near else None


def _unknown_key(key: str) -> str:
    near = _nearest(key)
    hint = f"did you mean {near!r}?" if near else "the fields are cs336-train's flags"
    return f"unknown config field {key!r} ({hint})"


# ---- field documentation and the command line, derived from the dataclass ----------------------
@functools.cache
def field_docs() -> dict[str, tuple[str, str]]:
    """``{field: (text, unit)}`` from the docstring under each field of ExperimentConfig."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ExperimentConfig").body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr):
            text = " ".join(str(after.value.value).split())
            match = re.fullmatch(r"(.*\S)\s*\[([^\[\]]+)\]", text)
            docs[node.target.id] = (match[1], match[2]) if match else (text, "")
    return docs


def _flag_value(value: Any) -> str | None:
    """A preset's value as its flag would take it (``0.001``, ``fast``, ``on``); None stays None."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return None if value is None else str(value)


def _default_text(name: str) -> str:
    def show(v: Any) -> str:
        return _flag_value(v) or ("derived" if name in DERIVED_FIELDS else "none")

    others = [f"{p} {show(v[name])}" for p, v in PRESETS.items() if name in v and v[name] != _DEFAULTS[name]]
    if name in DERIVED_FIELDS and not others:
        return "derived"
    return f"preset's: full {show(_DEFAULTS[name])}" + (f"; {', '.join(others)}" if others else "")


def field_help(name: str) -> str:
    """The --help text of a field: its documentation, unit and default (argparse-escaped)."""
    text, unit = field_docs().get(name, ("", "?"))
    allowed = f"range: {RANGES[name]}; " if name in RANGES else ""
    return f"{text} (unit: {unit}; {allowed}default: {_default_text(name)})".replace("%", "%%")


def _scalar_type(tp: Any) -> Any:
    """int | None -> int, dict[str, Any] -> dict."""
    if isinstance(tp, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return typing.get_origin(tp) or tp


def _optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _parser(kind: Any, optional: bool):
    def parse(text: str):
        if optional and text.lower() in ("none", "null", ""):
            return None
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in "invalid float value: 'x'"
    return parse


def add_config_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """``--preset``, one ``--flag`` per ExperimentConfig field, and ``--lr``. A field flag not given is absent
    from the namespace (``argparse.SUPPRESS``), so the preset's value stands and ``--target-val-loss none`` can
    still say None; ``config_from_args`` reads them."""
    group = parser.add_argument_group("run configuration (any ExperimentConfig field; default: the preset's)")
    default = "full where --device resolves to CUDA, else low-resource"
    group.add_argument(
        "--preset", choices=list(PRESETS), help=f"{field_docs()['preset'][0]} (default: {default})"
    )
    for name in FIELD_NAMES:
        if name in ("preset", "extra") or name in skip:
            continue
        kind = _scalar_type(_HINTS[name])
        if kind is bool:
            parsing = dict(action=argparse.BooleanOptionalAction)
        else:
            metavar = "|".join(CHOICES[name]) if name in CHOICES else kind.__name__.upper()
            parsing = dict(type=_parser(kind, _optional(_HINTS[name])), metavar=metavar)
        group.add_argument(
            f"--{_flag(name)}", dest=name, default=argparse.SUPPRESS, help=field_help(name), **parsing
        )
    if "max_lr" not in skip:
        lr_help = "the same as --max-lr: " + field_help("max_lr")
        group.add_argument(
            "--lr", dest="max_lr", type=float, default=argparse.SUPPRESS, metavar="FLOAT", help=lr_help
        )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (``none`` included, for the fields that allow it)."""
    names = set(FIELD_NAMES) - {"preset", "extra"}
    return {k: v for k, v in vars(args).items() if k in names}


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The command line's config: ``--preset`` (when not given, ``default_preset`` of ``--device``), or the
    file of ``--config`` over it (cs336-train), with the field flags over that."""
    overrides = config_overrides(args)
    if getattr(args, "config", None) is not None:
        loaded = ExperimentConfig.load(args.config, args.preset, overrides.get("device"), given=overrides)
        return dataclasses.replace(loaded, **overrides)
    return create_experiment_config(
        args.preset or default_preset(overrides.get("device", "auto")), **overrides
    )
