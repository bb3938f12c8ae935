"""ExperimentConfig: every value range-checked, config files strict about keys, help derived from the field docs,
and the one resume policy."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import typing

import pytest

from cs336_basics.basics import config as config_module
from cs336_basics.basics.config import (
    FIELD_NAMES,
    PRESETS,
    RANGES,
    RESUMABLE_FIELDS,
    RUN_INFO_KEYS,
    ExperimentConfig,
    config_overrides,
    create_experiment_config,
    field_docs,
    resume_differences,
)
from cs336_basics.basics.run_experiment import build_parser
from cs336_basics.errors import UserError

HINTS = typing.get_type_hints(ExperimentConfig)


def _kind(name: str):
    return config_module._scalar_type(HINTS[name])


NUMERIC = [n for n in FIELD_NAMES if _kind(n) in (int, float)]
FLOATS = [n for n in FIELD_NAMES if _kind(n) is float]


def train_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """``cs336-train`` as a user runs it (the installed entry point), in a scratch directory."""
    script = os.path.join(os.path.dirname(sys.executable), "cs336-train")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "cs336_basics.basics.run_experiment"]
    return subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


# ---- values -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--weight-decay", "nan"], "--weight-decay"),
        (["--rope-theta", "0"], "--rope-theta"),
    ],
)
def test_cli_refuses_bad_values_in_one_line(tmp_path, flags, flag):
    out = train_cli(
        "--preset",
        "demo",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "run"),
        *flags,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"error: {flag} must be") and flags[1] in lines[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()  # refused before any work


def test_every_numeric_field_has_a_range():
    assert set(NUMERIC) == set(RANGES), "add the new field's allowed range to config.RANGES"


def test_a_missing_gpu_is_refused_before_any_data_is_prepared(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    out = train_cli("--preset", "demo", "--device", "cuda", "--data-dir", str(tmp_path / "data"),
                    "--out", str(tmp_path / "run"), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: device 'cuda' asked for")
    assert not out.stdout.strip()  # no "wrote data/demo/..." lines: nothing was prepared
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the data dir nor the run dir


def test_a_missing_train_file_is_refused_before_the_presets_data_is_prepared(tmp_path):
    missing = tmp_path / "nope.npy"
    out = train_cli("--preset", "demo", "--train-data", str(missing), "--data-dir", str(tmp_path / "data"),
                    "--out", str(tmp_path / "run"), cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [f"error: token file {missing} does not exist; build it with "
                                               f"`cs336-data tokenize --input TEXT --tokenizer TOKENIZER --output {missing}`"]  # fmt: skip
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_run_refused_after_taking_its_lock_leaves_no_directory(tmp_path):
    """Missing token files are found only once the run dir is locked: the dirs made for it go again."""
    (tmp_path / "runs").mkdir()
    missing = [f"--{kind}-data" for kind in ("train", "val")]
    flags = [x for flag in missing for x in (flag, str(tmp_path / f"{flag[2:]}.npy"))]
    out = train_cli("--preset", "demo", *flags, "--out", str(tmp_path / "runs" / "new" / "run"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    missing = tmp_path / "train-data.npy"
    assert out.stderr.strip().splitlines() == [f"error: token file {missing} does not exist; build it with "
                                               f"`cs336-data tokenize --input TEXT --tokenizer TOKENIZER --output {missing}`"]  # fmt: skip
    assert list((tmp_path / "runs").iterdir()) == []  # an existing parent stays; what this run made is gone


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_float_field_refuses_non_finite(name, bad):
    cfg = create_experiment_config("demo", **{name: bad})
    flag = "--max-lr \\(--lr\\)" if name == "max_lr" else f"--{name.replace('_', '-')}"
    with pytest.raises(UserError, match=f"^{flag} must be a finite number"):
        cfg.resolved()


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"rope_theta": 0.0}, "--rope-theta"),
        ({"eps": 0.0}, "--eps"),
        ({"eps": -1e-8}, "--eps"),
        ({"beta1": 1.0}, "--beta1"),
        ({"beta2": -0.1}, "--beta2"),
        ({"grad_clip": 0.0}, "--grad-clip"),
        ({"weight_decay": -0.1}, "--weight-decay"),
        ({"max_lr": 0.0}, r"--max-lr \(--lr\)"),
        ({"min_lr": -1e-4}, "--min-lr"),
        ({"min_lr": 0.02, "max_lr": 0.01}, "--min-lr"),
        ({"target_val_loss": 0.0}, "--target-val-loss"),
        ({"divergence_check_after": 1.5}, "--divergence-check-after"),
        ({"divergence_explode_factor": 1.0}, "--divergence-explode-factor"),
        ({"divergence_rebound_margin": 0.0}, "--divergence-rebound-margin"),
        ({"divergence_stall_fraction": 0.0}, "--divergence-stall-fraction"),
        ({"divergence_stall_margin": -1.0}, "--divergence-stall-margin"),
        ({"divergence_min_steps": -1}, "--divergence-min-steps"),
        ({"sharpness_share": 1.0}, "--sharpness-share"),
        ({"sharpness_iters": 0}, "--sharpness-iters"),
        ({"seed": -1}, "--seed"),
        ({"warmup_steps": 300}, "--warmup-steps"),
        ({"warmup_steps": 50, "cosine_cycle_steps": 10}, "--cosine-cycle-steps"),
        ({"kernels": "triton"}, "--kernels"),
        ({"dtype": "fp16x"}, "--dtype"),
    ],
)
def test_out_of_range_values_are_refused(overrides, flag):
    with pytest.raises(UserError, match=f"^{flag} must be") as err:
        create_experiment_config("demo", **overrides).resolved()
    assert "\n" not in str(err.value) and "got" in str(err.value)


@pytest.mark.parametrize(
    ("d_model", "num_heads", "says"),
    [
        (130, 4, "--d-model 130 must be divisible by --num-heads 4"),
        (132, 4, "head size d_model/num_heads = 33"),
    ],
)
def test_model_shapes_attention_cannot_split_are_refused(d_model, num_heads, says):
    """130 / 4 heads is not whole; 132 / 4 = 33 is, but RoPE rotates pairs, so a head needs an even size."""
    with pytest.raises(UserError, match=f"^{re.escape(says)}") as err:
        create_experiment_config("demo", d_model=d_model, num_heads=num_heads).resolved()
    assert "\n" not in str(err.value)
    create_experiment_config("demo", d_model=136, num_heads=4).resolved()  # 34 per head: accepted


def test_a_refusal_suggests_the_users_preset_value_and_names_both_lr_flags():
    with pytest.raises(UserError) as err:
        create_experiment_config("demo", batch_size=0).resolved()
    assert str(err.value).endswith(
        "use e.g. --batch-size 16 (the demo preset's)"
    )  # not the full preset's 128
    with pytest.raises(UserError) as err:
        create_experiment_config("demo", lr=-1.0).resolved()
    assert str(err.value).startswith("--max-lr (--lr) must be a finite number > 0, got -1.0")
    assert str(err.value).endswith("use e.g. --max-lr 0.01 (the demo preset's)")


@pytest.mark.parametrize(
    "overrides",
    [
        {"divergence_check_after": 0.0},
        {"divergence_check_after": 1.0},
        {"divergence_stall_fraction": 1.0},
        {"sharpness_share": 0.0},
        {"min_lr": 0.0},
        {"beta1": 0.0},
        {"weight_decay": 0.0},
        {"target_val_loss": None},
        {"kernels": "reference", "signals": False},
    ],
)
def test_edge_values_are_accepted(overrides):
    create_experiment_config("demo", **overrides).resolved()


def test_the_default_preset_follows_the_device_flag():
    import torch

    # --device cpu means the CPU budget even where a GPU is visible; auto follows what torch sees
    assert config_module.default_preset("cpu") == "low-resource"
    assert config_module.default_preset("auto") == ("full" if torch.cuda.is_available() else "low-resource")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        config_module.default_preset("tpu")


@pytest.mark.parametrize(
    "module",
    [
        "cs336_basics.basics.run_experiment",
        "cs336_basics.basics.bench",
        "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep",
        "cs336_basics.assignment_experiments.batch_size.batch_size_sweep",
    ],
)
def test_every_command_reads_its_config_the_same_way(module):
    import importlib

    parser = importlib.import_module(module).build_parser()
    cfg = config_module.config_from_args(parser.parse_args(["--device", "cpu", "--d-model", "64"]))
    assert cfg == create_experiment_config("low-resource", device="cpu", d_model=64)
    cfg = config_module.config_from_args(parser.parse_args(["--preset", "demo", "--seed", "3"]))
    assert cfg == create_experiment_config("demo", seed=3)


def test_every_preset_is_valid():
    for name in PRESETS:
        create_experiment_config(name).resolved()


def test_none_only_where_a_field_allows_it():
    args = build_parser().parse_args(["--target-val-loss", "none", "--min-lr", "none"])
    assert config_overrides(args) == {"target_val_loss": None, "min_lr": None}
    assert create_experiment_config("demo", **config_overrides(args)).target_val_loss is None
    with pytest.raises(SystemExit):  # argparse: "invalid float value: 'none'"
        build_parser().parse_args(["--weight-decay", "none"])
    with pytest.raises(UserError, match="weight_decay cannot be none"):
        ExperimentConfig.from_dict({"weight_decay": None}).resolved()


def test_flags_not_given_leave_the_preset():
    assert config_overrides(build_parser().parse_args([])) == {}
    assert config_overrides(build_parser().parse_args(["--lr", "3e-3", "--no-signals"])) == {
        "max_lr": 3e-3,
        "signals": False,
    }


def test_a_presets_target_holds_only_on_its_own_data_and_tokenizer():
    """The demo's target (1.0 nats) means nothing for another text or vocabulary: flags that change the data
    drop it, an explicit --target-val-loss is kept, and flags that don't touch the data keep the preset's."""

    def target(preset, *flags):
        return create_experiment_config(
            preset, **config_overrides(build_parser().parse_args(list(flags)))
        ).target_val_loss

    assert target("demo") == PRESETS["demo"]["target_val_loss"] == 1.0
    assert target("demo", "--vocab-size", "1000") is None
    assert target("demo", "--dataset", "/data/stories.txt") is None
    assert target("full", "--train-data", "a.npy", "--val-data", "b.npy") is None
    assert target("demo", "--vocab-size", "1000", "--target-val-loss", "2.5") == 2.5
    assert target("demo", "--vocab-size", "2048", "--lr", "3e-3", "--d-model", "64") == 1.0  # same data
    assert target("low-resource", "--dataset", "tinystories") == 2.0


def test_a_partial_config_file_follows_the_same_target_rule(tmp_path):
    def target(fields):
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps(fields))
        return ExperimentConfig.load(path).target_val_loss

    assert target({"preset": "demo", "max_lr": 3e-3}) == 1.0
    assert target({"preset": "demo", "vocab_size": 1000}) is None
    assert target({"preset": "demo", "vocab_size": 1000, "target_val_loss": 2.5}) == 2.5


# ---- config files -----------------------------------------------------------------------------------------
def test_config_file_unknown_key_is_refused_with_nearest_name(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "demo", "weight_decy": 0.0, "lr": 1e-3}))
    with pytest.raises(UserError) as err:
        ExperimentConfig.load(path)
    message = str(err.value)
    assert "'weight_decy'" in message and "did you mean 'weight_decay'" in message
    assert "'lr'" in message and "did you mean 'max_lr'" in message
    assert str(path) in message and "\n" not in message


def test_cli_config_file_unknown_key_is_one_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "demo", "batch_sise": 8}))
    out = train_cli("--config", str(path), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "did you mean 'batch_size'" in out.stderr
    assert not (tmp_path / "data").exists()  # no download or preparation started


def test_partial_config_file_starts_from_its_preset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "demo", "max_lr": 0.02}))
    cfg = ExperimentConfig.load(path)
    assert cfg == create_experiment_config("demo", max_lr=0.02)
    assert cfg.dataset == "demo"  # not the full preset's TinyStories download


def test_a_config_file_without_a_preset_starts_from_the_presets_of_the_command_line(tmp_path):
    """cs336-train --config: the fields the file leaves out come from --preset, else from the default
    preset of --device, as without --config (they came from full, and --preset only renamed the run)."""
    from cs336_basics.basics.run_experiment import build_parser as train_parser

    def read(*flags):
        return config_module.config_from_args(train_parser().parse_args(["--config", str(path), *flags]))

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"max_lr": 0.02}))
    assert read("--preset", "demo") == create_experiment_config("demo", max_lr=0.02)
    assert read("--device", "cpu") == create_experiment_config("low-resource", max_lr=0.02, device="cpu")
    path.write_text(json.dumps({"preset": "full", "max_lr": 0.02}))
    assert read("--device", "cpu", "--seed", "4") == create_experiment_config(
        "full", max_lr=0.02, device="cpu", seed=4
    )
    with pytest.raises(UserError, match=r"names preset 'full' but --preset demo was given"):
        read("--preset", "demo")


def test_run_config_json_reads_back(tmp_path, tokens):
    """The config.json the trainer writes (fields + RUN_INFO_KEYS) loads as the same config."""
    from cs336_basics.basics.run_experiment import run_experiment
    from tests.conftest import tiny_config

    cfg = tiny_config(
        max_steps=4,
        log_interval=2,
        eval_interval=4,
        checkpoint_interval=4,
        signals=False,
        sharpness_share=0.0,
    )
    run_experiment(cfg, *tokens, out_dir=tmp_path / "run", progress=False)
    data = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(data) - set(FIELD_NAMES) <= set(RUN_INFO_KEYS)
    assert ExperimentConfig.load(tmp_path / "run" / "config.json") == cfg  # derived fields derived again


def test_old_flat_run_config_json_reads(tmp_path):
    """A demo run's config.json written before kernels/sharpness/signals existed still loads."""
    old = create_experiment_config("demo").resolved().to_dict()
    for name in ("kernels", "sharpness_share", "sharpness_iters", "signals"):
        del old[name]
    old.update(
        runtime={"device": "cpu", "dtype": "bf16"},
        tokenizer_path="data/demo/tokenizer.json",
        train_tokens=812345,
        val_tokens=40000,
        parameters=1_214_592,
        non_embedding_parameters=690_304,
        derived_fields=["min_lr", "warmup_steps", "cosine_cycle_steps"],
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    cfg = ExperimentConfig.load(path)
    assert cfg == create_experiment_config("demo", tokenizer_path="data/demo/tokenizer.json")


# ---- help -------------------------------------------------------------------------------------------------
def test_every_field_is_documented_with_a_unit():
    docs = field_docs()
    assert set(docs) == set(FIELD_NAMES)
    for name, (text, unit) in docs.items():
        assert text and unit, (
            f"field {name}: docstring must end with its unit in brackets, e.g. [tokens] or [none]"
        )


def test_every_flag_has_help_with_unit_and_default():
    parser = build_parser()
    group = next(g for g in parser._action_groups if g.title.startswith("run configuration"))
    flags = {a.option_strings[0]: a.help for a in group._group_actions}
    assert set(flags) == {f"--{n.replace('_', '-')}" for n in FIELD_NAMES if n != "extra"} | {"--lr"}
    assert "default: full where --device resolves to CUDA, else low-resource" in flags.pop("--preset")
    for flag, text in flags.items():
        assert text and ("unit: " in text or "(none)" in text), flag
        assert "default: " in text, flag
    assert field_docs()["weight_decay"][0] in flags["--weight-decay"]  # the field's own documentation
    assert "demo 0.3" in flags["--sharpness-share"] and "full 0.05" in flags["--sharpness-share"]
    parser.format_help()  # every help string survives argparse's %-formatting


# ---- resume policy ----------------------------------------------------------------------------------------
def test_resume_policy():
    saved = create_experiment_config("demo").resolved().to_dict()
    base = create_experiment_config("demo").resolved()
    assert set(RESUMABLE_FIELDS) <= set(FIELD_NAMES)
    assert resume_differences(saved, base) == []
    free = dict(device="cuda", eval_interval=7, sharpness_share=0.0, sharpness_iters=5, signals=False)
    assert resume_differences(saved, dataclasses.replace(base, **free)) == []
    for change in ({"max_steps": 300}, {"kernels": "reference"}, {"dtype": "fp32"}, {"log_interval": 5}):
        (diff,) = resume_differences(saved, dataclasses.replace(base, **change))
        assert diff.startswith(f"{next(iter(change))}: checkpoint ")


def test_resume_treats_fields_missing_from_old_checkpoints_as_defaults():
    saved = create_experiment_config("demo").resolved().to_dict()
    del saved["kernels"]
    base = create_experiment_config("demo").resolved()
    assert resume_differences(saved, base) == []
    assert resume_differences(saved, dataclasses.replace(base, kernels="reference")) == [
        "kernels: checkpoint 'fast' vs now 'reference'"
    ]


def test_a_changed_learning_rate_is_named_once_without_float_noise():
    """min_lr follows max_lr (0.1 x 3e-3 = 0.00030000000000000003 in binary): the message names what the user
    changed, with the values as typed, and the derived field only as following it."""
    saved = create_experiment_config("demo", lr=3e-3).resolved().to_dict()
    now = create_experiment_config("demo", lr=1e-3).resolved()
    assert saved["min_lr"] != 3e-4  # the binary noise the message must not show
    assert resume_differences(saved, now, saved_as="config.json") == [
        "max_lr: config.json 0.003 vs now 0.001",
        "also min_lr",
    ]
    # A derived field that alone differs is shown with its values.
    explicit = dataclasses.replace(create_experiment_config("demo", lr=3e-3).resolved(), min_lr=1e-4)
    assert resume_differences(saved, explicit) == ["min_lr: checkpoint 0.0003 vs now 0.0001"]


def test_another_json_file_as_config_is_one_short_line(tmp_path):
    """A sweep.json given as --config repeated the whole field list once per unknown key (8 KB)."""
    path = tmp_path / "sweep.json"
    path.write_text(
        json.dumps({k: 1 for k in ("version", "field", "points", "config", "seeds", "executor", "id")})
    )
    with pytest.raises(UserError) as err:
        ExperimentConfig.load(path)
    assert str(err.value) == (
        f"{path} is not a config: 7 of its keys (config, executor, field, ...) are not config fields; "
        "give a run's config.json or a JSON object of config fields"
    )
    path.write_text(json.dumps({"preset": "demo", "colour": 1}))
    with pytest.raises(
        UserError, match=r"unknown config field 'colour' \(the fields are cs336-train's flags\)"
    ):
        ExperimentConfig.load(path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"max_steps": -3}, "--max-steps must be > 0, got -3"),
     ({"max_steps": 5.5}, "config field max_steps must be int, got 5.5"),
     ({"target_val_loss": "none"}, "config field target_val_loss must be float (JSON null for none), got 'none'")],
)  # fmt: skip
def test_a_bad_value_in_a_config_file_names_the_file(tmp_path, fields, message):
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"preset": "demo", **fields}))
    with pytest.raises(UserError) as err:
        ExperimentConfig.load(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_config_file_is_checked_with_the_flags_over_it(tmp_path, monkeypatch):
    """The rules between fields wait for the flags (a file's d_model 36 with --num-heads 6; its warm-up of 300
    with --max-steps 400); a file's device picks the default preset as --device would; six flag-spelt keys
    are six hints, not 'not a config'."""
    import torch

    from cs336_basics.basics.run_experiment import build_parser as train_parser

    def read(fields, *flags):
        path.write_text(json.dumps(fields))
        return config_module.config_from_args(train_parser().parse_args(["--config", str(path), *flags]))

    path = tmp_path / "c.json"
    assert read({"preset": "demo", "d_model": 36}, "--num-heads", "6").resolved().num_heads == 6
    assert read({"preset": "demo", "warmup_steps": 300}, "--max-steps", "400").resolved().warmup_steps == 300
    with pytest.raises(UserError, match="must be even for RoPE"):
        read({"preset": "demo", "d_model": 36}).resolved()  # with demo's 4 heads: head size 9
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine: "auto" starts from full
    assert read({"max_lr": 0.002}).preset == "full"
    assert (
        read({"device": "cpu", "max_lr": 0.002}).preset == read({"max_lr": 0.002}, "--device", "cpu").preset
    )
    assert read({"device": "cpu"}).preset == "low-resource"
    keys = ["max-steps", "d-model", "d-ff", "num-layers", "num-heads", "context-length"]
    with pytest.raises(UserError) as err:
        read(dict.fromkeys(keys, 1))
    assert str(err.value).count("did you mean") == 6 and "did you mean 'context_length'?" in str(err.value)
