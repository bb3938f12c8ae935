"""Stateless numerics, from scratch: silu, softmax, attention with an arbitrary mask, cross-entropy.

These are the reference CS336 implementations (no ``torch.nn.functional``). The fast path in
``kernels.py`` replaces attention and the loss with torch's fused kernels; the tests check both compute
the same function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def silu(x: Tensor) -> Tensor:
    """x * sigmoid(x) (a.k.a. swish)."""
    return x * torch.sigmoid(x)


def softmax(x: Tensor, dim: int) -> Tensor:
    """Numerically stable softmax: subtracting the max keeps exp() finite for any input."""
    shifted = x - x.amax(dim=dim, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(Q: Tensor, K: Tensor, V: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) V over any leading batch dims; ``mask`` is boolean, True = may attend."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    return softmax(scores, dim=-1) @ V


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean negative log-likelihood of ``targets`` under ``logits`` (..., vocab), over all leading dims.

    Computed in float32 via a max-shifted log-sum-exp, so logits of 1e4 or 1e6 stay finite; bf16 logits
    from autocast are upcast first.
    """
    logits = logits.float()
    shift = logits.amax(dim=-1, keepdim=True).detach()  # any constant works; the max keeps exp() <= 1
    log_normaliser = shift.squeeze(-1) + (logits - shift).exp().sum(dim=-1).log()
    target_logit = logits.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return (log_normaliser - target_logit).mean()
