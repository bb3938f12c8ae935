"""The fast path: torch's fused kernels for the few places where they beat the from-scratch reference.

CS336 asks for the model, loss and optimizer written from scratch (no ``torch.nn.functional``); that
reference lives in ``layers.py``, ``functional.py``, ``model.py`` and ``optim.py``. Training defaults to
``kernels="fast"``, which swaps in, and only in these spots:

* causal attention: ``F.scaled_dot_product_attention(is_causal=True)`` (flash / memory-efficient kernels,
  no (seq x seq) score matrix in memory) instead of softmax(QK^T/sqrt(d)) V with a boolean mask;
* the fused q/k/v projection: one ``F.linear`` on the concatenated weights;
* the loss: ``F.cross_entropy`` on fp32 logits (the same fp32 log-sum-exp as the reference).

Same functions, same parameters and state-dict keys; the tests check fast == reference within fp32
tolerance on forward, backward and optimizer steps. ``kernels="reference"`` runs the from-scratch code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from cs336_basics.errors import UserError

KERNELS = ("fast", "reference")
DEFAULT_KERNELS = "fast"


def check_kernels(kernels: str) -> str:
    if kernels not in KERNELS:
        raise UserError(f"--kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    return kernels


def linear(x: Tensor, weight: Tensor) -> Tensor:
    """x W^T in one (possibly fused bias-free addmm) call."""
    return F.linear(x, weight)


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v over (..., heads, seq, d_head), fused."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def fast_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over all leading dims, computed on fp32 logits like the reference."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).long())


def loss_function(kernels: str = DEFAULT_KERNELS) -> Callable[[Tensor, Tensor], Tensor]:
    """The training loss for ``kernels``: ``fast_cross_entropy``, or the from-scratch ``cross_entropy``."""
    from cs336_basics.basics.functional import cross_entropy

    return fast_cross_entropy if check_kernels(kernels) == "fast" else cross_entropy
