"""``Tokenizer``: a byte-level BPE tokenizer (GPT-2 style) backed by a Hugging Face ``tokenizer.json``.

Byte-level means every Unicode string round-trips: ``decode(encode(s)) == s``. ``<|endoftext|>`` is a
special token: one id, matched before pre-tokenization, so text on either side is never merged with it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from cs336_basics.atomic import atomic_write
from cs336_basics.data.chunking import EOT, rechunk
from cs336_basics.errors import UserError

SPECIAL_TOKENS = (EOT,)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
ITERABLE_CHUNK_CHARS = 1 << 16


def configure_byte_level(hf: HFTokenizer) -> HFTokenizer:
    """Set GPT-2 byte-level pre-tokenization and decoding on ``hf`` (no prefix space, no offset trimming)."""
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    return hf


def special_added_tokens(special_tokens: Iterable[str]) -> list[AddedToken]:
    return [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in special_tokens]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Tokenizer:
    """Encode text to token ids and back. Build with ``Tokenizer.from_files(...)``."""

    def __init__(self, hf: HFTokenizer, *, path: Path | None = None, sha256: str | None = None):
        self.hf = hf
        self.path = path
        self.sha256 = sha256 if sha256 is not None else hashlib.sha256(hf.to_str().encode()).hexdigest()

    @classmethod
    def from_files(
        cls,
        tokenizer_path: str | os.PathLike,
        merges_filepath: str | os.PathLike | None = None,
        special_tokens: Sequence[str] | None = None,
    ) -> Tokenizer:
        """Load a saved ``tokenizer.json``, or (CS336 style) a GPT-2 ``vocab.json`` + ``merges.txt`` pair.

        In the second form ``special_tokens`` are added as special tokens (none by default).
        """
        path = Path(tokenizer_path)
        if not path.is_file():
            raise UserError(f"tokenizer file {path} does not exist; run `cs336-data train-tokenizer` first")
        if merges_filepath is None:
            try:
                hf = HFTokenizer.from_file(str(path))
            except Exception as err:  # the Rust side raises a bare Exception on bad JSON
                raise UserError(
                    f"{path} is not a valid tokenizer.json ({_first_line(err)}); delete it and retrain"
                ) from None
            return cls(hf, path=path, sha256=file_sha256(path))
        merges = Path(merges_filepath)
        if not merges.is_file():
            raise UserError(
                f"merges file {merges} does not exist; pass the merges.txt saved with {path.name}"
            )
        try:
            hf = HFTokenizer(models.BPE.from_file(str(path), str(merges)))
        except Exception as err:
            raise UserError(f"cannot read BPE vocab {path} / merges {merges} ({_first_line(err)})") from None
        configure_byte_level(hf)
        if special_tokens:
            hf.add_special_tokens(special_added_tokens(special_tokens))
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>``, or ``None`` if this tokenizer has no such token."""
        return self.hf.token_to_id(EOT)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts at once, in parallel on all cores."""
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def encode_iterable(
        self, iterable: Iterable[str], *, chunk_chars: int = ITERABLE_CHUNK_CHARS
    ) -> Iterator[int]:
        """Lazily encode a stream of strings (e.g. an open file) as if it were one string.

        Memory stays bounded by ``chunk_chars`` (plus the longest run without a space or newline).
        """
        for chunk in rechunk(iterable, chunk_chars):
            yield from self.encode(chunk)

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` atomically."""
        with atomic_write(path, "wb") as f:  # bytes: independent of the locale's encoding
            f.write(self.hf.to_str(pretty=True).encode("utf-8"))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, path={str(self.path) if self.path else None!r})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
