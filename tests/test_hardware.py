"""hardware.py: FLOPs per token and MFU against hand computation, the peak table, GPU-name matching."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from cs336_basics.basics import hardware

# The assignment's 17M model (TinyStories): vocab 10k, context 256, d_model 512, 4 layers, d_ff 1344.
FULL = {"vocab_size": 10_000, "context_length": 256, "d_model": 512, "num_layers": 4, "d_ff": 1344}
# By hand: per layer 4*512^2 + 3*512*1344 + 2*512 = 1,048,576 + 2,064,384 + 1,024 = 3,113,984;
# N = 4 * 3,113,984 + 512 (final norm) + 512 * 10,000 (LM head) = 17,576,448.
N_17M = 17_576_448
# 6N + 12*L*d*T = 105,458,688 + 12*4*512*256 (6,291,456) = 111,750,144.
FLOPS_17M = 111_750_144


def test_17m_model_flops_by_hand():
    shape = {k: v for k, v in FULL.items() if k != "context_length"}
    assert hardware.non_embedding_params(**shape) == N_17M
    assert hardware.flops_per_token(**FULL) == FLOPS_17M
    # forward only: 2N + 4*L*d*T = 35,152,896 + 2,097,152
    assert hardware.flops_per_token(**FULL, training=False) == 37_250_048
    longer = hardware.flops_per_token(**{**FULL, "context_length": 512})
    assert longer - FLOPS_17M == 12 * 4 * 512 * 256  # context enters only through attention


def test_mfu_and_expected_rate_by_hand():
    peak = hardware.peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak == 989.4e12
    # 2,000,000 tokens/s x 111,750,144 FLOP = 223.500288 TFLOP/s; / 989.4 = 0.22589477...
    assert hardware.model_flops_utilization(2e6, FLOPS_17M, peak) == pytest.approx(0.2258947726, rel=1e-9)
    # 989.4e12 x 0.23 / 111,750,144 = 2,036,346.37 tokens/s
    expected = hardware.expected_tokens_per_sec(FLOPS_17M, peak, hardware.REALISTIC_MFU["bf16"])
    assert expected == pytest.approx(2_036_346.37, abs=0.01)
    assert hardware.model_flops_utilization(expected, FLOPS_17M, peak) == pytest.approx(0.23)
    with pytest.raises(ValueError):
        hardware.model_flops_utilization(1.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        hardware.expected_tokens_per_sec(0.0, peak, 0.23)


def test_the_cited_mfu_figure_recomputes():
    """benchmarks/README.md: openai/parameter-golf's baseline (17,059,912 params, 9 x 512, context 1024) at
    524,288 tokens per 44.75 ms step on 8 H100s is 23.5% of the H100 SXM bf16 peak; REALISTIC_MFU rounds down."""
    fpt = 6 * 17_059_912 + 12 * 9 * 512 * 1024
    tokens_per_sec_per_gpu = 524_288 / 0.04475 / 8
    mfu = hardware.model_flops_utilization(
        tokens_per_sec_per_gpu, fpt, hardware.peak_flops("H100 SXM", "bf16")
    )
    assert mfu == pytest.approx(0.235, abs=0.0005)
    assert hardware.REALISTIC_MFU["bf16"] <= mfu
    readme = (Path(__file__).parents[1] / "benchmarks" / "README.md").read_text()
    section = readme.split("## Expected throughput / MFU", 1)[1]
    assert re.search(rf"REALISTIC_MFU.*{hardware.REALISTIC_MFU['bf16']}", section)
    assert set(hardware.REALISTIC_MFU) == {"bf16"}  # no other precision has a measured or cited figure


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 141GB HBM3e", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ],
)
def test_match_gpu_known_names(name, key):
    assert hardware.match_gpu(name) == key
    assert hardware.match_gpu(key) == key  # a table key matches itself


@pytest.mark.parametrize(
    "name",
    [None, "", "cpu", "Apple M2 Max", "NVIDIA L40", "NVIDIA A10G", "NVIDIA GeForce RTX 3090 Ti",
     "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA H100 NVL", "Tesla V100-PCIE-32GB"],
)  # fmt: skip
def test_other_parts_are_not_matched(name):
    assert hardware.match_gpu(name) is None
    assert all(hardware.peak_flops(name, p) is None for p in ("bf16", "fp16", "tf32", "fp32"))


def test_peak_table_is_consistent():
    for key, row in hardware.PEAK_TFLOPS.items():
        assert all(v > 0 and math.isfinite(v) for v in row.values()), key
        if "bf16" in row:  # Ampere and later: dense bf16 == fp16 = 2 x tf32 (within datasheet rounding)
            assert row["bf16"] == row["fp16"] and row["tf32"] == pytest.approx(row["bf16"] / 2, rel=0.02), key
            assert row["tf32"] >= row["fp32"], key
    assert hardware.peak_flops("Tesla T4", "bf16") is None  # Turing has no bf16 tensor cores
    assert hardware.peak_flops("Tesla T4", "fp16") == 65e12
    assert hardware.peak_flops("NVIDIA A100-SXM4-80GB", "tf32") == 156e12
    assert hardware.peak_flops("NVIDIA A100-SXM4-80GB", "fp8") is None


def test_peak_precision():
    assert hardware.peak_precision("bf16", True) == "bf16"
    assert hardware.peak_precision("fp32", True) == "tf32"
    assert hardware.peak_precision("fp32", False) == "fp32"
