"""Read a text file as a stream of chunks that can be tokenized independently (and report progress).

A chunk always ends at a *safe cut*: right after an ``<|endoftext|>`` (the tokenizer splits on special
tokens before anything else), or, in a long stretch without one, between a non-space character and a
space/newline (a GPT-2 pre-token never spans such a boundary). Encoding the chunks one by one therefore
gives exactly the ids of encoding the whole text at once, with memory bounded by the chunk size.
"""

from __future__ import annotations

import codecs
import errno
import functools
import hashlib
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import regex
from tqdm import tqdm

from cs336_basics.errors import UserError
from cs336_basics.formatting import duration, size

EOT = "<|endoftext|>"
EOT_PATTERN = regex.compile(regex.escape(EOT))
ERRORS_CHOICES = ("strict", "replace")
BLOCK_BYTES = 1 << 20


def status(progress: bool, message: str) -> None:
    """One status line on stderr, unless progress output is off (``--no-progress``)."""
    if progress:
        print(message, file=sys.stderr)


def byte_bar(desc: str, total: int | None, progress: bool, initial: int = 0) -> tqdm | PlainByteCount:
    """Progress counting bytes on stderr, hidden unless ``progress``: a bar on a terminal, plain lines elsewhere
    (SLURM logs, nohup, CI), as a run's progress is."""
    if progress and not sys.stderr.isatty():
        return PlainByteCount(desc, total, initial)
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=desc, disable=not progress)


class PlainByteCount:
    """A byte counter for a log: one line at each tenth of ``total`` passed and one at the end, no ``\\r``."""

    def __init__(self, desc: str, total: int | None, initial: int = 0):
        self.desc, self.total, self.n, self.start = desc, total, initial, time.perf_counter()
        self.tenths = 10 * initial // total if total else 0

    def update(self, n: int) -> None:
        self.n += n
        if self.total and 10 * self.n // self.total > self.tenths and self.n < self.total:
            self.tenths = 10 * self.n // self.total
            self._line(f"{size(self.n)} of {size(self.total)} ({10 * self.tenths}%)")

    def set_postfix_str(self, text: str) -> None:
        self._line(text)

    def _line(self, text: str) -> None:
        print(f"{self.desc}: {text}", file=sys.stderr, flush=True)

    def __enter__(self) -> PlainByteCount:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._line(f"{size(self.n)} done in {duration(time.perf_counter() - self.start)}")


def check_text_file(path: str | os.PathLike) -> int:
    """Return the size of a readable, non-empty text file, or raise ``UserError`` saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"text file {path} does not exist; check the path")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file; pass a .txt file")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"text file {path} is empty; pass a file with some text in it")
    return size


def check_errors_mode(errors: str) -> str:
    if errors not in ERRORS_CHOICES:
        raise UserError(f"--errors must be one of {', '.join(ERRORS_CHOICES)}, not {errors!r}")
    return errors


def cannot_write(action: str, err: OSError, flag: str = "--data-dir") -> UserError:
    """The error for a failed write: ``action`` says what (``"write data.npy"``), then the advice, which
    names ``flag``, the option that chose the place (``--data-dir``, ``--output``)."""
    if err.errno == errno.ENOSPC:
        return UserError(f"cannot {action} ({err.strerror or err}); free some space and re-run")
    return UserError(f"cannot {action} ({err.strerror or err}); choose a writable {flag}")


def not_utf8(path: str | os.PathLike, offset: int, err: UnicodeDecodeError) -> UserError:
    """The error for ``err`` raised decoding the bytes of ``path`` that start at byte ``offset``."""
    return UserError(
        f"{path} is not valid UTF-8 at byte offset {offset + err.start} ({err.reason}); "
        "fix the file or pass --errors replace to substitute U+FFFD"
    )


def iter_decoded_blocks(
    path: str | os.PathLike,
    errors: str = "strict",
    *,
    block_bytes: int = BLOCK_BYTES,
    hasher: hashlib._Hash | None = None,
    on_bytes: Callable[[int], object] | None = None,
) -> Iterator[str]:
    """Yield the UTF-8 text of ``path`` in pieces of about ``block_bytes`` bytes.

    With ``errors="strict"`` an invalid byte raises ``UserError`` naming its byte offset. ``hasher``
    (e.g. ``hashlib.sha256()``) is fed the raw bytes; ``on_bytes(n)`` is called after each read.
    """
    check_errors_mode(errors)
    check_text_file(path)
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0
    with open(path, "rb") as f:
        blocks = iter(functools.partial(f.read, block_bytes), b"")
        for raw in itertools.chain(blocks, [b""]):  # the final b"" flushes the decoder
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                raise not_utf8(path, offset - pending, err) from None
            offset += len(raw)
            if hasher is not None:
                hasher.update(raw)
            if on_bytes is not None and raw:
                on_bytes(len(raw))
            if text:
                yield text


def safe_cut(text: str, special: regex.Pattern | None = EOT_PATTERN, hold: int = 0) -> int:
    """An index ``i`` where ``text[:i]`` and ``text[i:]`` tokenize like ``text``, whatever follows; 0 if none.

    It is the end of the last special token (what ``special`` matches), else the last space/newline that
    follows a non-space (no GPT-2 pre-token spans that). The last ``hold`` characters are left alone: a
    special token could still be completing there (``<|endoftext|>`` alone, with no space in it and no
    longer token starting with it, needs none).
    """
    limit = max(len(text) - hold, 0)
    end, after_special = limit, 0
    for m in special.finditer(text) if special is not None else ():
        if m.end() > limit:
            end = m.start()
            break
        after_special = m.end()
    if after_special:
        return after_special
    for sep in ("\n", " "):
        i = text.rfind(sep, 1, end + 1)
        while i > 0:
            if not text[i - 1].isspace():
                return i
            i = text.rfind(sep, 1, i)
    return 0


def rechunk(pieces: Iterable[str], chunk_chars: int, cut: Callable[[str], int] = safe_cut) -> Iterator[str]:
    """Regroup text pieces into chunks of at least ``chunk_chars`` characters, each ending where ``cut`` says.

    The chunks concatenate to exactly ``"".join(pieces)``. A stretch with no safe cut at all (e.g. a
    megabyte without a space) is kept whole, so memory is bounded by the longest such stretch.
    """
    buf: list[str] = []
    size = 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size >= chunk_chars:
            text = "".join(buf)
            at = cut(text)
            if at:
                yield text[:at]
            buf, size = [text[at:]], len(text) - at
    if size:
        yield "".join(buf)


def iter_chunks(
    path: str | os.PathLike,
    errors: str = "strict",
    *,
    chunk_chars: int = BLOCK_BYTES,
    hasher: hashlib._Hash | None = None,
    on_bytes: Callable[[int], object] | None = None,
) -> Iterator[str]:
    """Yield the text of ``path`` in chunks of about ``chunk_chars`` characters that end at safe cuts."""
    blocks = iter_decoded_blocks(
        path, errors, block_bytes=max(1, min(chunk_chars, BLOCK_BYTES)), hasher=hasher, on_bytes=on_bytes
    )
    yield from rechunk(blocks, chunk_chars)


def split_documents(chunk: str) -> list[str]:
    """Split a chunk on ``<|endoftext|>`` into documents, keeping each separator at its document's end."""
    parts = chunk.split(EOT)
    docs = [p + EOT for p in parts[:-1]]
    if parts[-1]:
        docs.append(parts[-1])
    return docs


def iter_documents(
    path: str | os.PathLike,
    errors: str = "strict",
    *,
    chunk_chars: int = BLOCK_BYTES,
    on_bytes: Callable[[int], object] | None = None,
) -> Iterator[str]:
    """Yield the documents of ``path`` (text between ``<|endoftext|>`` separators, without them).

    A chunk ends right after a separator whenever it holds one, so only a document longer than
    ``chunk_chars`` comes in several pieces (cut at safe cuts).
    """
    for chunk in iter_chunks(path, errors, chunk_chars=chunk_chars, on_bytes=on_bytes):
        *docs, last = chunk.split(EOT)
        yield from docs
        if last:
            yield last
