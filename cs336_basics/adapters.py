"""The CS336 assignment-1 adapters (``tests/adapters.py`` of the course repository), pointing at this package.

To run the course's test suite against cs336_basics, replace the course's ``tests/adapters.py`` by
``from cs336_basics.adapters import *``. Each function has the course's name and signature and is a thin
call into the package; the model pieces are built with ``kernels="reference"`` (from scratch, the course's
rule) and loaded with the given weights by their CS336 state-dict names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, Any, BinaryIO

import numpy.typing as npt
import torch
from torch import Tensor

from cs336_basics.basics import (
    AdamW,
    Embedding,
    Linear,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryPositionalEmbedding,
    SwiGLU,
    TransformerBlock,
    TransformerLM,
    cross_entropy,
    get_batch,
    get_lr_cosine_schedule,
    gradient_clipping,
    load_checkpoint,
    save_checkpoint,
    scaled_dot_product_attention,
    silu,
    softmax,
)
from cs336_basics.data.bpe import train_bpe
from cs336_basics.data.tokenizer import Tokenizer

REFERENCE = "reference"

__all__ = [
    "get_adamw_cls",
    "get_tokenizer",
    "run_cross_entropy",
    "run_embedding",
    "run_get_batch",
    "run_get_lr_cosine_schedule",
    "run_gradient_clipping",
    "run_linear",
    "run_load_checkpoint",
    "run_multihead_self_attention",
    "run_multihead_self_attention_with_rope",
    "run_rmsnorm",
    "run_rope",
    "run_save_checkpoint",
    "run_scaled_dot_product_attention",
    "run_silu",
    "run_softmax",
    "run_swiglu",
    "run_train_bpe",
    "run_transformer_block",
    "run_transformer_lm",
]


def _loaded(module: torch.nn.Module, weights: dict[str, Tensor]) -> torch.nn.Module:
    module.load_state_dict(weights)  # strict: a missing or misnamed weight is an error, not a silent init
    return module


def _like(weight: Tensor) -> dict[str, Any]:
    return {"device": weight.device, "dtype": weight.dtype}


def run_linear(d_in: int, d_out: int, weights: Tensor, in_features: Tensor) -> Tensor:
    return _loaded(Linear(d_in, d_out, **_like(weights)), {"weight": weights})(in_features)


def run_embedding(vocab_size: int, d_model: int, weights: Tensor, token_ids: Tensor) -> Tensor:
    return _loaded(Embedding(vocab_size, d_model, **_like(weights)), {"weight": weights})(token_ids)


def run_swiglu(
    d_model: int, d_ff: int, w1_weight: Tensor, w2_weight: Tensor, w3_weight: Tensor, in_features: Tensor
) -> Tensor:
    ffn = SwiGLU(d_model, d_ff, **_like(w1_weight))
    return _loaded(ffn, {"w1.weight": w1_weight, "w2.weight": w2_weight, "w3.weight": w3_weight})(in_features)


def run_scaled_dot_product_attention(Q: Tensor, K: Tensor, V: Tensor, mask: Tensor | None = None) -> Tensor:
    return scaled_dot_product_attention(Q, K, V, mask)


def _attention_weights(q: Tensor, k: Tensor, v: Tensor, o: Tensor) -> dict[str, Tensor]:
    return {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v, "output_proj.weight": o}


def run_multihead_self_attention(
    d_model: int,
    num_heads: int,
    q_proj_weight: Tensor,
    k_proj_weight: Tensor,
    v_proj_weight: Tensor,
    o_proj_weight: Tensor,
    in_features: Tensor,
) -> Tensor:
    mha = MultiHeadSelfAttention(d_model, num_heads, **_like(q_proj_weight), kernels=REFERENCE)
    weights = _attention_weights(q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight)
    return _loaded(mha, weights)(in_features)


def run_multihead_self_attention_with_rope(
    d_model: int,
    num_heads: int,
    max_seq_len: int,
    theta: float,
    q_proj_weight: Tensor,
    k_proj_weight: Tensor,
    v_proj_weight: Tensor,
    o_proj_weight: Tensor,
    in_features: Tensor,
    token_positions: Tensor | None = None,
) -> Tensor:
    mha = MultiHeadSelfAttention(
        d_model, num_heads, max_seq_len, theta, **_like(q_proj_weight), kernels=REFERENCE
    )
    weights = _attention_weights(q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight)
    return _loaded(mha, weights)(in_features, token_positions)


def run_rope(
    d_k: int, theta: float, max_seq_len: int, in_query_or_key: Tensor, token_positions: Tensor
) -> Tensor:
    rope = RotaryPositionalEmbedding(theta, d_k, max_seq_len, device=in_query_or_key.device)
    return rope(in_query_or_key, token_positions)


def run_transformer_block(
    d_model: int,
    num_heads: int,
    d_ff: int,
    max_seq_len: int,
    theta: float,
    weights: dict[str, Tensor],
    in_features: Tensor,
) -> Tensor:
    like = _like(weights["ln1.weight"])
    block = TransformerBlock(d_model, num_heads, d_ff, max_seq_len, theta, **like, kernels=REFERENCE)
    return _loaded(block, weights)(in_features)


def run_transformer_lm(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int,
    rope_theta: float,
    weights: dict[str, Tensor],
    in_indices: Tensor,
) -> Tensor:
    shape = (vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta)
    model = TransformerLM(*shape, **_like(weights["lm_head.weight"]), kernels=REFERENCE)
    return _loaded(model, weights)(in_indices)


def run_rmsnorm(d_model: int, eps: float, weights: Tensor, in_features: Tensor) -> Tensor:
    return _loaded(RMSNorm(d_model, eps, **_like(weights)), {"weight": weights})(in_features)


def run_silu(in_features: Tensor) -> Tensor:
    return silu(in_features)


def run_get_batch(
    dataset: npt.NDArray, batch_size: int, context_length: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return get_batch(dataset, batch_size, context_length, device)


def run_softmax(in_features: Tensor, dim: int) -> Tensor:
    return softmax(in_features, dim)


def run_cross_entropy(inputs: Tensor, targets: Tensor) -> Tensor:
    return cross_entropy(inputs, targets)


def run_gradient_clipping(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float) -> None:
    gradient_clipping(parameters, max_l2_norm)


def get_adamw_cls() -> Any:
    return AdamW


def run_get_lr_cosine_schedule(
    it: int, max_learning_rate: float, min_learning_rate: float, warmup_iters: int, cosine_cycle_iters: int
):
    return get_lr_cosine_schedule(it, max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters)


def run_save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    out: str | os.PathLike | BinaryIO | IO[bytes],
):
    save_checkpoint(model, optimizer, iteration, out)


def run_load_checkpoint(
    src: str | os.PathLike | BinaryIO | IO[bytes], model: torch.nn.Module, optimizer: torch.optim.Optimizer
):
    return load_checkpoint(src, model, optimizer)


def get_tokenizer(
    vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: list[str] | None = None
) -> Any:
    return Tokenizer(vocab, merges, special_tokens)


def run_train_bpe(
    input_path: str | os.PathLike, vocab_size: int, special_tokens: list[str], **kwargs
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    options = {k: v for k, v in kwargs.items() if k in ("num_workers", "errors")}
    return train_bpe(input_path, vocab_size, special_tokens, **options)
