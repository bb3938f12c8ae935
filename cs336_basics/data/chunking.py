"""Read a text file as a stream of chunks that can be tokenized independently.

A chunk always ends at a *safe cut*: right after an ``<|endoftext|>`` (the tokenizer splits on special
tokens before anything else), or, in a long stretch without one, between a non-space character and a
space/newline (a GPT-2 pre-token never spans such a boundary). Encoding the chunks one by one therefore
gives exactly the ids of encoding the whole text at once, with memory bounded by the chunk size.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cs336_basics.errors import UserError

EOT = "<|endoftext|>"
ERRORS_CHOICES = ("strict", "replace")
BLOCK_BYTES = 1 << 20


def check_text_file(path: str | os.PathLike) -> int:
    """Return the size of a readable, non-empty text file, or raise ``UserError`` saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"text file {path} does not exist; check the path (or run `cs336-data download`)")
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
        while True:
            raw = f.read(block_bytes)
            final = not raw
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as err:
                bad = offset - pending + err.start
                raise UserError(
                    f"{path} is not valid UTF-8 at byte offset {bad} ({err.reason}); "
                    "fix the file or pass --errors replace to substitute U+FFFD"
                ) from None
            if hasher is not None and raw:
                hasher.update(raw)
            offset += len(raw)
            if on_bytes is not None and raw:
                on_bytes(len(raw))
            if text:
                yield text
            if final:
                return


def safe_cut(text: str) -> int:
    """Largest index ``i`` such that ``text[:i]`` and ``text[i:]`` tokenize like ``text``; 0 if none.

    Prefers the end of the last ``<|endoftext|>``; otherwise the last space/newline that follows a
    non-space character.
    """
    eot = text.rfind(EOT)
    if eot >= 0:
        return eot + len(EOT)
    for sep in ("\n", " "):
        i = text.rfind(sep)
        while i > 0:
            if not text[i - 1].isspace():
                return i
            i = text.rfind(sep, 0, i - 1)
    return 0


def rechunk(pieces: Iterable[str], chunk_chars: int) -> Iterator[str]:
    """Regroup text pieces into chunks of at least ``chunk_chars`` characters, each ending at a safe cut.

    The chunks concatenate to exactly ``"".join(pieces)``. A stretch with no safe cut at all (e.g. a
    megabyte without a space) is kept whole, so memory is bounded by the longest such stretch.
    """
    buf: list[str] = []
    size = 0
    for piece in pieces:
        buf.append(piece)
        size += len(piece)
        if size < chunk_chars:
            continue
        text = "".join(buf)
        cut = safe_cut(text)
        if cut == 0:
            buf, size = [text], len(text)
            continue
        yield text[:cut]
        rest = text[cut:]
        buf, size = ([rest], len(rest)) if rest else ([], 0)
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

    A long stretch without a separator is yielded in pieces cut at safe cuts.
    """
    tail = ""
    for chunk in iter_chunks(path, errors, chunk_chars=chunk_chars, on_bytes=on_bytes):
        parts = (tail + chunk).split(EOT)
        tail = parts.pop()
        yield from parts
        if len(tail) >= chunk_chars:
            cut = safe_cut(tail)
            if cut:
                yield tail[:cut]
                tail = tail[cut:]
    if tail:
        yield tail
