"""Numerical tests of the CS336 assignment-1 building blocks in ``cs336_basics.basics``.

Every expected value is derived independently of the implementation under test: from torch's own
primitives (``F.embedding``, ``torch.softmax``, ``F.scaled_dot_product_attention``, ``F.cross_entropy``,
``clip_grad_norm_``, ``torch.optim.AdamW``) or from explicit float64 recomputations written here
(block-diagonal RoPE matrices, a per-head attention loop, a whole-model forward built from the state dict).
"""

from __future__ import annotations

import copy
import io
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
    softmax,
)

F64 = torch.float64
# fp32 module output vs. float64 recomputation from the same weights.
FP32_TOL = {"rtol": 1e-5, "atol": 1e-6}
# Deeper fp32 compositions (attention, whole blocks / models): errors accumulate over several matmuls.
FP32_DEEP_TOL = {"rtol": 1e-5, "atol": 1e-5}

# Std of a N(0, 1) truncated at +-3: sqrt(1 - 2*3*phi(3) / (2*Phi(3) - 1)).
_PHI3 = math.exp(-4.5) / math.sqrt(2 * math.pi)
TRUNC3_STD_FACTOR = math.sqrt(1 - 6 * _PHI3 / math.erf(3 / math.sqrt(2)))
# P(|z| <= 1 | |z| <= 3) for a standard normal.
TRUNC3_WITHIN_1SD = math.erf(1 / math.sqrt(2)) / math.erf(3 / math.sqrt(2))

TINY = {"vocab_size": 64, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}
TINY_THETA = 10000.0


# ----------------------------------------------------------------------------------------------------
# Independent float64 references
# ----------------------------------------------------------------------------------------------------


def ref_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm in float64."""
    x = x.to(F64)
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight.to(F64)


def ref_swiglu(x, w1, w2, w3):
    """w2(silu(w1 x) * w3 x) in float64."""
    x = x.to(F64)
    return (F.silu(x @ w1.to(F64).T) * (x @ w3.to(F64).T)) @ w2.to(F64).T


def rope_matrices(positions: torch.Tensor, d_k: int, theta: float) -> torch.Tensor:
    """Explicit block-diagonal rotation matrices, shape (*positions.shape, d_k, d_k), float64."""
    pos = positions.to(F64)
    rot = torch.zeros(*pos.shape, d_k, d_k, dtype=F64)
    for k in range(d_k // 2):
        angle = pos * theta ** (-2 * k / d_k)
        c, s = torch.cos(angle), torch.sin(angle)
        rot[..., 2 * k, 2 * k] = c
        rot[..., 2 * k, 2 * k + 1] = -s
        rot[..., 2 * k + 1, 2 * k] = s
        rot[..., 2 * k + 1, 2 * k + 1] = c
    return rot


def ref_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Apply R(pos) @ x_vec for every position (positions broadcast against x[..., :-1])."""
    rot = rope_matrices(positions, x.shape[-1], theta)
    return torch.einsum("...ij,...j->...i", rot, x.to(F64))


def ref_softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    x = x.to(F64)
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def ref_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d_k)) v in float64, masked positions (mask False) set to -inf."""
    q, k, v = q.to(F64), k.to(F64), v.to(F64)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=F64))
    return ref_softmax(scores, -1) @ v


def ref_mhsa(x, wq, wk, wv, wo, num_heads, positions=None, theta=None):
    """Causal multi-head self-attention via an explicit loop over heads, float64.

    x: (batch, seq, d). positions: None, (seq,) or (batch, seq). Heads are contiguous row slices.
    """
    x = x.to(F64)
    _, seq, d = x.shape
    dk = d // num_heads
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    heads = []
    for h in range(num_heads):
        rows = slice(h * dk, (h + 1) * dk)
        q = x @ wq[rows].to(F64).T
        k = x @ wk[rows].to(F64).T
        v = x @ wv[rows].to(F64).T
        if theta is not None:
            pos = torch.arange(seq) if positions is None else positions
            q = ref_rope(q, pos, theta)
            k = ref_rope(k, pos, theta)
        heads.append(ref_attention(q, k, v, causal))
    return torch.cat(heads, dim=-1) @ wo.to(F64).T


def ref_block(x, sd, prefix, num_heads, theta, positions=None):
    """Pre-norm Transformer block from a state dict, float64."""
    h = ref_rmsnorm(x, sd[f"{prefix}ln1.weight"])
    w = [sd[f"{prefix}attn.{n}_proj.weight"] for n in ("q", "k", "v", "output")]
    y = x.to(F64) + ref_mhsa(h, *w, num_heads, positions, theta)
    h = ref_rmsnorm(y, sd[f"{prefix}ln2.weight"])
    return y + ref_swiglu(h, *(sd[f"{prefix}ffn.w{i}.weight"] for i in (1, 2, 3)))


def ref_lm(sd, ids, num_layers, num_heads, theta):
    """Whole TransformerLM forward from its state dict, float64."""
    x = sd["token_embeddings.weight"].to(F64)[ids]
    for i in range(num_layers):
        x = ref_block(x, sd, f"layers.{i}.", num_heads, theta)
    return ref_rmsnorm(x, sd["ln_final.weight"]) @ sd["lm_head.weight"].to(F64).T


def assert_close64(actual, expected, **tol):
    """Compare an implementation output (any float dtype) against a float64 reference."""
    torch.testing.assert_close(actual.to(F64), expected.to(F64), **tol)


def randomize_norm_weights(model: nn.Module, scale: float = 0.3) -> None:
    """RMSNorm gains init to 1; randomize them so the tests see whether they are applied."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + scale * torch.randn_like(p))
                assert name.endswith("weight")


def assert_nested_equal(a, b, path="root"):
    """Exact structural equality of (optimizer/model) state dicts."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ta, tb = torch.as_tensor(a), torch.as_tensor(b)
        assert ta.shape == tb.shape, path
        assert torch.equal(ta.to(tb.dtype), tb), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for key in a:
            assert_nested_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (ea, eb) in enumerate(zip(a, b)):
            assert_nested_equal(ea, eb, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# ----------------------------------------------------------------------------------------------------
# Linear / Embedding
# ----------------------------------------------------------------------------------------------------


def test_linear_shape_no_bias_and_forward():
    torch.manual_seed(0)
    lin = Linear(24, 40)
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    assert lin.weight.shape == (40, 24)
    x = torch.randn(2, 3, 24)
    y = lin(x)
    assert y.shape == (2, 3, 40) and y.dtype == torch.float32
    assert_close64(y, x.to(F64) @ lin.weight.detach().to(F64).T, **FP32_TOL)


def test_linear_device_dtype_kwargs():
    torch.manual_seed(0)
    lin = Linear(8, 5, device="cpu", dtype=F64)
    assert lin.weight.dtype == F64 and lin.weight.device.type == "cpu"
    x = torch.randn(7, 8, dtype=F64)
    torch.testing.assert_close(lin(x), x @ lin.weight.detach().T, rtol=1e-12, atol=1e-12)


def _check_trunc_normal(w: torch.Tensor, std: float) -> None:
    w = w.detach().to(F64).flatten()
    n = w.numel()
    assert w.abs().max().item() <= 3 * std * (1 + 1e-6), "values beyond the +-3 std truncation"
    assert abs(w.mean().item()) < 5 * std / math.sqrt(n)
    # The sample std of N(0, std) truncated at +-3 std is TRUNC3_STD_FACTOR * std (~0.9866 std); accept
    # anything between that and an untruncated std, with the sampling error (~1/sqrt(2n)) well inside.
    ratio = w.std().item() / std
    assert TRUNC3_STD_FACTOR - 0.01 < ratio < 1.01, ratio
    within = (w.abs() <= std).to(F64).mean().item()
    assert abs(within - TRUNC3_WITHIN_1SD) < 0.01, within


def test_linear_init_statistics():
    torch.manual_seed(0)
    d_in, d_out = 1000, 2000
    lin = Linear(d_in, d_out)
    _check_trunc_normal(lin.weight, math.sqrt(2 / (d_in + d_out)))


def test_embedding_forward_and_init():
    torch.manual_seed(0)
    emb = Embedding(2000, 1000)
    assert [n for n, _ in emb.named_parameters()] == ["weight"]
    assert emb.weight.shape == (2000, 1000)
    _check_trunc_normal(emb.weight, 1.0)
    ids = torch.tensor([[0, 5, 5, 1999], [3, 0, 7, 7]])
    out = emb(ids)
    assert out.shape == (2, 4, 1000)
    torch.testing.assert_close(out, F.embedding(ids, emb.weight), rtol=0, atol=0)


def test_embedding_dtype_kwarg():
    emb = Embedding(10, 4, device="cpu", dtype=F64)
    assert emb.weight.dtype == F64
    ids = torch.tensor([9, 0, 9])
    torch.testing.assert_close(emb(ids), emb.weight.detach()[ids], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# RMSNorm
# ----------------------------------------------------------------------------------------------------


def test_rmsnorm_init_and_forward():
    torch.manual_seed(0)
    norm = RMSNorm(48)
    torch.testing.assert_close(norm.weight.detach(), torch.ones(48))
    randomize_norm_weights(norm)
    x = 3 * torch.randn(2, 5, 48) + 0.5
    y = norm(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert_close64(y, ref_rmsnorm(x, norm.weight.detach()), **FP32_TOL)


@pytest.mark.parametrize("eps", [None, 1e-3])
def test_rmsnorm_eps_inside_sqrt(eps):
    """With tiny inputs mean(x^2) ~ eps, so the position of eps is visible."""
    torch.manual_seed(0)
    norm = RMSNorm(16) if eps is None else RMSNorm(16, eps=eps)
    x = 2e-3 * torch.randn(4, 16)
    expected = ref_rmsnorm(x, norm.weight.detach(), 1e-5 if eps is None else eps)
    assert_close64(norm(x), expected, **FP32_TOL)


def test_rmsnorm_bf16_input_computed_in_fp32():
    torch.manual_seed(0)
    norm = RMSNorm(256)
    randomize_norm_weights(norm)
    x = (4 * torch.randn(8, 16, 256)).to(torch.bfloat16)
    y = norm(x)
    assert y.dtype == torch.bfloat16
    xf = x.float()
    w = norm.weight.detach()
    fp32_then_cast = (xf / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w).to(torch.bfloat16)
    # bf16 has ~3 significant digits: equal up to one bf16 ulp everywhere...
    torch.testing.assert_close(y.float(), fp32_then_cast.float(), rtol=2**-7, atol=1e-6)
    # ...and bit-identical almost everywhere (computing the statistic in bf16 would flip many roundings).
    same = (y == fp32_then_cast).float().mean().item()
    assert same > 0.99, f"only {same:.3f} of bf16 outputs equal the fp32 computation cast to bf16"
    assert_close64(y, ref_rmsnorm(x, w), rtol=2**-7, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# SwiGLU
# ----------------------------------------------------------------------------------------------------


def test_swiglu_structure_and_forward():
    torch.manual_seed(0)
    d_model, d_ff = 32, 88
    ffn = SwiGLU(d_model, d_ff)
    assert isinstance(ffn.w1, Linear) and isinstance(ffn.w2, Linear) and isinstance(ffn.w3, Linear)
    assert ffn.w1.weight.shape == (d_ff, d_model)
    assert ffn.w3.weight.shape == (d_ff, d_model)
    assert ffn.w2.weight.shape == (d_model, d_ff)
    assert sorted(n for n, _ in ffn.named_parameters()) == ["w1.weight", "w2.weight", "w3.weight"]
    x = torch.randn(3, 7, d_model)
    y = ffn(x)
    assert y.shape == x.shape
    w = (ffn.w1.weight.detach(), ffn.w2.weight.detach(), ffn.w3.weight.detach())
    assert_close64(y, ref_swiglu(x, *w), **FP32_TOL)


# ----------------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------------


def test_rope_buffers_are_non_persistent():
    rope = RotaryPositionalEmbedding(10000.0, 16, 32)
    assert list(rope.parameters()) == []
    assert len(list(rope.buffers())) >= 1, "cos/sin should be precomputed buffers"
    assert len(rope.state_dict()) == 0, f"buffers must be non-persistent: {list(rope.state_dict())}"


def test_rope_matches_block_diagonal_rotation_with_arbitrary_positions():
    torch.manual_seed(0)
    theta, d_k, max_len = 10000.0, 16, 64
    rope = RotaryPositionalEmbedding(theta, d_k, max_len)
    positions = torch.tensor([5, 0, 0, 63, 7, 7, 2, 19, 1, 30])  # unsorted, repeated, includes max-1
    x = torch.randn(2, 3, positions.numel(), d_k)  # two extra leading batch dims
    out = rope(x, positions)
    assert out.shape == x.shape
    assert_close64(out, ref_rope(x, positions, theta), rtol=1e-5, atol=1e-5)


def test_rope_batched_positions_and_small_theta():
    torch.manual_seed(0)
    theta, d_k, max_len = 100.0, 8, 40
    rope = RotaryPositionalEmbedding(theta, d_k, max_len)
    positions = torch.tensor([[3, 1, 4, 1, 5, 9], [39, 38, 0, 0, 12, 2]])  # (batch, seq)
    x = torch.randn(2, 6, d_k)
    assert_close64(rope(x, positions), ref_rope(x, positions, theta), rtol=1e-5, atol=1e-5)


def test_rope_non_contiguous_input():
    """Heads are typically a transposed view (batch, heads, seq, d_k) of a (batch, seq, heads, d_k) tensor."""
    torch.manual_seed(0)
    theta, d_k, seq = 10000.0, 12, 9
    rope = RotaryPositionalEmbedding(theta, d_k, 16)
    x = torch.randn(2, seq, 3, d_k).transpose(1, 2)
    assert not x.is_contiguous()
    positions = torch.arange(seq)
    assert_close64(rope(x, positions), ref_rope(x, positions, theta), rtol=1e-5, atol=1e-5)


def test_rope_identity_at_zero_and_norm_preservation():
    torch.manual_seed(0)
    d_k = 32
    rope = RotaryPositionalEmbedding(10000.0, d_k, 128)
    x = torch.randn(4, 20, d_k)
    torch.testing.assert_close(rope(x, torch.zeros(20, dtype=torch.long)), x, rtol=0, atol=1e-6)
    positions = torch.randint(0, 128, (20,))
    out = rope(x, positions)
    # Rotations of adjacent pairs preserve each pair's norm, hence the whole vector's norm.
    pair_norm = lambda t: t.to(F64).reshape(*t.shape[:-1], d_k // 2, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# softmax / attention
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_softmax_matches_torch(dim):
    torch.manual_seed(0)
    x = 5 * torch.randn(3, 4, 5)
    y = softmax(x, dim)
    assert y.shape == x.shape
    torch.testing.assert_close(y, torch.softmax(x, dim), rtol=1e-6, atol=1e-7)
    assert_close64(y, ref_softmax(x, dim), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(y.sum(dim), torch.ones(()).expand_as(y.sum(dim)), rtol=0, atol=1e-6)


def test_softmax_stable_for_huge_inputs():
    x = torch.tensor(
        [
            [1e4, -1e4, 0.0, 5.0],
            [1e4, 1e4, 1e4, 1e4],
            [-1e4, -1e4, -1e4, -1e4],
            [1e4, 1e4 - 1.0, -1e4, 1e4 - 2.0],
            [1e30, -1e30, 0.0, 1e30],
        ]
    )
    y = softmax(x, -1)
    assert torch.isfinite(y).all(), y
    torch.testing.assert_close(y, torch.softmax(x, -1), rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    z = torch.randn(6, 11)
    torch.testing.assert_close(softmax(z + 1e4, -1), torch.softmax(z, -1), rtol=1e-3, atol=1e-5)


def _random_mask(*shape: int) -> torch.Tensor:
    """Random boolean mask with at least one True per query row."""
    mask = torch.rand(*shape) < 0.5
    keep = torch.randint(0, shape[-1], shape[:-1])
    mask.scatter_(-1, keep.unsqueeze(-1), True)
    return mask


@pytest.mark.parametrize("batch", [(3,), (2, 2, 3)], ids=["3d", "5d"])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_matches_references(batch, masked):
    torch.manual_seed(0)
    n_q, n_k, d_k, d_v = 5, 7, 8, 6  # queries and keys have different lengths
    q = torch.randn(*batch, n_q, d_k)
    k = torch.randn(*batch, n_k, d_k)
    v = torch.randn(*batch, n_k, d_v)
    mask = _random_mask(*batch, n_q, n_k) if masked else None
    out = scaled_dot_product_attention(q, k, v, mask) if masked else scaled_dot_product_attention(q, k, v)
    assert out.shape == (*batch, n_q, d_v)
    assert_close64(out, ref_attention(q, k, v, mask), **FP32_DEEP_TOL)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **FP32_DEEP_TOL)


def test_sdpa_masked_keys_are_ignored_and_mask_broadcasts():
    torch.manual_seed(0)
    n_q, n_k, d = 6, 6, 4
    q, k, v = torch.randn(2, 3, n_q, d), torch.randn(2, 3, n_k, d), torch.randn(2, 3, n_k, d)
    causal = torch.ones(n_q, n_k, dtype=torch.bool).tril()  # one (q, k) mask shared by all batch dims
    out = scaled_dot_product_attention(q, k, v, causal)
    assert_close64(out, ref_attention(q, k, v, causal), **FP32_DEEP_TOL)
    # Values at positions a query may not attend to cannot influence its output.
    v2 = v.clone()
    v2[..., -1, :] += 100.0
    out2 = scaled_dot_product_attention(q, k, v2, causal)
    torch.testing.assert_close(out2[..., :-1, :], out[..., :-1, :], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Multi-head self-attention / Transformer block
# ----------------------------------------------------------------------------------------------------


def _mhsa_weights(mha):
    return [getattr(mha, f"{n}_proj").weight.detach() for n in ("q", "k", "v", "output")]


def test_mhsa_structure():
    mha = MultiHeadSelfAttention(32, 4)
    for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
        proj = getattr(mha, name)
        assert isinstance(proj, Linear) and proj.weight.shape == (32, 32)
    assert sorted(n for n, _ in mha.named_parameters()) == sorted(
        f"{n}_proj.weight" for n in ("q", "k", "v", "output")
    )
    roped = MultiHeadSelfAttention(32, 4, max_seq_len=16, theta=10000.0)
    assert len(roped.state_dict()) == 4, f"RoPE buffers must not be persisted: {list(roped.state_dict())}"


def test_mhsa_without_rope_matches_per_head_loop():
    torch.manual_seed(0)
    d, h, seq = 32, 4, 10
    mha = MultiHeadSelfAttention(d, h)
    x = torch.randn(3, seq, d)
    out = mha(x)
    assert out.shape == x.shape
    assert_close64(out, ref_mhsa(x, *_mhsa_weights(mha), h), **FP32_DEEP_TOL)


def test_mhsa_with_rope_matches_per_head_loop():
    torch.manual_seed(0)
    d, h, seq, max_len, theta = 48, 3, 11, 32, 10000.0
    mha = MultiHeadSelfAttention(d, h, max_seq_len=max_len, theta=theta)
    x = torch.randn(2, seq, d)
    w = _mhsa_weights(mha)
    assert_close64(mha(x), ref_mhsa(x, *w, h, None, theta), **FP32_DEEP_TOL)
    positions = torch.tensor([0, 3, 3, 4, 9, 10, 11, 20, 21, 30, 31])
    assert_close64(mha(x, positions), ref_mhsa(x, *w, h, positions, theta), **FP32_DEEP_TOL)


def test_mhsa_rope_positions_per_sequence():
    """token_positions of shape (batch, seq): each sequence gets its own positions."""
    torch.manual_seed(0)
    d, h, seq, theta = 32, 4, 6, 10000.0
    mha = MultiHeadSelfAttention(d, h, max_seq_len=16, theta=theta)
    x = torch.randn(2, seq, d)
    positions = torch.tensor([[0, 1, 2, 3, 4, 5], [9, 2, 15, 4, 4, 0]])
    assert_close64(mha(x, positions), ref_mhsa(x, *_mhsa_weights(mha), h, positions, theta), **FP32_DEEP_TOL)


def test_mhsa_rope_depends_only_on_relative_positions():
    torch.manual_seed(0)
    mha = MultiHeadSelfAttention(32, 4, max_seq_len=64, theta=10000.0)
    x = torch.randn(2, 12, 32)
    torch.testing.assert_close(mha(x, torch.arange(12) + 37), mha(x), rtol=1e-4, atol=1e-5)


def test_mhsa_is_causal():
    torch.manual_seed(0)
    mha = MultiHeadSelfAttention(32, 4, max_seq_len=16, theta=10000.0)
    x = torch.randn(2, 12, 32)
    t = 7
    x2 = x.clone()
    x2[:, t:] = torch.randn(2, 12 - t, 32)
    a, b = mha(x), mha(x2)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().amax() > 1e-3


def test_transformer_block_matches_reference():
    torch.manual_seed(0)
    d, h, d_ff, max_len, theta = 32, 4, 80, 16, 10000.0
    block = TransformerBlock(d, h, d_ff, max_len, theta)
    assert isinstance(block.attn, MultiHeadSelfAttention)
    assert isinstance(block.ln1, RMSNorm) and isinstance(block.ln2, RMSNorm)
    assert isinstance(block.ffn, SwiGLU)
    randomize_norm_weights(block)
    x = torch.randn(3, 13, d)
    y = block(x)
    assert y.shape == x.shape
    sd = {k: v.detach() for k, v in block.state_dict().items()}
    assert_close64(y, ref_block(x, sd, "", h, theta), **FP32_DEEP_TOL)


# ----------------------------------------------------------------------------------------------------
# TransformerLM
# ----------------------------------------------------------------------------------------------------


def _expected_lm_keys(num_layers: int) -> set[str]:
    keys = {"token_embeddings.weight", "ln_final.weight", "lm_head.weight"}
    for i in range(num_layers):
        keys |= {f"layers.{i}.attn.{n}_proj.weight" for n in ("q", "k", "v", "output")}
        keys |= {f"layers.{i}.ln1.weight", f"layers.{i}.ln2.weight"}
        keys |= {f"layers.{i}.ffn.w{j}.weight" for j in (1, 2, 3)}
    return keys


def _tiny_lm(seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(**TINY, rope_theta=TINY_THETA)


def test_lm_state_dict_keys_and_shapes():
    lm = _tiny_lm()
    sd = lm.state_dict()
    assert set(sd) == _expected_lm_keys(TINY["num_layers"])
    v, d, d_ff = TINY["vocab_size"], TINY["d_model"], TINY["d_ff"]
    assert isinstance(lm.layers, nn.ModuleList) and len(lm.layers) == TINY["num_layers"]
    assert sd["token_embeddings.weight"].shape == (v, d)
    assert sd["lm_head.weight"].shape == (v, d)
    assert sd["layers.1.ffn.w1.weight"].shape == (d_ff, d)
    assert sd["layers.1.ffn.w2.weight"].shape == (d, d_ff)
    assert sd["layers.0.attn.output_proj.weight"].shape == (d, d)
    assert sd["ln_final.weight"].shape == (d,)
    # Untied: the output head is a separate tensor from the input embedding.
    assert lm.lm_head.weight.data_ptr() != lm.token_embeddings.weight.data_ptr()


@pytest.mark.parametrize("seq", [16, 9])
def test_lm_logits_match_reference(seq):
    lm = _tiny_lm()
    randomize_norm_weights(lm)
    ids = torch.randint(0, TINY["vocab_size"], (3, seq))
    logits = lm(ids)
    assert logits.shape == (3, seq, TINY["vocab_size"])
    sd = {k: v.detach() for k, v in lm.state_dict().items()}
    expected = ref_lm(sd, ids, TINY["num_layers"], TINY["num_heads"], TINY_THETA)
    assert_close64(logits, expected, rtol=1e-5, atol=2e-5)


def test_lm_is_causal():
    lm = _tiny_lm()
    ids = torch.randint(0, TINY["vocab_size"], (2, 16))
    t = 9
    ids2 = ids.clone()
    ids2[:, t] = (ids[:, t] + 1) % TINY["vocab_size"]
    with torch.no_grad():
        a, b = lm(ids), lm(ids2)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t] - b[:, t]).abs().amax() > 1e-4


def test_lm_overfits_one_batch_with_package_adamw():
    lm = _tiny_lm(seed=1)
    tokens = torch.randint(0, TINY["vocab_size"], (4, TINY["context_length"] + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    opt = AdamW(lm.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(80):  # a correct model + optimizer gets below 0.5 after ~25 steps (~0.03 by step 80)
        opt.zero_grad()
        loss = cross_entropy(lm(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.8 * math.log(TINY["vocab_size"]), f"initial loss {losses[0]:.3f} is not near chance"
    assert losses[-1] < 0.5, f"loss went {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps"


# ----------------------------------------------------------------------------------------------------
# cross-entropy / gradient clipping
# ----------------------------------------------------------------------------------------------------


def ref_cross_entropy(logits, targets):
    logits = logits.to(F64)
    lse = torch.logsumexp(logits, -1)
    return (lse - logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)).mean()


@pytest.mark.parametrize("shape", [(12,), (4, 7), (2, 3, 5)])
def test_cross_entropy_matches_references(shape):
    torch.manual_seed(0)
    vocab = 50
    logits = (3 * torch.randn(*shape, vocab)).requires_grad_()
    targets = torch.randint(0, vocab, shape)
    loss = cross_entropy(logits, targets)
    assert loss.dim() == 0
    expected = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert_close64(loss, ref_cross_entropy(logits.detach(), targets), rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scale", [1e4, 1e5, 1e6])
def test_cross_entropy_stable_for_huge_logits(scale):
    torch.manual_seed(0)
    vocab = 32
    logits = scale * torch.randn(6, vocab)
    logits[0] = scale  # all classes equal and huge: loss = log(vocab)
    logits[1, 3] = 10 * scale  # target is the (huge) max: loss = 0
    targets = torch.randint(0, vocab, (6,))
    targets[1] = 3
    logits.requires_grad_()
    loss = cross_entropy(logits, targets)
    assert torch.isfinite(loss), loss
    assert_close64(loss, ref_cross_entropy(logits.detach(), targets), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets), rtol=1e-5, atol=1e-5)
    per_row = [cross_entropy(logits[i : i + 1], targets[i : i + 1]).item() for i in (0, 1)]
    # A few fp32 ulps of the logit magnitude: logsumexp(l) - l[t] may round at the scale of l.
    ulps = 8 * scale * 2**-24
    assert per_row[0] == pytest.approx(math.log(vocab), abs=ulps)
    assert per_row[1] == pytest.approx(0.0, abs=ulps)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def _params_with_grads(seed: int, scale: float):
    torch.manual_seed(seed)
    params = [nn.Parameter(torch.randn(s)) for s in [(5, 3), (7,), (2, 2, 4), (3,)]]
    for p in params[:-1]:
        p.grad = scale * torch.randn_like(p)
    return params  # the last parameter has no grad


def _manual_norm(params) -> float:
    return math.sqrt(sum((p.grad.to(F64) ** 2).sum().item() for p in params if p.grad is not None))


def test_gradient_clipping_clips_like_torch():
    params = _params_with_grads(0, scale=3.0)
    twins = copy.deepcopy(params)
    for p, q in zip(params, twins):
        q.grad = None if p.grad is None else p.grad.clone()
    max_norm = 1.0
    pre = _manual_norm(params)
    assert pre > 5 * max_norm
    total = gradient_clipping(params, max_norm)
    assert float(total) == pytest.approx(pre, rel=1e-5)
    torch_total = torch.nn.utils.clip_grad_norm_(twins, max_norm)  # scale max / (norm + 1e-6), like the spec
    assert float(torch_total) == pytest.approx(pre, rel=1e-5)
    for p, q in zip(params, twins):
        if q.grad is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8)
    # Manual float64 expectation: grads scaled by max / (norm + 1e-6); post-clip norm just under max.
    ref = _params_with_grads(0, scale=3.0)
    for p, r in zip(params[:-1], ref[:-1]):
        assert_close64(p.grad, r.grad.to(F64) * (max_norm / (pre + 1e-6)), rtol=1e-5, atol=1e-8)
    assert _manual_norm(params) == pytest.approx(max_norm * pre / (pre + 1e-6), rel=1e-5)


def test_gradient_clipping_noop_under_max_and_accepts_generator():
    params = _params_with_grads(1, scale=0.01)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    pre = _manual_norm(params)
    assert pre < 1.0
    module = nn.ParameterList(params)
    total = gradient_clipping(module.parameters(), 1.0)  # a one-shot generator, as in training loops
    assert float(total) == pytest.approx(pre, rel=1e-5)
    for p, b in zip(params, before):
        if b is None:
            assert p.grad is None
        else:
            assert torch.equal(p.grad, b)
    # A generator above the max must also be clipped (i.e. not exhausted before scaling).
    big = _params_with_grads(2, scale=5.0)
    gradient_clipping(nn.ParameterList(big).parameters(), 1.0)
    assert _manual_norm(big) == pytest.approx(1.0, rel=1e-4)


# ----------------------------------------------------------------------------------------------------
# AdamW
# ----------------------------------------------------------------------------------------------------

TORCH_ADAMW_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}


def _regression_data():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(64, 8, generator=g)
    y = x @ torch.randn(4, 8, generator=g).T + 0.1 * torch.randn(64, 4, generator=g)
    return x, y


def _regression_params(seed: int = 0):
    torch.manual_seed(seed)
    return [nn.Parameter(torch.randn(4, 8)), nn.Parameter(torch.randn(4))]


def _regression_loss(params, x, y):
    w, b = params
    return ((x @ w.T + b - y) ** 2).mean()


class RefAdamW:
    """Float64 AdamW on plain tensors, in one of the two common decoupled formulations.

    ``order="torch"``: theta *= 1 - lr*wd, then theta -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)  (torch.optim.AdamW).
    ``order="cs336"``: theta -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps), then theta -= lr*wd*theta (CS336 handout).
    The two agree to ~1e-5 at small lr*wd but drift apart by ~1e-3 over 1000 steps at lr*wd ~ 5e-4.
    """

    def __init__(self, params, order, betas, eps):
        self.p = [p.detach().to(F64).clone() for p in params]
        self.m = [torch.zeros_like(p) for p in self.p]
        self.v = [torch.zeros_like(p) for p in self.p]
        self.t = 0
        self.order, self.betas, self.eps = order, betas, eps

    def step(self, grads, lrs, wds):
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for i, g in enumerate(grads):
            g = g.to(F64)
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            lr, wd = lrs[i], wds[i]
            if self.order == "torch":
                self.p[i] = self.p[i] * (1 - lr * wd)
                self.p[i] = self.p[i] - lr / bc1 * self.m[i] / (self.v[i].sqrt() / math.sqrt(bc2) + self.eps)
            else:
                self.p[i] = self.p[i] - lr * math.sqrt(bc2) / bc1 * self.m[i] / (self.v[i].sqrt() + self.eps)
                self.p[i] = self.p[i] - lr * wd * self.p[i]


def _run_adamw_three_ways(groups_spec, defaults, n_steps, schedule=None, extra_params=()):
    """Train the regression with the package AdamW; feed the identical gradients to torch.optim.AdamW and to
    both float64 reference formulations. ``groups_spec``: list of (param indices, group overrides).
    Returns (ours params, torch params, {order: RefAdamW}).
    """
    x, y = _regression_data()
    mine, theirs = _regression_params(), _regression_params()

    def groups(ps, extra):
        out = [{"params": [ps[i] for i in idx], **over} for idx, over in groups_spec]
        out[-1]["params"] += list(extra)
        return out

    ours = AdamW(groups(mine, extra_params), **defaults)
    assert isinstance(ours, torch.optim.Optimizer)
    ref = torch.optim.AdamW(groups(theirs, ()), **defaults)
    hp = {**TORCH_ADAMW_DEFAULTS, **defaults}
    lrs, wds = [0.0, 0.0], [0.0, 0.0]
    for idx, over in groups_spec:
        for i in idx:
            lrs[i] = over.get("lr", hp["lr"])
            wds[i] = over.get("weight_decay", hp["weight_decay"])
    manual = {order: RefAdamW(mine, order, hp["betas"], hp["eps"]) for order in ("torch", "cs336")}
    for it in range(n_steps):
        if schedule is not None:
            lrs = [schedule(it)] * 2
            for opt in (ours, ref):
                for group in opt.param_groups:
                    group["lr"] = lrs[0]
        ours.zero_grad()
        _regression_loss(mine, x, y).backward()
        grads = [p.grad.detach().clone() for p in mine]
        for q, g in zip(theirs, grads):
            q.grad = g.clone()
        ours.step()
        ref.step()
        for r in manual.values():
            r.step(grads, lrs, wds)
    # The float64 "torch"-order reference must reproduce torch itself (validates the references; fp32 vs
    # float64 rounding alone accounts for up to ~5e-5 after 1000 steps).
    for q, r in zip(theirs, manual["torch"].p):
        assert_close64(q.detach(), r, rtol=0, atol=1e-4)
    return mine, theirs, manual


def _assert_matches_a_formulation(mine, theirs, manual, atol=1e-4):
    err_torch = max((p.detach() - q.detach()).abs().max().item() for p, q in zip(mine, theirs))
    err_cs336 = max((p.detach().to(F64) - r).abs().max().item() for p, r in zip(mine, manual["cs336"].p))
    print(f"AdamW max error vs torch {err_torch:.2e}, vs CS336 order {err_cs336:.2e}")
    assert min(err_torch, err_cs336) < atol, (
        f"max |ours - torch.optim.AdamW| = {err_torch:.2e}, max |ours - CS336-order AdamW| = {err_cs336:.2e}"
    )


def test_adamw_matches_torch_after_1000_steps_with_defaults():
    """Spec defaults (betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) equal torch's; agree to 1e-4."""
    x, y = _regression_data()
    mine, theirs, _ = _run_adamw_three_ways([([0, 1], {})], {"lr": 1e-3}, 1000)
    for p, q in zip(mine, theirs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-4)
    assert _regression_loss(mine, x, y).item() < 0.5 * _regression_loss(_regression_params(), x, y).item()


def test_adamw_without_weight_decay_matches_torch_after_1000_steps():
    hp = {"lr": 1e-2, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.0}
    mine, theirs, manual = _run_adamw_three_ways([([0, 1], {})], hp, 1000)
    _assert_matches_a_formulation(mine, theirs, manual)


def test_adamw_with_strong_weight_decay_after_1000_steps():
    hp = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.05}
    mine, theirs, manual = _run_adamw_three_ways([([0, 1], {})], hp, 1000)
    _assert_matches_a_formulation(mine, theirs, manual)


def test_adamw_follows_lr_changes_in_param_groups():
    """Training loops set group['lr'] from the schedule every step; the optimizer must read it live."""
    schedule = lambda it: get_lr_cosine_schedule(it, 5e-2, 5e-3, 20, 150)  # noqa: E731
    mine, theirs, manual = _run_adamw_three_ways(
        [([0, 1], {})], {"lr": 0.0, "weight_decay": 0.1}, 200, schedule
    )
    _assert_matches_a_formulation(mine, theirs, manual)


def test_adamw_param_groups_and_none_grad():
    frozen = nn.Parameter(torch.randn(3))  # never receives a gradient
    frozen_before = frozen.detach().clone()
    spec = [([0], {"lr": 3e-2}), ([1], {"weight_decay": 0.2})]
    mine, theirs, manual = _run_adamw_three_ways(spec, {"lr": 1e-3}, 300, extra_params=[frozen])
    _assert_matches_a_formulation(mine, theirs, manual)
    assert frozen.grad is None
    assert torch.equal(frozen.detach(), frozen_before), "a parameter without grad must not change (no decay)"


def test_adamw_first_step_is_bias_corrected():
    """Step 1 moves every coordinate by lr * sign(g) (for |g| >> eps) in either formulation."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(50))
    p0 = p.detach().clone()
    g = torch.randn(50)
    g = g + 0.1 * torch.sign(g)  # keep |g| well away from eps
    opt = AdamW([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    p.grad = g
    opt.step()
    torch.testing.assert_close(p.detach() - p0, -1e-2 * torch.sign(g), rtol=1e-4, atol=0)


def test_adamw_weight_decay_is_decoupled():
    """With zero gradients the Adam term vanishes and only the decoupled decay theta *= 1 - lr*wd remains
    (L2-regularised Adam would instead move each coordinate by ~lr)."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(20))
    p0 = p.detach().to(F64).clone()
    lr, wd = 0.1, 0.5
    opt = AdamW([p], lr=lr, weight_decay=wd)
    for _ in range(3):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert_close64(p.detach(), p0 * (1 - lr * wd) ** 3, rtol=1e-6, atol=1e-7)


def test_adamw_state_dict_round_trip():
    x, y = _regression_data()
    hp = {"lr": 2e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}

    def step(opt, params):
        opt.zero_grad()
        _regression_loss(params, x, y).backward()
        opt.step()

    straight = _regression_params()
    opt_straight = AdamW(straight, **hp)
    for _ in range(20):
        step(opt_straight, straight)

    first = _regression_params()
    opt_first = AdamW(first, **hp)
    for _ in range(10):
        step(opt_first, first)
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in first], "opt": opt_first.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)

    resumed = _regression_params(seed=99)
    with torch.no_grad():
        for p, s in zip(resumed, saved["params"]):
            p.copy_(s)
    opt_resumed = AdamW(resumed, lr=1.0)  # hyperparameters come back from the state dict
    opt_resumed.load_state_dict(saved["opt"])
    assert_nested_equal(opt_resumed.state_dict(), opt_first.state_dict())
    for _ in range(10):
        step(opt_resumed, resumed)
    for p, q in zip(resumed, straight):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------
# learning-rate schedule
# ----------------------------------------------------------------------------------------------------


def cosine_formula(it, max_lr, min_lr, warmup, cycle):
    if it < warmup:
        return it / warmup * max_lr
    if it <= cycle:
        return min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (cycle - warmup))) * (max_lr - min_lr)
    return min_lr


@pytest.mark.parametrize(
    "cfg",
    [(1.0, 0.1, 7, 21), (3e-4, 3e-5, 100, 1000), (1e-2, 0.0, 1, 10)],
    ids=["cs336", "realistic", "short"],
)
def test_cosine_schedule_matches_formula(cfg):
    max_lr, min_lr, warmup, cycle = cfg
    its = sorted(
        {*range(0, min(cycle + 10, 60)), warmup - 1, warmup, warmup + 1, cycle - 1, cycle, cycle + 1}
    )
    its += [cycle + 5, 2 * cycle, 10 * cycle]
    for it in its:
        if it < 0:
            continue
        got = get_lr_cosine_schedule(it, max_lr, min_lr, warmup, cycle)
        assert got == pytest.approx(cosine_formula(it, max_lr, min_lr, warmup, cycle), rel=1e-9, abs=1e-12), (
            it
        )


def test_cosine_schedule_cs336_reference_points():
    lr = lambda it: get_lr_cosine_schedule(it, 1.0, 0.1, 7, 21)  # noqa: E731
    assert lr(0) == pytest.approx(0.0, abs=1e-12)
    assert lr(1) == pytest.approx(1 / 7)
    assert lr(7) == pytest.approx(1.0)
    assert lr(14) == pytest.approx(0.55)  # halfway through the cosine
    assert lr(21) == pytest.approx(0.1)
    assert lr(25) == pytest.approx(0.1)
    values = [lr(it) for it in range(7, 30)]
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:])), "non-increasing after warmup"


# ----------------------------------------------------------------------------------------------------
# data loading
# ----------------------------------------------------------------------------------------------------


def test_get_batch_shapes_dtype_and_shift():
    np.random.seed(0)
    torch.manual_seed(0)
    dataset = np.arange(100, dtype=np.int64)
    x, y = get_batch(dataset, 32, 8, "cpu")
    assert x.shape == (32, 8) and y.shape == (32, 8)
    assert x.dtype == torch.int64 and y.dtype == torch.int64
    assert x.device.type == "cpu" and y.device.type == "cpu"
    torch.testing.assert_close(y, x + 1, rtol=0, atol=0)
    torch.testing.assert_close(x, x[:, :1] + torch.arange(8), rtol=0, atol=0)  # contiguous windows


def test_get_batch_starts_cover_range_uniformly():
    np.random.seed(0)
    torch.manual_seed(0)
    n, ctx = 50, 10
    n_starts = n - ctx  # valid starts are 0 .. n - ctx - 1 (y needs index start + ctx)
    dataset = np.arange(n)
    starts = np.concatenate([get_batch(dataset, 64, ctx, "cpu")[0][:, 0].numpy() for _ in range(200)])
    assert starts.min() >= 0 and starts.max() <= n_starts - 1
    counts = np.bincount(starts, minlength=n_starts)
    assert (counts > 0).all(), f"starts never drawn: {np.flatnonzero(counts == 0)}"
    expected = len(starts) / n_starts  # 320 per start
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n_starts - 1
    assert chi2 < dof + 8 * math.sqrt(2 * dof), f"chi-square {chi2:.1f} too large for {dof} dof"
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected


def test_get_batch_single_valid_start():
    np.random.seed(0)
    dataset = np.arange(9)
    for _ in range(20):
        x, y = get_batch(dataset, 4, 8, "cpu")
        torch.testing.assert_close(x, torch.arange(8).expand(4, 8), rtol=0, atol=0)
        torch.testing.assert_close(y, torch.arange(1, 9).expand(4, 8), rtol=0, atol=0)


def test_get_batch_uint16_memmap(tmp_path: pathlib.Path):
    np.random.seed(0)
    values = np.arange(62000, 65000, dtype=np.uint16)  # above int16 range: catches sign mistakes
    path = tmp_path / "tokens.bin"
    values.tofile(path)
    data = np.memmap(path, dtype=np.uint16, mode="r")
    x, y = get_batch(data, 16, 12, "cpu")
    assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.shape == (16, 12)
    starts = x[:, 0] - 62000
    assert (starts >= 0).all() and (starts < len(values) - 12).all()
    ref = torch.from_numpy(values.astype(np.int64))
    idx = starts[:, None] + torch.arange(12)
    torch.testing.assert_close(x, ref[idx], rtol=0, atol=0)
    torch.testing.assert_close(y, ref[idx + 1], rtol=0, atol=0)


@pytest.mark.parametrize("device", ["not-a-device", "cuda:99"])
def test_get_batch_invalid_device_raises(device):
    with pytest.raises(Exception):  # noqa: B017 - the exact type is torch's business
        get_batch(np.arange(100), 4, 8, device)


# ----------------------------------------------------------------------------------------------------
# checkpointing
# ----------------------------------------------------------------------------------------------------


def _train_steps(model, opt, batch, n):
    x, y = batch
    for _ in range(n):
        opt.zero_grad()
        cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("kind", ["str", "pathlib", "file", "bytesio"])
def test_checkpoint_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    tokens = torch.randint(0, TINY["vocab_size"], (2, TINY["context_length"] + 1))
    batch = tokens[:, :-1], tokens[:, 1:]
    model = _tiny_lm(seed=0)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    _train_steps(model, opt, batch, 3)

    path = tmp_path / "ckpt.pt"
    if kind == "str":
        save_checkpoint(model, opt, 3, str(path))
    elif kind == "pathlib":
        save_checkpoint(model, opt, 3, path)
    elif kind == "file":
        with open(path, "wb") as f:
            save_checkpoint(model, opt, 3, f)
    else:
        buf = io.BytesIO()
        save_checkpoint(model, opt, 3, buf)

    model2 = _tiny_lm(seed=1)
    opt2 = AdamW(model2.parameters(), lr=1.0)
    if kind == "str":
        it = load_checkpoint(str(path), model2, opt2)
    elif kind == "pathlib":
        it = load_checkpoint(path, model2, opt2)
    elif kind == "file":
        with open(path, "rb") as f:
            it = load_checkpoint(f, model2, opt2)
    else:
        buf.seek(0)
        it = load_checkpoint(buf, model2, opt2)
    assert it == 3
    assert_nested_equal(model2.state_dict(), model.state_dict())
    assert_nested_equal(opt2.state_dict(), opt.state_dict())

    _train_steps(model, opt, batch, 3)
    _train_steps(model2, opt2, batch, 3)
    for (name, p), q in zip(model.named_parameters(), model2.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=f"{name} diverged after resuming")
