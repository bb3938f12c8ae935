"""cs336_basics.adapters: the course's adapter names and signatures, each checked against an independent
float64 recomputation (our own fixtures; the course's are not copied)."""

from __future__ import annotations

import inspect
import io
import math

import numpy as np
import torch

import cs336_basics.adapters as A
from tests.test_basics_numerics import (
    F64,
    ref_attention,
    ref_block,
    ref_lm,
    ref_mhsa,
    ref_rmsnorm,
    ref_rope,
    ref_softmax,
    ref_swiglu,
)
from tests.test_bpe import naive_bpe
from tests.test_tokenizer_bpe import naive_encode


def assert_close64(actual, expected, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(actual.to(F64), expected.to(F64), rtol=rtol, atol=atol)


COURSE_ADAPTERS = {
    "run_linear": ["d_in", "d_out", "weights", "in_features"],
    "run_embedding": ["vocab_size", "d_model", "weights", "token_ids"],
    "run_swiglu": ["d_model", "d_ff", "w1_weight", "w2_weight", "w3_weight", "in_features"],
    "run_scaled_dot_product_attention": ["Q", "K", "V", "mask"],
    "run_multihead_self_attention": ["d_model", "num_heads", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                                     "o_proj_weight", "in_features"],
    "run_multihead_self_attention_with_rope": ["d_model", "num_heads", "max_seq_len", "theta", "q_proj_weight",
                                               "k_proj_weight", "v_proj_weight", "o_proj_weight", "in_features",
                                               "token_positions"],
    "run_rope": ["d_k", "theta", "max_seq_len", "in_query_or_key", "token_positions"],
    "run_transformer_block": ["d_model", "num_heads", "d_ff", "max_seq_len", "theta", "weights", "in_features"],
    "run_transformer_lm": ["vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff",
                           "rope_theta", "weights", "in_indices"],
    "run_rmsnorm": ["d_model", "eps", "weights", "in_features"],
    "run_silu": ["in_features"],
    "run_get_batch": ["dataset", "batch_size", "context_length", "device"],
    "run_softmax": ["in_features", "dim"],
    "run_cross_entropy": ["inputs", "targets"],
    "run_gradient_clipping": ["parameters", "max_l2_norm"],
    "get_adamw_cls": [],
    "run_get_lr_cosine_schedule": ["it", "max_learning_rate", "min_learning_rate", "warmup_iters",
                                   "cosine_cycle_iters"],
    "run_save_checkpoint": ["model", "optimizer", "iteration", "out"],
    "run_load_checkpoint": ["src", "model", "optimizer"],
    "get_tokenizer": ["vocab", "merges", "special_tokens"],
    "run_train_bpe": ["input_path", "vocab_size", "special_tokens", "kwargs"],
}  # fmt: skip
D, H, FF, SEQ, V = 16, 4, 24, 6, 50
G = torch.Generator().manual_seed(0)


def rnd(*shape, scale=0.3):
    return torch.randn(*shape, generator=G) * scale


def test_names_and_signatures_are_the_courses():
    assert sorted(A.__all__) == sorted(COURSE_ADAPTERS)
    for name, params in COURSE_ADAPTERS.items():
        assert list(inspect.signature(getattr(A, name)).parameters) == params, name


def test_linear_embedding_rmsnorm_silu_softmax():
    w, x = rnd(5, 7), rnd(2, 3, 7)
    assert_close64(A.run_linear(7, 5, w, x), x.to(F64) @ w.to(F64).T)
    emb, ids = rnd(V, D), torch.tensor([[3, 0, 49], [7, 7, 1]])
    assert torch.equal(A.run_embedding(V, D, emb, ids), emb[ids])
    g, h = 1 + rnd(D), rnd(2, 3, D)
    assert_close64(A.run_rmsnorm(D, 1e-5, g, h), ref_rmsnorm(h, g))
    z = rnd(4, 9, scale=5)
    assert_close64(A.run_silu(z), z.to(F64) / (1 + torch.exp(-z.to(F64))))
    assert_close64(A.run_softmax(z, 0), ref_softmax(z, 0))


def test_swiglu_rope_attention():
    w1, w2, w3, x = rnd(FF, D), rnd(D, FF), rnd(FF, D), rnd(2, SEQ, D)
    assert_close64(A.run_swiglu(D, FF, w1, w2, w3, x), ref_swiglu(x, w1, w2, w3))
    q, pos = rnd(2, SEQ, 8), torch.tensor([[0, 1, 2, 3, 4, 5], [9, 3, 0, 2, 2, 7]])
    assert_close64(A.run_rope(8, 10_000.0, 16, q, pos), ref_rope(q, pos, 10_000.0))
    k, v = rnd(2, 3, SEQ, 8), rnd(2, 3, SEQ, 5)
    mask = torch.rand(SEQ, SEQ, generator=G) > 0.3
    mask[:, 0] = True  # every query sees at least one key
    q4 = rnd(2, 3, SEQ, 8)
    assert_close64(A.run_scaled_dot_product_attention(q4, k, v, mask), ref_attention(q4, k, v, mask))


def test_multihead_attention_with_and_without_rope():
    wq, wk, wv, wo, x = rnd(D, D), rnd(D, D), rnd(D, D), rnd(D, D), rnd(2, SEQ, D)
    assert_close64(
        A.run_multihead_self_attention(D, H, wq, wk, wv, wo, x),
        ref_mhsa(x, wq, wk, wv, wo, H),
        atol=1e-5,
        rtol=1e-5,
    )
    pos = torch.arange(3, 3 + SEQ)
    got = A.run_multihead_self_attention_with_rope(D, H, 32, 10_000.0, wq, wk, wv, wo, x, pos)
    assert_close64(got, ref_mhsa(x, wq, wk, wv, wo, H, pos, 10_000.0), atol=1e-5, rtol=1e-5)


def _block_weights(prefix=""):
    names = {"attn.q_proj.weight": (D, D), "attn.k_proj.weight": (D, D), "attn.v_proj.weight": (D, D),
             "attn.output_proj.weight": (D, D), "ffn.w1.weight": (FF, D), "ffn.w2.weight": (D, FF),
             "ffn.w3.weight": (FF, D)}  # fmt: skip
    sd = {prefix + n: rnd(*s) for n, s in names.items()}
    sd.update({prefix + "ln1.weight": 1 + rnd(D), prefix + "ln2.weight": 1 + rnd(D)})
    return sd


def test_transformer_block_and_lm():
    sd, x = _block_weights(), rnd(2, SEQ, D)
    assert_close64(
        A.run_transformer_block(D, H, FF, 16, 10_000.0, sd, x),
        ref_block(x, sd, "", H, 10_000.0),
        atol=1e-5,
        rtol=1e-5,
    )
    lm = {**_block_weights("layers.0."), **_block_weights("layers.1.")}
    lm.update(
        {
            "token_embeddings.weight": rnd(V, D, scale=1),
            "ln_final.weight": 1 + rnd(D),
            "lm_head.weight": rnd(V, D),
        }
    )
    ids = torch.randint(0, V, (2, SEQ), generator=G)
    assert_close64(
        A.run_transformer_lm(V, 16, D, 2, H, FF, 10_000.0, lm, ids),
        ref_lm(lm, ids, 2, H, 10_000.0),
        atol=1e-4,
        rtol=1e-4,
    )


def test_cross_entropy_clipping_schedule_batch():
    logits, y = rnd(5, V, scale=3), torch.randint(0, V, (5,), generator=G)
    l64 = logits.to(F64)
    expected = (torch.log(torch.exp(l64).sum(-1)) - l64[torch.arange(5), y]).mean()
    assert_close64(A.run_cross_entropy(logits, y), expected)
    params = [torch.nn.Parameter(rnd(3, 4)) for _ in range(2)]
    for p in params:
        p.grad = rnd(*p.shape, scale=10)
    before = [p.grad.clone() for p in params]
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in before))
    A.run_gradient_clipping(params, 1.0)
    for p, g in zip(params, before):
        torch.testing.assert_close(p.grad, g * (1.0 / (norm + 1e-6)))
    assert A.run_get_lr_cosine_schedule(5, 1.0, 0.1, 10, 20) == 0.5
    assert math.isclose(
        A.run_get_lr_cosine_schedule(15, 1.0, 0.1, 10, 20), 0.1 + 0.45 * (1 + math.cos(math.pi / 2))
    )
    assert A.run_get_lr_cosine_schedule(25, 1.0, 0.1, 10, 20) == 0.1
    data = np.arange(100)
    x, y = A.run_get_batch(data, 8, 5, "cpu")
    assert x.shape == y.shape == (8, 5) and torch.equal(y, x + 1) and int(x.max()) < 99


def test_adamw_and_checkpoint_round_trip():
    assert issubclass(A.get_adamw_cls(), torch.optim.Optimizer)
    model = torch.nn.Linear(3, 2)
    opt = A.get_adamw_cls()(model.parameters(), lr=1e-2)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    A.run_save_checkpoint(model, opt, 7, buf)
    buf.seek(0)
    other = torch.nn.Linear(3, 2)
    other_opt = A.get_adamw_cls()(other.parameters(), lr=1e-2)
    assert A.run_load_checkpoint(buf, other, other_opt) == 7
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_train_bpe_and_tokenizer(tmp_path):
    text = "low lower lowest<|endoftext|>newer newest wider<|endoftext|>" * 5 + "it's 12 wide"
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    vocab, merges = A.run_train_bpe(path, 280, ["<|endoftext|>"])
    assert (vocab, merges) == naive_bpe(text, 280, ["<|endoftext|>"])
    tok = A.get_tokenizer(vocab, merges, ["<|endoftext|>"])
    sample = "the lowest<|endoftext|> newer, wider!"
    assert tok.encode(sample) == naive_encode(tok, sample)
    assert tok.decode(tok.encode(sample)) == sample
