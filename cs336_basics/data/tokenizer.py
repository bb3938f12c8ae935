"""``Tokenizer``: byte-level BPE (GPT-2 style) with CS336's interface, built from ``vocab`` and ``merges``.

``Tokenizer(vocab, merges, special_tokens)`` is the definition: text is split on the special tokens
(longest first), each piece is cut into GPT-2 pre-tokens, and each pre-token's bytes are merged by
repeatedly applying the lowest-ranked merge present. ``encode`` does exactly that in Python.

For bulk work (``encode_batch``, tokenizing GBs) the same vocab and merges are loaded into a Hugging Face
``tokenizers`` BPE, which computes the same ids in Rust on all cores (the tests check the two agree).

On disk: ``save(path)`` writes one ``tokenizer.json`` (Hugging Face's format, what the data pipeline
passes around); ``save(vocab_path, merges_path)`` writes GPT-2's ``vocab.json`` + ``merges.txt``.
``from_files`` reads either. Byte-level means every string round-trips: ``decode(encode(s)) == s``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property, lru_cache, partial
from pathlib import Path

import regex
from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from cs336_basics.atomic import atomic_write
from cs336_basics.data.bpe import PAT, bytes_to_unicode, merge_pair, special_token_pattern
from cs336_basics.data.chunking import EOT, rechunk, safe_cut
from cs336_basics.data.layout import tokenizer_advice
from cs336_basics.errors import UserError

ITERABLE_CHUNK_CHARS = 1 << 16
CACHE_ENTRIES = 1 << 14  # pre-token -> ids memo, least recently used dropped: memory stays flat on any input


def configure_byte_level(hf: HFTokenizer) -> HFTokenizer:
    """Set GPT-2 byte-level pre-tokenization and decoding on ``hf`` (no prefix space, no offset trimming)."""
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    return hf


def special_added_tokens(special_tokens: Iterable[str]) -> list[AddedToken]:
    return [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in special_tokens]


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_CHAR_OF_BYTE = bytes_to_unicode()
_BYTE_OF_CHAR = {c: b for b, c in _CHAR_OF_BYTE.items()}


def _to_unicode(token: bytes) -> str:
    return "".join(_CHAR_OF_BYTE[b] for b in token)


def _from_unicode(text: str) -> bytes:
    """GPT-2 string -> bytes; a string with characters outside the byte map is taken as raw UTF-8 (a
    special token such as ``<|endoftext|>`` stored verbatim)."""
    try:
        return bytes(_BYTE_OF_CHAR[c] for c in text)
    except KeyError:
        return text.encode("utf-8")


def _parse_merge(merge: str | list[str]) -> tuple[bytes, bytes]:
    """One merge as ``merges.txt`` and older ``tokenizer.json`` files write it (``"a b"``), or as a pair."""
    a, b = merge.split(" ") if isinstance(merge, str) else merge
    return _from_unicode(a), _from_unicode(b)


class Tokenizer:
    """Encode text to token ids and back (CS336 ``Tokenizer``). Also ``Tokenizer.from_files(...)``."""

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        *,
        path: Path | None = None,
        sha256: str | None = None,
    ):
        self.vocab = dict(vocab)
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self.special_tokens = list(dict.fromkeys(special_tokens or ()))
        self.id_of = {token: i for i, token in self.vocab.items()}
        for token in self.special_tokens:  # a special token missing from the vocab gets the next id
            raw = token.encode("utf-8")
            if raw not in self.id_of:
                self.id_of[raw] = new = max(self.vocab, default=-1) + 1
                self.vocab[new] = raw
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        pattern = special_token_pattern(self.special_tokens)
        self._special_split = regex.compile(f"({pattern.pattern})") if pattern else None
        self._longest_special = max((len(t) for t in self.special_tokens), default=0)
        self._encode_pretoken = lru_cache(maxsize=CACHE_ENTRIES)(self._encode_pretoken_uncached)
        self.path = path
        self._sha256 = sha256

    # ---- construction from files ---------------------------------------------------------------
    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike | None = None,
        special_tokens: Sequence[str] | None = None,
    ) -> Tokenizer:
        """Load GPT-2 ``vocab.json`` + ``merges.txt`` (CS336 form), or one ``tokenizer.json`` (no merges path).

        With ``vocab.json`` the ``special_tokens`` are added (none by default); a ``tokenizer.json``
        carries its own, and ``special_tokens`` adds more.
        """
        path = Path(vocab_filepath)
        if path.is_dir():
            raise UserError(
                f"tokenizer file {path} is a directory; pass the tokenizer.json inside it "
                f"(e.g. {path / 'tokenizer.json'})"
            )
        if not path.is_file():
            raise UserError(f"tokenizer file {path} does not exist; run `cs336-data train-tokenizer` first")
        if merges_filepath is None:
            vocab, merges, specials = _read_tokenizer_json(path)
            return cls(
                vocab, merges, [*specials, *(special_tokens or ())], path=path, sha256=file_sha256(path)
            )
        merges_path = Path(merges_filepath)
        if not merges_path.is_file():
            raise UserError(
                f"merges file {merges_path} does not exist; pass the merges.txt saved with {path.name}"
            )
        try:
            raw_vocab = json.loads(path.read_text(encoding="utf-8"))
            vocab = {int(i): _from_unicode(s) for s, i in raw_vocab.items()}
            lines = merges_path.read_text(encoding="utf-8").splitlines()
            merges = [_parse_merge(m) for m in lines if m.strip() and not m.startswith("#version")]
        except (ValueError, AttributeError) as err:
            raise UserError(f"cannot read BPE vocab {path} / merges {merges_path} ({err})") from None
        return cls(vocab, merges, special_tokens)

    # ---- what it is ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>``, or ``None`` if this tokenizer has no such token."""
        return self.id_of.get(EOT.encode("utf-8"))

    @property
    def sha256(self) -> str:
        """sha256 of the file it was loaded from, else of the ``tokenizer.json`` that ``save`` would write."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self._json_bytes()).hexdigest()
        return self._sha256

    # ---- encoding --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        pieces = self._special_split.split(text) if self._special_split else [text]
        for k, piece in enumerate(pieces):
            if k % 2:  # odd pieces are the special tokens captured by the split
                ids.append(self.id_of[piece.encode("utf-8")])
                continue
            for word in PAT.findall(piece):
                ids.extend(self._encode_pretoken(word))
        return ids

    def _encode_pretoken_uncached(self, word: str) -> list[int]:
        parts = [bytes([b]) for b in word.encode("utf-8")]
        ranks = self.ranks
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if best not in ranks:
                break
            parts = merge_pair(parts, best, best[0] + best[1])
        return [self.id_of[p] for p in parts]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts at once: in Rust on all cores when the vocab fits Hugging Face's BPE."""
        if self.hf is None:
            return [self.encode(t) for t in texts]
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def encode_iterable(
        self, iterable: Iterable[str], *, chunk_chars: int = ITERABLE_CHUNK_CHARS
    ) -> Iterator[int]:
        """Lazily encode a stream of strings (e.g. an open file) exactly as if it were one string.

        Text is buffered up to ``chunk_chars`` and encoded up to a cut that no pre-token or special token
        crosses (``chunking.safe_cut``), so memory stays bounded (plus the longest run without a space or
        newline).
        """
        cut = partial(safe_cut, special=self._special_split, hold=self._longest_special)
        for chunk in rechunk(iterable, chunk_chars, cut):
            yield from self.encode(chunk)

    def decode(self, ids: Iterable[int]) -> str:
        """Concatenate the tokens' bytes and decode as UTF-8 (invalid sequences become U+FFFD)."""
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")

    # ---- the Hugging Face fast path and serialisation ---------------------------------------------
    @cached_property
    def hf(self) -> HFTokenizer | None:
        """The same tokenizer as a Hugging Face BPE, or ``None`` if its vocab cannot be expressed there
        (two ids whose GPT-2 strings coincide, e.g. a special token equal to a learned token)."""
        specials = {t.encode("utf-8") for t in self.special_tokens}
        vocab = {(t.decode("utf-8") if t in specials else _to_unicode(t)): i for i, t in self.vocab.items()}
        if len(vocab) != len(self.vocab):
            return None
        merges = [(_to_unicode(a), _to_unicode(b)) for a, b in self.merges]
        hf = configure_byte_level(HFTokenizer(models.BPE(vocab=vocab, merges=merges)))
        hf.add_special_tokens(special_added_tokens(self.special_tokens))
        return hf

    def _json_bytes(self) -> bytes:
        if self.hf is None:
            raise UserError(
                "this tokenizer's vocab cannot be written as tokenizer.json; save vocab.json + merges.txt"
            )
        return self.hf.to_str(pretty=True).encode("utf-8")

    def save(self, path: str | os.PathLike, merges_path: str | os.PathLike | None = None) -> None:
        """Write ``tokenizer.json`` atomically, or with ``merges_path`` GPT-2's ``vocab.json`` + ``merges.txt``."""
        if merges_path is None:
            with atomic_write(path, "wb") as f:  # bytes: independent of the locale's encoding
                f.write(self._json_bytes())
            return
        vocab = {_to_unicode(t): i for i, t in sorted(self.vocab.items())}
        with atomic_write(path, "wb") as f:
            f.write(json.dumps(vocab, ensure_ascii=False, indent=1).encode("utf-8"))
        lines = ["#version: 0.2", *(f"{_to_unicode(a)} {_to_unicode(b)}" for a, b in self.merges)]
        with atomic_write(merges_path, "wb") as f:
            f.write(("\n".join(lines) + "\n").encode("utf-8"))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, path={str(self.path) if self.path else None!r})"


def _read_tokenizer_json(path: Path) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path} ({_first_line(err)}); {tokenizer_advice(path)}") from None
    return parse_tokenizer_json(text, path)


def parse_tokenizer_json(text: str, where: str | os.PathLike | None = None):
    """(vocab, merges, special tokens) of a Hugging Face byte-level BPE ``tokenizer.json`` (its text), read
    from the file ``where`` (``None``: text from memory, e.g. a trainer's output)."""
    try:
        data = json.loads(text)
        model = data["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"model type {model.get('type')!r}, not BPE")
        added = {t["id"]: t["content"] for t in data.get("added_tokens") or []}
        vocab = {i: _from_unicode(s) for s, i in model["vocab"].items()}
        vocab.update({i: content.encode("utf-8") for i, content in added.items()})  # stored verbatim
        merges = [_parse_merge(m) for m in model["merges"]]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        if where is None:  # not from a file: nothing the user can pass instead
            raise ValueError(f"not a valid tokenizer.json ({_first_line(err)})") from err
        raise UserError(
            f"{where} is not a valid tokenizer.json ({_first_line(err)}); {tokenizer_advice(where)}"
        ) from None
    return vocab, merges, [c for _, c in sorted(added.items())]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
