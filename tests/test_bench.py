"""cs336-bench: the JSON it writes, its MFU arithmetic, and that its plain-loop baseline trains like TrainStep."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cs336_basics.basics import bench
from cs336_basics.basics.config import create_experiment_config
from cs336_basics.basics.device import Runtime
from cs336_basics.basics.hardware import peak_flops
from cs336_basics.basics.trainer import TrainStep
from cs336_basics.errors import UserError
from tests.conftest import tiny_config

TINY_FLAGS = [
    "--preset",
    "demo",
    "--device",
    "cpu",
    "--dtype",
    "fp32",
    "--compile",
    "off",
    "--vocab-size",
    "64",
    "--context-length",
    "16",
    "--d-model",
    "32",
    "--d-ff",
    "64",
    "--num-layers",
    "1",
    "--num-heads",
    "2",
    "--batch-size",
    "4",
]


def test_two_steps_on_cpu_write_the_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [*TINY_FLAGS, "--steps", "2", "--warmup", "1", "--variants", "plain,tf32,naive-attention"]
    assert bench.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["partial"] is False
    for key in ("device", "torch", "config", "results"):
        assert key in report
    assert report["torch"] == torch.__version__
    assert report["config"]["d_model"] == 32 and report["config"]["batch_size"] == 4
    first = report["results"][0]
    # The first result is run_experiment's own path: setup_runtime's choices, TrainStep, BatchLoader.
    assert first["variant"] == "auto" and first["loop"] == "package"
    assert (first["precision"], first["compile"]) == ("fp32", False)
    assert [r["variant"] for r in report["results"]] == ["auto", "plain", "naive-attention"]
    for r in report["results"]:
        assert r["tokens_per_sec"] > 0 and r["ms_per_step"] > 0
        assert math.isclose(r["tokens_per_sec"] * r["ms_per_step"] / 1e3, 4 * 16, rel_tol=1e-9)
        assert r["mfu"] is None  # no peak on CPU without --measure-peak
    assert report["results"][0]["vs_plain"] == pytest.approx(report["package_vs_plain"])
    assert report["skipped"] == [
        {"variant": "tf32", "reason": bench.skip_reason(bench.VARIANTS["tf32"], torch.device("cpu"))}
    ]
    assert set(report["breakdown_ms"]) >= {"data_wait", "forward", "backward", "optimizer"}
    assert "auto" in capsys.readouterr().out


def test_unknown_variant_is_a_user_error():
    with pytest.raises(UserError, match="unknown variant"):
        bench.parse_variants("auto,fp64", torch.device("cpu"))
    assert bench.parse_variants("plain,auto,plain", torch.device("cpu")) == ["auto", "plain"]


def test_mfu_arithmetic_for_the_full_model():
    cfg = create_experiment_config("full").resolved()
    per_layer = 4 * cfg.d_model**2 + 3 * cfg.d_model * cfg.d_ff
    matmul_params = (
        cfg.num_layers * per_layer + cfg.d_model * cfg.vocab_size
    )  # + LM head; embedding is a lookup
    fpt = bench.config_flops_per_token(cfg)
    # 6 FLOPs per matmul parameter per trained token, plus attention scores and values (~112 MFLOP in all).
    assert 6 * matmul_params < fpt < 1.1 * 6 * matmul_params
    assert fpt == pytest.approx(112e6, rel=0.03)
    peak = peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak == pytest.approx(989.4e12)
    assert bench.mfu(2e6, fpt, peak) == pytest.approx(2e6 * fpt / peak)
    assert bench.mfu(2e6, fpt, peak) == pytest.approx(0.226, abs=0.005)  # 2M tokens/s on an H100 SXM, bf16
    assert bench.mfu(2e6, fpt, None) is None


def test_result_row_mfu_uses_the_variants_precision_peak():
    class FixedPeaks:
        def get(self, precision):
            return {"fp32": 1e12, "bf16": 4e12}[precision], f"fixed {precision}"

    cfg = tiny_config()
    runner = type("R", (), {"variant": bench.VARIANTS["bf16"], "precision": "bf16", "compile": False})()
    m = bench.Measurement(runner, warmup_s=3.0, round_s=[2.0, 1.0, 4.0])
    row = bench.result_row(m, cfg.resolved(), steps=10, warmup=2, peaks=FixedPeaks(), fpt=1e6)
    assert row["ms_per_step"] == pytest.approx(200.0)  # median round: 2 s for 10 steps
    assert row["tokens_per_sec"] == pytest.approx(10 * cfg.tokens_per_step / 2.0)
    assert row["mfu"] == pytest.approx(row["tokens_per_sec"] * 1e6 / 4e12)
    assert row["startup_s"] == pytest.approx(3.0 - 2 * 0.2)


def test_plain_loop_matches_trainstep_in_fp32():
    cfg = tiny_config(max_lr=3e-3).resolved()
    runtime = Runtime(torch.device("cpu"), "fp32", False, "inductor", False)
    package = TrainStep(cfg, runtime)
    plain = bench.PlainLoop(cfg, torch.device("cpu"), "fp32", compile=False)
    for a, b in zip(package.model.state_dict().values(), plain.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # same seed, same init
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context_length), generator=gen)
    y = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context_length), generator=gen)
    it = cfg.warmup_steps  # lr = max_lr: the step moves the weights
    losses = []
    for _ in range(3):
        loss_package, _, _ = package(it, x, y)
        loss_plain = plain.step(it, x, y)
        losses.append((loss_package.item(), loss_plain.item()))
        it += 1
    assert losses[0][0] == pytest.approx(losses[0][1], abs=1e-6)  # the same initial loss
    for a, b in losses[1:]:
        assert a == pytest.approx(b, abs=1e-5)  # AdamW, clipping and schedule agree with torch's
    assert losses[-1][0] < losses[0][0]
