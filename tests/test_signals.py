"""Instability signals against a naive float64 re-implementation of the model (explicit RoPE loop, einsum)."""

from __future__ import annotations

import math

import pytest
import torch

from cs336_basics.basics import TransformerLM
from cs336_basics.basics.signals import instability_signals, update_rms_ratio
from cs336_basics.experiment_log.reader import signal_columns

THETA = 10_000.0


def naive_signals(model, x):
    """Max attention logit and mean entropy per layer and log Z of every position, all in float64 by hand."""
    w = {n: p.detach().double() for n, p in model.named_parameters()}
    heads = model.layers[0].attn.num_heads

    def rms(t, g):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-5) * g

    def rope(t):  # t: (b, s, h, d); rotate pair (2k, 2k+1) at position s by s * theta^(-2k/d)
        out = t.clone()
        for s in range(t.shape[1]):
            for k in range(t.shape[-1] // 2):
                a = s * THETA ** (-2 * k / t.shape[-1])
                c, si = math.cos(a), math.sin(a)
                out[:, s, :, 2 * k] = t[:, s, :, 2 * k] * c - t[:, s, :, 2 * k + 1] * si
                out[:, s, :, 2 * k + 1] = t[:, s, :, 2 * k] * si + t[:, s, :, 2 * k + 1] * c
        return out

    h = w["token_embeddings.weight"][x]
    b, s, d = h.shape
    maxes, entropies = [], []
    for i in range(len(model.layers)):
        p = f"layers.{i}."
        a = rms(h, w[p + "ln1.weight"])
        q, k, v = (
            (a @ w[p + f"attn.{n}_proj.weight"].T).view(b, s, heads, d // heads) for n in ("q", "k", "v")
        )
        q, k = rope(q), rope(k)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d // heads)
        future = torch.ones(s, s, dtype=torch.bool).triu(1)
        maxes.append(scores.masked_fill(future, -math.inf).max().item())
        probs = torch.softmax(scores.masked_fill(future, -math.inf), -1)
        ent = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1)
        entropies.append(ent.mean().item())
        att = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(b, s, d)
        h = h + att @ w[p + "attn.output_proj.weight"].T
        a = rms(h, w[p + "ln2.weight"])
        gate = a @ w[p + "ffn.w1.weight"].T
        h = h + (gate * torch.sigmoid(gate) * (a @ w[p + "ffn.w3.weight"].T)) @ w[p + "ffn.w2.weight"].T
    logits = rms(h, w["ln_final.weight"]) @ w["lm_head.weight"].T
    logz = torch.log(torch.exp(logits).sum(-1))  # no max shift: float64 and small logits
    return maxes, entropies, logz


@pytest.mark.parametrize("q_scale", [1.0, 8.0], ids=["init", "grown-logits"])
def test_signals_match_naive_float64(q_scale):
    torch.manual_seed(0)
    model = TransformerLM(48, 12, 32, 2, 4, 48, THETA)
    with torch.no_grad():  # grow the attention logits, as an unstable run does, on layer 1 only
        model.layers[1].attn.q_proj.weight.mul_(q_scale)
    x = torch.randint(0, 48, (3, 12))
    got = instability_signals(model, x)
    maxes, entropies, logz = naive_signals(model, x)
    for i, m in enumerate(maxes):
        assert got[f"max_attn_logit_l{i}"] == pytest.approx(m, rel=1e-4, abs=1e-5)
    assert got["attn_entropy_min"] == pytest.approx(min(entropies), rel=1e-4)
    assert got["logz_mean"] == pytest.approx(logz.mean().item(), rel=1e-5)
    assert got["logz_sq_mean"] == pytest.approx(logz.square().mean().item(), rel=1e-5)
    # and log Z against torch's own logsumexp of the model's logits
    with torch.no_grad():
        ref = torch.logsumexp(model(x).double(), -1)
    assert got["logz_sq_mean"] == pytest.approx(ref.square().mean().item(), rel=1e-5)
    if q_scale > 1:
        assert got["max_attn_logit_l1"] > 4 * got["max_attn_logit_l0"]
        assert got["attn_entropy_min"] < min(naive_signals(model, x)[1][:1])


def test_signals_leave_the_model_as_it_was():
    torch.manual_seed(0)
    model = TransformerLM(48, 12, 32, 1, 4, 48, THETA)
    x = torch.randint(0, 48, (2, 12))
    rng = torch.get_rng_state()
    got = instability_signals(model, x)
    assert torch.equal(rng, torch.get_rng_state())
    assert [*got, "update_rms_ratio"] == list(signal_columns(1))  # the metrics.csv columns the reader reads
    assert not model.layers[0].attn._forward_pre_hooks
    assert all(p.grad is None for p in model.parameters())


def test_update_rms_ratio_by_hand():
    before = [torch.tensor([3.0, 4.0]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])]
    after = [torch.tensor([3.0, 5.0]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])]
    # update: squares 1 + 1 over 6 elements; weights: 9 + 16 over 6 -> ratio sqrt(2 / 25)
    assert update_rms_ratio(before, after) == pytest.approx(math.sqrt(2 / 25))
