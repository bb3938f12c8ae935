"""The wording of cs336-data's bad-input lines: advice that fits the file (ours to rebuild, or the user's to
replace), the flag the user actually gave, and no empty folder left behind by a failed prepare."""

from __future__ import annotations

from pathlib import Path

import pytest

from cs336_basics.data import Tokenizer, generate_demo_corpus
from cs336_basics.data.cli import main
from cs336_basics.errors import UserError
from tests.test_data_cli import run_error

NOT_A_TOKEN_FILE = "# My notes\n\nNot a token file, and not a tokenizer either.\n"


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(generate_demo_corpus(seed=8, num_stories=80), encoding="utf-8")
    return path


@pytest.fixture
def notes(tmp_path) -> Path:
    """A file of the user's own, passed by mistake where a tokenizer or token file belongs."""
    path = tmp_path / "NOTES.md"
    path.write_text(NOT_A_TOKEN_FILE, encoding="utf-8")
    return path


def test_check_of_the_users_own_file_does_not_say_delete_it(capsys, notes):
    line = run_error(capsys, ["check", str(notes)])
    assert str(notes) in line and "delete" not in line, line
    assert "pass a .npy token file written by `cs336-data tokenize`" in line, line


def test_check_of_a_prepared_file_still_says_rebuild_it(capsys, small_corpus, tmp_path):
    main(["prepare", "--dataset", str(small_corpus), "--data-dir", str(tmp_path / "d"), "--vocab-size", "300",
          "--no-progress"])  # fmt: skip
    npy = tmp_path / "d" / "small" / "v300-cs336" / "valid.npy"
    npy.write_bytes(b"garbage")
    line = run_error(capsys, ["check", str(npy)])
    assert "not a readable .npy" in line and "delete it and re-run `cs336-data prepare`" in line, line


def test_tokenize_with_the_users_own_file_as_tokenizer_does_not_say_delete_it(
    capsys, small_corpus, notes, tmp_path
):
    out = tmp_path / "o" / "x.npy"
    line = run_error(
        capsys, ["tokenize", "--input", str(small_corpus), "--tokenizer", str(notes), "--output", str(out)]
    )
    assert f"{notes} is not a valid tokenizer.json" in line, line
    assert "delete" not in line and "retrain" not in line, line
    assert "pass a tokenizer.json written by `cs336-data train-tokenizer`" in line, line


def test_a_broken_prepared_tokenizer_says_rebuild_it(tmp_path):
    prepared = tmp_path / "d" / "demo" / "v300-cs336" / "tokenizer.json"
    prepared.parent.mkdir(parents=True)
    prepared.write_text("{not json")
    with pytest.raises(UserError, match=r"delete it and re-run `cs336-data prepare`"):
        Tokenizer.from_files(prepared)


def test_check_of_a_directory_says_it_is_one(capsys, tmp_path):
    line = run_error(capsys, ["check", str(tmp_path)])
    assert "is a directory" in line and "does not exist" not in line, line


def test_tokenize_into_an_unwritable_output_names_output(capsys, small_corpus, tmp_path):
    """The place came from --output, so the advice is about --output, not a --data-dir never given."""
    tok = tmp_path / "tok.json"
    main(["train-tokenizer", "--input", str(small_corpus), "--output", str(tok), "--vocab-size", "300",
          "--no-progress"])  # fmt: skip
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a directory")
    out = blocker / "x.npy"
    line = run_error(capsys, ["tokenize", "--input", str(small_corpus), "--tokenizer", str(tok), "--output", str(out)])  # fmt: skip
    assert str(out) in line and "choose a writable --output" in line and "--data-dir" not in line, line
    assert "not a directory" in line, line
    assert not out.exists()


def test_train_tokenizer_into_an_unwritable_output_names_output(capsys, small_corpus, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a directory")
    line = run_error(capsys, ["train-tokenizer", "--input", str(small_corpus), "--output", str(blocker / "t.json"),
                              "--vocab-size", "300"])  # fmt: skip
    assert "choose a writable --output" in line and "--data-dir" not in line, line


def test_output_that_is_a_directory_says_so(capsys, small_corpus, tmp_path):
    line = run_error(capsys, ["tokenize", "--input", str(small_corpus), "--tokenizer", str(tmp_path / "t.json"),
                              "--output", str(tmp_path)])  # fmt: skip
    assert f"--output {tmp_path} is a directory" in line, line


@pytest.mark.parametrize("bpe", ["cs336", "hf"])
def test_a_vocab_beyond_the_text_leaves_no_empty_folder(capsys, small_corpus, tmp_path, bpe):
    data_dir = tmp_path / "d"
    line = run_error(capsys, ["prepare", "--dataset", str(small_corpus), "--data-dir", str(data_dir),
                              "--vocab-size", "70000", "--bpe", bpe])  # fmt: skip
    assert "fewer than --vocab-size 70000" in line, line
    assert not (data_dir / "small" / f"v70000-{bpe}").exists()
    assert (data_dir / "small").is_dir()  # the split text stays: the next prepare reuses it


def test_a_failed_retrain_keeps_the_folder_and_its_files(capsys, small_corpus, tmp_path):
    """Only a folder the failed step made itself, and only while empty, is removed."""
    data_dir = tmp_path / "d"
    token_dir = data_dir / "small" / "v70000-cs336"
    token_dir.mkdir(parents=True)
    (token_dir / "keep.txt").write_text("the user's")
    run_error(capsys, ["prepare", "--dataset", str(small_corpus), "--data-dir", str(data_dir),
                       "--vocab-size", "70000"])  # fmt: skip
    assert (token_dir / "keep.txt").is_file()


def test_vocab_mismatch_advice_is_the_flag(capsys, small_corpus, tmp_path):
    main(["prepare", "--dataset", str(small_corpus), "--data-dir", str(tmp_path / "d"), "--vocab-size", "300",
          "--no-progress"])  # fmt: skip
    npy = tmp_path / "d" / "small" / "v300-cs336" / "train.npy"
    line = run_error(capsys, ["check", str(npy), "--vocab-size", "1024"])
    assert "vocab size 300, not 1024" in line and "pass --vocab-size 300" in line, line
    assert "vocab_size=" not in line, line
