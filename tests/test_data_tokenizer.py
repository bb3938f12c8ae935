"""Tokenizer: round trips, <|endoftext|> handling, streaming encode, loading from files."""

from __future__ import annotations

import io
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cs336_basics.data import EOT, Tokenizer, generate_demo_corpus
from cs336_basics.data.train_tokenizer import train_from_documents
from cs336_basics.errors import UserError

UNICODE_SAMPLE = "Café naïve — 日本語のテキスト 🙂🚀 Ünïcödé, ¿qué? «ok» \t tabs\n\n\nnewlines  spaces"
HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    text = generate_demo_corpus(seed=7, num_stories=150) + UNICODE_SAMPLE
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_from_documents(text.split(EOT), 400).save(path)
    return Tokenizer.from_files(path)


def test_vocab_and_eot(tok):
    assert tok.vocab_size == 400 == len(tok.vocab)
    assert tok.vocab[tok.eot_id] == EOT.encode() and tok.eot_id == tok.hf.token_to_id(EOT)
    assert tok.encode(EOT) == [tok.eot_id]


@HYPO
@given(st.text())
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


@HYPO
@given(st.lists(st.text(max_size=30).filter(lambda t: EOT not in t), max_size=5))
def test_round_trip_with_special_tokens(tok, parts):
    text = EOT.join(parts)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(tok.eot_id) == len(parts) - 1 if parts else ids == []


@HYPO
@given(st.text(max_size=40), st.text(max_size=40))
def test_eot_is_never_merged_with_its_neighbours(tok, left, right):
    ids = tok.encode(left + EOT + right)
    if EOT not in left + EOT[:-1] and EOT not in EOT[1:] + right:  # exactly one separator
        assert ids == tok.encode(left) + [tok.eot_id] + tok.encode(right)


def test_no_learned_token_contains_the_separator(tok):
    vocab = tok.hf.get_vocab()
    assert [t for t in vocab if "endoftext" in t and t != EOT] == []


def test_unicode_sample_round_trips(tok):
    assert tok.decode(tok.encode(UNICODE_SAMPLE)) == UNICODE_SAMPLE


@HYPO
@given(
    st.lists(
        st.text(alphabet=list("ab \n.é🙂"), max_size=12) | st.sampled_from([EOT, EOT[:5], EOT[5:]]),
        max_size=10,
    ),
    st.integers(1, 20),
)
def test_encode_iterable_equals_encode_of_the_joined_text(tok, pieces, chunk_chars):
    assert list(tok.encode_iterable(pieces, chunk_chars=chunk_chars)) == tok.encode("".join(pieces))


def test_encode_iterable_on_a_file_handle(tok):
    text = generate_demo_corpus(seed=11, num_stories=20) + UNICODE_SAMPLE
    assert list(tok.encode_iterable(io.StringIO(text), chunk_chars=100)) == tok.encode(text)


def test_encode_iterable_is_lazy(tok):
    endless = itertools.cycle(["Once upon a time, ", "there was a cat.\n", EOT, "\n"])
    first = list(itertools.islice(tok.encode_iterable(endless), 50))
    assert len(first) == 50


def test_encode_batch_matches_encode(tok):
    texts = ["Hello there.", "", EOT, "Lily saw a 🙂."]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_from_vocab_and_merges_files(tok, tmp_path):
    vocab_path, merges_path = tok.hf.model.save(str(tmp_path))
    other = Tokenizer.from_files(vocab_path, merges_path, special_tokens=[EOT])
    text = 'Once upon a time, Lily said "hi".' + EOT + " 🙂"
    assert other.encode(text) == tok.encode(text)
    assert other.decode(other.encode(text)) == text
    tok.save(tmp_path / "v.json", tmp_path / "m.txt")  # our own GPT-2 writer reads back the same
    again = Tokenizer.from_files(tmp_path / "v.json", tmp_path / "m.txt", special_tokens=[EOT])
    assert (again.vocab, again.merges) == (tok.vocab, tok.merges)


def test_from_files_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Tokenizer.from_files(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        Tokenizer.from_files(bad)


def test_vocab_too_small():
    with pytest.raises(UserError, match="too small"):
        train_from_documents(["hello"], 100)


def test_too_little_text_for_the_vocab():
    with pytest.raises(UserError, match="only supports"):
        train_from_documents(["ab ab ab"], 5000)
