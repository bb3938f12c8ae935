"""kernels="fast" computes the same model as kernels="reference": forward, gradients, AdamW steps, loss."""

from __future__ import annotations

import io
import types

import pytest
import torch

from cs336_basics.basics import (
    AdamW,
    Linear,
    SwiGLU,
    TransformerLM,
    cross_entropy,
    gradient_clipping,
    load_checkpoint,
    save_checkpoint,
)
from cs336_basics.basics.kernels import fast_cross_entropy, loss_function, make_optimizer
from cs336_basics.basics.sharpness import adam_preconditioner
from cs336_basics.errors import UserError
from tests.test_basics_numerics import FP32_TOL, RefAdamW, assert_close64, ref_swiglu

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


def test_same_state_dict_keys_and_every_linear_follows_the_model():
    ref, fast = _pair()
    assert ref.state_dict().keys() == fast.state_dict().keys()
    assert "layers.1.attn.q_proj.weight" in ref.state_dict() and "lm_head.weight" in ref.state_dict()
    for model in (ref, fast):
        linears = [m for m in model.modules() if isinstance(m, Linear)]
        assert len(linears) == SHAPE["num_layers"] * 7 + 1  # q, k, v, output, w1, w2, w3; the LM head
        assert {m.kernels for m in linears} == {model.kernels}
        assert {layer.ffn.kernels for layer in model.layers} == {model.kernels}


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


def test_swiglu_fast_matches_reference_and_float64():
    torch.manual_seed(0)
    ref, fast = SwiGLU(32, 88), SwiGLU(32, 88, kernels="fast")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 32)
    outputs = []
    for ffn in (ref, fast):
        xi = x.clone().requires_grad_()
        out = ffn(xi)
        out.pow(2).sum().backward()
        outputs.append((out.detach(), xi.grad))
    w = [ref.get_parameter(f"{n}.weight").detach() for n in ("w1", "w2", "w3")]
    assert_close64(outputs[1][0], ref_swiglu(x, *w), **FP32_TOL)
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((16, 8), (8,), (3, 5, 7))]


def test_fused_and_from_scratch_adamw_follow_a_float64_adamw():
    """Both factories' optimizers against a float64 recomputation, with a changing lr as the schedule sets it."""
    hyper = dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    start = _params(0)
    runs = {k: [p.detach().clone().requires_grad_() for p in start] for k in ("fast", "reference")}
    opts = {k: make_optimizer(ps, k, lr=0.0, **hyper) for k, ps in runs.items()}
    assert isinstance(opts["reference"], AdamW) and opts["fast"].param_groups[0]["fused"]  # CPU has it
    manual = RefAdamW(start, "torch", hyper["betas"], hyper["eps"])
    g = torch.Generator().manual_seed(1)
    for step in range(30):
        lr = 1e-2 * (1 + step) / 30
        grads = [torch.randn(p.shape, generator=g) for p in start]
        for k, opt in opts.items():
            for p, grad in zip(runs[k], grads, strict=True):
                p.grad = grad.clone()
            opt.param_groups[0]["lr"] = lr
            opt.step()
        manual.step(grads, [lr] * len(grads), [hyper["weight_decay"]] * len(grads))
    for k, params in runs.items():
        for p, expected in zip(params, manual.p, strict=True):
            assert_close64(p.detach(), expected, **FP32_TOL, msg=k)
    # sharpness reads step (an int in ours, a tensor in torch's) and exp_avg_sq from either
    for a, b in zip(*(adam_preconditioner(opt) for opt in opts.values()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_optimizer_falls_back_to_foreach_without_a_fused_kernel():
    meta = [torch.nn.Parameter(torch.empty(4, device="meta"))]
    group = make_optimizer(meta, "fast", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0).param_groups[
        0
    ]
    assert (group["fused"], group["foreach"]) == (False, True)
    with pytest.raises(UserError, match="--kernels must be one of"):
        make_optimizer(meta, "triton", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0)


def _train(model, opt, steps: range) -> list[float]:
    losses = []
    for step in steps:
        x, y = _batch(seed=100 + step)
        loss = fast_cross_entropy(model(x), y)
        loss.backward()
        gradient_clipping(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _fast_model_and_optimizer(seed: int, kernels: str = "fast"):
    torch.manual_seed(seed)
    model = TransformerLM(**SHAPE, kernels="fast")
    return model, make_optimizer(model.parameters(), kernels, 3e-3, (0.9, 0.95), 1e-8, 0.1)


def test_fused_optimizer_checkpoint_round_trip_resumes_to_identical_losses():
    straight = _train(*_fast_model_and_optimizer(0), range(6))
    first = _fast_model_and_optimizer(0)
    head = _train(*first, range(3))
    buf = io.BytesIO()
    save_checkpoint(*first, iteration=3, out=buf)
    buf.seek(0)
    model, opt = _fast_model_and_optimizer(seed=7)  # other weights: all of them must come from the file
    assert load_checkpoint(buf, model, opt) == 3
    assert opt.param_groups[0]["fused"] and opt.state[next(model.parameters())]["step"].item() == 3
    assert head + _train(model, opt, range(3, 6)) == straight


@pytest.mark.parametrize(("writer", "reader"), [("reference", "fast"), ("fast", "reference")])
def test_each_optimizer_continues_from_the_others_state_dict(writer, reader):
    """A state dict of one AdamW loads into the other (int vs tensor step, flags) and continues the same run."""
    model, opt = _fast_model_and_optimizer(0, writer)
    _train(model, opt, range(3))
    buf = io.BytesIO()
    save_checkpoint(model, opt, iteration=3, out=buf)
    expected = _train(model, opt, range(3, 6))
    buf.seek(0)
    model, opt = _fast_model_and_optimizer(7, reader)
    load_checkpoint(buf, model, opt)
    if reader == "fast":
        assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == (True, False)
    torch.testing.assert_close(_train(model, opt, range(3, 6)), expected, rtol=1e-5, atol=1e-6)
