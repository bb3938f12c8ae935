"""prepare: the demo dataset from a fresh process, idempotence, repairs, and plain-file datasets."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.data import (
    EOT,
    PreparedDataset,
    Tokenizer,
    generate_demo_corpus,
    load_token_file,
    prepare_dataset,
)
from cs336_basics.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """``python -m cs336_basics.data prepare --dataset demo`` in a fresh process, as on a new machine."""
    data_dir = tmp_path_factory.mktemp("data")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cs336_basics.data",
            "prepare",
            "--dataset",
            "demo",
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo/v2048-cs336/train.npy" in proc.stdout
    return data_dir


TOKENS = Path("demo") / "v2048-cs336"  # the default trainer's directory for the demo's vocab size


def _outputs(data_dir: Path) -> dict[str, int]:
    files = [*(data_dir / "demo").iterdir(), *(data_dir / TOKENS).iterdir()]
    return {str(p): p.stat().st_mtime_ns for p in files if p.is_file() and not p.name.startswith(".")}


def test_demo_files_are_valid(demo_dir):
    ds = prepare_dataset("demo", demo_dir, progress=False)
    assert ds == PreparedDataset(
        train_tokens=demo_dir / TOKENS / "train.npy",
        valid_tokens=demo_dir / TOKENS / "valid.npy",
        tokenizer_path=demo_dir / TOKENS / "tokenizer.json",
        vocab_size=2048,
        dataset="demo",
        bpe="cs336",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.vocab_size = 1  # type: ignore[misc]
    tok = Tokenizer.from_files(ds.tokenizer_path)
    assert tok.vocab_size == 2048
    for path, split in ((ds.train_tokens, "train"), (ds.valid_tokens, "valid")):
        arr = load_token_file(path, vocab_size=2048, tokenizer_path=ds.tokenizer_path)
        assert arr.dtype == np.uint16 and len(arr) > 0 and int(arr.max()) < 2048
        text = (demo_dir / "demo" / f"{split}.txt").read_text(encoding="utf-8")
        assert int((arr == tok.eot_id).sum()) == text.count(EOT)
        assert tok.decode(arr.tolist()) == text  # the whole pipeline round-trips
    assert (demo_dir / "demo" / "valid.txt").read_text() == generate_demo_corpus(seed=1, num_stories=300)


def test_second_prepare_skips_everything(demo_dir, capsys):
    """A second prepare reports every step up to date, and nothing else (no text written, no training, no
    encoding progress bar), and leaves every file as it was."""
    before = _outputs(demo_dir)
    capsys.readouterr()
    prepare_dataset("demo", demo_dir, progress=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        f"tokenizer {demo_dir / TOKENS / 'tokenizer.json'} is up to date",
        f"token file {demo_dir / TOKENS / 'train.npy'} is up to date",
        f"token file {demo_dir / TOKENS / 'valid.npy'} is up to date",
    ]
    assert _outputs(demo_dir) == before


def test_corrupt_token_file_is_rebuilt_but_tokenizer_kept(demo_dir):
    valid = demo_dir / TOKENS / "valid.npy"
    good = valid.read_bytes()
    valid.write_bytes(good[:100])
    tokenizer_mtime = (demo_dir / TOKENS / "tokenizer.json").stat().st_mtime_ns
    prepare_dataset("demo", demo_dir, progress=False)
    assert valid.read_bytes() == good
    assert (demo_dir / TOKENS / "tokenizer.json").stat().st_mtime_ns == tokenizer_mtime


def test_an_out_of_vocab_id_is_refused_when_opened(demo_dir, tmp_path):
    import shutil

    npy = tmp_path / "valid.npy"
    shutil.copy(demo_dir / TOKENS / "valid.npy", npy)
    shutil.copy(demo_dir / TOKENS / "valid.npy.json", tmp_path / "valid.npy.json")
    arr = np.load(npy, mmap_mode="r+")
    arr[len(arr) // 2] = 2048  # one id past the vocab the sidecar claims
    arr.flush()
    del arr
    with pytest.raises(UserError, match="holds token id 2048, outside its vocab of 2048"):
        load_token_file(npy)


def test_other_vocab_sizes_and_trainers_do_not_overwrite(demo_dir):
    before = _outputs(demo_dir)
    small = prepare_dataset("demo", demo_dir, vocab_size=300, progress=False)
    hf = prepare_dataset("demo", demo_dir, vocab_size=300, bpe="hf", progress=False)
    assert small.tokenizer_path.parent.name == "v300-cs336" and hf.tokenizer_path.parent.name == "v300-hf"
    assert _outputs(demo_dir) == before  # the default files are untouched
    cs, other = (Tokenizer.from_files(d.tokenizer_path) for d in (small, hf))
    assert cs.vocab_size == other.vocab_size == 300
    for ds in (small, hf):
        meta = json.loads(Path(f"{ds.train_tokens}.json").read_text())
        assert meta["bpe"] == ds.bpe and meta["vocab_size"] == 300
        load_token_file(ds.train_tokens, vocab_size=300, tokenizer_path=ds.tokenizer_path)


def _plain_text(n_docs: int) -> str:
    return "".join(f"Document number {i} says hello to story {i * 7}.\n{EOT}\n" for i in range(n_docs))


def test_plain_file_holds_out_every_50th_document(tmp_path):
    src = tmp_path / "my_corpus.txt"
    src.write_text(_plain_text(120) + generate_demo_corpus(seed=4, num_stories=30), encoding="utf-8")
    ds = prepare_dataset(src, tmp_path / "data", vocab_size=300, progress=False)
    assert ds.dataset == "my_corpus"
    assert ds.train_tokens == tmp_path / "data" / "my_corpus" / "v300-cs336" / "train.npy"
    valid = (tmp_path / "data" / "my_corpus" / "valid.txt").read_text()
    train = (tmp_path / "data" / "my_corpus" / "train.txt").read_text()
    held = [d.strip() for d in valid.split(EOT) if d.strip()]
    kept = [d.strip() for d in train.split(EOT) if d.strip()]
    every = 50  # the spec: 1 document in 50 is held out (written out, not holdout.VALID_EVERY)
    assert len(held) == 150 // every and len(held) + len(kept) == 150
    assert held[0] == f"Document number {every - 1} says hello to story {(every - 1) * 7}."
    assert not set(held) & set(kept)
    for path in (ds.train_tokens, ds.valid_tokens):
        load_token_file(path, vocab_size=300, tokenizer_path=ds.tokenizer_path)


def test_plain_file_with_explicit_valid_and_vocab_change(tmp_path):
    src, val = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text(generate_demo_corpus(seed=6, num_stories=60), encoding="utf-8")
    val.write_text(generate_demo_corpus(seed=7, num_stories=5), encoding="utf-8")
    ds = prepare_dataset(str(src), tmp_path / "d", vocab_size=300, valid=val, progress=False)
    assert not (tmp_path / "d" / "a" / "train.txt").exists()
    n_valid = len(load_token_file(ds.valid_tokens))
    assert n_valid == len(Tokenizer.from_files(ds.tokenizer_path).encode(val.read_text()))
    ds2 = prepare_dataset(str(src), tmp_path / "d", vocab_size=320, valid=val, progress=False)
    assert ds2.vocab_size == 320
    load_token_file(ds2.train_tokens, vocab_size=320, tokenizer_path=ds2.tokenizer_path)


def test_plain_file_without_separators_is_split_by_lines(tmp_path):
    src = tmp_path / "book.txt"
    src.write_text(
        "\n".join(f"Line {i} of a long book without separators." for i in range(60)), encoding="utf-8"
    )
    prepare_dataset(src, tmp_path / "d", vocab_size=280, progress=False)
    assert (
        tmp_path / "d" / "book" / "valid.txt"
    ).read_text() == "Line 49 of a long book without separators.\n"


def test_single_document_cannot_be_split(tmp_path):
    src = tmp_path / "one.txt"
    src.write_text("just one line", encoding="utf-8")
    with pytest.raises(UserError, match="single document.*--valid"):
        prepare_dataset(src, tmp_path / "d", vocab_size=280, progress=False)


def test_concurrent_prepares_wait_for_each_other(tmp_path, capsys):
    """While another holder has the dataset's ``.prepare.lock`` (an flock, as a second process would hold it),
    prepares block without writing anything; once it is released they run one after another, so the
    tokenizer is trained once and the later ones find it up to date."""
    import fcntl

    src = tmp_path / "shared.txt"
    src.write_text(generate_demo_corpus(seed=12, num_stories=100), encoding="utf-8")
    directory = tmp_path / "d" / "shared"
    directory.mkdir(parents=True)
    results: list[PreparedDataset] = []
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            results.append(prepare_dataset(src, tmp_path / "d", vocab_size=300, progress=True))
        except BaseException as err:  # pragma: no cover - surfaced by the assertion below
            errors.append(err)

    capsys.readouterr()
    with open(directory / ".prepare.lock", "a") as holder:  # its own open file description: a separate lock
        fcntl.flock(holder, fcntl.LOCK_EX)
        threads = [threading.Thread(target=prepare) for _ in range(3)]
        for t in threads:
            t.start()
        threads[0].join(timeout=1.0)  # long enough for an unlocked prepare to have split the text
        assert all(t.is_alive() for t in threads) and not results and not errors
        assert [p.name for p in directory.iterdir()] == [".prepare.lock"]  # nothing written while held
        fcntl.flock(holder, fcntl.LOCK_UN)
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads) and not errors
    assert len(results) == 3 and results[0] == results[1] == results[2]
    log = capsys.readouterr().err
    tokenizer = results[0].tokenizer_path
    assert log.count("train tokenizer train.txt (cs336 BPE, vocab 300)") == 1
    assert log.count(f"tokenizer {tokenizer} is up to date") == 2
    for path in (results[0].train_tokens, results[0].valid_tokens):
        load_token_file(path, vocab_size=300, tokenizer_path=tokenizer)


def test_unknown_dataset_and_misplaced_valid(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'wikipedia'"):
        prepare_dataset("wikipedia", tmp_path)
    with pytest.raises(UserError, match="--valid only applies"):
        prepare_dataset("demo", tmp_path, valid=tmp_path / "v.txt", progress=False)


def test_a_runs_tokenizer_path_is_checked_against_its_token_files(demo_dir, tmp_path):
    """--tokenizer-path was recorded as given: a missing or another tokenizer trained without a word and
    failed only later, in cs336-generate."""
    from cs336_basics.basics.config import create_experiment_config
    from cs336_basics.data.run_data import load_run_data

    files = dict(
        train_data=str(demo_dir / TOKENS / "train.npy"), val_data=str(demo_dir / TOKENS / "valid.npy")
    )
    right = demo_dir / TOKENS / "tokenizer.json"
    assert load_run_data(create_experiment_config("demo", tokenizer_path=str(right), **files))[2] == str(
        right
    )
    other = tmp_path / "tokenizer.json"
    other.write_text(right.read_text().replace('"merges"', '"merges" ', 1))  # same tokens, other bytes
    for path, message in ((tmp_path / "nope.json", "does not exist"), (other, "with a different tokenizer")):
        with pytest.raises(UserError, match=message):
            load_run_data(create_experiment_config("demo", tokenizer_path=str(path), **files))
