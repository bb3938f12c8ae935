"""lr-analyze on a small real sweep (3 short real runs + a hand-made diverged run + a failed point) and on
partial / empty sweeps: figures are PNGs, the reports name the right best LR and divergence threshold."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cs336_basics.assignment_experiments.lr_sweep import analyze_lr_sweep as analyze_mod
from cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep import main as analyze_main
from cs336_basics.assignment_experiments.lr_sweep.report import loss_spikes, plateau
from cs336_basics.assignment_experiments.sweep.plots import lr_colors
from cs336_basics.assignment_experiments.sweep.view import load_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REAL_LRS = (1e-3, 3e-2)
DIVERGED_LR, FAILED_LR = 0.1, 0.3
_TEMPLATE: dict[str, Path] = {}


def _tiny_tokenizer_and_tokens(root: Path):
    from cs336_basics.data import EOT, generate_demo_corpus
    from cs336_basics.data.train_tokenizer import train_from_documents

    docs = [d.strip() for d in generate_demo_corpus(0, 40).split(EOT) if d.strip()]
    tok = train_from_documents(docs, 300)
    tok.save(root / "tokenizer.json")
    ids = np.array([i for d in docs for i in [*tok.encode(d), tok.eot_id]], dtype=np.uint16)
    return ids


def _make_diverged(src: Path, dst: Path, lr: float) -> None:
    """A copy of a real run cut at step 15, with an exploding last loss and a 'diverged' status."""
    shutil.copytree(src, dst)
    (dst / "checkpoints" / "final.pt").unlink()
    lines = (dst / "metrics.csv").read_text().splitlines()[:4]  # header + steps 5, 10, 15
    cells = lines[-1].split(",")
    cells[3] = "9.5"
    lines[-1] = ",".join(cells)
    (dst / "metrics.csv").write_text("\n".join(lines) + "\n")
    reason = "exploded: train loss 9.500 at step 15 is above 1.5 x the initial loss 5.700"
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(max_lr=lr, min_lr=lr / 10)
    (dst / "config.json").write_text(json.dumps(cfg))
    summary = json.loads((dst / "summary.json").read_text())
    summary.update(status="diverged", reason=reason, steps=15, final_train_loss=9.5, final_val_loss=None)
    (dst / "summary.json").write_text(json.dumps(summary))
    status = json.loads((dst / "status.json").read_text())
    status.update(state="diverged", step=15, reason=reason)
    (dst / "status.json").write_text(json.dumps(status))


def real_sweep_template(tmp_path_factory) -> Path:
    """Built once per test session (shared with test_diagnose / test_generate): copy it before changing it."""
    if "sweep" in _TEMPLATE:
        return _TEMPLATE["sweep"]
    from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name
    from cs336_basics.basics.config import create_experiment_config
    from cs336_basics.basics.run_experiment import run_experiment

    root = tmp_path_factory.mktemp("real_sweep")
    ids = _tiny_tokenizer_and_tokens(root)
    sweep = root / "sweep"
    base = dict(
        vocab_size=300, context_length=16, d_model=32, d_ff=64, num_layers=1, num_heads=2, batch_size=4,
        max_steps=20, log_interval=5, eval_interval=10, eval_batches=1, checkpoint_interval=10, device="cpu",
        dtype="fp32", compile="off", target_val_loss=5.5, divergence_check_after=1.0,
        tokenizer_path=str(root / "tokenizer.json"),
    )  # fmt: skip
    for lr in REAL_LRS:
        cfg = create_experiment_config("demo", lr=lr, **base)
        run_experiment(cfg, ids[:-1500], ids[-1500:], sweep / lr_dir_name(lr), progress=False)
    _make_diverged(sweep / lr_dir_name(REAL_LRS[-1]), sweep / lr_dir_name(DIVERGED_LR), DIVERGED_LR)
    cfg = create_experiment_config("demo", **base).to_dict()
    points = [{"lr": lr, "name": lr_dir_name(lr), "added_by": "grid", "state": "finished"} for lr in REAL_LRS]
    points += [
        {"lr": DIVERGED_LR, "name": lr_dir_name(DIVERGED_LR), "added_by": "extension",
         "why": "no point diverged; trying above 0.03", "state": "diverged", "reason": "exploded"},
        {"lr": FAILED_LR, "name": lr_dir_name(FAILED_LR), "added_by": "extension", "why": "test",
         "state": "failed", "error": "RuntimeError: CUDA out of memory"},
    ]  # fmt: skip
    meta = {
        "version": 1, "state": "finished", "preset": "demo", "config": cfg, "learning_rates": list(REAL_LRS),
        "extend": True, "max_extra_points": 3, "executor": "in-process", "target_val_loss": 5.5,
        "points": points, "best_lr": None,
    }  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps(meta))
    _TEMPLATE["sweep"] = sweep
    return sweep


@pytest.fixture
def sweep_copy(tmp_path_factory, tmp_path) -> Path:
    dst = tmp_path / "sweep"
    shutil.copytree(real_sweep_template(tmp_path_factory), dst)
    return dst


def _expected_best(sweep: Path) -> float:
    """The max_lr of the finished run with the lowest final val loss, read from the raw files."""
    runs = [json.loads((d / "summary.json").read_text()) | {"dir": d} for d in sweep.glob("lr_*")
            if (d / "summary.json").exists()]  # fmt: skip
    best = min((r for r in runs if r["status"] == "finished"), key=lambda r: r["final_val_loss"])
    return json.loads((best["dir"] / "config.json").read_text())["max_lr"]


def test_full_sweep_reports_and_figures(sweep_copy, capsys):
    config_file = sweep_copy / "lr_1e_03" / "config.json"
    config = json.loads(config_file.read_text())
    config["runtime"]["notes"].append(
        "resumed on 1 CPU thread(s), 2 before: ..."
    )  # as Trainer.resume notes it
    config_file.write_text(json.dumps(config))
    assert analyze_main([str(sweep_copy), "--device", "cpu", "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    for name in (
        "lr_sweep_comparison.png",
        "lr_vs_final_loss.png",
        "lr_sweep_sharpness.png",
        "lr_sweep_signals.png",
    ):
        data = (sweep_copy / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert f"wrote {sweep_copy / name}" in out
    best = _expected_best(sweep_copy)
    assert f"best lr: {best:g}" in out
    md = (sweep_copy / "lr_sweep_analysis.md").read_text()
    assert f"The best learning rate is **{best:.3g}**" in md
    assert "smallest learning rate above the best that diverged: 0.1 (exploded" in md
    assert "--max-tokens 24 --temperature 0.8 --top-p 0.9 --seed 0`" in md  # the sampling it reports
    assert "largest learning rate that converged: 0.03" in md
    factor = DIVERGED_LR / best
    assert (
        f"the best learning rate {best:.3g} is a factor {factor:.2g} below the smallest diverging lr above it, 0.1"
        in md
    )
    # The measured half, on real runs: the demo preset measures sharpness and signals.
    assert re.search(
        r"\*\*(Yes|No)\*\*: the best learning rate \S+ (trains|does not train) at the edge of stability", md
    )
    assert "| lr | state | seeds | measurements |" in md
    assert "lr 0.1 diverged at step 15" in md and "LR sensitivity (Wortsman et al. 2023): **" in md
    assert (
        re.search(r"(Fitted optimum|Optimum): lr \*\*", md)
        and "These are public reports for the real budgets only" in md
    )
    assert "lr_3e_01: failed (RuntimeError: CUDA out of memory)" in md  # the failed point, no run dir
    assert "added lr 0.1: no point diverged; trying above 0.03 -> diverged" in md
    assert "validation loss 5.5 was **" in md
    assert "ended" in md and "nats above the best" in md
    assert "```text\nOnce upon a time" in md  # the sample from the best checkpoint
    log = (sweep_copy / "EXPERIMENT_LOG.md").read_text()
    for lr in (*REAL_LRS, DIVERGED_LR, FAILED_LR):
        assert f"## max_lr {lr:.3g} (" in log
    assert log.count("**Observations.**") == len(REAL_LRS) + 1  # the failed point has no run dir
    assert "No run directory (the point failed: RuntimeError: CUDA out of memory)" in log
    assert "diverged at step 15: exploded" in log
    assert "1 loss spike(s)" in log  # the hand-made 9.5 at step 15
    runtime = config["runtime"]
    assert all(f"- runtime: {note}\n" in log for note in runtime["notes"])  # how it ran
    assert f"device cpu ({runtime['device_name']}, {runtime['threads']} thread" in log
    summary = json.loads((sweep_copy / "lr_1e_03" / "summary.json").read_text())
    shares = [100 * summary[k] / summary["wallclock_s"] for k in ("eval_s", "checkpoint_s", "measure_s")]
    assert (
        "evaluation took {:.1f}%, checkpointing {:.1f}% and the stability measurements {:.1f}%".format(
            *shares
        )
        in log
    )


def test_partial_sweep_says_what_is_missing(sweep_copy, tmp_path):
    (sweep_copy / "sweep.json").unlink()
    run = sweep_copy / "lr_3e_02"
    (run / "summary.json").unlink()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "step": 20}))
    with open(run / "metrics.csv", "a") as f:
        f.write("25,1600,3.0,4.1")  # half-written line: no newline
    shutil.rmtree(sweep_copy / "lr_1e_03" / "checkpoints")
    out = tmp_path / "report"
    assert analyze_main([str(sweep_copy), "--out", str(out), "--no-sample"]) == 0
    md = (out / "lr_sweep_analysis.md").read_text()
    assert "sweep.json is missing" in md
    assert "lr_3e_02: running at step 20/20" in md
    assert (out / "lr_vs_final_loss.png").read_bytes().startswith(PNG_MAGIC)
    assert not (sweep_copy / "lr_sweep_analysis.md").exists()


def test_run_without_val_loss_and_no_checkpoint(tmp_path, capsys):
    run = tmp_path / "sweep" / "lr_1e_03"
    run.mkdir(parents=True)
    rows = ["step,tokens,wallclock_s,train_loss,val_loss,lr,grad_norm,tokens_per_sec,ms_per_step"]
    rows += [f"{s},{s * 64},{s * 0.1},{6 - s * 0.01},,0.001,1.0,640,100" for s in range(5, 40, 5)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 35, "max_steps": 100}))
    (run / "config.json").write_text(json.dumps({"max_lr": 1e-3, "max_steps": 100}))  # written at start
    assert analyze_main([str(tmp_path / "sweep")]) == 0
    md = (tmp_path / "sweep" / "lr_sweep_analysis.md").read_text()
    assert "lr_1e_03: no validation loss yet" in md
    assert "_Skipped: no finished run yet._" in md
    assert "no validation loss logged yet" in (tmp_path / "sweep" / "EXPERIMENT_LOG.md").read_text()


def test_missing_sweep_dir_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        analyze_main([str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no sweep directory") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--max-tokens", "0"], "error: --max-tokens must be at least 1, got 0"),
     (["--device", "cuda"], "error: device 'cuda' asked for, but CUDA is not available")],
)  # fmt: skip
def test_bad_sampling_flags_are_refused_before_anything_is_written(sweep_copy, capsys, flags, message):
    """They were turned into a '_Skipped: ..._' note of the report, and lr-analyze exited 0."""
    before = sorted(os.listdir(sweep_copy))
    with pytest.raises(SystemExit) as exc:
        analyze_main([str(sweep_copy), *flags])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(message) and err.count("\n") == 1
    assert sorted(os.listdir(sweep_copy)) == before


def test_sample_is_skipped_when_the_checkpoint_is_unreadable(sweep_copy):
    view = load_sweep(sweep_copy)
    ckpt_path = analyze_mod.best_checkpoint(view)
    ckpt_path.write_bytes(b"not a checkpoint")
    lines = analyze_mod.sample_section(view, "Once", 8, 0, "cpu")
    assert lines[0].startswith("_Skipped:") and len(lines) == 1


def test_colours_are_a_function_of_lr_rank():
    a = lr_colors([3e-3, 1e-4, 1e-2])
    b = lr_colors([1e-2, 3e-3, 1e-4])
    assert a == b and list(a) == [1e-4, 3e-3, 1e-2]
    assert len(set(a.values())) == 3


def _metrics(losses, steps=None) -> pd.DataFrame:
    steps = steps or list(range(10, 10 * len(losses) + 1, 10))
    return pd.DataFrame(
        {"step": steps, "train_loss": losses, "val_loss": [np.nan] * len(losses), "wallclock_s": steps}
    )


def test_plateau_and_spikes_from_data():
    falling_then_flat = [6.0 - 0.3 * i for i in range(10)] + [3.0] * 30
    p = plateau(_metrics(falling_then_flat))
    assert p["step"] is not None and 80 <= p["step"] <= 200
    still_falling = [6.0 - 0.05 * i for i in range(40)]
    assert plateau(_metrics(still_falling))["step"] is None
    spiky = [5.0, 4.8, 4.6, 7.0, 4.4, 4.3]
    assert [s for s, *_ in loss_spikes(_metrics(spiky))] == [40]
