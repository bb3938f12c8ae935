"""Benchmark BPE training: this package's ``train_bpe`` (cs336) next to Hugging Face's ``BpeTrainer`` (hf).

    uv run python benchmarks/bench_bpe.py [INPUT_TXT] [--small-bytes 130000] [--repeats 3]

1. The course's small-corpus case: the first ``--small-bytes`` bytes of INPUT_TXT (cut at a document end),
   vocab 500, ``train_bpe`` only (target: well under 1.5 s).
2. All of INPUT_TXT at vocab 10,000 with both trainers, in the same run and on the same text.

Each measurement runs in a fresh subprocess and reports wall-clock seconds (best of ``--repeats``) and
peak RSS (VmHWM) of the process plus its worker processes. INPUT_TXT defaults to
../shared/data/tinystories_train.txt (3.7 MB of TinyStories).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_INPUT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinystories_train.txt"
EOT = "<|endoftext|>"


def child(trainer: str, path: str, vocab_size: int) -> None:
    """One measured training in this fresh process; prints seconds, peak RSS and the merge count as JSON."""
    from cs336_basics.data.bpe import train_bpe  # imports outside the timed part
    from cs336_basics.data.chunking import iter_documents
    from cs336_basics.data.train_tokenizer import DOCS_PER_BATCH, _batched, train_from_documents

    start = time.perf_counter()
    if trainer == "cs336":
        n = len(train_bpe(path, vocab_size, [EOT])[1])
    else:
        n = len(train_from_documents(_batched(iter_documents(path), DOCS_PER_BATCH), vocab_size).merges)
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # pool workers, KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_rss_mb": max(peak_rss_mb(), children), "merges": n}))


def peak_rss_mb() -> float:
    """Peak RSS of this process (Linux VmHWM; ``ru_maxrss`` elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(trainer: str, path: Path, vocab_size: int, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", trainer, str(path), str(vocab_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def small_corpus(path: Path, nbytes: int, out: Path) -> Path:
    """The first ``nbytes`` of ``path``, extended to the end of the document it cuts."""
    raw = path.read_bytes()
    end = raw.find(EOT.encode(), nbytes)
    out.write_bytes(raw[: len(raw) if end < 0 else end + len(EOT)])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", nargs="?", type=Path, default=DEFAULT_INPUT)
    p.add_argument("--small-bytes", type=int, default=130_000)
    p.add_argument("--vocab-size", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    print(f"machine: {platform.machine()} {cpu}, {os.cpu_count()} cores; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        small = small_corpus(args.input, args.small_bytes, Path(tmp) / "small.txt")
        r = measure("cs336", small, 500, args.repeats)
        print(f"small corpus {small.stat().st_size / 1e3:.0f} KB, vocab 500: cs336 {r['seconds']:.2f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['merges']} merges")  # fmt: skip
    size_mb = args.input.stat().st_size / 1e6
    for trainer in ("cs336", "hf"):
        r = measure(trainer, args.input, args.vocab_size, args.repeats)
        print(f"{args.input.name} {size_mb:.1f} MB, vocab {args.vocab_size}: {trainer:5s} {r['seconds']:.2f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['merges']} merges")  # fmt: skip


if __name__ == "__main__":
    main()
