"""Token files: .npy + sidecar written atomically, and every way ``load_token_file`` can refuse one."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cs336_basics.data import EOT, Tokenizer, encode_file, generate_demo_corpus, load_token_file
from cs336_basics.data.token_file import dtype_for_vocab, sidecar_path, token_writer, write_sidecar
from cs336_basics.data.train_tokenizer import train_from_documents
from cs336_basics.errors import UserError


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_from_documents(generate_demo_corpus(seed=2, num_stories=100).split(EOT), 320).save(path)
    return Tokenizer.from_files(path)


@pytest.fixture
def encoded(tok, tmp_path):
    src = tmp_path / "train.txt"
    src.write_text(generate_demo_corpus(seed=3, num_stories=20), encoding="utf-8")
    out = tmp_path / "train.npy"
    encode_file(src, tok, out, progress=False)
    return out


def test_round_trip_and_sidecar(tok, encoded):
    arr = load_token_file(encoded, vocab_size=tok.vocab_size, tokenizer_path=tok.path)
    assert isinstance(arr, np.memmap) and arr.ndim == 1 and arr.dtype == np.uint16
    meta = json.loads(sidecar_path(encoded).read_text())
    assert sidecar_path(encoded).name == "train.npy.json"
    assert meta["num_tokens"] == len(arr) and meta["vocab_size"] == 320 and meta["dtype"] == "uint16"
    assert meta["eot_id"] == tok.eot_id
    assert meta["tokenizer_sha256"] == hashlib.sha256(tok.path.read_bytes()).hexdigest()  # of the file itself
    assert set(meta["source"]) == {"path", "size", "sha256"}
    assert meta["tokens_sha256"] == hashlib.sha256(np.load(encoded).astype("<u2").tobytes()).hexdigest()
    text = (encoded.parent / "train.txt").read_text(encoding="utf-8")
    assert tok.decode(arr.tolist()) == text
    assert int(arr.max()) < tok.vocab_size and int((arr == tok.eot_id).sum()) == 20
    assert sorted(p.name for p in encoded.parent.iterdir()) == ["train.npy", "train.npy.json", "train.txt"]


def test_dtype_for_vocab():
    assert dtype_for_vocab(10_000) == np.uint16
    assert dtype_for_vocab(65_535) == np.uint16
    assert dtype_for_vocab(65_536) == np.uint32


def test_uint32_token_file(tmp_path):
    out = tmp_path / "big.npy"
    ids = np.array([0, 70_000, 99_999], dtype=np.uint32)
    with token_writer(out, dtype_for_vocab(100_000)) as sink:
        sink.write(ids[:1])
        sink.write(ids[1:])
    write_sidecar(out, dtype="uint32", num_tokens=3, vocab_size=100_000, tokenizer_sha256="x", source={})
    arr = load_token_file(out, vocab_size=100_000)
    assert arr.dtype == np.uint32 and arr.tolist() == ids.tolist()
    assert np.load(out).tolist() == ids.tolist()  # a plain .npy too


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    out = tmp_path / "x.npy"
    with pytest.raises(RuntimeError), token_writer(out, np.dtype("<u2")) as sink:
        sink.write([1, 2, 3])
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_no_output(tok, tmp_path):
    src = tmp_path / "bad.txt"
    src.write_bytes(generate_demo_corpus(seed=3, num_stories=20).encode() + b"\xff")
    with pytest.raises(UserError, match="not valid UTF-8"):
        encode_file(src, tok, tmp_path / "out.npy", progress=False, chunk_chars=500)
    assert [p.name for p in tmp_path.iterdir()] == ["bad.txt"]


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        load_token_file(tmp_path / "train.npy")
    _one_line(err)


def test_missing_sidecar(encoded):
    sidecar_path(encoded).unlink()
    with pytest.raises(UserError, match="sidecar .* is missing") as err:
        load_token_file(encoded)
    _one_line(err)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{truncated", "not valid JSON"),
        ("[1, 2]", "not a cs336-token-file sidecar"),
        ('{"format": "cs336-token-file", "version": 1}', "lacks field"),
    ],
)
def test_corrupt_sidecar(encoded, content, message):
    sidecar_path(encoded).write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_token_file(encoded)
    _one_line(err)


def test_truncated_npy(encoded):
    data = encoded.read_bytes()
    encoded.write_bytes(data[: len(data) - 10])
    with pytest.raises(UserError, match="not a readable .npy|bytes but its header") as err:
        load_token_file(encoded)
    _one_line(err)


def test_npy_with_a_truncated_header(encoded):
    encoded.write_bytes(encoded.read_bytes()[:40])
    with pytest.raises(UserError, match="not a readable .npy") as err:
        load_token_file(encoded)
    _one_line(err)


def test_garbage_npy(encoded):
    encoded.write_bytes(b"this is not numpy at all" * 10)
    with pytest.raises(UserError, match="not a readable .npy") as err:
        load_token_file(encoded)
    _one_line(err)


def test_trailing_bytes(encoded):
    with open(encoded, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(UserError, match="bytes but its header implies"):
        load_token_file(encoded)


def test_count_mismatch(encoded):
    meta = json.loads(sidecar_path(encoded).read_text())
    meta["num_tokens"] += 1
    sidecar_path(encoded).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="tokens but its sidecar says") as err:
        load_token_file(encoded)
    _one_line(err)


def test_wrong_array_shape(encoded):
    np.save(encoded, np.zeros((2, 2), dtype=np.uint16))
    with pytest.raises(UserError, match="1-D uint16/uint32"):
        load_token_file(encoded)


def test_vocab_mismatch(encoded):
    with pytest.raises(UserError, match="encoded with vocab size 320, not 512") as err:
        load_token_file(encoded, vocab_size=512)
    _one_line(err)


def test_tokenizer_mismatch(encoded, tmp_path):
    other = tmp_path / "other.json"
    train_from_documents(generate_demo_corpus(seed=4, num_stories=50).split(EOT), 300).save(other)
    with pytest.raises(UserError, match="different tokenizer") as err:
        load_token_file(encoded, tokenizer_path=other)
    _one_line(err)
    with pytest.raises(UserError, match="does not exist"):
        load_token_file(encoded, tokenizer_path=tmp_path / "missing.json")


def test_a_changed_id_is_refused_by_its_hash(encoded):
    """One id changed to another id of the vocab: size, count and max id still agree, only the hash can tell."""
    ids = np.load(encoded, mmap_mode="r+")
    top = int(ids.max())
    i = int(np.flatnonzero(ids != top)[0])
    ids[i] = top  # the max id stays the same, so the vocab check cannot see it
    ids.flush()
    del ids
    with pytest.raises(
        UserError, match=r"train.npy: its ids are not the ones encoded \(their sha256 differs"
    ):
        load_token_file(encoded)


def test_a_sidecar_from_before_tokens_sha256_still_reads(encoded):
    meta = json.loads(sidecar_path(encoded).read_text())
    del meta["tokens_sha256"]
    sidecar_path(encoded).write_text(json.dumps(meta))
    assert load_token_file(encoded).tolist() == np.load(encoded).tolist()
