"""The model and training pieces, with Stanford CS336 assignment-1 interfaces and numerics.

One run end to end: ``cs336_basics.basics.run_experiment.run_experiment`` (or ``python -m
cs336_basics.basics.run_experiment``).
"""

from cs336_basics.basics.batching import get_batch
from cs336_basics.basics.checkpoint import load_checkpoint, save_checkpoint
from cs336_basics.basics.config import ExperimentConfig, create_experiment_config
from cs336_basics.basics.functional import cross_entropy, scaled_dot_product_attention, silu, softmax
from cs336_basics.basics.layers import Embedding, Linear, RMSNorm, RotaryPositionalEmbedding, SwiGLU
from cs336_basics.basics.model import MultiHeadSelfAttention, TransformerBlock, TransformerLM
from cs336_basics.basics.optim import AdamW, get_lr_cosine_schedule, gradient_clipping
from cs336_basics.basics.sharpness import top_hessian_eigenvalue

__all__ = [
    "AdamW",
    "Embedding",
    "ExperimentConfig",
    "Linear",
    "MultiHeadSelfAttention",
    "RMSNorm",
    "RotaryPositionalEmbedding",
    "SwiGLU",
    "TransformerBlock",
    "TransformerLM",
    "create_experiment_config",
    "cross_entropy",
    "get_batch",
    "get_lr_cosine_schedule",
    "gradient_clipping",
    "load_checkpoint",
    "save_checkpoint",
    "scaled_dot_product_attention",
    "silu",
    "softmax",
    "top_hessian_eigenvalue",
]
