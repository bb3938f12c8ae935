"""The Transformer language model: pre-norm blocks of RoPE causal attention and a SwiGLU feed-forward.

Written from scratch (CS336's rule). ``kernels="fast"`` (the default) routes the attention, every linear
projection and SwiGLU's silu through ``kernels.py`` (torch's fused kernels); ``kernels="reference"`` runs the
code here. Either way the parameters and state-dict keys are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cs336_basics.basics import kernels as fast
from cs336_basics.basics.config import MODEL_FIELDS
from cs336_basics.basics.functional import scaled_dot_product_attention
from cs336_basics.basics.layers import Embedding, Linear, RMSNorm, RotaryPositionalEmbedding, SwiGLU, linear


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention; heads are contiguous slices of d_model; RoPE on q and k if given theta."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        max_seq_len: int | None = None,
        theta: float | None = None,
        device=None,
        dtype=None,
        kernels: str = fast.DEFAULT_KERNELS,
    ):
        super().__init__()
        self.kernels = fast.check_kernels(kernels)
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads, self.d_head = num_heads, d_model // num_heads
        like = dict(device=device, dtype=dtype, kernels=kernels)
        self.q_proj = Linear(d_model, d_model, **like)
        self.k_proj = Linear(d_model, d_model, **like)
        self.v_proj = Linear(d_model, d_model, **like)
        self.output_proj = Linear(d_model, d_model, **like)
        self.rope = None
        if theta is not None and max_seq_len is not None:
            self.rope = RotaryPositionalEmbedding(theta, self.d_head, max_seq_len, device=device)

    def forward(self, x: Tensor, token_positions: Tensor | None = None) -> Tensor:
        *batch, seq, d_model = x.shape
        q, k, v = self.heads_qkv(x, token_positions)
        if self.kernels == "fast":
            out = fast.causal_attention(q, k, v)
        else:
            causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()  # query i sees keys <= i
            out = scaled_dot_product_attention(q, k, v, causal)
        return self.output_proj(out.transpose(-3, -2).reshape(*batch, seq, d_model))

    def heads_qkv(self, x: Tensor, token_positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """q, k (rotated by RoPE) and v per head, each (..., heads, seq, d_head)."""
        *batch, seq, _ = x.shape
        # One matmul for q, k and v: the three weights stay separate parameters (CS336 names).
        qkv_weight = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))
        qkv = linear(x, qkv_weight, self.kernels)
        qkv = qkv.view(*batch, seq, 3, self.num_heads, self.d_head)
        q, k, v = (t.transpose(-3, -2) for t in qkv.unbind(dim=-3))  # (..., heads, seq, d_head)
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(seq, device=x.device)
            elif token_positions.dim() > 1:
                token_positions = token_positions.unsqueeze(-2)  # broadcast over the head dim
            q, k = self.rope(q, token_positions), self.rope(k, token_positions)
        return q, k, v


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then + ffn(ln2(.))."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        max_seq_len: int,
        theta: float,
        device=None,
        dtype=None,
        kernels: str = fast.DEFAULT_KERNELS,
    ):
        super().__init__()
        like = dict(device=device, dtype=dtype)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, max_seq_len, theta, **like, kernels=kernels)
        self.ln1 = RMSNorm(d_model, **like)
        self.ffn = SwiGLU(d_model, d_ff, **like, kernels=kernels)
        self.ln2 = RMSNorm(d_model, **like)

    def forward(self, x: Tensor, token_positions: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), token_positions)
        return x + self.ffn(self.ln2(x))


class TransformerLM(nn.Module):
    """Token embeddings, a stack of TransformerBlocks, a final RMSNorm and an untied LM head -> logits."""

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        rope_theta: float,
        device=None,
        dtype=None,
        kernels: str = fast.DEFAULT_KERNELS,
    ):
        super().__init__()
        self.context_length = context_length
        self.kernels = fast.check_kernels(kernels)
        self.token_embeddings = Embedding(vocab_size, d_model, device=device, dtype=dtype)
        block = (d_model, num_heads, d_ff, context_length, rope_theta)
        like = dict(device=device, dtype=dtype, kernels=kernels)
        self.layers = nn.ModuleList(TransformerBlock(*block, **like) for _ in range(num_layers))
        self.ln_final = RMSNorm(d_model, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype, kernels=kernels)

    @classmethod
    def from_config(cls, cfg: Any, device=None, kernels: str | None = None) -> TransformerLM:
        """The model a config describes: an ``ExperimentConfig`` (or a checkpoint's config dict) with the
        shape fields ``MODEL_FIELDS``; ``kernels`` defaults to the config's ``kernels``, else "fast"."""
        get = cfg.get if isinstance(cfg, Mapping) else lambda name, default=None: getattr(cfg, name, default)
        if kernels is None:
            kernels = get("kernels", None) or fast.DEFAULT_KERNELS
        return cls(*(get(name) for name in MODEL_FIELDS), device=device, kernels=kernels)

    def forward(self, token_ids: Tensor, token_positions: Tensor | None = None) -> Tensor:
        x = self.token_embeddings(token_ids)
        for layer in self.layers:
            x = layer(x, token_positions)
        return self.lm_head(self.ln_final(x))

    def num_parameters(self, exclude_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.token_embeddings.weight.numel() if exclude_embeddings else n
