"""kernels="fast" computes the same model as kernels="reference": forward, gradients, AdamW steps, loss."""

from __future__ import annotations

import types

import pytest
import torch

from cs336_basics.basics import AdamW, TransformerLM, cross_entropy
from cs336_basics.basics.kernels import fast_cross_entropy, loss_function
from cs336_basics.errors import UserError

SHAPE = dict(
    vocab_size=97, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=80, rope_theta=10_000.0
)


def _pair(seed: int = 0) -> tuple[TransformerLM, TransformerLM]:
    torch.manual_seed(seed)
    ref = TransformerLM(**SHAPE, kernels="reference")
    fast = TransformerLM(**SHAPE, kernels="fast")
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _batch(seed: int = 1, batch: int = 3, seq: int = 24):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, SHAPE["vocab_size"], (batch, seq), generator=g)
    return x, torch.randint(0, SHAPE["vocab_size"], (batch, seq), generator=g)


def test_same_state_dict_keys():
    ref, fast = _pair()
    assert ref.state_dict().keys() == fast.state_dict().keys()
    assert "layers.1.attn.q_proj.weight" in ref.state_dict() and "lm_head.weight" in ref.state_dict()


@pytest.mark.parametrize("seq", [1, 7, 24])
def test_forward_and_gradients_match(seq):
    ref, fast = _pair()
    x, y = _batch(seq=seq)
    losses = []
    for model, loss in ((ref, cross_entropy), (fast, fast_cross_entropy)):
        logits = model(x)
        value = loss(logits, y)
        value.backward()
        losses.append((logits.detach(), value.detach()))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_few_adamw_steps_stay_together():
    ref, fast = _pair(seed=3)
    opts = [AdamW(m.parameters(), lr=3e-3, weight_decay=0.1) for m in (ref, fast)]
    for step in range(5):
        x, y = _batch(seed=10 + step)
        for model, opt, kernels in ((ref, opts[0], "reference"), (fast, opts[1], "fast")):
            loss_function(kernels)(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_token_positions_are_honoured_by_both():
    ref, fast = _pair()
    x, _ = _batch(seq=8)
    pos = torch.arange(5, 13).expand(3, 8)
    torch.testing.assert_close(ref(x, pos), fast(x, pos), rtol=1e-5, atol=1e-5)


def test_cross_entropy_variants_agree_on_huge_and_bf16_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 50, generator=g) * 1e4
    y = torch.randint(0, 50, (4, 6), generator=g)
    torch.testing.assert_close(cross_entropy(logits, y), fast_cross_entropy(logits, y))
    bf16 = logits.bfloat16() / 1e4
    assert fast_cross_entropy(bf16, y).dtype == torch.float32
    torch.testing.assert_close(cross_entropy(bf16, y), fast_cross_entropy(bf16, y))


def test_from_config_reads_shape_and_kernels():
    cfg = types.SimpleNamespace(**SHAPE, kernels="reference", batch_size=2)
    model = TransformerLM.from_config(cfg)
    assert model.kernels == "reference" and model.layers[0].attn.kernels == "reference"
    assert TransformerLM.from_config(dict(SHAPE)).kernels == "fast"  # no field: the default
    assert TransformerLM.from_config(cfg, kernels="fast").kernels == "fast"
    assert model.lm_head.weight.shape == (SHAPE["vocab_size"], SHAPE["d_model"])
    with pytest.raises(UserError, match="--kernels must be one of"):
        TransformerLM.from_config(cfg, kernels="triton")
    assert loss_function("reference") is cross_entropy and loss_function("fast") is fast_cross_entropy
