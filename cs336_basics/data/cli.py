"""``cs336-data`` (or ``python -m cs336_basics.data``): download, train-tokenizer, tokenize, prepare, check."""

from __future__ import annotations

import argparse
from pathlib import Path

from cs336_basics.data.chunking import ERRORS_CHOICES
from cs336_basics.data.download import BASE_URL_ENV, TINYSTORIES_FILES, download_tinystories
from cs336_basics.data.encode import enable_parallelism, encode_file
from cs336_basics.data.prepare import (
    dataset_texts,
    ensure_tokenizer,
    ensure_tokens,
    ensure_writable_dir,
    prepare_dataset,
    resolve_dataset,
)
from cs336_basics.data.token_file import load_token_file, max_token_id, read_sidecar
from cs336_basics.data.tokenizer import Tokenizer
from cs336_basics.data.train_tokenizer import (
    BPE_TRAINERS,
    DEFAULT_BPE,
    DEFAULT_VOCAB_SIZE,
    check_vocab_size,
    train_tokenizer,
)
from cs336_basics.errors import UserError, cli_entry

DESCRIPTION = """\
Turn text into the token files that training reads (1-D uint16 .npy + JSON sidecar).

  prepare          all steps below, skipping any whose output is already there and valid
  download         fetch TinyStoriesV2-GPT4 train/valid text (resumable) into DATA_DIR/tinystories/
  train-tokenizer  train a byte-level BPE tokenizer -> DATA_DIR/<name>/v<vocab>-<bpe>/tokenizer.json
  tokenize         encode train/valid text -> DATA_DIR/<name>/v<vocab>-<bpe>/{train,valid}.npy (+ sidecars)
  check            validate token files against their sidecars (and a tokenizer / vocab size)

--dataset is 'tinystories' (downloaded, ~2.1 GB), 'demo' (SYNTHETIC stories generated offline in
seconds) or a path to any .txt file (documents separated by <|endoftext|>; 1 in 50 held out for valid).
Example: cs336-data prepare --dataset demo
"""


def _subcommand(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=Path("data"), metavar="DIR", help="root of all data (default: data/)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")


def _dataset_args(p: argparse.ArgumentParser, *, vocab: bool) -> None:
    p.add_argument(
        "--dataset",
        default="tinystories",
        metavar="NAME|PATH",
        help="tinystories | demo | path to a .txt file (default: tinystories)",
    )
    if vocab:
        p.add_argument(
            "--vocab-size", type=int, help="BPE vocab size incl. <|endoftext|> (default 10000; demo 2048)"
        )
        p.add_argument(
            "--bpe",
            choices=BPE_TRAINERS,
            default=DEFAULT_BPE,
            help="BPE trainer: cs336 (this package, the course's exact merges) or hf (Hugging Face) "
            f"(default: {DEFAULT_BPE})",
        )
    p.add_argument(
        "--errors",
        choices=ERRORS_CHOICES,
        default="strict",
        help="on bytes that are not UTF-8: stop with their offset (strict, default) or use U+FFFD (replace)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cs336-data", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _subcommand(sub, "prepare", "download/generate, train tokenizer and tokenize, skipping done steps")
    _common(p)
    _dataset_args(p, vocab=True)
    p.add_argument(
        "--valid", type=Path, help="validation .txt for a plain-file dataset (default: hold out 1 in 50)"
    )
    p.add_argument(
        "--base-url", metavar="URL", help=f"TinyStories base URL (default: ${BASE_URL_ENV} or Hugging Face)"
    )

    p = _subcommand(sub, "download", "fetch TinyStoriesV2-GPT4 text files (resumes a partial download)")
    _common(p)
    p.add_argument(
        "--base-url", metavar="URL", help=f"base URL of the files (default: ${BASE_URL_ENV} or Hugging Face)"
    )
    p.add_argument(
        "--split", choices=sorted(TINYSTORIES_FILES), action="append", help="only this split (repeatable)"
    )

    p = _subcommand(sub, "train-tokenizer", "train a byte-level BPE tokenizer on the dataset's train text")
    _common(p)
    _dataset_args(p, vocab=True)
    p.add_argument(
        "--input", type=Path, metavar="TXT", help="train on this .txt instead of a dataset (needs --output)"
    )
    p.add_argument("--output", type=Path, metavar="PATH", help="tokenizer.json to write (with --input)")
    p.add_argument("--force", action="store_true", help="retrain even if the tokenizer is up to date")

    p = _subcommand(sub, "tokenize", "encode the dataset's train/valid text to .npy token files")
    _common(p)
    _dataset_args(p, vocab=True)
    p.add_argument(
        "--input",
        type=Path,
        metavar="TXT",
        help="encode this .txt instead of a dataset (needs --tokenizer, --output)",
    )
    p.add_argument("--tokenizer", type=Path, metavar="JSON", help="tokenizer.json to use (with --input)")
    p.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help=".npy to write (with --input); the sidecar is <output>.json",
    )
    p.add_argument("--force", action="store_true", help="re-encode even if the token files are up to date")

    p = _subcommand(sub, "check", "validate .npy token files and their sidecars; exit 2 on any problem")
    p.add_argument("paths", type=Path, nargs="+", metavar="NPY")
    p.add_argument(
        "--tokenizer", type=Path, help="also check the files were encoded with this tokenizer.json"
    )
    p.add_argument("--vocab-size", type=int, metavar="N", help="also check the files' vocab size")
    return parser


def _prepare(args: argparse.Namespace) -> None:
    ds = prepare_dataset(
        args.dataset,
        args.data_dir,
        args.vocab_size,
        valid=args.valid,
        errors=args.errors,
        progress=not args.no_progress,
        base_url=args.base_url,
        bpe=args.bpe,
    )
    print(f"dataset {ds.dataset}: vocab {ds.vocab_size} ({ds.bpe} BPE), tokenizer {ds.tokenizer_path}")
    for path in (ds.train_tokens, ds.valid_tokens):
        print(f"  {path}: {read_sidecar(path)['num_tokens']:,} tokens")


def _download(args: argparse.Namespace) -> None:
    splits = tuple(args.split or TINYSTORIES_FILES)
    paths = download_tinystories(
        args.data_dir, base_url=args.base_url, splits=splits, progress=not args.no_progress
    )
    for path in paths.values():
        print(path)


def _train_tokenizer(args: argparse.Namespace) -> None:
    progress = not args.no_progress
    if args.input is not None:
        if args.output is None:
            raise UserError("train-tokenizer --input needs --output PATH/tokenizer.json")
        vocab_size = DEFAULT_VOCAB_SIZE if args.vocab_size is None else args.vocab_size
        tok = train_tokenizer(
            args.input, args.output, vocab_size, bpe=args.bpe, errors=args.errors, progress=progress
        )
        print(f"{args.output}: vocab {tok.vocab_size}")
        return
    spec = resolve_dataset(args.dataset)
    vocab_size = check_vocab_size(spec.default_vocab_size if args.vocab_size is None else args.vocab_size)
    texts = dataset_texts(spec, args.data_dir, errors=args.errors, progress=progress, download=False)
    path = spec.token_directory(args.data_dir, vocab_size, args.bpe) / "tokenizer.json"
    tok = ensure_tokenizer(
        texts["train"],
        path,
        vocab_size,
        bpe=args.bpe,
        errors=args.errors,
        progress=progress,
        force=args.force,
    )
    print(f"{path}: vocab {tok.vocab_size}")


def _tokenize(args: argparse.Namespace) -> None:
    progress = not args.no_progress
    if args.input is not None:
        if args.tokenizer is None or args.output is None:
            raise UserError("tokenize --input needs --tokenizer PATH and --output PATH.npy")
        ensure_writable_dir(args.output.parent)
        meta = encode_file(args.input, args.tokenizer, args.output, errors=args.errors, progress=progress)
        print(f"{args.output}: {meta['num_tokens']:,} tokens")
        return
    spec = resolve_dataset(args.dataset)
    vocab_size = check_vocab_size(spec.default_vocab_size if args.vocab_size is None else args.vocab_size)
    texts = dataset_texts(spec, args.data_dir, errors=args.errors, progress=progress, download=False)
    token_dir = spec.token_directory(args.data_dir, vocab_size, args.bpe)
    tokenizer_path = token_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise UserError(
            f"{tokenizer_path} is missing; run `cs336-data train-tokenizer --dataset {args.dataset} "
            f"--vocab-size {vocab_size} --bpe {args.bpe}` first"
        )
    tok = Tokenizer.from_files(tokenizer_path)
    for split, text in texts.items():
        npy = token_dir / f"{split}.npy"
        ensure_tokens(text, tok, npy, errors=args.errors, progress=progress, force=args.force)
        print(f"{npy}: {read_sidecar(npy)['num_tokens']:,} tokens")


def _check(args: argparse.Namespace) -> None:
    for path in args.paths:
        arr = load_token_file(
            path, vocab_size=args.vocab_size, tokenizer_path=args.tokenizer
        )  # checks max id
        meta = read_sidecar(path)
        top = max_token_id(arr)
        print(f"{path}: ok, {len(arr):,} {arr.dtype.name} tokens, vocab {meta['vocab_size']}, max id {top}")


COMMANDS = {
    "prepare": _prepare,
    "download": _download,
    "train-tokenizer": _train_tokenizer,
    "tokenize": _tokenize,
    "check": _check,
}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_parallelism()  # a fresh process: safe to undo an inherited TOKENIZERS_PARALLELISM=false
    COMMANDS[args.command](args)
    return 0
