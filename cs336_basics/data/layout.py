"""Which files this package wrote itself: the prepared-data layout, and the advice a broken file gets.

``prepare_dataset`` writes ``<data_dir>/<name>/v<vocab>-<bpe>/{tokenizer.json,train.npy,valid.npy}``. A broken
file there is ours to rebuild ("delete it and re-run ..."); any other path is one the user pointed at, and
deleting it would be bad advice: they are told which kind of file to pass instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import regex

BUILTIN = ("tinystories", "demo")  # the datasets known by name; any other dataset is a text file's path
BPE_TRAINERS = ("cs336", "hf")  # the BPE trainers, each with its own token directory
TOKEN_DIR = regex.compile(r"v[0-9]+-[a-z0-9]+")  # v<vocab>-<bpe>, e.g. v10000-cs336
PREPARED_NAMES = ("tokenizer.json", "train.npy", "valid.npy")


def dataset_dir_name(dataset: str | os.PathLike) -> str:
    """The directory of a dataset under the data dir: a built-in's name, else the text file's stem
    (``my/stories.txt`` -> ``stories``; ``my/demo.txt`` -> ``demo-file``, apart from the built-in demo)."""
    text = os.fspath(dataset)
    if text in BUILTIN:
        return text
    stem = Path(text).stem
    return stem if stem not in BUILTIN else f"{stem}-file"


def token_dir_name(vocab_size: int, bpe: str) -> str:
    """``v10000-cs336``: the directory of one (vocab size, trainer) under a dataset's directory."""
    return f"v{vocab_size}-{bpe}"


def is_prepared(path: str | os.PathLike) -> bool:
    """True if ``path`` is a tokenizer or token file of the prepared layout (written by ``prepare``)."""
    path = Path(path)
    return path.name in PREPARED_NAMES and TOKEN_DIR.fullmatch(path.parent.name) is not None


def token_file_advice(npy_path: str | os.PathLike) -> str:
    """What to do about the broken token file ``npy_path`` (or its sidecar)."""
    if is_prepared(npy_path):
        return "delete it and re-run `cs336-data prepare` (or `cs336-data tokenize`)"
    return "pass a .npy token file written by `cs336-data tokenize` or `cs336-data prepare`"


def tokenizer_advice(path: str | os.PathLike) -> str:
    """What to do about the broken tokenizer file ``path``."""
    if is_prepared(path):
        return "delete it and re-run `cs336-data prepare` (or `cs336-data train-tokenizer`)"
    return "pass a tokenizer.json written by `cs336-data train-tokenizer` or `cs336-data prepare`"
