"""Benchmark the text -> token-file pipeline (cs336_basics.data) against raw HF ``tokenizers``.

    uv run python benchmarks/bench_tokenize.py INPUT_TXT [--sizes 10 50 200] [--vocab-size 10000]

1. Encoding throughput on INPUT_TXT: ``encode_file`` (read + decode + chunk + encode + write .npy/sidecar)
   next to the library's own ``encode_batch`` / ``encode_batch_fast`` on the same documents already in
   memory, interleaved ``--repeats`` times; prints wall-clock MB/s, MB/s per core (MB per CPU-second,
   all threads), and the pipeline / raw ratio of each.
2. Peak memory (peak RSS, VmHWM, of a fresh subprocess) of tokenizer training and of encoding for inputs of
   ``--sizes`` MB built by repeating INPUT_TXT's documents into a temp file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1_000_000


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def child(argv: list[str]) -> None:
    """Run one measured step in this fresh process and print its time and peak RSS as JSON."""
    from cs336_basics.data import encode_file, train_tokenizer

    step, *paths = argv
    start = time.perf_counter()
    if step == "train":  # the numbers below are HF's
        train_tokenizer(paths[0], paths[1], int(paths[2]), bpe="hf", progress=False)
    elif step == "encode":
        encode_file(paths[0], paths[1], paths[2], progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "max_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """Peak RSS of this process. Linux: VmHWM, because ``ru_maxrss`` keeps the parent's peak across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def throughput(input_txt: Path, tokenizer_path: Path, repeats: int, workdir: Path) -> dict:
    """Interleaved timings of raw library calls and the pipeline; wall-clock and CPU time (all threads)."""
    from cs336_basics.data import Tokenizer, encode_file
    from cs336_basics.data.chunking import split_documents

    tok = Tokenizer.from_files(tokenizer_path)
    text = input_txt.read_text(encoding="utf-8")
    size_mb = input_txt.stat().st_size / MB
    docs = split_documents(text)
    calls = {
        "raw encode_batch": lambda: tok.hf.encode_batch(docs, add_special_tokens=False),
        "raw encode_batch_fast": lambda: tok.hf.encode_batch_fast(docs, add_special_tokens=False),
        "pipeline encode_file": lambda: encode_file(input_txt, tok, workdir / "bench.npy", progress=False),
    }
    calls["raw encode_batch"]()  # warm up caches and the thread pool
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no one always goes first
            w, c = time.perf_counter(), time.process_time()
            calls[name]()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    n = cores()
    rows = {
        name: {
            "wall_best_mb_s": size_mb / min(wall[name]),
            "wall_median_mb_s": size_mb / statistics.median(wall[name]),
            "cpu_best_mb_s": size_mb / min(cpu[name]),
            "cpu_median_mb_s": size_mb / statistics.median(cpu[name]),
        }
        for name in calls
    }
    print(
        f"\n## Encoding throughput on {input_txt.name} ({size_mb:.1f} MB, {n} cores, {repeats} interleaved runs)"
    )
    print("MB/s per core = MB per CPU-second summed over all threads (robust to other load on the machine)")
    print("| call | wall MB/s best | wall MB/s median | MB/s per core best | MB/s per core median |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['wall_best_mb_s']:.2f} | {r['wall_median_mb_s']:.2f} "
            f"| {r['cpu_best_mb_s']:.2f} | {r['cpu_median_mb_s']:.2f} |"
        )
    pipe = rows["pipeline encode_file"]
    ratios = {}
    for key in rows["raw encode_batch"]:
        ratios[key] = pipe[key] / max(rows[k][key] for k in rows if k.startswith("raw"))
    print(
        "\npipeline / fastest raw call (target >= 0.9): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
    )
    return {"size_mb": size_mb, "cores": n, "rows": rows, "ratios": ratios}


def build_input(sample: Path, size_mb: int, dest: Path) -> Path:
    """Repeat ``sample`` (whole documents) until ``dest`` holds at least ``size_mb`` MB."""
    from cs336_basics.data import EOT

    block = sample.read_bytes()
    if not block.rstrip().endswith(EOT.encode()):
        block = block.rstrip() + f"\n{EOT}\n".encode()
    with open(dest, "wb") as f:
        while f.tell() < size_mb * MB:
            f.write(block)
    return dest


def memory(
    sample: Path, sizes: list[int], tokenizer_path: Path, vocab_size: int, workdir: Path
) -> list[dict]:
    rows = []
    for size in sizes:
        src = build_input(sample, size, workdir / f"input_{size}mb.txt")
        train = run_child("train", str(src), str(workdir / f"tok_{size}.json"), str(vocab_size))
        enc = run_child("encode", str(src), str(tokenizer_path), str(workdir / f"out_{size}.npy"))
        real_mb = src.stat().st_size / MB
        rows.append({"size_mb": real_mb, "train": train, "encode": enc})
        print(
            f"| {real_mb:.0f} | {train['max_rss_mb']:.0f} | {train['seconds']:.1f} "
            f"| {enc['max_rss_mb']:.0f} | {enc['seconds']:.1f} | {real_mb / enc['seconds']:.2f} |",
            flush=True,
        )
        for p in (src, workdir / f"out_{size}.npy"):
            p.unlink(missing_ok=True)
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "input_txt", type=Path, help="a TinyStories sample (documents separated by <|endoftext|>)"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[10, 50, 200], help="input sizes in MB for memory"
    )
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write all numbers here")
    args = parser.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {cores()} cores, python {platform.python_version()}"
    )
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp:
        workdir = Path(tmp)
        tokenizer_path = workdir / "tokenizer.json"
        base = run_child("train", str(args.input_txt), str(tokenizer_path), str(args.vocab_size))
        print(
            f"trained a {args.vocab_size}-token tokenizer on {args.input_txt.name} in {base['seconds']:.1f} s"
        )
        results = {"throughput": throughput(args.input_txt, tokenizer_path, args.repeats, workdir)}
        idle = run_child("idle")
        print(f"\n## Peak RSS (fresh process; imports alone: {idle['max_rss_mb']:.0f} MB)")
        print("| input MB | train RSS MB | train s | encode RSS MB | encode s | encode MB/s |")
        print("|---:|---:|---:|---:|---:|---:|", flush=True)
        results["memory"] = memory(args.input_txt, args.sizes, tokenizer_path, args.vocab_size, workdir)
        results["idle_rss_mb"] = idle["max_rss_mb"]
    print(f"\nload average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
