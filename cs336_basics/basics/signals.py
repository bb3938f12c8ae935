"""Instability signals on a small fixed probe batch (Wortsman et al. 2023, arXiv 2309.14322).

The two instabilities small Transformers reproduce: attention-logit growth (the max q.k / sqrt(d_head) grows,
attention entropy collapses) and output-logit divergence (the log-partition log Z drifts from 0). Plus the
size of one optimizer update relative to the weights. Computed in float32 under ``no_grad``, outside the hot loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cs336_basics.experiment_log.reader import ATTN_LOGIT_PREFIX


def attention_logits(attn: nn.Module, h: Tensor, token_positions: Tensor | None = None) -> Tensor:
    """q.k / sqrt(d_head) of a ``MultiHeadSelfAttention`` on its input ``h``: (..., heads, seq, seq), -inf above
    the diagonal (the causal mask)."""
    seq = h.shape[-2]
    q, k, _ = attn.heads_qkv(h, token_positions)  # the model's own projections and RoPE
    scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(attn.d_head)
    causal = torch.ones(seq, seq, dtype=torch.bool, device=h.device).tril()
    return scores.masked_fill(~causal, float("-inf"))


@torch.no_grad()
def instability_signals(
    model: nn.Module, x: Tensor, token_positions: Tensor | None = None
) -> dict[str, float]:
    """``max_attn_logit_l{i}`` per layer, ``attn_entropy_min`` (the lowest per-layer mean attention entropy,
    nats), ``logz_mean`` and ``logz_sq_mean`` (mean log-sum-exp of the output logits and of its square).

    ``model`` is the eager TransformerLM (not a compiled wrapper): each layer's attention input is caught with
    a forward pre-hook, so the block math lives only in model.py. One host read for all values.
    """
    inputs: list[tuple[Tensor, Tensor | None]] = []

    def catch(module, args, kwargs):
        h = args[0] if args else kwargs["x"]
        pos = args[1] if len(args) > 1 else kwargs.get("token_positions")
        inputs.append((h, pos))

    hooks = [layer.attn.register_forward_pre_hook(catch, with_kwargs=True) for layer in model.layers]
    try:
        with torch.autocast(x.device.type, enabled=False):
            logits = model(x, token_positions)
    finally:
        for hook in hooks:
            hook.remove()
    names, values, entropies = [], [], []
    for i, (layer, (h, pos)) in enumerate(zip(model.layers, inputs)):
        scores = attention_logits(layer.attn, h, pos)
        names.append(f"{ATTN_LOGIT_PREFIX}{i}")
        values.append(scores.amax())
        p = torch.softmax(scores, dim=-1)
        entropies.append(-torch.special.xlogy(p, p).sum(-1).mean())  # xlogy: 0 log 0 = 0 on masked keys
    logz = torch.logsumexp(logits.float(), dim=-1)
    names += ["attn_entropy_min", "logz_mean", "logz_sq_mean"]
    values += [torch.stack(entropies).amin(), logz.mean(), logz.square().mean()]
    return dict(zip(names, torch.stack(values).tolist()))


@torch.no_grad()
def update_rms_ratio(params_before: Sequence[Tensor], params_after: Sequence[Tensor]) -> float:
    """RMS(after - before) / RMS(before) over all parameters together (one global ratio, one host read).

    The trainer snapshots the weights (``[p.detach().clone() for p in model.parameters()]``) just before the
    optimizer step of a log step and calls this after it: one copy of the weights, only at log steps.
    """
    before = [p.detach().float() for p in params_before]
    after = [p.detach().float() for p in params_after]
    update = torch.stack(torch._foreach_norm(torch._foreach_sub(after, before))).norm()
    weights = torch.stack(torch._foreach_norm(before)).norm()
    return (update / weights).item()  # the element counts of the two RMS cancel
