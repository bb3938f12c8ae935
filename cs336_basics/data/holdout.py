"""Hold out a small, deterministic validation split of a plain text file.

Every ``VALID_EVERY``-th document (separated by ``<|endoftext|>``) goes to ``valid.txt``, the rest to
``train.txt``; at least one is held out. A file with no separator at all is split by lines instead.
``split.json`` records the source (path, size, mtime) so an unchanged source is not split again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from cs336_basics.atomic import atomic_write, atomic_write_json
from cs336_basics.data.chunking import EOT, iter_chunks, iter_documents, status
from cs336_basics.errors import UserError

VALID_EVERY = 50


def _units(source: Path, errors: str, by_lines: bool) -> Iterator[str]:
    if by_lines:
        with open(source, encoding="utf-8", errors=errors, newline="") as f:
            yield from (line.rstrip("\r\n") for line in f if line.strip())
    else:
        yield from (doc.strip("\n") for doc in iter_documents(source, errors) if doc.strip())


def split_plain_file(
    source: Path, directory: Path, *, errors: str = "strict", progress: bool = True
) -> dict[str, Path]:
    """Hold out every ``VALID_EVERY``-th document of ``source`` (the last one if there are fewer).

    Documents are separated by ``<|endoftext|>``; a file without separators is split by lines instead.
    Streams the file; writes ``train.txt``/``valid.txt`` (+ ``split.json``) unless they already match.
    """
    paths = {"train": directory / "train.txt", "valid": directory / "valid.txt"}
    stat = source.stat()
    record = {
        "source": str(source.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "every": VALID_EVERY,
    }
    with contextlib.suppress(OSError, ValueError):
        if json.loads((directory / "split.json").read_text(encoding="utf-8")) == record and all(
            p.is_file() for p in paths.values()
        ):
            return paths
    by_lines = not any(EOT in chunk for chunk in iter_chunks(source, errors))
    count = sum(1 for _ in _units(source, errors, by_lines))
    if count < 2:
        raise UserError(
            f"{source} has a single document, so none can be held out; pass --valid <path to a .txt>"
        )
    held = set(range(VALID_EVERY - 1, count, VALID_EVERY)) or {count - 1}
    sep = "\n" if by_lines else f"\n{EOT}\n"
    with atomic_write(paths["train"], "wb") as train, atomic_write(paths["valid"], "wb") as valid:
        for i, unit in enumerate(_units(source, errors, by_lines)):
            (valid if i in held else train).write((unit + sep).encode("utf-8"))
    atomic_write_json(directory / "split.json", record)
    status(progress, f"split {source}: {len(held)} of {count} documents held out in {paths['valid']}")
    return paths
