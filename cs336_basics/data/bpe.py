"""``train_bpe``: byte-level BPE training from scratch, with CS336 assignment 1's exact semantics.

* Documents are split on the special tokens first, so no merge crosses or contains one; each piece is
  pre-tokenized with the GPT-2 regex ``PAT`` and only pairs inside one pre-token are counted.
* The vocabulary is the special tokens (ids 0..k-1, in the order given), then the 256 single bytes
  (ids k..k+255, in byte order), then one token per merge, in merge order.
* Each merge takes the most frequent pair; ties go to the lexicographically greatest ``(bytes, bytes)``.

Speed: pre-tokenization runs in parallel over byte ranges of the file whose boundaries fall on the first
special token; the merge loop keeps pair counts and a pair -> words index and updates them only for the
words that contain the merged pair, choosing the next pair from a heap (stale entries skipped lazily, the
heap rebuilt when they outnumber the live pairs, so memory stays bounded by the pair table).
"""

from __future__ import annotations

import heapq
import mmap
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache

import regex

from cs336_basics.data.chunking import not_utf8
from cs336_basics.errors import UserError

PAT = regex.compile(r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
PARALLEL_MIN_BYTES = 1 << 20  # below this a process pool costs more than it saves
CHUNK_MAX_BYTES = 64 << 20  # per task: bounds each worker's memory on a multi-GB file


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (used by vocab.json / merges.txt)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]  # shifted past 255, in byte order
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(others)}}


def special_token_pattern(special_tokens: Iterable[str]) -> regex.Pattern | None:
    """A regex matching any special token, longest first (so an overlapping longer token wins)."""
    tokens = sorted(set(special_tokens), key=len, reverse=True)
    return regex.compile("|".join(regex.escape(t) for t in tokens)) if tokens else None


def pretoken_counts(text: str, special_tokens: Sequence[str] = ()) -> Counter[str]:
    """How often each GPT-2 pre-token occurs in ``text`` once it is split on the special tokens."""
    pattern = special_token_pattern(special_tokens)
    counts: Counter[str] = Counter()
    for piece in pattern.split(text) if pattern else (text,):
        counts.update(PAT.findall(piece))
    return counts


def chunk_boundaries(path: str | os.PathLike, num_chunks: int, split_token: bytes) -> list[int]:
    """Byte offsets 0 = b0 < b1 < ... < bn = size; every inner boundary is the start of ``split_token``.

    Cutting there changes nothing: the text is split on special tokens before pre-tokenization anyway.
    """
    size = os.path.getsize(path)
    bounds = [0]
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for i in range(1, num_chunks):
            pos = data.find(split_token, max(size * i // num_chunks, bounds[-1] + 1))
            if pos < 0:
                break
            bounds.append(pos)
    return [*bounds, size]


def _count_range(args: tuple[str, int, int, tuple[str, ...], str]) -> Counter[bytes]:
    path, start, end, special_tokens, errors = args
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    try:
        text = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise not_utf8(path, start, err) from None
    return Counter({w.encode("utf-8"): c for w, c in pretoken_counts(text, special_tokens).items()})


def file_pretoken_counts(
    input_path: str | os.PathLike,
    special_tokens: Sequence[str],
    *,
    num_workers: int | None = None,
    errors: str = "strict",
) -> Counter[bytes]:
    """Pre-token counts of a whole file (UTF-8 bytes -> count), in parallel when it is large enough."""
    path = os.fspath(input_path)
    size = os.path.getsize(path)
    workers = num_workers or os.cpu_count() or 1
    tokens = tuple(special_tokens)
    if workers == 1 or size < PARALLEL_MIN_BYTES or not tokens:
        # Without a special token there is no safe place to cut the file, so it is read as one piece.
        return _count_range((path, 0, size, tokens, errors))
    num_chunks = max(4 * workers, -(-size // CHUNK_MAX_BYTES))
    bounds = chunk_boundaries(path, num_chunks, tokens[0].encode("utf-8"))
    tasks = [(path, a, b, tokens, errors) for a, b in zip(bounds, bounds[1:])]
    total: Counter[bytes] = Counter()
    with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
        for counts in pool.imap_unordered(_count_range, tasks):
            total.update(counts)
    return total


def merge_pair(parts: list, pair: tuple, merged) -> list:
    """``parts`` with each occurrence of ``pair`` replaced by ``merged``, scanning left to right."""
    first, second = pair
    out = []
    i, n = 0, len(parts)
    while i < n:
        if i + 1 < n and parts[i] == first and parts[i + 1] == second:
            out.append(merged)
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


class _Greatest:
    """Heap key that orders ``(bytes, bytes)`` pairs greatest first (``heapq`` is a min-heap)."""

    __slots__ = ("pair",)

    def __init__(self, pair: tuple[bytes, bytes]):
        self.pair = pair

    def __lt__(self, other: _Greatest) -> bool:
        return self.pair > other.pair


def merge_counts(
    word_counts: dict[bytes, int], vocab_size: int, special_tokens: Sequence[str] = ()
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """The BPE merge loop on pre-token counts; returns ``(vocab, merges)`` as ``train_bpe`` does."""
    k = len(special_tokens)
    vocab = {i: t.encode("utf-8") for i, t in enumerate(special_tokens)}  # ids 0..k-1
    vocab.update({k + b: bytes([b]) for b in range(256)})  # ids k..k+255
    if vocab_size < len(vocab):
        raise UserError(
            f"vocab_size {vocab_size} is too small: it must hold the 256 bytes and {k} special token(s); "
            f"pass at least {len(vocab)}"
        )
    words = [[k + b for b in w] for w in word_counts]
    counts = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> ids of the words that contain it
    for i, (w, c) in enumerate(zip(words, counts)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += c
            where[pair].add(i)

    def entry(pair: tuple[int, int], count: int):
        return (-count, _Greatest((vocab[pair[0]], vocab[pair[1]])), pair)

    heap = [entry(p, c) for p, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size:
        while heap and pair_counts.get(heap[0][2], 0) != -heap[0][0]:
            heapq.heappop(heap)  # stale: the pair's count changed after this entry was pushed
        if not heap:
            break  # every pre-token is a single token: nothing left to merge
        _, _, (a, b) = heapq.heappop(heap)
        new = len(vocab)
        vocab[new] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop((a, b)):
            w, c = words[i], counts[i]
            out = merge_pair(w, (a, b), new)
            old_pairs, new_pairs = list(zip(w, w[1:])), list(zip(out, out[1:]))
            for pair in old_pairs:
                delta[pair] -= c
            for pair in new_pairs:
                delta[pair] += c
            for pair in set(old_pairs).difference(new_pairs):
                if pair != (a, b):
                    where[pair].discard(i)
            for pair in set(new_pairs).difference(old_pairs):
                where[pair].add(i)
            words[i] = out
        for pair, d in delta.items():
            if not d:
                continue
            count = pair_counts[pair] + d
            if count > 0:
                pair_counts[pair] = count
                heapq.heappush(heap, entry(pair, count))
            else:
                pair_counts.pop(pair, None)
                where.pop(pair, None)
        if len(heap) > 2 * len(pair_counts) + 10_000:  # drop stale entries: memory follows the pair table
            heap = [entry(p, c) for p, c in pair_counts.items()]
            heapq.heapify(heap)
    return vocab, merges


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: list[str],
    *,
    num_workers: int | None = None,
    errors: str = "strict",
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on the text file ``input_path`` (CS336 assignment 1 semantics).

    Returns ``(vocab, merges)``: ``vocab`` maps id -> token bytes (special tokens, then the 256 bytes, then
    one token per merge); ``merges`` lists the merged pairs in the order they were made. Stops early if
    the text has no pair left to merge.
    """
    counts = file_pretoken_counts(input_path, special_tokens, num_workers=num_workers, errors=errors)
    return merge_counts(counts, vocab_size, special_tokens)
