"""Encode a text file into a token file (``.npy`` + sidecar), streaming, on all cores.

The file is read in chunks cut at ``<|endoftext|>`` (see ``chunking``); each chunk's documents go to the
tokenizer's ``encode_batch`` (Rust, multi-threaded) and the ids are appended to the ``.npy`` as they come, so
memory stays bounded by the chunk size whatever the file size. Python-side work on one chunk overlaps
with the encoding of the next.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cs336_basics.data.chunking import (
    byte_bar,
    cannot_write,
    check_errors_mode,
    check_text_file,
    iter_chunks,
    split_documents,
)
from cs336_basics.data.token_file import TokenSink, dtype_for_vocab, sidecar_path, token_writer, write_sidecar
from cs336_basics.data.tokenizer import Tokenizer
from cs336_basics.data.train_tokenizer import tokenizer_trainer

CHUNK_CHARS = 4 << 20
PARALLELISM_ENV = "TOKENIZERS_PARALLELISM"
_FALSEY = {"", "0", "false", "off", "no", "n", "f"}


def parallelism_disabled() -> bool:
    """True if ``TOKENIZERS_PARALLELISM`` is set to a false value (which makes encoding single-threaded)."""
    return os.environ.get(PARALLELISM_ENV, "true").strip().lower() in _FALSEY


def enable_parallelism() -> None:
    """Turn ``tokenizers`` multi-threading back on. Only call this early in a fresh process (a CLI main):
    ``tokenizers`` sets the variable to false itself in a child forked after its thread pool started."""
    if parallelism_disabled():
        os.environ[PARALLELISM_ENV] = "true"


def encode_overlapped(
    tok: Tokenizer, chunks: Iterable[str], sink: TokenSink, written: Callable[[], object]
) -> None:
    """Encode chunk k+1 on the tokenizer's thread pool while this thread writes the ids of chunk k.

    ``encode_batch`` releases the GIL, so reading, splitting and converting ids to bytes (the Python
    side, ~7% of the work) overlap with encoding instead of leaving the cores idle. At most two chunks
    are in flight.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode") as pool:
        submitted = (pool.submit(tok.encode_batch, split_documents(chunk)) for chunk in chunks)
        previous: Future | None = None
        for current in itertools.chain(submitted, [None]):  # the final None writes the last chunk
            if previous is not None:
                sink.write_lists(previous.result())
                written()
            previous = current


def encode_file(
    text_path: str | os.PathLike,
    tokenizer: Tokenizer | str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    errors: str = "strict",
    progress: bool = True,
    chunk_chars: int = CHUNK_CHARS,
    out_flag: str = "--output",
) -> dict[str, Any]:
    """Encode ``text_path`` into ``out_path`` (``.npy``) and its sidecar; return the sidecar dict.
    ``out_flag`` is the option that chose ``out_path``, named if it cannot be written."""
    check_errors_mode(errors)
    size = check_text_file(text_path)
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_files(tokenizer)
    if parallelism_disabled():
        print(
            f"note: {PARALLELISM_ENV} is false, so encoding uses one core; unset it for speed",
            file=sys.stderr,
        )
    dtype = dtype_for_vocab(tok.vocab_size)
    hasher = hashlib.sha256()
    out_path = Path(out_path)
    try:
        sidecar_path(out_path).unlink(missing_ok=True)  # never leave an old sidecar beside new ids
        with (
            byte_bar(f"tokenize {Path(text_path).name}", size, progress) as bar,
            token_writer(out_path, dtype) as sink,
        ):
            read: list[int] = []  # bytes read since the last update: the bar moves as ids are written

            def written() -> None:
                bar.update(sum(read))
                read.clear()

            chunks = iter_chunks(
                text_path, errors, chunk_chars=chunk_chars, hasher=hasher, on_bytes=read.append
            )
            encode_overlapped(tok, chunks, sink, written)
        meta = {
            "dtype": dtype.name,
            "num_tokens": sink.count,
            "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id,
            "tokenizer_sha256": tok.sha256,
            "tokenizer_path": str(tok.path) if tok.path else None,
            "bpe": tokenizer_trainer(tok.path) if tok.path else None,
            "source": {"path": str(text_path), "size": size, "sha256": hasher.hexdigest()},
            "errors": errors,
            "tokens_sha256": sink.sha256,
        }
        write_sidecar(out_path, **meta)
    except OSError as err:
        raise cannot_write(f"write {out_path}", err, out_flag) from None
    return meta
