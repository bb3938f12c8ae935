"""``prepare_dataset``: text -> tokenizer -> token files, skipping every step whose output is still valid.

Layout under ``data_dir/<name>/`` (``name`` is ``tinystories``, ``demo`` or the stem of a .txt file)::

    train.txt / valid.txt            demo text, or the split of a plain file (see holdout.py)
    v<vocab>-<bpe>/                  one directory per (vocab size, trainer), e.g. v10000-cs336/, so
        tokenizer.json               tokenizers and token files of different sizes never overwrite
        train.npy, train.npy.json    each other: byte-level BPE (+ tokenizer.meta.json), token ids +
        valid.npy, valid.npy.json    sidecars (see token_file.py)

Concurrent callers (e.g. parallel training runs) are serialised by a lock file in that directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from cs336_basics.atomic import atomic_write
from cs336_basics.data.chunking import cannot_write, check_errors_mode, check_text_file, status
from cs336_basics.data.demo_corpus import DEFAULT_NUM_STORIES, generate_demo_corpus
from cs336_basics.data.download import TINYSTORIES_FILES, download_tinystories
from cs336_basics.data.encode import encode_file
from cs336_basics.data.holdout import split_plain_file
from cs336_basics.data.layout import BUILTIN, dataset_dir_name, token_dir_name
from cs336_basics.data.token_file import token_file_problem
from cs336_basics.data.tokenizer import Tokenizer
from cs336_basics.data.train_tokenizer import (
    DEFAULT_BPE,
    check_bpe,
    check_vocab_size,
    tokenizer_is_current,
    train_tokenizer,
)
from cs336_basics.errors import UserError

DEFAULT_VOCAB_SIZE = {"tinystories": 10_000, "demo": 2048, "file": 10_000}
STEPS = ("tokenizer", "tokens")  # after the text, which every step needs
DEMO_SPLITS = {"train": (0, DEFAULT_NUM_STORIES), "valid": (1, 300)}  # split -> (seed, num_stories)


@dataclass(frozen=True)
class PreparedDataset:
    """Paths of a prepared dataset, ready for ``load_token_file``."""

    train_tokens: Path
    valid_tokens: Path
    tokenizer_path: Path
    vocab_size: int
    dataset: str
    bpe: str = DEFAULT_BPE


@dataclass(frozen=True)
class DatasetSpec:
    """What ``--dataset`` names: its short name, kind (tinystories/demo/file) and, for a file, its path."""

    name: str
    kind: str
    source: Path | None = None

    def vocab_size(self, requested: int | None) -> int:
        """``requested`` if given, else this kind's default; ``UserError`` if too small."""
        return check_vocab_size(DEFAULT_VOCAB_SIZE[self.kind] if requested is None else requested)

    def directory(self, data_dir: str | os.PathLike) -> Path:
        return Path(data_dir) / self.name

    def token_directory(self, data_dir: str | os.PathLike, vocab_size: int, bpe: str) -> Path:
        """Where the tokenizer and token files of one (vocab size, trainer) live."""
        return self.directory(data_dir) / token_dir_name(vocab_size, bpe)


def resolve_dataset(dataset: str | os.PathLike) -> DatasetSpec:
    """``"tinystories"``, ``"demo"``, or a path to a text file (its stem becomes the name)."""
    text = os.fspath(dataset)
    if text in BUILTIN:
        return DatasetSpec(text, text)
    path = Path(text)
    if not (path.suffix or os.sep in text or path.exists()):
        raise UserError(f"unknown dataset {text!r}; use tinystories, demo, or a path to a .txt file")
    check_text_file(path)
    return DatasetSpec(dataset_dir_name(text), "file", path)


def ensure_writable_dir(path: Path, what: str = "data dir", flag: str = "--data-dir") -> Path:
    """Create ``path`` and check a file can be written there, else ``UserError`` saying it cannot write to
    ``what`` (``"data dir"``) and to choose another ``flag``, the option that named the place."""
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory", str(path))
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise cannot_write(f"write to {what} {path}", err, flag) from None
    return path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not on POSIX: no locking
        yield
        return
    with open(directory / ".prepare.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_demo_text(directory: Path, progress: bool) -> dict[str, Path]:
    paths = {}
    for split, (seed, n) in DEMO_SPLITS.items():
        path = directory / f"{split}.txt"
        text = generate_demo_corpus(seed=seed, num_stories=n)
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            with atomic_write(path, "wb") as f:  # bytes: independent of the locale's encoding
                f.write(text.encode("utf-8"))
            status(progress, f"wrote {path} (synthetic demo stories, seed {seed})")
        paths[split] = path
    return paths


def dataset_texts(
    spec: DatasetSpec,
    data_dir: str | os.PathLike,
    *,
    valid: str | os.PathLike | None = None,
    errors: str = "strict",
    progress: bool = True,
    download: bool = True,
    base_url: str | None = None,
) -> dict[str, Path]:
    """The train/valid text files of ``spec``, downloading, generating or splitting them as needed."""
    directory = spec.directory(data_dir)
    if valid is not None and spec.kind != "file":
        raise UserError(f"--valid only applies to --dataset <path to a .txt>, not {spec.name}")
    if spec.kind == "demo":
        return _write_demo_text(directory, progress)
    if spec.kind == "tinystories":
        paths = {split: directory / name for split, name in TINYSTORIES_FILES.items()}
        missing = [p for p in paths.values() if not p.is_file()]
        if missing and not download:
            raise UserError(f"{missing[0]} is missing; run `cs336-data download --data-dir {data_dir}` first")
        if missing:
            paths = download_tinystories(data_dir, base_url=base_url, progress=progress)
        return paths
    assert spec.source is not None
    if valid is not None:
        check_text_file(valid)
        return {"train": spec.source, "valid": Path(valid)}
    return split_plain_file(spec.source, directory, errors=errors, progress=progress)


def ensure_tokenizer(
    train_text: Path,
    tokenizer_path: Path,
    vocab_size: int,
    *,
    bpe: str = DEFAULT_BPE,
    errors: str,
    progress: bool,
    force: bool = False,
) -> Tokenizer:
    """Reuse ``tokenizer_path`` if trainer ``bpe`` made it from this text with this vocab size, else train it."""
    if not force and tokenizer_is_current(tokenizer_path, vocab_size, check_text_file(train_text), bpe):
        status(progress, f"tokenizer {tokenizer_path} is up to date")
        return Tokenizer.from_files(tokenizer_path)
    created = not tokenizer_path.parent.exists()
    tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return train_tokenizer(
            train_text,
            tokenizer_path,
            vocab_size,
            bpe=bpe,
            errors=errors,
            progress=progress,
            out_flag="--data-dir",
        )
    except BaseException:
        # A failed first training (e.g. a --vocab-size beyond what the text supports) leaves no empty
        # v<vocab>-<bpe>/ behind; rmdir only removes it while empty.
        if created:
            with contextlib.suppress(OSError):
                tokenizer_path.parent.rmdir()
        raise


def ensure_tokens(
    text: Path, tokenizer: Tokenizer, npy: Path, *, errors: str, progress: bool, force: bool = False
) -> None:
    """Reuse ``npy`` if it holds ``text`` encoded with ``tokenizer``, else (re-)encode it."""
    assert tokenizer.path is not None
    problem = token_file_problem(
        npy, vocab_size=tokenizer.vocab_size, tokenizer_path=tokenizer.path, source_size=check_text_file(text)
    )
    if problem is None and not force:
        status(progress, f"token file {npy} is up to date")
        return
    if npy.exists() and problem is not None:
        status(progress, f"re-encoding: {problem}")
    encode_file(text, tokenizer, npy, errors=errors, progress=progress, out_flag="--data-dir")


def prepare_dataset(
    dataset: str = "tinystories",
    data_dir: str | os.PathLike = "data",
    vocab_size: int | None = None,
    valid: str | os.PathLike | None = None,
    errors: str = "strict",
    progress: bool = True,
    *,
    base_url: str | None = None,
    bpe: str = DEFAULT_BPE,
    steps: Collection[str] = STEPS,
    download: bool = True,
    force: bool = False,
) -> PreparedDataset:
    """Download/generate the text, train the tokenizer and encode train/valid; idempotent.

    ``dataset`` is ``"tinystories"``, ``"demo"`` (synthetic, offline, seconds) or a path to a .txt file.
    ``vocab_size`` defaults to 10,000 (2,048 for demo); ``bpe`` picks the trainer (``cs336`` or ``hf``).
    ``steps`` can leave out ``"tokenizer"`` (then the trained one must exist) or ``"tokens"``;
    ``download=False`` stops instead of fetching TinyStories; ``force`` redoes the steps even if up to date.
    """
    check_errors_mode(errors)
    check_bpe(bpe)
    spec = resolve_dataset(dataset)
    vocab_size = spec.vocab_size(vocab_size)
    directory = ensure_writable_dir(spec.directory(data_dir))
    token_dir = spec.token_directory(data_dir, vocab_size, bpe)
    tokenizer_path = token_dir / "tokenizer.json"
    tokens = {split: token_dir / f"{split}.npy" for split in ("train", "valid")}
    with _locked(directory):
        texts = dataset_texts(
            spec,
            data_dir,
            valid=valid,
            errors=errors,
            progress=progress,
            download=download,
            base_url=base_url,
        )
        if "tokenizer" in steps:
            tok = ensure_tokenizer(
                texts["train"],
                tokenizer_path,
                vocab_size,
                bpe=bpe,
                errors=errors,
                progress=progress,
                force=force,
            )
        elif tokenizer_path.is_file():
            tok = Tokenizer.from_files(tokenizer_path)
        else:
            raise UserError(
                f"{tokenizer_path} is missing; run `cs336-data train-tokenizer --dataset {dataset} "
                f"--vocab-size {vocab_size} --bpe {bpe}` first"
            )
        if "tokens" in steps:
            for split, npy in tokens.items():
                ensure_tokens(texts[split], tok, npy, errors=errors, progress=progress, force=force)
    return PreparedDataset(
        train_tokens=tokens["train"],
        valid_tokens=tokens["valid"],
        tokenizer_path=tokenizer_path,
        vocab_size=tok.vocab_size,
        dataset=spec.name,
        bpe=bpe,
    )
