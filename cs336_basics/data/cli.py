"""``cs336-data`` (or ``python -m cs336_basics.data``): download, train-tokenizer, tokenize, prepare, check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cs336_basics.data.chunking import ERRORS_CHOICES
from cs336_basics.data.download import BASE_URL_ENV, TINYSTORIES_FILES, download_tinystories
from cs336_basics.data.encode import enable_parallelism, encode_file
from cs336_basics.data.prepare import PreparedDataset, ensure_writable_dir, prepare_dataset
from cs336_basics.data.token_file import load_token_file, read_sidecar, scan_ids
from cs336_basics.data.train_tokenizer import (
    BPE_TRAINERS,
    DEFAULT_BPE,
    DEFAULT_VOCAB_SIZE,
    train_tokenizer,
)
from cs336_basics.errors import (
    EXIT_USER_ERROR,
    ArgumentParser,
    UserError,
    cli_entry,
    command_parser,
    describe_os_error,
)

DESCRIPTION = """\
Turn text into the token files that training reads (1-D uint16 .npy + JSON sidecar).

--dataset is 'tinystories' (downloaded, ~2.1 GB), 'demo' (SYNTHETIC stories generated offline in
seconds) or a path to any .txt file (documents separated by <|endoftext|>; 1 in 50 held out for valid).
Example: cs336-data prepare --dataset demo
"""


def _subcommand(
    sub: argparse._SubParsersAction, name: str, text: str, *parents: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=text, description=text, parents=list(parents))


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("cs336-data", DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do:")

    common = ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, default=Path("data"), metavar="DIR", help="root of all data (default: data/)"
    )
    common.add_argument("--no-progress", action="store_true", help="no progress bars or status lines")

    dataset = ArgumentParser(add_help=False)
    dataset.add_argument(
        "--dataset",
        default="tinystories",
        metavar="NAME|PATH",
        help="tinystories | demo | path to a .txt file (default: tinystories)",
    )
    dataset.add_argument(
        "--vocab-size", type=int, help="BPE vocab size incl. <|endoftext|> (default 10000; demo 2048)"
    )
    dataset.add_argument(
        "--bpe",
        choices=BPE_TRAINERS,
        default=DEFAULT_BPE,
        help="BPE trainer: cs336 (this package, the course's exact merges) or hf (Hugging Face) "
        f"(default: {DEFAULT_BPE})",
    )
    dataset.add_argument(
        "--errors",
        choices=ERRORS_CHOICES,
        default="strict",
        help="on bytes that are not UTF-8: stop with their offset (strict, default) or use U+FFFD (replace)",
    )

    text = "the steps below in turn, skipping any whose output is already there and valid"
    p = _subcommand(sub, "prepare", text, common, dataset)
    p.add_argument(
        "--valid", type=Path, help="validation .txt for a plain-file dataset (default: hold out 1 in 50)"
    )
    p.add_argument(
        "--base-url", metavar="URL", help=f"TinyStories base URL (default: ${BASE_URL_ENV} or Hugging Face)"
    )

    text = "fetch TinyStoriesV2-GPT4 train/valid text (resumable) into DATA_DIR/tinystories/"
    p = _subcommand(sub, "download", text, common)
    p.add_argument(
        "--base-url", metavar="URL", help=f"base URL of the files (default: ${BASE_URL_ENV} or Hugging Face)"
    )
    p.add_argument(
        "--split", choices=sorted(TINYSTORIES_FILES), action="append", help="only this split (repeatable)"
    )

    text = "train a byte-level BPE tokenizer -> DATA_DIR/<name>/v<vocab>-<bpe>/tokenizer.json"
    p = _subcommand(sub, "train-tokenizer", text, common, dataset)
    p.add_argument(
        "--input", type=Path, metavar="TXT", help="train on this .txt instead of a dataset (needs --output)"
    )
    p.add_argument("--output", type=Path, metavar="PATH", help="tokenizer.json to write (with --input)")
    p.add_argument("--force", action="store_true", help="retrain even if the tokenizer is up to date")

    text = "encode train/valid text -> DATA_DIR/<name>/v<vocab>-<bpe>/{train,valid}.npy (+ sidecars)"
    p = _subcommand(sub, "tokenize", text, common, dataset)
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

    p = _subcommand(
        sub,
        "check",
        "validate token files against their sidecars (and a tokenizer / vocab size); exit 2 on any problem",
    )
    p.add_argument("paths", type=Path, nargs="+", metavar="NPY", help="token files (.npy) to check")
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


def _one_step(args: argparse.Namespace, step: str) -> PreparedDataset:
    """One step of ``prepare`` on ``--dataset``, whose text must be there already (no download)."""
    return prepare_dataset(
        args.dataset,
        args.data_dir,
        args.vocab_size,
        errors=args.errors,
        progress=not args.no_progress,
        bpe=args.bpe,
        steps=(step,),
        download=False,
        force=args.force,
    )


def _writable_output(path: Path, example: str) -> None:
    """Check ``--output`` can be written before any work: a file path (``example`` its usual name) in a
    directory that exists or can be made, and is writable."""
    if path.is_dir():
        raise UserError(f"--output {path} is a directory; pass a file path in it (e.g. {path / example})")
    ensure_writable_dir(path.parent, f"the directory of --output {path}:", "--output")


def _train_tokenizer(args: argparse.Namespace) -> None:
    if args.input is None:
        ds = _one_step(args, "tokenizer")
        print(f"{ds.tokenizer_path}: vocab {ds.vocab_size}")
        return
    if args.output is None:
        raise UserError("train-tokenizer --input needs --output PATH/tokenizer.json")
    vocab_size = DEFAULT_VOCAB_SIZE if args.vocab_size is None else args.vocab_size
    _writable_output(args.output, "tokenizer.json")
    tok = train_tokenizer(
        args.input, args.output, vocab_size, bpe=args.bpe, errors=args.errors, progress=not args.no_progress
    )
    print(f"{args.output}: vocab {tok.vocab_size}")


def _tokenize(args: argparse.Namespace) -> None:
    if args.input is None:
        ds = _one_step(args, "tokens")
        for path in (ds.train_tokens, ds.valid_tokens):
            print(f"{path}: {read_sidecar(path)['num_tokens']:,} tokens")
        return
    if args.tokenizer is None or args.output is None:
        raise UserError("tokenize --input needs --tokenizer PATH and --output PATH.npy")
    _writable_output(args.output, "tokens.npy")
    meta = encode_file(
        args.input, args.tokenizer, args.output, errors=args.errors, progress=not args.no_progress
    )
    print(f"{args.output}: {meta['num_tokens']:,} tokens")


def _check(args: argparse.Namespace) -> None:
    """Every file is checked, a bad one does not hide the next: one ``error:`` line per bad file, exit 2."""
    bad = 0
    for path in args.paths:
        try:
            arr = load_token_file(path, vocab_size=args.vocab_size, tokenizer_path=args.tokenizer)
        except (UserError, OSError) as err:
            bad += 1
            print(f"error: {describe_os_error(err) if isinstance(err, OSError) else err}", file=sys.stderr)
            continue
        meta, (top, _) = read_sidecar(path), scan_ids(arr)
        ids = (
            "ids as encoded (sha256)"
            if meta.get("tokens_sha256")
            else "ids not hashed (its sidecar predates tokens_sha256; `cs336-data tokenize --force` adds it)"
        )
        print(
            f"{path}: ok, {len(arr):,} {arr.dtype.name} tokens, vocab {meta['vocab_size']}, max id {top}, {ids}"
        )
    if bad:
        raise SystemExit(EXIT_USER_ERROR)


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


if __name__ == "__main__":
    sys.exit(main())
