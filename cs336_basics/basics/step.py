"""One optimizer step of a run, exactly as every run (and the benchmark and the plan) executes it."""

from __future__ import annotations

import warnings

import torch

from cs336_basics.basics.config import ExperimentConfig
from cs336_basics.basics.device import Runtime
from cs336_basics.basics.kernels import loss_function, make_optimizer
from cs336_basics.basics.model import TransformerLM
from cs336_basics.basics.optim import get_lr_cosine_schedule, gradient_clipping


class TrainStep:
    """Model, optimizer and one optimizer step, exactly as every run (and the benchmark) executes it.

    ``step(it, x, y)`` sets the scheduled learning rate, runs forward (autocast, compiled if chosen) and
    backward, clips, steps and zeroes the grads; it returns device tensors (loss, pre-clip grad norm) and the
    learning rate without reading anything back from the device.
    """

    def __init__(self, cfg: ExperimentConfig, runtime: Runtime):
        self.cfg, self.runtime = cfg, runtime
        torch.manual_seed(cfg.seed)
        self.model = TransformerLM.from_config(cfg, device=runtime.device)
        hyper = dict(lr=cfg.max_lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.kernels, **hyper)
        model, loss = self.model, loss_function(cfg.kernels)

        def eager_loss(x, y):  # model and loss compiled together: the loss fuses with the LM head
            return loss(model(x), y)

        self.loss_fn = self.eager_loss = eager_loss
        if runtime.compile:
            self.loss_fn = torch.compile(eager_loss, backend=runtime.compile_backend)
        self._first_step = runtime.compile

    def __call__(self, it: int, x: torch.Tensor, y: torch.Tensor):
        cfg = self.cfg
        lr = get_lr_cosine_schedule(it, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.cosine_cycle_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self._first_forward_backward(x, y) if self._first_step else self._forward_backward(x, y)
        grad_norm = gradient_clipping(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, lr

    def _forward_backward(self, x, y) -> torch.Tensor:
        with self.runtime.autocast():
            loss = self.loss_fn(x, y)
        loss.backward()
        return loss

    def _first_forward_backward(self, x, y) -> torch.Tensor:
        """The first step compiles forward and backward; if compiling fails, fall back to eager and say so
        (the note lands in config.json's runtime, where lr-diagnose looks for it)."""
        self._first_step = False
        try:
            return self._forward_backward(x, y)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # inductor/dynamo failures: missing compiler, unsupported op, ...
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            note = f"compile failed ({type(err).__name__}: {first_line}); fell back to eager"
            warnings.warn(note, stacklevel=2)
            self.runtime.notes.append(note)
            self.runtime.compile = False
            self.loss_fn = self.eager_loss
            self.optimizer.zero_grad(set_to_none=True)  # a half-done backward may have left grads
            return self._forward_backward(x, y)
