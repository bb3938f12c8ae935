"""Parameterised building blocks with CS336's exact names, shapes and initialisations, from scratch
(only ``nn.Module``, ``nn.Parameter`` and ``nn.init`` from ``torch.nn``). ``kernels="fast"`` (what the model
passes by default) routes the matmul and silu through ``kernels.py``; the default here is the reference."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cs336_basics.basics import kernels as fast
from cs336_basics.basics.functional import silu


def linear(x: Tensor, weight: Tensor, kernels: str = "reference") -> Tensor:
    """x W^T: as a matmul, or (kernels="fast") through ``kernels.linear``."""
    return fast.linear(x, weight) if kernels == "fast" else x @ weight.T


class Linear(nn.Module):
    """y = x W^T with W of shape (out, in), no bias; truncated-normal init, std sqrt(2/(in+out)), cut at 3 std."""

    def __init__(
        self, in_features: int, out_features: int, device=None, dtype=None, kernels: str = "reference"
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.kernels = fast.check_kernels(kernels)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        std = math.sqrt(2.0 / (in_features + out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.kernels)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """Lookup table of shape (num_embeddings, embedding_dim); truncated-normal init, std 1, cut at 3."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Tensor) -> Tensor:
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 and cast back to the input dtype."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x32 * inv_rms * self.weight.float()).to(x.dtype)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), the gated feed-forward of Llama-style models."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None, kernels: str = "reference"):
        super().__init__()
        self.kernels = fast.check_kernels(kernels)
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype, kernels=kernels)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype, kernels=kernels)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype, kernels=kernels)

    def forward(self, x: Tensor) -> Tensor:
        gate = fast.silu if self.kernels == "fast" else silu
        return self.w2(gate(self.w1(x)) * self.w3(x))


class RotaryPositionalEmbedding(nn.Module):
    """RoPE: rotates adjacent pairs (x[..., 2k], x[..., 2k+1]) by angle pos * theta^(-2k/d_k)."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE needs an even head dimension, got d_k={d_k}")
        inv_freq = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64, device=device) / d_k)
        angles = torch.arange(max_seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq
        # Non-persistent: derived from (theta, d_k, max_seq_len), so not part of a checkpoint.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:
        cos, sin = self.cos[token_positions], self.sin[token_positions]  # (..., seq, d_k/2)
        x_even, x_odd = x[..., 0::2].float(), x[..., 1::2].float()
        rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
        return rotated.flatten(-2).to(x.dtype)
