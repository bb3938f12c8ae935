"""cs336-bench: the CLI runs and prints its table, its ratio and MFU arithmetic, and that the plain-PyTorch
baseline computes the same model as the package (so the two loops time the same work)."""

from __future__ import annotations

import json
import types

import pytest
import torch

from cs336_basics.basics import bench, hardware
from cs336_basics.basics.kernels import fast_cross_entropy
from cs336_basics.basics.model import TransformerLM
from tests.conftest import tiny_config

TINY = "--preset demo --device cpu --vocab-size 64 --context-length 16 --d-model 32 --d-ff 64 --num-layers 1 --num-heads 2"


def test_cli_prints_the_table_and_writes_the_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [*TINY.split(), "--precision", "fp32,tf32", "--compile", "off", "--batch-size", "4"]
    assert bench.main([*argv, "--steps", "2", "--warmup", "1", "--rounds", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "vs plain" in printed and "host syncs outside log steps: n/a" in printed
    report = json.loads(out.read_text())
    package, plain = report["rows"]
    assert (package["loop"], plain["loop"]) == ("package", "plain")
    for r in report["rows"]:
        assert (r["precision"], r["compile"], r["batch_size"]) == ("fp32", False, 4)
        assert len(r["rounds_tokens_per_sec"]) == 2
        assert r["tokens_per_sec"] * r["ms_per_step"] / 1e3 == pytest.approx(4 * 16)
        assert r["mfu"] is None  # no dense peak is known for a CPU
    # The median of the per-round ratios (two rounds: their mean), by hand.
    ratios = [a / b for a, b in zip(package["rounds_tokens_per_sec"], plain["rounds_tokens_per_sec"])]
    assert package["vs_plain"] == pytest.approx(sum(ratios) / 2)
    assert plain["vs_plain"] is None
    assert len(report["skipped"]) == 2 and all("tf32" in s for s in report["skipped"])  # no TF32 on a CPU
    assert set(report["breakdown_ms"]) == {"data_wait", "forward", "backward+clip", "optimizer"}


def test_table_columns_units_and_missing_values():
    row = dict(loop="package", precision="bf16", compile=True, batch_size=32, kernels="fast")
    row |= dict(tokens_per_sec=1234567.8, ms_per_step=12.34, mfu=0.3141, memory_bytes=3 * 2**20)
    row |= dict(vs_plain=1.0234, vs_plain_cpu=0.98765, startup_s=42.25)
    plain = row | dict(
        loop="plain", kernels="-", mfu=None, memory_bytes=None, vs_plain=None, vs_plain_cpu=None
    )
    head, rule, package_line, plain_line, legend = bench.format_table([row, plain]).splitlines()
    assert head == (
        "loop     precision compile batch kernels     tokens/s   ms/step "
        "   MFU   step mem vs plain   (cpu)  startup"
    )
    assert rule == "-" * len(head)
    assert package_line == (
        "package  bf16      on         32 fast       1,234,568      12.3 "
        " 31.4%      3 MiB   1.023x  0.988x    42.2s"
    )
    assert plain_line.split()[-6:] == ["12.3", "-", "-", "-", "-", "42.2s"]
    assert legend.startswith("vs plain: median per-round ratio")


def test_nothing_left_to_measure_is_a_user_error(capsys):
    """Every variant skipped (TF32 on a CPU, no plain loop): one line, exit 2, no timing of nothing."""
    with pytest.raises(SystemExit) as exc:
        bench.main([*TINY.split(), "--precision", "tf32", "--compile", "off", "--no-plain"])
    assert exc.value.code == 2
    assert "nothing to measure: skipped" in capsys.readouterr().err


def test_overhead_run_is_gone():
    with pytest.raises(SystemExit) as exc:
        bench.main([*TINY.split(), "--overhead-run", "10"])
    assert exc.value.code == 2  # argparse: unrecognized argument


def test_ratios_pair_rounds_and_settings():
    assert bench.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 3.0]) == 2.0  # median of 2, 4, 2
    row = dict(precision="fp32", compile=False, batch_size=8)
    rows = [
        {**row, "loop": "package", "rounds_tokens_per_sec": [9, 10, 12], "rounds_cpu_ms_per_step": [5, 4, 2]},
        {**row, "loop": "plain", "rounds_tokens_per_sec": [10, 10, 10], "rounds_cpu_ms_per_step": [4, 4, 4]},
        {
            **row,
            "loop": "package",
            "batch_size": 16,
            "rounds_tokens_per_sec": [1],
            "rounds_cpu_ms_per_step": [1],
        },
    ]
    bench.add_plain_ratios(rows)
    assert [r["vs_plain"] for r in rows] == [pytest.approx(1.0), None, None]
    assert rows[0]["vs_plain_cpu"] == pytest.approx(1.0)  # plain's CPU time over the package's: 0.8, 1, 2


def test_mfu_against_hand_computation():
    cfg = tiny_config(vocab_size=100, d_model=16, d_ff=48, num_layers=2, context_length=8).resolved()
    n = 2 * (4 * 16 * 16 + 3 * 16 * 48 + 2 * 16) + 16 + 16 * 100  # non-embedding parameters, LM head included
    flops = 6 * n + 12 * 2 * 16 * 8  # per token: 6N plus the attention scores and values
    h100 = types.SimpleNamespace(device_name=lambda: "NVIDIA H100 80GB HBM3", dtype="bf16", tf32=True)
    row = hardware.throughput_row(cfg, h100, steps=10, seconds=2.0)
    tokens_per_sec = 10 * cfg.batch_size * 8 / 2.0
    assert row["tokens_per_sec"] == pytest.approx(tokens_per_sec)
    assert row["ms_per_step"] == pytest.approx(200.0)
    assert row["mfu"] == pytest.approx(tokens_per_sec * flops / 989.4e12)  # H100 SXM dense bf16
    cpu = types.SimpleNamespace(device_name=lambda: "Intel(R) Xeon(R) Processor", dtype="fp32", tf32=False)
    assert hardware.throughput_row(cfg, cpu, steps=10, seconds=2.0)["mfu"] is None


def test_plain_loss_is_the_package_model():
    cfg = tiny_config(num_layers=2).resolved()
    torch.manual_seed(0)
    model = TransformerLM.from_config(cfg, kernels="reference")
    sd = model.state_dict()
    p = {"emb": sd["token_embeddings.weight"], "ln_f": sd["ln_final.weight"], "head": sd["lm_head.weight"]}
    for i in range(cfg.num_layers):
        a = f"layers.{i}.attn."
        p[f"{i}.qkv"] = torch.cat([sd[a + f"{n}_proj.weight"] for n in "qkv"])
        p[f"{i}.o"] = sd[a + "output_proj.weight"]
        p |= {f"{i}.{n}": sd[f"layers.{i}.{n}.weight"] for n in ("ln1", "ln2")}
        p |= {f"{i}.{n}": sd[f"layers.{i}.ffn.{n}.weight"] for n in ("w1", "w2", "w3")}
    assert p.keys() == bench.plain_params(cfg, torch.device("cpu")).keys()  # every plain weight is mapped
    x, y = torch.randint(0, cfg.vocab_size, (2, 3, cfg.context_length))
    expected = fast_cross_entropy(model(x), y)
    assert bench.plain_loss(p, x, y, cfg.num_heads, cfg.rope_theta).item() == pytest.approx(
        expected.item(), abs=1e-5
    )


def test_run_share_is_the_evaluation_and_checkpoint_share_of_a_real_run(tmp_path, capsys):
    """--run trains through run_experiment and reports the share of its wallclock spent on evaluations and checkpoints."""
    out = tmp_path / "bench.json"
    argv = [*TINY.split(), "--compile", "off", "--no-plain", "--steps", "1", "--warmup", "1", "--rounds", "1"]
    assert (
        bench.main(
            [*argv, "--eval-interval", "4", "--checkpoint-interval", "4", "--run", "8", "--json", str(out)]
        )
        == 0
    )
    run = json.loads(out.read_text())["run"]
    assert run["steps"] == 8 and run["eval_s"] > 0 and run["checkpoint_s"] > 0
    assert run["eval_s"] / run["wallclock_s"] < run["share"] < 1  # evaluations and the checkpoints
    assert f"eval + checkpoint: {100 * run['share']:.1f}%" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["dir", "under_file"])
def test_a_json_path_that_cannot_be_written_is_refused_before_the_timing(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("x")
    path = tmp_path if where == "dir" else tmp_path / "afile" / "sub" / "b.json"
    with pytest.raises(SystemExit) as exc:
        bench.main([*TINY.split(), "--compile", "off", "--no-plain", "--json", str(path)])
    printed = capsys.readouterr()
    where = "is a directory" if where == "dir" else f"is under {tmp_path / 'afile'}, which is a file"
    assert (
        exc.value.code == 2
        and printed.err == f"error: --json {path} {where}; give the path of a file to write\n"
    )
    assert "tokens/s" not in printed.out  # refused before anything was timed


def test_a_json_path_in_a_directory_not_made_yet_is_written(tmp_path):
    path = tmp_path / "new" / "dir" / "b.json"
    argv = [*TINY.split(), "--compile", "off", "--no-plain", "--steps", "1", "--warmup", "1", "--rounds", "1"]
    assert bench.main([*argv, "--json", str(path)]) == 0 and json.loads(path.read_text())["rows"]
