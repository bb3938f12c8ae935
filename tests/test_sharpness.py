"""Sharpness against exact answers: quadratics with known spectra, dense Hessians of a small MLP and a tiny LM."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from cs336_basics.basics import AdamW, TransformerLM, cross_entropy
from cs336_basics.basics.divergence import stability_threshold
from cs336_basics.basics.probe import sharpness_interval
from cs336_basics.basics.sharpness import (
    adam_preconditioner,
    measurement_model,
    preconditioned_sharpness,
    top_hessian_eigenvalue,
)


def quadratic(spectrum, seed=0):
    """A = Q diag(spectrum) Q^T with a random orthogonal Q (float64)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(spectrum)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T


def quadratic_loss(a):
    """0.5 x^T A x with x split into two parameter tensors of different shapes (tests the flattening)."""
    n = a.shape[0]
    x1 = torch.randn(10, 10, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(n - 100, dtype=torch.float64, requires_grad=True)

    def loss():
        x = torch.cat((x1.reshape(-1), x2))
        return 0.5 * x @ a @ x

    return loss, [x1, x2]


SEPARATED = [10.0, 5.0] + torch.linspace(-1.0, 1.0, 198).tolist()
CLUSTERED = [10.0 * (1 - 1e-4 * k) for k in range(5)] + torch.linspace(0.0, 9.0, 195).tolist()
NEGATIVE = [-20.0, 3.0, 2.9] + torch.linspace(-1.0, 1.0, 197).tolist()  # the largest |eigenvalue| is negative


@pytest.mark.parametrize(
    "spectrum", [SEPARATED, CLUSTERED, NEGATIVE], ids=["separated", "clustered", "negative"]
)
def test_quadratic_known_spectrum(spectrum):
    a = quadratic(spectrum)
    loss, params = quadratic_loss(a)
    top = top_hessian_eigenvalue(loss, params)
    assert top == pytest.approx(max(spectrum), rel=1e-3)


@pytest.mark.parametrize("spectrum", [SEPARATED, CLUSTERED], ids=["separated", "clustered"])
def test_quadratic_with_diagonal_preconditioner(spectrum):
    a = quadratic(spectrum, seed=1)
    d = torch.rand(a.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 9 + 1
    exact = torch.linalg.eigvalsh(a / d.sqrt()[:, None] / d.sqrt()[None, :])[-1].item()
    # P^-1 A has the same spectrum as P^-1/2 A P^-1/2: check that too, independently.
    assert exact == pytest.approx(torch.linalg.eigvals(a / d[:, None]).real.max().item(), rel=1e-9)
    loss, params = quadratic_loss(a)
    precond = [d[:100].reshape(10, 10), d[100:]]
    assert top_hessian_eigenvalue(loss, params, precond, iters=40) == pytest.approx(exact, rel=1e-3)


def test_iters_bounds_the_products_and_tol_stops_early():
    a = quadratic(SEPARATED)
    loss, params = quadratic_loss(a)
    calls = []
    hook = params[1].register_hook(lambda g: calls.append(1))  # fires on every backward through x2
    top_hessian_eigenvalue(loss, params, iters=5, tol=0.0)
    assert len(calls) == 1 + 5  # the gradient, then one Hessian-vector product per iteration
    calls.clear()
    top_hessian_eigenvalue(loss, params, iters=200, tol=1e-3)
    assert len(calls) < 1 + 30
    hook.remove()


def mlp_setup():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    return net, x, y


def dense_hessian(module, loss_of_output):
    """The exact Hessian in the flattened parameters, by torch.autograd.functional.hessian."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def f(theta):
        chunks = theta.split([math.prod(s) for s in shapes])
        weights = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return loss_of_output(lambda *args: functional_call(module, weights, args))

    return torch.autograd.functional.hessian(f, flat, vectorize=True)


def test_mlp_against_exact_hessian():
    net, x, y = mlp_setup()
    h = dense_hessian(net, lambda call: torch.nn.functional.cross_entropy(call(x), y))
    exact = torch.linalg.eigvalsh(h)[-1].item()
    params = list(net.parameters())
    top = top_hessian_eigenvalue(lambda: torch.nn.functional.cross_entropy(net(x), y), params)
    assert top == pytest.approx(exact, rel=1e-3)
    d = [torch.rand_like(p) + 0.1 for p in params]
    dflat = torch.cat([t.reshape(-1) for t in d])
    exact_p = torch.linalg.eigvalsh(h / dflat.sqrt()[:, None] / dflat.sqrt()[None, :])[-1].item()
    top_p = top_hessian_eigenvalue(lambda: torch.nn.functional.cross_entropy(net(x), y), params, d, iters=40)
    assert top_p == pytest.approx(exact_p, rel=1e-3)


BETA2, EPS = 0.95, 1e-8


def tiny_lm_after_steps(steps=3, grads=None):
    """The tiny LM after ``steps`` AdamW steps; each step's flat gradient appended to ``grads``."""
    torch.manual_seed(0)
    model = TransformerLM(32, 8, 16, 1, 2, 16, 10_000.0, dtype=torch.float64)
    opt = AdamW(model.parameters(), lr=1e-2, betas=(0.9, BETA2), eps=EPS, weight_decay=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 32, (4, 8), generator=gen)
        cross_entropy(model(x), torch.roll(x, -1, 1)).backward()
        if grads is not None:
            grads.append(torch.cat([q.grad.reshape(-1) for q in model.parameters()]))
        opt.step()
        opt.zero_grad(set_to_none=True)
    x = torch.randint(0, 32, (4, 8), generator=gen)
    return model, opt, x, torch.roll(x, -1, 1)


def test_tiny_lm_preconditioned_against_dense_hessian():
    grads = []
    model, opt, x, y = tiny_lm_after_steps(grads=grads)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernel has no double backward
        h = dense_hessian(model, lambda call: cross_entropy(call(x), y))
    # Adam's preconditioner by hand, from the gradients: v_t = sum_k (1 - b2) b2^(t-k) g_k^2, bias-corrected.
    t = len(grads)
    v = sum((1 - BETA2) * BETA2 ** (t - k) * g**2 for k, g in enumerate(grads, 1))
    p = torch.where(v > 0, (v / (1 - BETA2**t)).sqrt() + EPS, math.inf)
    got_p = torch.cat([d.reshape(-1) for d in adam_preconditioner(opt)])
    torch.testing.assert_close(got_p, p, rtol=1e-12, atol=0)
    # Embedding rows no training batch held have v = 0: adam_preconditioner leaves them out (P = inf), and so does
    # this dense reference (h / inf = 0). The probe batch holds such tokens: their Hessian rows are not 0.
    exact = torch.linalg.eigvalsh(h / p.sqrt()[:, None] / p.sqrt()[None, :])[-1].item()
    twin = measurement_model(model)
    got = preconditioned_sharpness(twin, opt, x, y)  # the default 20 products
    assert got == pytest.approx(exact, rel=1e-3)


def test_measurement_leaves_training_untouched():
    """Losses with a measurement between steps equal those without, bit for bit; no RNG drawn, no grads left."""

    def train(measure: bool) -> list[float]:
        torch.manual_seed(0)
        model = TransformerLM(32, 8, 16, 1, 2, 16, 10_000.0)
        opt = AdamW(model.parameters(), lr=1e-2)
        losses = []
        for step in range(4):
            x = torch.randint(0, 32, (4, 8))  # the global RNG: any draw by the measurement would shift it
            loss = cross_entropy(model(x), torch.roll(x, -1, 1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if measure and step == 1:
                state = {
                    k: [t.clone() for t in v.values() if torch.is_tensor(t)] for k, v in opt.state.items()
                }
                weights = [p.detach().clone() for p in model.parameters()]
                rng = torch.get_rng_state()
                preconditioned_sharpness(measurement_model(model), opt, x, torch.roll(x, -1, 1))
                assert torch.equal(rng, torch.get_rng_state())
                assert all(p.grad is None for p in model.parameters())
                assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
                for k, v in opt.state.items():
                    now = [t for t in v.values() if torch.is_tensor(t)]
                    assert all(torch.equal(a, b) for a, b in zip(state[k], now))
        return losses

    assert train(True) == train(False)


def test_measurement_model_supports_double_backward_on_cpu():
    model, _, x, y = tiny_lm_after_steps(0)
    assert model.layers[0].attn.kernels == "fast"  # the fused CPU attention kernel has no double backward
    twin = measurement_model(model)
    assert model.layers[0].attn.kernels == "fast"  # the training model is left as it was
    assert all(m.kernels == "reference" for m in twin.modules() if hasattr(m, "kernels"))
    assert all(a is not b and torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    params = list(twin.parameters())
    grads = torch.autograd.grad(cross_entropy(twin(x), y), params, create_graph=True)  # no sdpa_kernel needed
    torch.autograd.grad(sum((g * g).sum() for g in grads), params)


def test_stability_threshold():
    assert stability_threshold(1e-3, 0.9) == pytest.approx(38_000.0)
    assert stability_threshold(0.1, 0.0) == pytest.approx(20.0)  # plain momentum-free: 2 / lr
    assert stability_threshold(0.0, 0.9) == math.inf


def test_no_state_is_an_error():
    model = TransformerLM(32, 8, 16, 1, 2, 16, 10_000.0)
    with pytest.raises(ValueError, match="first step"):
        adam_preconditioner(AdamW(model.parameters()))


def test_sharpness_interval_keeps_the_share():
    """Known answers: 10 s measurements, 0.1 s steps, 5% share, log every 10 steps -> 1,900 training steps
    are needed per measurement, so the interval is the next 10 * 2**k above it: 2,560."""
    assert sharpness_interval(10.0, 0.1, 0.05, 10) == 2560
    assert 10.0 <= 0.05 * (2560 * 0.1 + 10.0)  # within the share
    assert 10.0 > 0.05 * (1280 * 0.1 + 10.0)  # and half of it would not be
    assert sharpness_interval(0.01, 1.0, 0.05, 10) == 10  # cheap: at every log step
    assert sharpness_interval(5.0, 0.1, 1.0, 10) == 10  # share 1: always


def test_sharpness_interval_simulated_run():
    """A simulated run whose measured share stays under the cap and whose steps are the same for any lr."""
    step_s, cost_s, share, every, spent, elapsed, steps = 0.2, 3.0, 0.1, 0, 0.0, 0.0, []
    for step in range(1, 3001):
        elapsed += step_s
        if step % 10 == 0 and step % max(every, 1) == 0:
            spent, elapsed = spent + cost_s, elapsed + cost_s
            steps.append(step)
            every = sharpness_interval(cost_s, step_s, share, 10)
    assert steps[:3] == [10, 160, 320]  # 3 s / (0.1 * 0.2 s) * 0.9 = 135 steps -> 160
    assert spent / elapsed <= share


def test_an_infinite_preconditioner_entry_leaves_its_coordinate_out():
    """½ Σ a_i x_i² has H = diag(a): with coordinate 1 (the largest curvature) left out, λ_max is max(a_0, a_2)."""
    a = torch.tensor([3.0, 50.0, 7.0], dtype=torch.float64)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    precond = [torch.tensor([1.0, math.inf, 2.0], dtype=torch.float64)]
    value = top_hessian_eigenvalue(lambda: 0.5 * (a * x * x).sum(), [x], precond, iters=10)
    assert value == pytest.approx(max(3.0 / 1.0, 7.0 / 2.0), rel=1e-6)


def test_rows_adam_never_moved_are_left_out_of_the_preconditioned_sharpness():
    """Embedding rows of tokens no training batch held have v = 0 exactly: their P is inf (not eps = 1e-8), so
    a probe batch holding such a token does not inflate the sharpness by 1e8."""
    torch.manual_seed(0)
    model = TransformerLM(16, 8, 16, 1, 2, 16, 10_000.0)
    opt = AdamW(model.parameters(), lr=1e-3)
    seen = torch.randint(0, 8, (4, 9))  # training uses tokens 0..7 only
    for _ in range(3):
        cross_entropy(model(seen[:, :-1]), seen[:, 1:]).backward()
        opt.step()
        opt.zero_grad()
    diag = dict(zip((n for n, _ in model.named_parameters()), adam_preconditioner(opt)))
    emb = diag["token_embeddings.weight"]
    assert torch.isinf(emb[8:]).all() and torch.isfinite(emb[:8]).all()
    probe = torch.randint(0, 16, (4, 9))  # holds unseen tokens
    got = preconditioned_sharpness(model, opt, probe[:, :-1], probe[:, 1:], iters=40, tol=1e-9)
    p_eps = [torch.where(torch.isfinite(d), d, 1e-8) for d in adam_preconditioner(opt)]
    with sdpa_kernel(SDPBackend.MATH):
        as_eps = top_hessian_eigenvalue(
            lambda: cross_entropy(model(probe[:, :-1]), probe[:, 1:]),
            list(model.parameters()),
            p_eps,
            40,
            1e-9,
        )
    assert as_eps > 1e4 * got  # P = eps on the unmoved rows would blow the measurement up by ~1e8


def test_a_runs_sharpness_row_is_its_own_state_measured_on_the_probe_batch(tmp_path):
    """The in-run wiring: sharpness.csv's last row equals lambda_max(P^-1 H) of final.pt's weights and AdamW
    state, on the first windows of the first validation batch, against (2 + 2 b1) / ((1 - b1) lr) = 38 / lr
    with the lr of that step's update (metrics.csv)."""
    import pandas as pd

    from cs336_basics.basics.batching import eval_batches
    from cs336_basics.basics.run_experiment import run_experiment
    from tests.conftest import pattern_tokens, tiny_config

    cfg = tiny_config(max_steps=10, log_interval=5, eval_interval=5, checkpoint_interval=5, sharpness_share=0.99,
                      signals=False, divergence_check_after=1.0)  # fmt: skip
    val = pattern_tokens(4_000, seed=1)
    run_experiment(cfg, pattern_tokens(20_000), val, out_dir=tmp_path / "run", progress=False)
    row = pd.read_csv(tmp_path / "run" / "sharpness.csv").iloc[-1]
    lr = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step").loc[10, "lr"]
    assert row["step"] == 10 and row["lr"] == pytest.approx(lr, rel=1e-12)
    assert row["threshold"] == pytest.approx(38 / lr, rel=1e-12)

    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=False)
    model = TransformerLM(64, 16, 32, 1, 2, 64, 10_000.0)
    model.load_state_dict(ckpt["model"])
    opt = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt.load_state_dict(ckpt["optimizer"])
    x, y = eval_batches(val, cfg.batch_size, cfg.context_length, cfg.eval_batches, torch.device("cpu"))[0]
    expected = preconditioned_sharpness(
        measurement_model(model), opt, x[:8], y[:8], iters=cfg.sharpness_iters
    )
    assert row["sharpness"] == pytest.approx(expected, rel=1e-4)
    assert row["ratio"] == pytest.approx(expected * lr / 38, rel=1e-4)


def test_a_cheap_measurement_after_dear_ones_does_not_schedule_the_next_at_once(tmp_path, monkeypatch):
    """Measurements cost 50 s, 50 s, then 1 s (a busy machine freed): the schedule comes from their mean cost,
    not the last one, so the share stays under the cap (from the last it measured at the next log step, and
    a TinyStories run spent 52% of its wallclock measuring under a 30% cap)."""
    import types

    import numpy as np

    from cs336_basics.basics import trainer as trainer_module
    from cs336_basics.basics.device import setup_runtime
    from tests.conftest import tiny_config

    cfg = tiny_config(sharpness_share=0.3, log_interval=10).resolved()
    runtime = setup_runtime("cpu", "fp32", "off", False, cfg.total_tokens)
    tokens = (np.arange(5000) % cfg.vocab_size).astype(np.uint16)
    trainer = trainer_module.Trainer(cfg, tmp_path / "run", runtime, (tokens, tokens, None), progress=False)
    clock = [0.0]
    costs = iter([50.0, 50.0, 1.0])

    def measured(step, lr):  # what the probe measures does not matter here: only what it costs
        clock[0] += next(costs)
        return dict(step=step, lr=lr, sharpness=1.0, threshold=1.0, ratio=1.0)

    monkeypatch.setattr(trainer.probe, "sharpness", measured)
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    trainer.tracker.start()
    state, every, step = trainer.state, [], 10
    for _ in range(3):  # at each step it is due; steps take 0.1 s: the wallclock is training plus measuring
        state.wallclock_s = 0.1 * step + state.measure_s
        trainer.measure(step, 1e-3, trainer.probe.weights())
        every.append(state.sharpness_every)
        step = (step // state.sharpness_every + 1) * state.sharpness_every
    mean = (50 + 50 + 1) / 3
    assert every[-1] == sharpness_interval(mean, 0.1, 0.3, 10) > sharpness_interval(1.0, 0.1, 0.3, 10)
    assert state.sharpness_s == 101.0 and state.sharpness_count == 3
    trainer.loader.close()
