"""Sharpness: the top eigenvalue of the (Adam-preconditioned) loss Hessian, by Lanczos on Hessian-vector products.

Cohen et al. 2022 (arXiv 2207.14484): under Adam the quantity that equilibrates near the stability threshold
(2 + 2 beta1) / ((1 - beta1) lr) (38 / lr for beta1 = 0.9) is lambda_max(P^-1 H) with P = diag(sqrt(v_hat) + eps)
from the optimizer state. It equals lambda_max(P^-1/2 H P^-1/2), which is symmetric, so Lanczos applies.

Nothing here touches the training run: Hessian-vector products go through ``torch.autograd.grad`` (no ``.grad``
is written), the Lanczos start vector comes from a private generator (the global RNG is not consumed), and the
measurement runs on an eager copy of the model (``measurement_model``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from cs336_basics.basics.functional import cross_entropy


def top_hessian_eigenvalue(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    preconditioner: Sequence[Tensor] | None = None,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> float:
    """lambda_max(P^-1/2 H P^-1/2) of the Hessian H of ``loss_fn()`` in ``params`` (lambda_max(H) without P).

    ``preconditioner`` is the diagonal of P, positive tensors shaped like ``params``; an entry of inf leaves its
    coordinate out (the eigenvalue is that of the remaining principal submatrix). Lanczos with full
    reorthogonalisation; ``iters`` bounds the number of Hessian-vector products (each one double backward
    through a single forward/backward graph); it stops early once the top Ritz value's residual bound says it
    is within ``tol`` (relative) of an eigenvalue. Returns the largest (algebraic) eigenvalue: negative curvature does not count as sharp.
    """
    params = list(params)
    if preconditioner is not None and [p.shape for p in preconditioner] != [p.shape for p in params]:
        raise ValueError("preconditioner must be a list of tensors shaped like params")
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    # A parameter the loss is constant or linear in has a zero Hessian row: it drops out of the product.
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    scale = None if preconditioner is None else [d.to(p).rsqrt() for d, p in zip(preconditioner, params)]
    sizes = [p.numel() for p in params]

    def matvec(z: Tensor) -> Tensor:
        vs = [c.view_as(p) for c, p in zip(z.split(sizes), params)]
        if scale is not None:
            vs = [v * s for v, s in zip(vs, scale)]
        hv = torch.autograd.grad(
            [grads[i] for i in live], params, [vs[i] for i in live], retain_graph=True, allow_unused=True
        )
        hv = [torch.zeros_like(p) if h is None else h for h, p in zip(hv, params)]
        if scale is not None:
            hv = [h * s for h, s in zip(hv, scale)]
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    if not live:
        return 0.0
    return lanczos_top_eigenvalue(matvec, sum(sizes), params[0].dtype, params[0].device, iters, tol, seed)


def lanczos_top_eigenvalue(
    matvec: Callable[[Tensor], Tensor], n: int, dtype, device, iters: int, tol: float, seed: int
) -> float:
    """Largest eigenvalue of the symmetric operator ``matvec`` on R^n: Lanczos, full reorthogonalisation."""
    steps = max(1, min(iters, n))
    basis = torch.empty(steps, n, dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)  # private: the training run's RNG streams stay untouched
    q = torch.randn(n, generator=gen, dtype=torch.float64)
    basis[0] = (q / q.norm()).to(dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = matvec(basis[j])
        alphas.append(torch.dot(w, basis[j]).item())
        # Reorthogonalise against the whole basis, twice ("twice is enough"): the three-term recurrence
        # alone loses orthogonality in floating point and then finds ghost copies of the top eigenvalue.
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = w.norm().item()
        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tri += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(tri)
        theta = evals[-1].item()
        residual = beta * abs(evecs[-1, -1].item())  # |A y - theta y| for the Ritz vector y
        scale = max(abs(theta), 1e-30)
        if beta <= 1e-10 * max(abs(a) for a in alphas) + 1e-30 or residual <= tol * scale:
            # An invariant subspace, or the Ritz value is provably within tol of an eigenvalue. (Not: "the top
            # Ritz value stopped moving": it can rest on the second eigenvalue for a few steps before the top
            # one enters the Krylov space; a tiny LM's probe batch did exactly that, 112 instead of 129.)
            break
        if j + 1 < steps:
            betas.append(beta)
            basis[j + 1] = w / beta
    return theta


def adam_preconditioner(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """diag(P) = sqrt(v / (1 - beta2^t)) + eps per parameter, in the optimizer's parameter order; inf (the
    coordinate is left out) where v is exactly 0."""
    diag = []
    for group in optimizer.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state or "exp_avg_sq" not in state:
                raise ValueError("the optimizer has no second-moment state yet: measure after the first step")
            t = float(state["step"])  # an int here, a tensor in torch.optim.AdamW
            v = state["exp_avg_sq"].detach()
            # v == 0: a coordinate whose gradient has always been exactly zero (the embedding row of a token no
            # training batch held). Adam has never moved it, so it takes no part in the dynamics; left in, its
            # P = eps (1e-8) would blow the probe batch's curvature there up by 1e8 and swamp the measurement.
            diag.append(torch.where(v > 0, (v / (1.0 - beta2**t)).sqrt() + eps, math.inf))
    return diag


def preconditioned_sharpness(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = cross_entropy,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> float:
    """lambda_max(P^-1 H) of ``loss_fn(model(x), y)``, P = diag(sqrt(v_hat) + eps) from ``optimizer``'s state.

    ``model`` is the eager measurement copy (``measurement_model``) or the training model itself; its
    parameters pair up, in order, with the optimizer's. Runs in full precision (no autocast) with the math
    attention kernel, which has a double backward.
    """
    params = list(model.parameters())
    tracked = [p for group in optimizer.param_groups for p in group["params"]]
    if [p.shape for p in params] != [p.shape for p in tracked]:
        raise ValueError("model parameters do not match the optimizer's (same model, same order expected)")
    precond = adam_preconditioner(optimizer)
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False), sdpa_kernel(SDPBackend.MATH):
        return top_hessian_eigenvalue(lambda: loss_fn(model(x), y), params, precond, iters, tol, seed)


def measurement_model(model: nn.Module) -> nn.Module:
    """An eager copy of ``model`` (same weights, no grads) with the package's math attention, for double backward."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if hasattr(module, "kernels"):  # TransformerLM(kernels="fast" | "reference")
            module.kernels = "reference"
    for p in twin.parameters():
        p.grad = None
        p.requires_grad_(True)
    return twin
