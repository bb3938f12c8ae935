"""Sample text from a trained checkpoint.

    python -m cs336_basics.basics.generate --checkpoint runs/demo/checkpoints/best.pt \\
        --prompt "Once upon a time" --max-tokens 256 --temperature 0.8 --top-p 0.9

The model shape comes from the checkpoint's ``config``; the tokenizer from ``--tokenizer``, else the one the
run trained with (see ``find_tokenizer``), and its vocab size must be the model's. Sampling stops at
``<|endoftext|>`` or after ``--max-tokens`` new tokens.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cs336_basics.basics.functional import softmax
from cs336_basics.basics.model import MODEL_FIELDS, TransformerLM
from cs336_basics.errors import ArgumentParser, UserError, cli_entry, command_parser


def next_token_distribution(logits: Tensor, temperature: float, top_p: float) -> Tensor:
    """Probabilities over the vocabulary for one position's ``logits`` (1-D).

    ``temperature`` 0 puts all mass on the argmax (greedy). Otherwise softmax(logits / temperature), cut to
    the smallest set of most likely tokens whose mass reaches ``top_p`` (nucleus; the top token is always
    kept) and renormalised.
    """
    logits = logits.float()
    if temperature <= 0:
        probs = torch.zeros_like(logits)
        probs[logits.argmax()] = 1.0
        return probs
    probs = softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(descending=True)
    mass_before = sorted_probs.cumsum(0) - sorted_probs  # mass of the strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep_sorted[0] = True
    kept = torch.zeros_like(probs)
    kept[order[keep_sorted]] = probs[order[keep_sorted]]
    return kept / kept.sum()


@torch.inference_mode()
def generate(
    model: TransformerLM,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eot_id: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample up to ``max_new_tokens`` tokens after ``prompt_ids``; return the new ids only.

    The context is cropped to the model's ``context_length`` (the most recent tokens). Stops after emitting
    ``eot_id`` (which is then the last id returned). ``generator`` (a CPU ``torch.Generator``) makes it
    reproducible; sampling itself runs on the CPU.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids must hold at least one token (e.g. the <|endoftext|> id)")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    context_length = getattr(model, "context_length", None) or len(prompt_ids) + max_new_tokens
    ids = list(prompt_ids)
    new: list[int] = []
    try:
        for _ in range(max_new_tokens):
            window = torch.tensor(ids[-context_length:], dtype=torch.long, device=device)
            logits = model(window[None])[0, -1].float().cpu()
            probs = next_token_distribution(logits, temperature, top_p)
            token = int(torch.multinomial(probs, 1, generator=generator).item())
            ids.append(token)
            new.append(token)
            if eot_id is not None and token == eot_id:
                break
    finally:
        model.train(was_training)
    return new


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[TransformerLM, dict]:
    """The ``TransformerLM`` stored in a checkpoint (shape from its ``config``) and the raw checkpoint dict."""
    from cs336_basics.basics.checkpoint import read_checkpoint, unreadable_text

    path = Path(checkpoint)
    if path.is_dir():
        raise UserError(
            f"checkpoint {path} is a directory; pass a checkpoint file inside it (e.g. {_example_checkpoint(path)})"
        )
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a run's checkpoints/best.pt or final.pt")
    try:
        ckpt = read_checkpoint(path)
    except Exception as err:
        raise UserError(f"{unreadable_text(path, err)}, or not a checkpoint: use another one "
                        "(checkpoints/best.pt, final.pt or latest.pt)") from None  # fmt: skip
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict) or "model" not in ckpt:
        raise UserError(f"{path} is not a training checkpoint of this project (no model config inside)")
    missing = [k for k in MODEL_FIELDS if k not in config]
    if missing:
        raise UserError(f"{path}: checkpoint config lacks {', '.join(missing)}; cannot rebuild the model")
    model = TransformerLM.from_config(config)
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit the model in its config ({_first_line(err)})") from None
    return model.to(device), ckpt


def _example_checkpoint(directory: Path) -> Path:
    """A checkpoint file in ``directory`` (a run's ``checkpoints/``) or in its ``checkpoints/`` (a run
    directory): the first of best.pt, final.pt, latest.pt there, else ``best.pt`` where a run puts it."""
    folder = (
        directory
        if directory.name == "checkpoints" or not (directory / "checkpoints").is_dir()
        else directory / "checkpoints"
    )
    for name in ("best.pt", "final.pt", "latest.pt"):
        if (folder / name).is_file():
            return folder / name
    return folder / "best.pt"


def find_tokenizer(checkpoint: str | Path, ckpt: dict) -> Path | None:
    """The tokenizer a run trained with, from any working directory.

    The trainer stores ``tokenizer_path`` absolute (checkpoint and config). If that file is gone (the
    project moved, another machine) or the path is relative, look for it relative to the run directory
    and its parents, then beside the run's token files, then in the run's data dir under the vocab size
    (``<data_dir>/<dataset>/v<vocab>-<bpe>/tokenizer.json``).
    """
    config = ckpt.get("config") or {}
    run_dir = Path(checkpoint).resolve().parent.parent  # <run>/checkpoints/best.pt
    names: list[Path] = [Path(p) for p in (ckpt.get("tokenizer_path"), config.get("tokenizer_path")) if p]
    names += [
        Path(p).parent / "tokenizer.json" for p in (config.get("train_data"), config.get("val_data")) if p
    ]
    if config.get("dataset") and config.get("vocab_size"):
        from cs336_basics.basics.config import ExperimentConfig
        from cs336_basics.data.layout import BPE_TRAINERS, dataset_dir_name, token_dir_name

        base = Path(config.get("data_dir") or ExperimentConfig.data_dir) / dataset_dir_name(config["dataset"])
        names += [base / token_dir_name(config["vocab_size"], bpe) / "tokenizer.json" for bpe in BPE_TRAINERS]
    for name in names:
        roots = [Path()] if name.is_absolute() else [Path(), run_dir, *run_dir.parents[:3]]
        for root in roots:
            if (root / name).is_file():
                return root / name
    return None


def load_tokenizer(path: str | Path | None, checkpoint: str | Path, ckpt: dict | None = None):
    """The tokenizer at ``path``, or (``path`` None) the one ``find_tokenizer`` finds for the checkpoint."""
    from cs336_basics.data import Tokenizer

    if path:
        if Path(path).is_dir():
            raise UserError(
                f"--tokenizer {path} is a directory; pass the tokenizer.json inside it "
                f"(e.g. --tokenizer {Path(path) / 'tokenizer.json'})"
            )
        if not Path(path).is_file():
            raise UserError(f"tokenizer {path} not found; pass an existing --tokenizer PATH/tokenizer.json")
        return Tokenizer.from_files(path)
    found = find_tokenizer(checkpoint, ckpt or {})
    if found is None:
        named = (ckpt or {}).get("tokenizer_path")
        where = f"it names {named}, which does not exist" if named else "it does not name its tokenizer"
        raise UserError(
            f"no tokenizer found for checkpoint {checkpoint} ({where}); pass --tokenizer PATH/tokenizer.json"
        )
    return Tokenizer.from_files(found)


@dataclass
class Sample:
    prompt: str
    text: str  # the continuation, without the final <|endoftext|>
    new_tokens: int
    stopped_at_eot: bool
    checkpoint: Path
    iteration: int | None


def sample_from_checkpoint(
    checkpoint: str | Path,
    prompt: str = "Once upon a time",
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_p: float = 0.9,
    seed: int = 0,
    device: str = "auto",
    tokenizer: str | Path | None = None,
) -> Sample:
    """Load checkpoint and tokenizer, sample a continuation of ``prompt`` and decode it."""
    from cs336_basics.basics.device import resolve_device

    check_sampling_args(max_new_tokens, temperature, top_p)
    model, ckpt = load_model(checkpoint, resolve_device(device))
    tok = load_tokenizer(tokenizer, checkpoint, ckpt)
    model_vocab = model.lm_head.weight.shape[0]
    if tok.vocab_size != model_vocab:
        raise UserError(
            f"tokenizer {tok.path} has {tok.vocab_size} tokens but the model in {checkpoint} was trained with "
            f"{model_vocab}; pass the tokenizer the model was trained with (--tokenizer)"
        )
    eot = tok.eot_id
    prompt_ids = tok.encode(prompt) if prompt else []
    if not prompt_ids:
        if eot is None:
            raise UserError(
                "empty prompt and the tokenizer has no <|endoftext|> to start from; give --prompt"
            )
        prompt_ids = [eot]  # start a fresh document
    generator = torch.Generator().manual_seed(seed)
    new = generate(model, prompt_ids, max_new_tokens, temperature, top_p, eot, generator)
    stopped = eot is not None and bool(new) and new[-1] == eot
    text = tok.decode(new[:-1] if stopped else new)
    return Sample(prompt, text, len(new), stopped, Path(checkpoint), ckpt.get("iteration"))


def check_sampling_args(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1, got {max_new_tokens}")
    if not temperature >= 0:
        raise UserError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def build_parser() -> ArgumentParser:
    p = command_parser("cs336-generate", __doc__)
    p.add_argument("--checkpoint", required=True, type=Path, help="a run's checkpoints/best.pt (or final.pt)")
    p.add_argument("--prompt", default="Once upon a time", help="text to continue (default: %(default)r)")
    p.add_argument("--max-tokens", type=int, default=256, help="most new tokens (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus mass kept (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: the checkpoint's)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sample = sample_from_checkpoint(
        args.checkpoint,
        args.prompt,
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        device=args.device,
        tokenizer=args.tokenizer,
    )
    print(sample.prompt + sample.text)
    end = "<|endoftext|>" if sample.stopped_at_eot else f"--max-tokens {args.max_tokens}"
    print(f"\n[{sample.new_tokens} tokens, stopped at {end}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
