"""Tokenizer built from train_bpe's vocab/merges: equal to the naive definition, to Hugging Face's BPE, and
streaming with flat memory; overlapping special tokens match longest first."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cs336_basics.data import EOT, Tokenizer, generate_demo_corpus
from cs336_basics.data.bpe import train_bpe

DOUBLE = EOT + EOT
SPECIALS = [EOT, DOUBLE, "<|sep|>"]
GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("bpe") / "corpus.txt"
    path.write_text(
        generate_demo_corpus(seed=9, num_stories=80) + " Café 日本語 🙂 it's 123", encoding="utf-8"
    )
    vocab, merges = train_bpe(path, 600, [EOT])
    return Tokenizer(vocab, merges, SPECIALS)


def naive_encode(tok: Tokenizer, text: str) -> list[int]:
    """The definition: split on specials (longest first), pre-tokenize, apply each merge in rank order."""
    out: list[int] = []
    specials = sorted(tok.special_tokens, key=len, reverse=True)
    pos = 0
    while pos <= len(text):
        hits = [(text.find(s, pos), -len(s), s) for s in specials if text.find(s, pos) >= 0]
        start, _, special = min(hits) if hits else (len(text), 0, None)
        for m in regex.finditer(GPT2, text[pos:start]):
            parts = [bytes([b]) for b in m.group().encode()]
            for a, b in tok.merges:
                i, merged = 0, []
                while i < len(parts):
                    if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                        merged.append(a + b)
                        i += 2
                    else:
                        merged.append(parts[i])
                        i += 1
                parts = merged
            out.extend(tok.id_of[p] for p in parts)
        if special is None:
            break
        out.append(tok.id_of[special.encode()])
        pos = start + len(special)
    return out


texts = st.lists(
    st.text(alphabet=list("abet hr.,'\n🙂é1"), max_size=15)
    | st.sampled_from([*SPECIALS, EOT[:4], "<|", "s "]),
    max_size=12,
).map("".join)


@HYPO
@given(texts)
def test_encode_equals_merges_applied_in_rank_order(tok, text):
    ids = tok.encode(text)
    assert ids == naive_encode(tok, text)
    assert tok.decode(ids) == text


@HYPO
@given(texts)
def test_hugging_face_fast_path_gives_the_same_ids(tok, text):
    assert tok.hf is not None
    assert tok.encode_batch([text, text[::-1]]) == [tok.encode(text), tok.encode(text[::-1])]


def test_overlapping_special_tokens_match_longest_first(tok):
    ids = tok.encode("a" + EOT * 3 + "b")
    d, e = tok.id_of[DOUBLE.encode()], tok.id_of[EOT.encode()]
    assert ids[1:3] == [d, e] and tok.decode(ids) == "a" + EOT * 3 + "b"
    assert Tokenizer(tok.vocab, tok.merges).encode(EOT) != [e]  # without specials it is ordinary text


@HYPO
@given(st.lists(texts, max_size=8), st.integers(1, 30))
def test_encode_iterable_equals_encode_across_any_cut(tok, pieces, chunk_chars):
    assert list(tok.encode_iterable(pieces, chunk_chars=chunk_chars)) == tok.encode("".join(pieces))


def test_encode_iterable_memory_stays_flat(tok):
    story = generate_demo_corpus(seed=2, num_stories=30)
    stream = itertools.islice(itertools.cycle(story.splitlines(keepends=True)), 20_000)  # ~1.3 MB
    tracemalloc.start()
    count = sum(1 for _ in tok.encode_iterable(stream))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count > 100_000 and peak < 3_000_000  # far less than the ids (or the text) held at once


def test_special_token_outside_the_vocab_gets_a_new_id(tok):
    other = Tokenizer(tok.vocab, tok.merges, ["<|new|>"])
    assert other.vocab_size == tok.vocab_size + 1
    assert other.encode("x<|new|>") == [*other.encode("x"), other.vocab_size - 1]
