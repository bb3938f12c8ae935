"""The fast path: torch's fused kernels in place of the from-scratch reference, chosen by ``kernels="fast"``.

CS336 asks for the model, loss and optimizer written from scratch (no ``torch.nn.functional``); that
reference lives in ``layers.py``, ``functional.py``, ``model.py`` and ``optim.py``. Training defaults to
``kernels="fast"``, which swaps in, and only in these spots:

* causal attention: ``F.scaled_dot_product_attention(is_causal=True)`` (flash / memory-efficient kernels,
  no (seq x seq) score matrix in memory) instead of softmax(QK^T/sqrt(d)) V with a boolean mask;
* every projection (the fused q/k/v, the output, SwiGLU's w1/w2/w3, the LM head): ``F.linear``;
* SwiGLU's gate: ``F.silu``;
* the loss: ``F.cross_entropy`` on fp32 logits (the same fp32 log-sum-exp as the reference);
* the optimizer: ``torch.optim.AdamW(fused=True)`` (foreach where the device has no fused kernel).

Same functions, same parameters, state-dict keys and hyperparameters; the tests check fast == reference
within fp32 tolerance on forward, backward and optimizer steps. ``kernels="reference"`` runs the
from-scratch code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from cs336_basics.basics.config import CHOICES, ExperimentConfig
from cs336_basics.basics.optim import AdamW
from cs336_basics.errors import UserError

KERNELS = CHOICES["kernels"]  # ("fast", "reference")
DEFAULT_KERNELS = ExperimentConfig.kernels  # the config field's default: "fast"


def check_kernels(kernels: str) -> str:
    if kernels not in KERNELS:
        raise UserError(f"--kernels must be one of {', '.join(KERNELS)}, not {kernels!r}")
    return kernels


linear = F.linear  # linear(x, W) = x W^T in one (bias-free addmm) call
silu = F.silu  # x * sigmoid(x) in one kernel


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


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    kernels: str,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """AdamW for ``kernels``: torch's (fused where the device has the kernel, else foreach) or the
    from-scratch ``optim.AdamW``; the same update either way. torch keeps ``step`` as a tensor, ours as an
    int; each loads the other's state dict."""
    params = list(params)
    hyper = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    if check_kernels(kernels) == "reference":
        return AdamW(params, **hyper)
    # torch checks fused support only at the first step: check it here to fall back instead of failing.
    fused_devices = _get_fused_kernels_supported_devices()
    fused = all(p.device.type in fused_devices and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, fused=fused, foreach=not fused, **hyper)
    optimizer.register_load_state_dict_pre_hook(_as_torch_adamw_state)
    return optimizer


def _as_torch_adamw_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """A state dict written by ``optim.AdamW`` (int steps, no implementation flags) as torch's AdamW keeps
    it; either way the groups keep this optimizer's fused/foreach choice, not the writer's."""
    flags = {k: optimizer.defaults[k] for k in ("fused", "foreach")}
    state = {
        i: {**s, "step": torch.as_tensor(s["step"], dtype=torch.float32)}
        for i, s in state_dict["state"].items()
    }
    groups = [{**g, **flags} for g in state_dict["param_groups"]]
    return {**state_dict, "state": state, "param_groups": groups}
