"""train_bpe against a deliberately naive BPE (recount every pair after every merge), on random and real text."""

from __future__ import annotations

import collections

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cs336_basics.data.bpe import bytes_to_unicode, chunk_boundaries, file_pretoken_counts, train_bpe
from cs336_basics.data.demo_corpus import generate_demo_corpus
from cs336_basics.errors import UserError

GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|sep|>"]


def naive_bpe(text: str, vocab_size: int, special_tokens: list[str]):
    """The textbook algorithm, slowly: split, pre-tokenize, then recount all pairs for every merge."""
    pieces = [text]
    for tok in sorted(special_tokens, key=len, reverse=True):
        pieces = [part for piece in pieces for part in piece.split(tok)]
    words = collections.Counter()
    for piece in pieces:
        for m in regex.finditer(GPT2, piece):
            words[tuple(bytes([b]) for b in m.group().encode())] += 1
    vocab = [t.encode() for t in special_tokens] + [bytes([b]) for b in range(256)]
    merges = []
    while len(vocab) < vocab_size:
        pairs = collections.Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.append(best[0] + best[1])
        merged = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return dict(enumerate(vocab)), merges


def _write(tmp_path, text: str, name: str = "corpus.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# Few letters so pairs repeat and ties are common; specials and spaces so splitting matters.
words = st.text(alphabet="abcé \n'0", min_size=0, max_size=12)
docs = st.lists(st.one_of(words, st.sampled_from(SPECIALS)), min_size=1, max_size=25).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=docs, extra=st.integers(0, 40))
def test_matches_naive_on_random_text(tmp_path, text, extra):
    vocab_size = 256 + len(SPECIALS) + extra
    path = _write(tmp_path, text or "x")
    assert train_bpe(path, vocab_size, SPECIALS) == naive_bpe(text or "x", vocab_size, SPECIALS)


def test_matches_naive_on_a_few_kb_of_stories(tmp_path):
    text = generate_demo_corpus(seed=3, num_stories=12)
    assert 3_000 < len(text) < 20_000
    path = _write(tmp_path, text)
    vocab, merges = train_bpe(path, 400, ["<|endoftext|>"])
    assert (vocab, merges) == naive_bpe(text, 400, ["<|endoftext|>"])
    assert len(vocab) == 400 and len(merges) == 400 - 257


def test_vocab_layout_and_no_special_inside_merges(tmp_path):
    text = "the cat<|endoftext|>the hat<|sep|>the bat<|endoftext|>" * 20
    vocab, merges = train_bpe(_write(tmp_path, text), 300, SPECIALS)
    assert vocab[0] == b"<|endoftext|>" and vocab[1] == b"<|sep|>"
    assert [vocab[2 + b] for b in range(256)] == [bytes([b]) for b in range(256)]
    assert all(b"<|" not in a + b and b"|>" not in a + b for a, b in merges)
    assert len(set(vocab.values())) == len(vocab)


def test_ties_go_to_the_lexicographically_greatest_pair(tmp_path):
    # "ab" and "cd" both occur twice; (b"c", b"d") > (b"a", b"b") so it is merged first.
    vocab, merges = train_bpe(_write(tmp_path, "ab cd ab cd"), 258, [])
    assert merges[0] == (b"c", b"d")


def test_stops_when_nothing_is_left_to_merge(tmp_path):
    vocab, merges = train_bpe(_write(tmp_path, "aaaa"), 1000, ["<|endoftext|>"])
    assert merges == [(b"a", b"a"), (b"aa", b"aa")] and len(vocab) == 259


def test_vocab_size_too_small(tmp_path):
    with pytest.raises(UserError, match="too small"):
        train_bpe(_write(tmp_path, "abc"), 256, ["<|endoftext|>"])


def test_parallel_pretokenization_equals_one_pass(tmp_path, monkeypatch):
    import cs336_basics.data.bpe as bpe

    text = generate_demo_corpus(seed=5, num_stories=60)
    path = _write(tmp_path, text)
    one = file_pretoken_counts(path, ["<|endoftext|>"], num_workers=1)
    monkeypatch.setattr(bpe, "PARALLEL_MIN_BYTES", 0)
    bounds = chunk_boundaries(path, 8, b"<|endoftext|>")
    raw = path.read_bytes()
    assert len(bounds) > 3 and all(raw.startswith(b"<|endoftext|>", b) for b in bounds[1:-1])
    assert file_pretoken_counts(path, ["<|endoftext|>"], num_workers=2) == one


def test_invalid_utf8_names_the_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"hello \xff world")
    with pytest.raises(UserError, match="byte offset 6"):
        train_bpe(path, 300, [])
    vocab, _ = train_bpe(path, 260, [], errors="replace")
    assert len(vocab) == 260


def test_bytes_to_unicode_is_gpt2s_bijection():
    m = bytes_to_unicode()
    assert len(set(m.values())) == 256 and m[ord(" ")] == "Ġ" and m[ord("!")] == "!" and m[ord("\n")] == "Ċ"
