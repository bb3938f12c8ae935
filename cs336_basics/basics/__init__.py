"""The model and training pieces, with Stanford CS336 assignment-1 interfaces and numerics.

One run end to end: ``cs336_basics.basics.run_experiment.run_experiment`` (or ``python -m
cs336_basics.basics.run_experiment``). The names below load on first use, so that a torch-free module of this
package (config, divergence, hardware) can be imported without torch (lr-diagnose, lr-analyze and the sweeps' --summary start faster).
"""

import importlib

_HOMES = {
    "batching": ("get_batch",),
    "checkpoint": ("load_checkpoint", "save_checkpoint"),
    "config": ("ExperimentConfig", "create_experiment_config"),
    "functional": ("cross_entropy", "scaled_dot_product_attention", "silu", "softmax"),
    "layers": ("Embedding", "Linear", "RMSNorm", "RotaryPositionalEmbedding", "SwiGLU"),
    "model": ("MultiHeadSelfAttention", "TransformerBlock", "TransformerLM"),
    "optim": ("AdamW", "get_lr_cosine_schedule", "gradient_clipping"),
    "sharpness": ("top_hessian_eigenvalue",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
