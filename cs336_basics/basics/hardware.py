"""Throughput arithmetic shared by cs336-bench, the trainer and lr-diagnose: peaks, FLOPs per token, MFU.

Pure and stdlib-only. Peaks are DENSE (no 2:4 sparsity; datasheets' sparse figures halved) vendor figures in
TFLOP/s, from each part's NVIDIA datasheet (RTX 4090 / 3090: the Ada / GA102 whitepapers' appendix A,
fp16/bf16 with fp32 accumulate, which is what PyTorch uses). "tf32" is the tensor-core TF32 rate (fp32
matmuls with TF32 allowed), "fp32" plain CUDA-core fp32. A precision a part lacks (bf16 on T4 / V100) has no
entry. CPUs and unlisted GPUs have no peak: ``peak_flops`` returns None and callers must handle it.
"""

from __future__ import annotations

import re

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},  # H100 SXM compute, more memory
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},  # SXM4 and PCIe alike
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "RTX 3090": {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6},
    "T4": {"fp16": 65.0, "fp32": 8.1},
    "V100 SXM2": {"fp16": 125.0, "fp32": 15.7},
}

# Model-FLOPs utilisation a well-configured run of this model size reaches, per precision, as a fraction of
# that precision's dense peak. Only precisions with a measured or cited figure are listed (the source and the
# arithmetic are in benchmarks/README.md, "Expected throughput / MFU"); any other has no expected rate.
REALISTIC_MFU: dict[str, float] = {"bf16": 0.23}

# (pattern on the lower-cased name, table key); first match wins. Parts with other peaks (H100 / H200 NVL,
# L40 without S, A10G, RTX 4090 D, 3090 Ti, V100 PCIe, laptop parts) are deliberately left unmatched.
_NAME_PATTERNS: list[tuple[str, str]] = [
    (r"h200(?!.*nvl)", "H200"),  # "NVIDIA H200", "NVIDIA GH200 480GB"
    (r"h100.*pcie", "H100 PCIe"),
    (r"h100(?!.*nvl)", "H100 SXM"),  # "NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"
    (r"a100", "A100"),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB"
    (r"\bl40s\b", "L40S"),
    (r"\bl4\b", "L4"),
    (r"\ba10\b", "A10"),
    (r"rtx\s*4090(?!\s*d\b)", "RTX 4090"),
    (r"rtx\s*3090(?!\s*ti\b)", "RTX 3090"),
    (r"\bt4\b", "T4"),  # "Tesla T4"
    (r"v100.*sxm2", "V100 SXM2"),  # "Tesla V100-SXM2-16GB"
]


def match_gpu(name: str | None) -> str | None:
    """Table key for a CUDA device name (``torch.cuda.get_device_name`` / NVML), or None if unknown."""
    lowered = (name or "").lower()
    if not lowered or "laptop" in lowered or "mobile" in lowered:
        return None
    return next((key for pattern, key in _NAME_PATTERNS if re.search(pattern, lowered)), None)


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Dense peak FLOP/s of ``device_name`` in ``precision`` (bf16/fp16/tf32/fp32); None if not in the table."""
    key = match_gpu(device_name)
    value = PEAK_TFLOPS[key].get(precision.lower()) if key else None
    return value * 1e12 if value else None


def peak_precision(dtype: str, tf32: bool) -> str:
    """The peak column a run's matmuls use: its autocast dtype, else tf32 or plain fp32."""
    return dtype if dtype in ("bf16", "fp16") else ("tf32" if tf32 else "fp32")


# The config fields the FLOP count depends on (flops_per_token's arguments).
FLOPS_SHAPE = ("vocab_size", "context_length", "d_model", "num_layers", "d_ff")


def non_embedding_params(*, vocab_size: int, d_model: int, num_layers: int, d_ff: int) -> int:
    """N for the FLOP count: every parameter except the input embedding (a lookup, no FLOPs).

    Per layer 4*d^2 (q, k, v, output) + 3*d*d_ff (SwiGLU w1, w2, w3) + 2*d (RMSNorm gains); plus the final
    RMSNorm (d) and the untied LM head (d*vocab), a matmul and so counted.
    """
    per_layer = 4 * d_model**2 + 3 * d_model * d_ff + 2 * d_model
    return num_layers * per_layer + d_model + d_model * vocab_size


def flops_per_token(
    *, vocab_size: int, context_length: int, d_model: int, num_layers: int, d_ff: int, training: bool = True
) -> float:
    """Model FLOPs per token, PaLM appendix B (= nanoGPT's ``estimate_mfu``): 6N + 12*L*d*T for a training
    step, 2N + 4*L*d*T forward only; T = context length. The attention term counts QK^T and AV over the full
    T x T scores (no causal halving), as PaLM does.
    """
    n = non_embedding_params(vocab_size=vocab_size, d_model=d_model, num_layers=num_layers, d_ff=d_ff)
    attention = num_layers * d_model * context_length
    return float(6 * n + 12 * attention) if training else float(2 * n + 4 * attention)


def model_flops_utilization(tokens_per_sec: float, flops_per_token: float, peak_flops: float) -> float:
    """Achieved model FLOP/s (tokens/s x FLOPs/token) as a fraction of ``peak_flops``."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return tokens_per_sec * flops_per_token / peak_flops


def throughput_row(cfg, runtime, steps: int, seconds: float) -> dict:
    """A metrics row's throughput columns for ``steps`` steps of ``cfg`` in ``seconds`` on ``runtime``: tokens/s,
    ms/step and MFU against the dense peak (None where the device has no known peak: CPUs)."""
    tokens_per_sec = steps * cfg.tokens_per_step / seconds
    flops = flops_per_token(**{k: getattr(cfg, k) for k in FLOPS_SHAPE})
    peak = peak_flops(runtime.device_name(), peak_precision(runtime.dtype, runtime.tf32))
    mfu = model_flops_utilization(tokens_per_sec, flops, peak) if peak else None
    return {"tokens_per_sec": tokens_per_sec, "ms_per_step": 1e3 * seconds / steps, "mfu": mfu}


def expected_tokens_per_sec(flops_per_token: float, peak_flops: float, utilization: float) -> float:
    """Tokens/s a run reaches at ``utilization`` of ``peak_flops``."""
    if flops_per_token <= 0:
        raise ValueError(f"flops_per_token must be positive, got {flops_per_token}")
    return peak_flops * utilization / flops_per_token
