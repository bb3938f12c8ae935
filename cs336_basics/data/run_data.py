"""A run's data: the config's token files (preparing the dataset for any that are missing), checked and
memory-mapped for the trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cs336_basics.data.prepare import prepare_dataset
from cs336_basics.data.token_file import load_token_file, require_token_file
from cs336_basics.errors import UserError


def with_data_files(cfg):
    """``cfg`` with absolute train/val token files and tokenizer, preparing the dataset (download, BPE,
    tokenize) for any that are missing: a sweep does it once for all its points."""
    for given in (cfg.train_data, cfg.val_data):  # a missing file given by name: said before any preparing
        if given is not None:
            require_token_file(given)
    if cfg.train_data is not None and cfg.val_data is not None:
        return cfg
    prepared = prepare_dataset(cfg.dataset, cfg.data_dir, vocab_size=cfg.vocab_size)
    return dataclasses.replace(
        cfg,
        train_data=cfg.train_data or str(Path(prepared.train_tokens).resolve()),
        val_data=cfg.val_data or str(Path(prepared.valid_tokens).resolve()),
        tokenizer_path=cfg.tokenizer_path or str(Path(prepared.tokenizer_path).resolve()),
    )


def load_run_data(cfg, train_data=None, val_data=None) -> tuple[npt.NDArray, npt.NDArray, str | None]:
    """Training and validation token arrays (memmaps) and the tokenizer path, preparing the dataset if needed.
    ``train_data``/``val_data`` (arrays or paths) replace the config's files."""
    if train_data is None or val_data is None:
        cfg = with_data_files(cfg)
    tokenizer_path = cfg.tokenizer_path
    train_data = train_data if train_data is not None else cfg.train_data
    val_data = val_data if val_data is not None else cfg.val_data
    arrays = []
    for name, data in (("training", train_data), ("validation", val_data)):
        if isinstance(data, (str, Path)):
            path = Path(data)
            if tokenizer_path is None and (path.parent / "tokenizer.json").exists():
                tokenizer_path = str((path.parent / "tokenizer.json").resolve())
            arr = load_token_file(path, vocab_size=cfg.vocab_size, tokenizer_path=cfg.tokenizer_path)
        else:
            arr = data if isinstance(data, np.ndarray) else np.asarray(data)
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise UserError(
                    f"{name} data must be a 1-D integer token array, got shape {arr.shape} {arr.dtype}"
                )
            if len(arr) and int(arr.max()) >= cfg.vocab_size:
                raise UserError(
                    f"{name} data has token id {int(arr.max())} >= vocab size {cfg.vocab_size}; "
                    f"pass --vocab-size {int(arr.max()) + 1} or re-tokenize"
                )
        if len(arr) < cfg.context_length + 1:  # a window is context_length inputs and their next tokens
            raise UserError(
                f"{name} data has {len(arr)} tokens, fewer than one window of context_length + 1 = "
                f"{cfg.context_length + 1}; use a smaller --context-length or more data"
            )
        arrays.append(arr)
    return arrays[0], arrays[1], tokenizer_path
