"""AdamW (multi-tensor), the cosine learning-rate schedule and global gradient clipping."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), bias-corrected step size.

    Same update, in the same order, as ``torch.optim.AdamW``: decay the weights by (1 - lr * wd), update the
    moments, then step by lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). Each update is a handful of
    ``torch._foreach_*`` kernels over all parameters rather than a Python loop per parameter.
    """

    def __init__(
        self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01
    ):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Parameters are bucketed by (step count, device, dtype) so each bucket is one multi-tensor update;
            # in a normal run all parameters share one step count and land in one bucket.
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = int(state["step"]) + 1  # int(): torch.optim.AdamW's state keeps a tensor
                buckets[(state["step"], p.device, p.dtype)].append(p)
            for (t, _, _), params in buckets.items():
                self._update(params, t, group)
        return loss

    def _update(self, params: list[Tensor], t: int, group: dict) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        if wd != 0:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        step_size = lr / (1.0 - beta1**t)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, math.sqrt(1.0 - beta2**t))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)


def get_lr_cosine_schedule(
    it: int, max_learning_rate: float, min_learning_rate: float, warmup_iters: int, cosine_cycle_iters: int
) -> float:
    """Linear warm-up from 0 to max over ``warmup_iters``, cosine down to min at ``cosine_cycle_iters``, then min."""
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it <= cosine_cycle_iters:
        span = max(cosine_cycle_iters - warmup_iters, 1)
        progress = (it - warmup_iters) / span
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
        return min_learning_rate + cosine * (max_learning_rate - min_learning_rate)
    return min_learning_rate


def gradient_clipping(
    parameters: Iterable[torch.nn.Parameter], max_l2_norm: float, eps: float = 1e-6
) -> Tensor:
    """Scale all gradients by max / (norm + eps) when their global L2 norm exceeds ``max_l2_norm``.

    Returns the pre-clip norm as a 0-d tensor. Nothing here reads a value back to the host, so calling it
    every step costs no CPU-GPU synchronisation.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
    scale = torch.where(total > max_l2_norm, max_l2_norm / (total + eps), torch.ones_like(total))
    torch._foreach_mul_(grads, scale.to(grads[0].dtype))
    return total
