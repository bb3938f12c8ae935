"""Token files: a 1-D ``.npy`` of token ids plus a JSON sidecar that says what is in it.

``train.npy`` holds the ids (little-endian ``uint16``, or ``uint32`` when the vocab exceeds 65,535);
``train.npy.json`` (the ``.npy`` path plus ``.json``) records::

    {"format": "cs336-token-file", "version": 1, "dtype": "uint16", "num_tokens": 123,
     "vocab_size": 10000, "eot_id": 0, "tokenizer_sha256": "...", "tokenizer_path": "...",
     "bpe": "cs336", "source": {"path": "...", "size": 456, "sha256": "..."}, "errors": "strict",
     "tokens_sha256": "..."}

``tokens_sha256`` is the sha256 of the ids as stored (the ``.npy`` body); sidecars written before it existed
lack it and still read. ``load_token_file`` checks the two against each other (and against the caller's vocab
size and tokenizer), checks the ids' sha256 and that every id is below the vocab size (one pass over the file,
about 0.7 s per GB) and memory-maps the ids.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from cs336_basics.atomic import atomic_write, atomic_write_json
from cs336_basics.data.layout import token_file_advice
from cs336_basics.data.tokenizer import file_sha256
from cs336_basics.errors import UserError

FORMAT = "cs336-token-file"
VERSION = 1
SIDECAR_FIELDS = ("dtype", "num_tokens", "vocab_size", "tokenizer_sha256", "source")


def sidecar_path(npy_path: str | os.PathLike) -> Path:
    """``train.npy`` -> ``train.npy.json``."""
    return Path(f"{os.fspath(npy_path)}.json")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """``uint16`` while every id fits (vocab <= 65,535), else ``uint32``; always little-endian."""
    return np.dtype("<u2") if vocab_size <= 65_535 else np.dtype("<u4")


class TokenSink:
    """Appends id arrays to an open ``.npy`` body and counts them."""

    def __init__(self, f: IO[bytes], dtype: np.dtype):
        self._f = f
        self.dtype = dtype
        self.count = 0
        self._hasher = hashlib.sha256()

    @property
    def sha256(self) -> str:
        """The sha256 of the ids written so far, as stored: the sidecar's ``tokens_sha256``."""
        return self._hasher.hexdigest()

    def _write_bytes(self, data: bytes) -> None:
        self._f.write(data)
        self._hasher.update(data)

    def write(self, ids: Any) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self._write_bytes(arr.tobytes())
        self.count += arr.size

    def write_lists(self, id_lists: Iterable[list[int]]) -> None:
        """Append lists of Python ints (what ``tokenizers`` returns); faster than ``np.asarray`` per list."""
        arr = array.array(self._typecode)
        for ids in id_lists:
            arr.fromlist(ids)  # OverflowError if an id does not fit the dtype
        if sys.byteorder != "little":
            arr.byteswap()
        self._write_bytes(arr.tobytes())
        self.count += len(arr)

    @property
    def _typecode(self) -> str:
        return next(c for c in "HIL" if array.array(c).itemsize == self.dtype.itemsize)


def _npy_header(dtype: np.dtype, n: int) -> dict[str, Any]:
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}


@contextlib.contextmanager
def token_writer(path: str | os.PathLike, dtype: np.dtype) -> Iterator[TokenSink]:
    """Stream ids into ``path`` (a ``.npy``): written to a temp file, header fixed up, then renamed.

    numpy pads the header so the length can be rewritten in place, so ids go straight to disk.
    """
    with atomic_write(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, _npy_header(dtype, 0))
        data_start = f.tell()
        sink = TokenSink(f, dtype)
        yield sink
        end = f.tell()
        f.seek(0)
        np.lib.format.write_array_header_1_0(f, _npy_header(dtype, sink.count))
        if f.tell() != data_start:
            raise RuntimeError("npy header changed length; cannot patch it in place")
        f.seek(end)


def write_sidecar(npy_path: str | os.PathLike, **fields: Any) -> Path:
    """Write ``<npy_path>.json`` atomically with the standard header fields plus ``fields``."""
    path = sidecar_path(npy_path)
    atomic_write_json(path, {"format": FORMAT, "version": VERSION, **fields})
    return path


def read_sidecar(npy_path: str | os.PathLike) -> dict[str, Any]:
    """Parse and check the sidecar of ``npy_path``; ``UserError`` if it is missing or malformed."""
    path = sidecar_path(npy_path)
    if not path.is_file():
        raise UserError(
            f"sidecar {path} is missing (it describes {Path(npy_path).name}); {token_file_advice(npy_path)}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"sidecar {path} is not valid JSON ({err}); {token_file_advice(npy_path)}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"sidecar {path} is not a {FORMAT} sidecar; {token_file_advice(npy_path)}")
    missing = [k for k in SIDECAR_FIELDS if k not in meta]
    if missing:
        raise UserError(f"sidecar {path} lacks field(s) {', '.join(missing)}; {token_file_advice(npy_path)}")
    if meta.get("version") != VERSION:
        raise UserError(
            f"sidecar {path} has version {meta.get('version')}, expected {VERSION}; {token_file_advice(npy_path)}"
        )
    return meta


def require_token_file(path) -> Path:
    """``path`` as a Path if it is a file; else one line saying how to build it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"token file {path} is a directory; pass a .npy file inside it (e.g. {path / 'train.npy'})"
        )
    if not path.is_file():
        raise UserError(
            f"token file {path} does not exist; build it with "
            f"`cs336-data tokenize --input TEXT --tokenizer TOKENIZER --output {path}`"
        )
    return path


def load_token_file(
    path: str | os.PathLike,
    *,
    vocab_size: int | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> np.memmap:
    """Memory-map the 1-D token array at ``path`` after checking it against its sidecar.

    Raises ``UserError`` (one line) for a missing or corrupt ``.npy`` or sidecar, a token count that
    disagrees with the sidecar, an id at or above the sidecar's vocab size, or a vocab size / tokenizer
    that differs from the ones passed.
    """
    path = require_token_file(path)
    meta = read_sidecar(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable .npy file ({err}); {token_file_advice(path)}") from None
    if not isinstance(arr, np.memmap) or arr.ndim != 1 or arr.dtype not in (np.dtype("<u2"), np.dtype("<u4")):
        raise UserError(f"{path} is not a 1-D uint16/uint32 token array; {token_file_advice(path)}")
    expected_bytes = arr.offset + arr.nbytes
    actual_bytes = path.stat().st_size
    if actual_bytes != expected_bytes:
        raise UserError(
            f"{path} has {actual_bytes} bytes but its header implies {expected_bytes}; {token_file_advice(path)}"
        )
    if arr.dtype.name != meta["dtype"]:
        raise UserError(
            f"{path} holds {arr.dtype.name} but its sidecar says {meta['dtype']}; {token_file_advice(path)}"
        )
    if len(arr) != meta["num_tokens"]:
        raise UserError(
            f"{path} holds {len(arr)} tokens but its sidecar says {meta['num_tokens']} (truncated or stale); {token_file_advice(path)}"
        )
    top, digest = scan_ids(arr)
    if top >= meta["vocab_size"]:
        raise UserError(
            f"{path} holds token id {top}, outside its vocab of {meta['vocab_size']} (corrupt or encoded "
            f"with another tokenizer); {token_file_advice(path)}"
        )
    if meta.get("tokens_sha256") not in (None, digest):
        raise UserError(
            f"{path}: its ids are not the ones encoded (their sha256 differs from its sidecar's tokens_sha256: "
            f"the file was changed or corrupted since); {token_file_advice(path)}"
        )
    if vocab_size is not None and vocab_size != meta["vocab_size"]:
        raise UserError(
            f"{path} was encoded with vocab size {meta['vocab_size']}, not {vocab_size}; "
            f"pass --vocab-size {meta['vocab_size']} or re-encode it with a tokenizer of {vocab_size} tokens"
        )
    if tokenizer_path is not None:
        if not Path(tokenizer_path).is_file():
            raise UserError(
                f"tokenizer file {tokenizer_path} does not exist; pass the tokenizer.json used for {path}"
            )
        if file_sha256(tokenizer_path) != meta["tokenizer_sha256"]:
            raise UserError(
                f"{path} was encoded with a different tokenizer than {tokenizer_path} (sha256 differs); "
                "re-encode it with `cs336-data tokenize` or pass the matching tokenizer"
            )
    return arr


def scan_ids(arr: np.ndarray, block: int = 1 << 24) -> tuple[int, str]:
    """The largest id in ``arr`` (-1 if empty) and the sha256 of its ids as stored, in one pass over blocks
    (a memmap never needs a full-size temporary)."""
    top, hasher = -1, hashlib.sha256()
    for start in range(0, len(arr), block):
        part = np.ascontiguousarray(arr[start : start + block])
        top = max(top, int(part.max()))
        hasher.update(part)
    return top, hasher.hexdigest()


def token_file_problem(
    path: str | os.PathLike, *, vocab_size: int, tokenizer_path: str | os.PathLike, source_size: int
) -> str | None:
    """Why ``path`` cannot be reused for this tokenizer and source (one line), or ``None`` if it can."""
    try:
        load_token_file(path, vocab_size=vocab_size, tokenizer_path=tokenizer_path)
        meta = read_sidecar(path)
    except UserError as err:
        return str(err)
    if (meta.get("source") or {}).get("size") != source_size:
        return f"{path} was encoded from a source of a different size"
    return None
