"""Chunked reading: cuts that keep token ids identical, UTF-8 errors with byte offsets, chunked == whole."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cs336_basics.data import EOT, Tokenizer, encode_file, generate_demo_corpus, load_token_file
from cs336_basics.data.chunking import (
    iter_chunks,
    iter_decoded_blocks,
    iter_documents,
    rechunk,
    safe_cut,
    split_documents,
)
from cs336_basics.data.train_tokenizer import train_from_documents
from cs336_basics.errors import UserError

HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Characters that stress the GPT-2 pre-tokenizer: whitespace runs, contractions, digits, punctuation, Unicode.
TRICKY = st.text(alphabet=list("ab'sA1 \n\t\r.!\u00a0\u3000é🙂"), max_size=40) | st.sampled_from(
    [EOT, EOT[:4], " 's"]
)
TRICKY_TEXT = st.lists(TRICKY, max_size=8).map("".join)


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    text = generate_demo_corpus(seed=5, num_stories=150) + " don't  it's\n\n\t 123 4567 é🙂 \u3000"
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_from_documents(text.split(EOT), 450).save(path)
    return Tokenizer.from_files(path)


@HYPO
@given(TRICKY_TEXT)
def test_safe_cut_keeps_ids(tok, text):
    cut = safe_cut(text)
    assert 0 <= cut <= len(text)
    if cut:
        assert tok.encode(text[:cut]) + tok.encode(text[cut:]) == tok.encode(text)


@HYPO
@given(st.lists(TRICKY, max_size=10), st.integers(1, 30))
def test_rechunk_concatenates_to_the_input_and_keeps_ids(tok, pieces, chunk_chars):
    chunks = list(rechunk(pieces, chunk_chars))
    assert "".join(chunks) == "".join(pieces)
    assert [i for c in chunks for i in tok.encode(c)] == tok.encode("".join(pieces))


def test_safe_cut_prefers_the_last_separator():
    text = f"one{EOT}two three{EOT}four five"
    assert text[: safe_cut(text)].endswith(EOT)
    assert safe_cut("no separator here") == len("no separator")
    assert safe_cut("   ") == 0
    assert safe_cut("word") == 0


def test_split_documents_keeps_separators():
    assert split_documents(f"a{EOT}b{EOT}") == [f"a{EOT}", f"b{EOT}"]
    assert split_documents(f"a{EOT}tail") == [f"a{EOT}", "tail"]


def _sample_text() -> str:
    long_doc = " ".join(f"word{i}" for i in range(3000))  # no separator for ~25 kB: forces whitespace cuts
    weird = "Tabs\t\tand\n\n\n  runs   of space 🙂 日本語 don't 12345\r\n"
    return generate_demo_corpus(seed=9, num_stories=60) + long_doc + f"\n{EOT}\n" + weird + EOT + weird


@pytest.mark.parametrize("chunk_chars", [1, 97, 4096, 1 << 21])
def test_iter_chunks_and_encode_file_match_whole_text(tok, tmp_path, chunk_chars):
    text = _sample_text()
    src = tmp_path / "in.txt"
    src.write_bytes(text.encode("utf-8"))
    chunks = list(iter_chunks(src, chunk_chars=chunk_chars))
    assert "".join(chunks) == text
    out = tmp_path / "out.npy"
    meta = encode_file(src, tok, out, progress=False, chunk_chars=chunk_chars)
    ids = load_token_file(out, vocab_size=tok.vocab_size, tokenizer_path=tok.path)
    assert np.array_equal(np.asarray(ids), np.array(tok.encode(text), dtype=np.uint16))
    assert meta["num_tokens"] == len(ids)


def test_iter_documents_drops_separators(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text(f"first\n{EOT}\nsecond\n{EOT}\n", encoding="utf-8")
    assert list(iter_documents(src)) == ["first\n", "\nsecond\n", "\n"]


@given(
    st.text(max_size=60),
    st.integers(0, 60),
    st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82"]),
    st.integers(1, 9),
)
@settings(max_examples=100, deadline=None)
def test_invalid_utf8_reports_its_byte_offset(prefix, cut, bad, block_bytes):
    import tempfile
    from pathlib import Path

    raw = prefix.encode("utf-8")
    pos = len(raw[:cut].decode("utf-8", errors="ignore").encode("utf-8"))  # a character boundary
    data = raw[:pos] + bad + b"x" + raw[pos:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bad.txt"
        path.write_bytes(data)
        with pytest.raises(UserError, match=f"byte offset {pos} ") as err:
            "".join(iter_decoded_blocks(path, block_bytes=block_bytes))
        assert "--errors replace" in str(err.value)
        assert "\ufffd" in "".join(iter_decoded_blocks(path, "replace", block_bytes=block_bytes))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(iter_chunks(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        list(iter_chunks(tmp_path / "empty.txt"))
