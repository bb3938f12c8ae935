"""Shared fixtures: tiny configs and synthetic token streams that train in seconds on 2 CPU cores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cs336_basics.basics.config import create_experiment_config

# Keep tests deterministic and light on a 2-core machine; never touch the user's cache for the CPU probe.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# The tests start many short CLI processes that import torch: let them cache bytecode, as CI does, or where
# PYTHONDONTWRITEBYTECODE is set each one recompiles torch's ~2,000 modules (about 10 s a process).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


def pattern_tokens(n: int, vocab: int = 64, seed: int = 0) -> np.ndarray:
    """A learnable stream: a repeating ramp with 10% noise (loss can fall well below ln(vocab))."""
    rng = np.random.default_rng(seed)
    base = np.arange(n) % (vocab - 14)
    noise = rng.integers(0, vocab, size=n)
    return np.where(rng.random(n) < 0.1, noise, base).astype(np.uint16)


def tiny_config(**overrides):
    values = dict(
        vocab_size=64,
        context_length=16,
        d_model=32,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        batch_size=4,
        max_steps=40,
        max_lr=1e-2,
        log_interval=5,
        eval_interval=10,
        eval_batches=2,
        checkpoint_interval=10,
        device="cpu",
        dtype="fp32",
        compile="off",
        divergence_check_after=0.5,
        divergence_min_steps=0,
    )
    values.update(overrides)
    return create_experiment_config("demo", **values)


@pytest.fixture
def tokens():
    return pattern_tokens(20_000), pattern_tokens(4_000, seed=1)
