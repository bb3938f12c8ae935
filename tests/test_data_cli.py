"""Bad input through the command line: one ``error:`` line, exit 2, no traceback, no half-written output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.data import EOT, generate_demo_corpus
from cs336_basics.data.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_error(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``, expect exit 2, and return its single stderr line."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--no-progress"] if argv[0] != "check" else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def final_outputs(data_dir: Path) -> list[str]:
    """Everything under data_dir except lock files (temp files would show up here too)."""
    return sorted(
        str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file() and p.name != ".prepare.lock"
    )


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(generate_demo_corpus(seed=8, num_stories=80), encoding="utf-8")
    return path


def test_missing_file(capsys, tmp_path):
    line = run_error(
        capsys, ["prepare", "--dataset", str(tmp_path / "nope.txt"), "--data-dir", str(tmp_path / "d")]
    )
    assert "does not exist" in line and "nope.txt" in line
    assert not (tmp_path / "d").exists()


def test_empty_file(capsys, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    line = run_error(
        capsys, ["prepare", "--dataset", str(tmp_path / "empty.txt"), "--data-dir", str(tmp_path / "d")]
    )
    assert "is empty" in line


def test_not_utf8_reports_offset_and_replace_works(capsys, tmp_path):
    good = generate_demo_corpus(seed=8, num_stories=80).encode()
    src = tmp_path / "latin1.txt"
    src.write_bytes(good + "Café\n".encode("latin-1") + f"{EOT}\n".encode())
    data_dir = tmp_path / "d"
    line = run_error(
        capsys, ["prepare", "--dataset", str(src), "--data-dir", str(data_dir), "--vocab-size", "300"]
    )
    assert f"byte offset {len(good) + 3}" in line and "--errors replace" in line
    assert [p for p in final_outputs(data_dir) if p.endswith((".npy", ".json", ".txt"))] == []
    main(
        [
            "prepare",
            "--dataset",
            str(src),
            "--data-dir",
            str(data_dir),
            "--vocab-size",
            "300",
            "--errors",
            "replace",
        ]
    )
    assert (data_dir / "latin1" / "v300-cs336" / "train.npy").is_file()


def test_vocab_too_small(capsys, small_corpus, tmp_path):
    line = run_error(
        capsys,
        ["prepare", "--dataset", str(small_corpus), "--data-dir", str(tmp_path / "d"), "--vocab-size", "200"],
    )
    assert "--vocab-size 200 is too small" in line and "257" in line


def test_unwritable_data_dir(capsys, small_corpus, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a directory")
    line = run_error(capsys, ["prepare", "--dataset", "demo", "--data-dir", str(blocker / "data")])
    assert "cannot write to data dir" in line and "--data-dir" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_data_dir(capsys, small_corpus, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        line = run_error(capsys, ["prepare", "--dataset", str(small_corpus), "--data-dir", str(ro)])
        assert "cannot write to data dir" in line
    finally:
        ro.chmod(0o700)


def test_unknown_dataset(capsys, tmp_path):
    line = run_error(capsys, ["prepare", "--dataset", "wikipedia", "--data-dir", str(tmp_path)])
    assert "unknown dataset 'wikipedia'" in line


@pytest.fixture
def token_files(small_corpus, tmp_path) -> Path:
    data_dir = tmp_path / "d"
    main(
        [
            "prepare",
            "--dataset",
            str(small_corpus),
            "--data-dir",
            str(data_dir),
            "--vocab-size",
            "300",
            "--no-progress",
        ]
    )
    return data_dir / "small" / "v300-cs336"


def test_check_accepts_good_files(capsys, token_files):
    main(
        [
            "check",
            str(token_files / "train.npy"),
            str(token_files / "valid.npy"),
            "--tokenizer",
            str(token_files / "tokenizer.json"),
            "--vocab-size",
            "300",
        ]
    )
    assert capsys.readouterr().out.count(", ids as encoded (sha256)") == 2


def test_check_finds_an_id_changed_after_encoding(capsys, token_files):
    ids = np.load(token_files / "valid.npy", mmap_mode="r+")
    ids[0] = (int(ids[0]) + 1) % 300  # still inside the vocab
    ids.flush()
    del ids
    with pytest.raises(SystemExit) as exc:
        main(["check", str(token_files / "train.npy"), str(token_files / "valid.npy")])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert "train.npy: ok," in out and err.count("error: ") == 1
    assert "valid.npy: its ids are not the ones encoded" in err


def test_truncated_npy(capsys, token_files):
    npy = token_files / "train.npy"
    npy.write_bytes(npy.read_bytes()[:-7])
    line = run_error(capsys, ["check", str(npy)])
    assert "train.npy" in line and ("not a readable .npy" in line or "bytes but its header" in line)


def test_corrupt_npy(capsys, token_files):
    npy = token_files / "valid.npy"
    npy.write_bytes(b"garbage")
    assert "not a readable .npy" in run_error(capsys, ["check", str(npy)])


def test_corrupt_sidecar(capsys, token_files):
    (token_files / "train.npy.json").write_text('{"format": "cs336-token-file", "num_')
    assert "not valid JSON" in run_error(capsys, ["check", str(token_files / "train.npy")])


def test_sidecar_count_mismatch(capsys, token_files):
    sidecar = token_files / "train.npy.json"
    meta = json.loads(sidecar.read_text())
    meta["num_tokens"] = 5
    sidecar.write_text(json.dumps(meta))
    assert "sidecar says 5" in run_error(capsys, ["check", str(token_files / "train.npy")])


def test_wrong_vocab_and_tokenizer(capsys, token_files, tmp_path):
    npy = str(token_files / "train.npy")
    assert "vocab size 300, not 400" in run_error(capsys, ["check", npy, "--vocab-size", "400"])
    other = tmp_path / "other.json"
    other.write_bytes((token_files / "tokenizer.json").read_bytes() + b" ")
    assert "different tokenizer" in run_error(capsys, ["check", npy, "--tokenizer", str(other)])


def test_prepare_repairs_a_corrupt_npy(capsys, token_files):
    (token_files / "train.npy").write_bytes(b"garbage")
    main(
        [
            "prepare",
            "--dataset",
            str(token_files.parents[2] / "small.txt"),
            "--data-dir",
            str(token_files.parents[1]),
            "--vocab-size",
            "300",
        ]
    )
    assert "re-encoding" in capsys.readouterr().err
    main(["check", str(token_files / "train.npy")])


def test_tokenize_needs_a_tokenizer(capsys, small_corpus, tmp_path):
    line = run_error(capsys, ["tokenize", "--dataset", str(small_corpus), "--data-dir", str(tmp_path / "d")])
    assert "tokenizer.json is missing" in line and "train-tokenizer" in line


def test_train_tokenizer_then_tokenize_steps(capsys, small_corpus, tmp_path):
    d = str(tmp_path / "d")
    main(
        [
            "train-tokenizer",
            "--dataset",
            str(small_corpus),
            "--data-dir",
            d,
            "--vocab-size",
            "300",
            "--no-progress",
        ]
    )
    main(
        ["tokenize", "--dataset", str(small_corpus), "--data-dir", d, "--vocab-size", "300", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert "tokenizer.json: vocab 300" in out and "train.npy:" in out and "valid.npy:" in out


def test_ad_hoc_input_output(capsys, small_corpus, tmp_path):
    tok = tmp_path / "t" / "tok.json"
    main(
        [
            "train-tokenizer",
            "--input",
            str(small_corpus),
            "--output",
            str(tok),
            "--vocab-size",
            "300",
            "--no-progress",
        ]
    )
    main(
        [
            "tokenize",
            "--input",
            str(small_corpus),
            "--tokenizer",
            str(tok),
            "--output",
            str(tmp_path / "o" / "x.npy"),
            "--no-progress",
        ]
    )
    main(["check", str(tmp_path / "o" / "x.npy"), "--tokenizer", str(tok)])
    assert "train-tokenizer --input needs --output" in run_error(
        capsys, ["train-tokenizer", "--input", str(small_corpus)]
    )


def test_bad_bytes_late_in_the_file_leave_no_output(capsys, small_corpus, tmp_path):
    bad = tmp_path / "late.txt"
    bad.write_bytes(small_corpus.read_bytes() * 3 + b"tail \xfe")
    line = run_error(
        capsys, ["train-tokenizer", "--input", str(bad), "--output", str(tmp_path / "t" / "tok.json")]
    )
    assert f"byte offset {bad.stat().st_size - 1}" in line
    assert not (tmp_path / "t" / "tok.json").exists()


def test_tinystories_tokenizer_needs_download_first(capsys, tmp_path):
    line = run_error(capsys, ["train-tokenizer", "--data-dir", str(tmp_path)])
    assert "is missing; run `cs336-data download" in line


def test_subprocess_bad_input_and_help(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cs336_basics.data",
            "prepare",
            "--dataset",
            str(bad),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad} is not valid UTF-8 at byte offset 6 (invalid start byte); "
        "fix the file or pass --errors replace to substitute U+FFFD"
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "cs336_basics.data", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for command in ("prepare", "download", "train-tokenizer", "tokenize", "check", "SYNTHETIC"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["prepare", "download", "train-tokenizer", "tokenize", "check"])
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: cs336-data " + command in capsys.readouterr().out


def test_check_reports_every_bad_file_not_only_the_first(capsys, token_files):
    """Two bad files and a good one between them: an error line for each bad one, the good one ok, exit 2."""
    (token_files / "train.npy").write_bytes(b"garbage")
    (token_files / "tokenizer.json").write_bytes(b"{}")  # not a token file at all
    with pytest.raises(SystemExit) as exc:
        main(["check", str(token_files / "train.npy"), str(token_files / "valid.npy"),
              str(token_files / "tokenizer.json")])  # fmt: skip
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), err
    assert "train.npy" in errors[0] and "tokenizer.json" in errors[1] and "Traceback" not in err
    assert out.count(": ok,") == 1 and "valid.npy: ok," in out


def test_progress_in_a_log_is_plain_lines(tmp_path, small_corpus):
    """cs336-data prepare with stderr to a file (SLURM, nohup): plain lines, no carriage-return bars."""
    log = tmp_path / "prepare.log"
    with open(log, "w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "cs336_basics.data", "prepare", "--dataset", str(small_corpus),
             "--data-dir", str(tmp_path / "d"), "--vocab-size", "300"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, timeout=300,
        )  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert "train tokenizer train.txt (cs336 BPE, vocab 300)..." in lines
    assert any(line.startswith("tokenize train.txt: ") and " done in " in line for line in lines), text


def test_plain_byte_count_says_each_tenth_passed_and_the_end(capsys):
    from cs336_basics.data.chunking import byte_bar

    with byte_bar("read x", 1000, progress=True, initial=150) as bar:  # stderr is not a terminal here
        for _ in range(17):
            bar.update(50)
    lines = capsys.readouterr().err.splitlines()
    tenths = [line.split("(")[1] for line in lines[:-1]]
    assert tenths == [f"{t}0%)" for t in range(2, 10)]  # 15% at the start: 200 B ... 950 B, never 100%
    assert lines[0] == "read x: 200 B of 1.0 KB (20%)" and lines[-1].startswith("read x: 1.0 KB done in ")
