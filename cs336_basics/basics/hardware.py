"""Throughput arithmetic shared by cs336-bench and lr-diagnose: peak FLOP/s, model FLOPs per token, MFU.

Pure and stdlib-only. Peak numbers are DENSE (no 2:4 sparsity) vendor-datasheet figures in TFLOP/s:

- H100 SXM / H100 PCIe: NVIDIA H100 Tensor Core GPU datasheet (sparse figures halved).
- H200: NVIDIA H200 datasheet; same compute as H100 SXM (only memory differs).
- A100 (SXM4 80GB; the PCIe card has the same peaks): NVIDIA A100 datasheet.
- L40S: NVIDIA L40S datasheet.
- RTX 4090: NVIDIA Ada Lovelace architecture whitepaper, appendix A; fp16/bf16 with fp32 accumulate (what
  PyTorch uses), not the 330 TFLOP/s fp16-accumulate figure.
- RTX 3090: NVIDIA Ampere GA102 whitepaper, appendix A; fp16/bf16 with fp32 accumulate.

"tf32" is the tensor-core TF32 rate (fp32 matmuls with TF32 allowed); "fp32" is plain CUDA-core fp32.
CPUs and unlisted GPUs have no table entry: ``peak_flops`` returns None and callers must handle it.
"""

from __future__ import annotations

import re

PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "RTX 3090": {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6},
}

# Realistic model-FLOPs utilisation of small-Transformer training (d_model ~512, a few layers), as a fraction of
# the peak for the precision in use. Small matmuls, attention softmax and elementwise kernels keep such models
# well below large-model MFU; these are planning numbers, not guarantees.
REALISTIC_MFU_BY_SETUP: dict[str, float] = {
    "cuda_bf16_compiled": 0.30,  # bf16 autocast + torch.compile: the configuration the sweep should use
    "cuda_bf16": 0.20,  # bf16 autocast, eager: more kernel launches and unfused elementwise work
    "cuda_tf32": 0.20,  # fp32 weights with TF32 tensor-core matmuls (of the tf32 peak)
    "cuda_fp32": 0.50,  # plain fp32 on CUDA cores (of the much lower fp32 peak)
}
# The single utilisation the speed verdict assumes for "as fast as this device allows" (a well-configured run).
REALISTIC_MFU: float = REALISTIC_MFU_BY_SETUP["cuda_bf16_compiled"]

_DTYPE_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "tf32": "tf32",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
}

# (pattern on the lower-cased name, table key); first match wins. Variants with different peaks
# (H100 NVL, H200 NVL, L40 without S, RTX 4090 D, 3090 Ti, laptop parts) are deliberately left unmatched.
_NAME_PATTERNS: list[tuple[str, str]] = [
    (r"h200(?!.*nvl)", "H200"),  # "NVIDIA H200", "NVIDIA GH200 480GB" (H100-SXM compute)
    (r"h100.*pcie", "H100 PCIe"),  # "NVIDIA H100 PCIe"
    (r"h100(?!.*nvl)", "H100 SXM"),  # "NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"
    (r"a100", "A100"),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe"
    (r"\bl40s\b", "L40S"),  # "NVIDIA L40S"
    (r"rtx\s*4090(?!\s*d\b)", "RTX 4090"),  # "NVIDIA GeForce RTX 4090"
    (r"rtx\s*3090(?!\s*ti\b)", "RTX 3090"),  # "NVIDIA GeForce RTX 3090"
]


def match_gpu(name: str | None) -> str | None:
    """Table key for a CUDA device name (``torch.cuda.get_device_name`` / nvidia-smi), or None if unknown."""
    if not name:
        return None
    lowered = name.lower()
    if "laptop" in lowered or "mobile" in lowered:
        return None
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, lowered):
            return key
    return None


def peak_flops(device_name: str | None, dtype: str) -> float | None:
    """Dense peak FLOP/s of ``device_name`` for ``dtype`` (bf16/fp16/tf32/fp32); None if not in the table."""
    key = match_gpu(device_name)
    column = _DTYPE_ALIASES.get(dtype.lower())
    if key is None or column is None:
        return None
    return PEAK_TFLOPS[key][column] * 1e12


def non_embedding_params(*, vocab_size: int, d_model: int, num_layers: int, d_ff: int) -> int:
    """N for the FLOP count: every parameter except the input embedding (a lookup, no FLOPs).

    Per layer 4*d^2 (q, k, v, output projections) + 3*d*d_ff (SwiGLU w1, w2, w3) + 2*d (two RMSNorm gains);
    plus the final RMSNorm (d) and the untied LM head (d*vocab), which is a matmul and so is counted.
    """
    per_layer = 4 * d_model**2 + 3 * d_model * d_ff + 2 * d_model
    return num_layers * per_layer + d_model + d_model * vocab_size


def flops_per_token(
    *, vocab_size: int, context_length: int, d_model: int, num_layers: int, d_ff: int, training: bool = True
) -> float:
    """Model FLOPs per token (Kaplan et al. 2020 / PaLM appendix B): 6N + 12*L*d*T for a training step
    (forward + backward), 2N + 4*L*d*T forward only; N from ``non_embedding_params``, T = context length.
    The attention term counts QK^T and AV over the full T x T scores (no causal halving), as PaLM does.
    """
    n = non_embedding_params(vocab_size=vocab_size, d_model=d_model, num_layers=num_layers, d_ff=d_ff)
    attention = num_layers * d_model * context_length
    if training:
        return float(6 * n + 12 * attention)
    return float(2 * n + 4 * attention)


def model_flops_utilization(tokens_per_sec: float, flops_per_token: float, peak_flops: float) -> float:
    """Achieved model FLOP/s (tokens/s x FLOPs/token) as a fraction of ``peak_flops``."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return tokens_per_sec * flops_per_token / peak_flops


def expected_tokens_per_sec(
    flops_per_token: float, peak_flops: float, utilization: float = REALISTIC_MFU
) -> float:
    """Tokens/s a run reaches at ``utilization`` of ``peak_flops`` (default: ``REALISTIC_MFU``)."""
    if flops_per_token <= 0:
        raise ValueError(f"flops_per_token must be positive, got {flops_per_token}")
    return peak_flops * utilization / flops_per_token
