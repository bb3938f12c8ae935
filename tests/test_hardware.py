"""hardware.py: the peak table, GPU-name matching, FLOPs per token and MFU arithmetic."""

from __future__ import annotations

import math

import pytest

from cs336_basics.basics import hardware

# The assignment's full model (TinyStories): vocab 10k, context 256, d_model 512, 4 layers, d_ff 1344.
FULL = {"vocab_size": 10_000, "context_length": 256, "d_model": 512, "num_layers": 4, "d_ff": 1344}


def _param_count(vocab_size, d_model, num_layers, d_ff, **_):
    """Matmul weights of the layers plus the LM head (the input embedding is a lookup), plus norm gains."""
    attn = 4 * d_model * d_model
    ffn = 3 * d_model * d_ff
    norms = 2 * d_model
    return num_layers * (attn + ffn + norms) + d_model + d_model * vocab_size


def test_full_model_is_about_112_mflop_per_token():
    fpt = hardware.flops_per_token(**FULL)
    assert fpt == pytest.approx(112e6, rel=0.01)
    expected = 6 * _param_count(**FULL) + 12 * FULL["num_layers"] * FULL["d_model"] * FULL["context_length"]
    assert fpt == pytest.approx(expected, rel=1e-12)
    assert hardware.non_embedding_params(**{k: v for k, v in FULL.items() if k != "context_length"}) == (
        _param_count(**FULL)
    )
    # N ~ 17.6M: the 4 layers (~12.5M) plus the untied LM head (5.12M), not the input embedding.
    assert _param_count(**FULL) == pytest.approx(17.6e6, rel=0.01)


def test_forward_only_is_a_third_of_training():
    train = hardware.flops_per_token(**FULL)
    forward = hardware.flops_per_token(**FULL, training=False)
    n = _param_count(**FULL)
    assert forward == pytest.approx(2 * n + 4 * FULL["num_layers"] * FULL["d_model"] * FULL["context_length"])
    assert forward == pytest.approx(train / 3)


def test_flops_scale_with_context_only_through_attention():
    short = hardware.flops_per_token(**{**FULL, "context_length": 128})
    long = hardware.flops_per_token(**{**FULL, "context_length": 512})
    assert long - short == pytest.approx(12 * FULL["num_layers"] * FULL["d_model"] * (512 - 128))


def test_mfu_for_2m_tokens_per_sec_on_h100_sxm_bf16():
    fpt = hardware.flops_per_token(**FULL)
    peak = hardware.peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert peak == pytest.approx(989.4e12)
    mfu = hardware.model_flops_utilization(2_000_000, fpt, peak)
    assert mfu == pytest.approx(2_000_000 * fpt / 989.4e12, rel=1e-12)
    assert mfu == pytest.approx(0.227, abs=0.002)


def test_expected_tokens_per_sec_inverts_mfu():
    fpt = hardware.flops_per_token(**FULL)
    peak = 100e12
    tps = hardware.expected_tokens_per_sec(fpt, peak, 0.25)
    assert tps == pytest.approx(100e12 * 0.25 / fpt)
    assert hardware.model_flops_utilization(tps, fpt, peak) == pytest.approx(0.25)
    default = hardware.expected_tokens_per_sec(fpt, peak)
    assert default == pytest.approx(peak * hardware.REALISTIC_MFU / fpt)


def test_realistic_mfu_is_a_documented_fraction():
    assert isinstance(hardware.REALISTIC_MFU, float)
    assert 0 < hardware.REALISTIC_MFU < 1
    assert all(0 < u < 1 for u in hardware.REALISTIC_MFU_BY_SETUP.values())


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
        ("H100 SXM", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 141GB HBM3e", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
    ],
)
def test_match_gpu_known_names(name, key):
    assert hardware.match_gpu(name) == key
    for table_key in hardware.PEAK_TFLOPS:  # a table key matches itself
        assert hardware.match_gpu(table_key) == table_key


@pytest.mark.parametrize(
    "name",
    [
        "cpu",
        "",
        None,
        "Apple M2 Max",
        "NVIDIA GeForce GTX 1080 Ti",
        "NVIDIA L40",
        "NVIDIA GeForce RTX 3090 Ti",
        "NVIDIA GeForce RTX 4090 Laptop GPU",
        "NVIDIA H100 NVL",
        "Tesla V100-SXM2-16GB",
    ],
)
def test_unknown_or_different_parts_are_not_matched(name):
    assert hardware.match_gpu(name) is None
    for dtype in ("bf16", "fp16", "tf32", "fp32"):
        assert hardware.peak_flops(name, dtype) is None


def test_peak_table_is_complete_and_consistent():
    assert set(hardware.PEAK_TFLOPS) == {
        "H100 SXM",
        "H100 PCIe",
        "H200",
        "A100",
        "L40S",
        "RTX 4090",
        "RTX 3090",
    }
    for key, row in hardware.PEAK_TFLOPS.items():
        assert set(row) == {"bf16", "fp16", "tf32", "fp32"}, key
        assert all(v > 0 and math.isfinite(v) for v in row.values()), key
        # Dense tensor-core rates: bf16 == fp16 > tf32 (about half of bf16) >= plain fp32.
        assert row["bf16"] == row["fp16"] > row["tf32"] >= row["fp32"], key
        assert row["tf32"] == pytest.approx(row["bf16"] / 2, rel=0.02), key
    assert hardware.PEAK_TFLOPS["H200"] == hardware.PEAK_TFLOPS["H100 SXM"]  # same compute, more memory


@pytest.mark.parametrize(
    ("alias", "column"), [("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32"), ("BF16", "bf16")]
)
def test_peak_flops_units_and_dtype_aliases(alias, column):
    name = "NVIDIA A100-SXM4-80GB"
    assert hardware.peak_flops(name, column) == pytest.approx(hardware.PEAK_TFLOPS["A100"][column] * 1e12)
    assert hardware.peak_flops(name, alias) == hardware.peak_flops(name, column)
    assert hardware.peak_flops(name, "fp8") is None


def test_mfu_rejects_non_positive_peak():
    with pytest.raises(ValueError):
        hardware.model_flops_utilization(1.0, 1.0, 0.0)
