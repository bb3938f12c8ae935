"""Sampling: temperature and nucleus maths, greedy decoding, EOT stop, context cropping, and the command end
to end on a checkpoint written by a real (tiny) training run."""

from __future__ import annotations

import pytest
import torch

from cs336_basics.basics.generate import generate, main, next_token_distribution
from cs336_basics.basics.model import TransformerLM
from tests.test_analyze import real_sweep_template


def _model(vocab=50, context=8) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(vocab, context, 16, 1, 2, 32, 10_000.0)


class _Scripted(torch.nn.Module):
    """Always predicts ``token``; records the length of every input it sees."""

    def __init__(self, token: int, vocab: int = 10, context_length: int = 4):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.token, self.vocab, self.context_length, self.seen = token, vocab, context_length, []

    def forward(self, ids):
        self.seen.append(ids.shape[-1])
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[..., self.token] = 5.0
        return logits


def test_temperature_softmax_matches_manual():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    probs = next_token_distribution(logits, temperature=0.7, top_p=1.0)
    manual = torch.exp(logits / 0.7) / torch.exp(logits / 0.7).sum()
    torch.testing.assert_close(probs, manual)


def test_top_p_keeps_the_nucleus_and_renormalises():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = next_token_distribution(probs.log(), temperature=1.0, top_p=0.7)
    torch.testing.assert_close(kept, torch.tensor([0.625, 0.375, 0.0, 0.0]))


def test_tiny_top_p_and_zero_temperature_are_greedy():
    model = _model()
    prompt = [1, 2, 3]
    greedy = generate(model, prompt, 12, temperature=0.0, top_p=1.0)
    nucleus = generate(model, prompt, 12, 1.0, 1e-9, None, torch.Generator().manual_seed(1))
    ids = list(prompt)
    for _ in range(12):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids[-model.context_length :]]))[0, -1].argmax()))
    assert greedy == nucleus == ids[len(prompt) :]


def test_seeded_sampling_is_reproducible():
    model = _model()
    a = generate(model, [1], 10, 1.0, 0.9, None, torch.Generator().manual_seed(3))
    b = generate(model, [1], 10, 1.0, 0.9, None, torch.Generator().manual_seed(3))
    assert a == b and len(a) == 10


def test_stops_at_eot_and_crops_context():
    model = _Scripted(token=7, context_length=4)
    assert generate(model, list(range(10)), 20, temperature=0.0, eot_id=7) == [7]
    assert model.seen == [4]
    model = _Scripted(token=3, context_length=4)
    assert generate(model, [1, 2], 6, temperature=0.0, eot_id=9) == [3] * 6
    assert max(model.seen) == 4


def test_command_samples_from_a_trained_checkpoint(tmp_path_factory, capsys):
    ckpt = real_sweep_template(tmp_path_factory) / "lr_3e_02" / "checkpoints" / "best.pt"
    args = [
        "--checkpoint",
        str(ckpt),
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "20",
        "--device",
        "cpu",
    ]
    capsys.readouterr()  # drop the training runs' output
    assert main(args) == 0
    first = capsys.readouterr()
    assert first.out.startswith("Once upon a time") and "tokens, stopped at" in first.err
    assert main(args) == 0
    assert capsys.readouterr().out == first.out  # same seed, same text


@pytest.mark.parametrize("problem", ["missing", "corrupt", "truncated", "no-tokenizer", "bad-top-p"])
def test_bad_input_is_one_line(problem, tmp_path, tmp_path_factory, capsys):
    from cs336_basics.basics.checkpoint import read_checkpoint, write_checkpoint

    ckpt = tmp_path / "c.pt"
    extra: list[str] = []
    if problem == "corrupt":
        ckpt.write_bytes(b"not a checkpoint at all")
    elif (
        problem == "truncated"
    ):  # torch's reason is a paragraph ("... high likelihood that your checkpoint ...")
        real = real_sweep_template(tmp_path_factory) / "lr_1e_03" / "checkpoints" / "final.pt"
        ckpt.write_bytes(real.read_bytes()[:4096])
    elif problem == "no-tokenizer":
        real = real_sweep_template(tmp_path_factory) / "lr_1e_03" / "checkpoints" / "final.pt"
        saved = read_checkpoint(real)
        gone = str(tmp_path / "gone.json")
        write_checkpoint(
            {**saved, "tokenizer_path": gone, "config": {**saved["config"], "tokenizer_path": gone}}, ckpt
        )
    elif problem == "bad-top-p":
        ckpt = real_sweep_template(tmp_path_factory) / "lr_1e_03" / "checkpoints" / "final.pt"
        extra = ["--top-p", "0"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(ckpt), "--device", "cpu", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 400, err


def test_finds_a_moved_runs_tokenizer_from_any_directory(tmp_path, tmp_path_factory, capsys, monkeypatch):
    """Stored path gone (project moved): found relative to the run dir's parents, whatever the cwd."""
    import shutil

    from cs336_basics.basics.checkpoint import read_checkpoint, write_checkpoint

    template = real_sweep_template(tmp_path_factory)
    moved = tmp_path / "moved"
    shutil.copytree(template / "lr_1e_03", moved / "runs" / "a")
    shutil.copy(template.parent / "tokenizer.json", moved / "tokenizer.json")
    ckpt = moved / "runs" / "a" / "checkpoints" / "final.pt"
    saved = read_checkpoint(ckpt)
    write_checkpoint({**saved, "tokenizer_path": "tokenizer.json", "config": {**saved["config"], "tokenizer_path": "tokenizer.json"}}, ckpt)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["--checkpoint", str(ckpt), "--max-tokens", "5", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("Once upon a time")


def test_refuses_a_tokenizer_of_another_vocab_size(tmp_path, tmp_path_factory, capsys):
    from cs336_basics.data import EOT, generate_demo_corpus
    from cs336_basics.data.train_tokenizer import train_from_documents

    other = tmp_path / "t.json"
    train_from_documents(generate_demo_corpus(0, 40).split(EOT), 290).save(other)
    ckpt = real_sweep_template(tmp_path_factory) / "lr_1e_03" / "checkpoints" / "final.pt"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--device", "cpu", "--tokenizer", str(other)])
    assert "has 290 tokens but the model" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["checkpoints", "run"])
def test_a_checkpoint_directory_says_it_is_one(where, tmp_path_factory, capsys):
    """A run's checkpoints/ (or the run itself) is a directory, not a missing file: say so and name one
    of the checkpoint files inside it."""
    run = real_sweep_template(tmp_path_factory) / "lr_1e_03"
    given = run / "checkpoints" if where == "checkpoints" else run
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(given), "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" not in err, err
    assert f"checkpoint {given} is a directory; pass a checkpoint file inside it" in err, err
    assert str(run / "checkpoints" / "best.pt") in err or str(run / "checkpoints" / "final.pt") in err, err


def test_the_users_own_file_as_tokenizer_is_not_to_be_deleted(tmp_path, tmp_path_factory, capsys):
    notes = tmp_path / "README.md"
    notes.write_text("# My project\n\nNot a tokenizer.\n")
    ckpt = real_sweep_template(tmp_path_factory) / "lr_1e_03" / "checkpoints" / "final.pt"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(ckpt), "--device", "cpu", "--tokenizer", str(notes)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{notes} is not a valid tokenizer.json" in err, err
    assert "delete" not in err and "retrain" not in err, err
    assert "pass a tokenizer.json written by `cs336-data train-tokenizer`" in err, err


def test_a_tokenizer_directory_says_it_is_one(tmp_path, tmp_path_factory, capsys):
    ckpt = real_sweep_template(tmp_path_factory) / "lr_1e_03" / "checkpoints" / "final.pt"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--device", "cpu", "--tokenizer", str(tmp_path)])
    err = capsys.readouterr().err
    assert f"--tokenizer {tmp_path} is a directory" in err and "not found" not in err, err


def test_the_fallback_finds_the_tokenizer_where_prepare_put_a_text_files_data(tmp_path):
    """A text file named demo.txt is prepared apart from the built-in demo (``demo-file``): the fallback
    looked under ``demo`` and took the built-in demo's tokenizer."""
    from cs336_basics.basics.generate import find_tokenizer
    from cs336_basics.data.prepare import resolve_dataset

    text = tmp_path / "my" / "demo.txt"
    text.parent.mkdir()
    text.write_text("Once upon a time.\n")
    data = tmp_path / "data"
    ours = resolve_dataset(text).token_directory(data, 2048, "cs336") / "tokenizer.json"
    builtin = data / "demo" / "v2048-cs336" / "tokenizer.json"
    for path in (ours, builtin):
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    assert ours.parent.parent.name == "demo-file"
    run = tmp_path / "run" / "checkpoints" / "best.pt"
    config = {"dataset": str(text), "data_dir": str(data), "vocab_size": 2048}
    assert find_tokenizer(run, {"config": config}) == ours
