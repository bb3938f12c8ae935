"""Train a byte-level BPE tokenizer on a text file, with either trainer (``bpe``):

* ``cs336``: ``bpe.train_bpe``, this package's from-scratch trainer with the course's exact merges
  (ties to the lexicographically greatest pair).
* ``hf``: Hugging Face's ``BpeTrainer`` (Rust, streaming); same algorithm, but it breaks frequency ties
  differently, so its merges differ from the course's after the first few dozen.

Either way the text is split on ``<|endoftext|>`` first, so merges never cross documents. Next to
``tokenizer.json`` a small ``tokenizer.meta.json`` records the trainer, the requested vocab size and the
source file, so ``prepare`` can tell whether an existing tokenizer still fits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers
from tqdm import tqdm

from cs336_basics.atomic import atomic_write_json
from cs336_basics.data.bpe import train_bpe
from cs336_basics.data.chunking import (
    EOT,
    byte_bar,
    cannot_write,
    check_errors_mode,
    check_text_file,
    iter_documents,
    status,
)
from cs336_basics.data.layout import BPE_TRAINERS
from cs336_basics.data.tokenizer import (
    Tokenizer,
    configure_byte_level,
    parse_tokenizer_json,
    special_added_tokens,
)
from cs336_basics.errors import UserError

SPECIAL_TOKENS = (EOT,)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
DEFAULT_VOCAB_SIZE = 10_000
DOCS_PER_BATCH = 1000
DEFAULT_BPE = "cs336"  # the course's merges; see benchmarks/README.md "BPE training" for the cost


def check_bpe(bpe: str) -> str:
    if bpe not in BPE_TRAINERS:
        raise UserError(f"--bpe must be one of {', '.join(BPE_TRAINERS)}, not {bpe!r}")
    return bpe


def meta_path(tokenizer_path: str | os.PathLike) -> Path:
    """``tokenizer.json`` -> ``tokenizer.meta.json`` (same directory)."""
    p = Path(tokenizer_path)
    return p.with_name(p.stem + ".meta.json")


def check_vocab_size(vocab_size: int) -> int:
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least {MIN_VOCAB_SIZE} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special token); pass a larger --vocab-size"
        )
    return vocab_size


def train_from_documents(
    documents: Iterable[str | list[str]], vocab_size: int, *, progress: bool = False
) -> Tokenizer:
    """Train on an iterable of documents (or lists of documents) without ``<|endoftext|>`` in them.

    Raises ``UserError`` if the text is too small to reach ``vocab_size``.
    """
    check_vocab_size(vocab_size)
    hf = configure_byte_level(HFTokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_added_tokens(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    hf.train_from_iterator(documents, trainer=trainer)
    return _check_reached(Tokenizer(*parse_tokenizer_json(hf.to_str())), vocab_size)


def _check_reached(tok: Tokenizer, vocab_size: int) -> Tokenizer:
    if tok.vocab_size < vocab_size:
        raise UserError(
            f"the training text only supports {tok.vocab_size} tokens, fewer than --vocab-size {vocab_size}; "
            f"pass --vocab-size {tok.vocab_size} or use more text"
        )
    return tok


def _batched(docs: Iterable[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _announce_end(batches: Iterator[list[str]], bar: tqdm) -> Iterator[list[str]]:
    yield from batches
    bar.set_postfix_str("computing merges...")


def train_tokenizer(
    text_path: str | os.PathLike,
    out_path: str | os.PathLike,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    *,
    bpe: str = DEFAULT_BPE,
    errors: str = "strict",
    progress: bool = True,
    out_flag: str = "--output",
) -> Tokenizer:
    """Train on ``text_path`` with trainer ``bpe`` and save ``out_path`` (``tokenizer.json``) plus its meta.
    ``out_flag`` is the option that chose ``out_path``, named if it cannot be written."""
    check_vocab_size(vocab_size)
    check_bpe(bpe)
    check_errors_mode(errors)
    size = check_text_file(text_path)
    if bpe == "cs336":
        status(progress, f"train tokenizer {Path(text_path).name} (cs336 BPE, vocab {vocab_size})...")
        vocab, merges = train_bpe(text_path, vocab_size, list(SPECIAL_TOKENS), errors=errors)
        tok = _check_reached(Tokenizer(vocab, merges, SPECIAL_TOKENS), vocab_size)
    else:
        with byte_bar(f"train tokenizer {Path(text_path).name}", size, progress) as bar:
            docs = iter_documents(text_path, errors, on_bytes=bar.update)
            tok = train_from_documents(_announce_end(_batched(docs, DOCS_PER_BATCH), bar), vocab_size)
    try:
        tok.save(out_path)
        tok = Tokenizer.from_files(out_path)
        atomic_write_json(
            meta_path(out_path),
            {
                "bpe": bpe,
                "vocab_size": vocab_size,
                "special_tokens": list(SPECIAL_TOKENS),
                "tokenizer_sha256": tok.sha256,
                "source": {"path": str(text_path), "size": size},
                "errors": errors,
            },
        )
    except OSError as err:
        raise cannot_write(f"write {out_path}", err, out_flag) from None
    return tok


def _read_meta(tokenizer_path: str | os.PathLike) -> dict:
    """The ``tokenizer.meta.json`` beside ``tokenizer_path`` (``{}`` if missing or unreadable), its ``bpe``
    filled in for tokenizers from before the choice existed: those are Hugging Face's."""
    try:
        meta = json.loads(meta_path(tokenizer_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {"bpe": "hf", **meta} if isinstance(meta, dict) else {}


def tokenizer_trainer(tokenizer_path: str | os.PathLike) -> str | None:
    """Which trainer made ``tokenizer_path`` (from its meta), or ``None`` without a meta file."""
    return _read_meta(tokenizer_path).get("bpe")


def tokenizer_is_current(
    tokenizer_path: str | os.PathLike, vocab_size: int, source_size: int, bpe: str = DEFAULT_BPE
) -> bool:
    """True if ``tokenizer_path`` loads, has ``<|endoftext|>``, and its meta matches trainer, vocab and source size."""
    meta = _read_meta(tokenizer_path)
    try:
        tok = Tokenizer.from_files(tokenizer_path)
    except (OSError, ValueError, UserError):
        return False
    return (
        meta.get("bpe") == bpe
        and meta.get("vocab_size") == vocab_size
        and meta.get("tokenizer_sha256") == tok.sha256
        and (meta.get("source") or {}).get("size") == source_size
        and tok.eot_id is not None
        and tok.vocab_size == vocab_size
    )
