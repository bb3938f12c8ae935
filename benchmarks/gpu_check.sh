#!/usr/bin/env bash
# Training-throughput check on one GPU (written for an H100), in one call of about 5 minutes:
#
#     OUT=/path/for/results bash benchmarks/gpu_check.sh
#
# Runs from the repository root with the preinstalled torch: PYTHONPATH=. python3 -m cs336_basics.basics.bench
# (no uv, no network). Everything lands in $OUT:
#   env.txt                 GPU, driver, torch, which optional packages were stubbed
#   compiled.{json,log}     full preset, bf16: the package's step (run_experiment's path) vs the plain loop,
#                           compile on and off, side by side in 3 rounds; the host-sync check, the step
#                           breakdown, and a 1500-step run_experiment (eval/checkpoint/log share)
#   eager.{json,log}        full preset, eager: tf32 / fp32 / bf16, kernels fast and reference, vs the plain loop
#   summary.txt             the headline numbers against the targets
# Each bench call has its own time limit. GPU_CHECK_BUDGET_S (default 330) caps the total; GPU_CHECK_ARGS
# adds flags to every bench call (a dry run on CPU: "--device cpu --preset demo ...").
set -u -o pipefail
: "${OUT:?set OUT to the directory for the results}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET_S:-330}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A fresh inductor cache: the first process compiles cold, the later ones find the FX graphs on disk.
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor-cache"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

left() { echo $((BUDGET - SECONDS)); }

# ---- preflight: the trainer imports tqdm, matplotlib and pandas (logging and plots only). Where a GPU image
# lacks one, an import-only stand-in goes on PYTHONPATH (plots then fail softly, as the tracker allows).
"$PY" - "$WORK/stubs" >"$OUT/env.txt" 2>&1 <<'EOF'
import importlib, pathlib, sys
stubs = pathlib.Path(sys.argv[1])
STUB = (
    "class _Stub:\n    def __init__(self, *a, **k): pass\n"
    "    def __getattr__(self, name): raise RuntimeError('stand-in module: not installed on this machine')\n"
)
files = {
    "tqdm": {"tqdm/__init__.py": "from tqdm.auto import tqdm\n", "tqdm/auto.py": (
        "class tqdm:\n    def __init__(self, *a, **k): pass\n    def update(self, n=1): pass\n"
        "    def set_postfix(self, *a, **k): pass\n    def close(self): pass\n"
        "    @staticmethod\n    def write(s, *a, **k): print(s)\n")},
    "matplotlib": {"matplotlib/__init__.py": STUB, "matplotlib/backends/__init__.py": "",
                   "matplotlib/backends/backend_agg.py": STUB + "FigureCanvasAgg = _Stub\n",
                   "matplotlib/figure.py": STUB + "Figure = _Stub\n",
                   "matplotlib/ticker.py": STUB + "FuncFormatter = LogLocator = _Stub\n"},
    "pandas": {"pandas/__init__.py": STUB + "def __getattr__(name): return _Stub\n"},
}
for module in ("numpy", "torch", "tqdm", "matplotlib", "pandas"):
    try:
        mod = importlib.import_module(module)
        print(f"{module} {getattr(mod, '__version__', '?')}")
    except ImportError:
        if module not in files:
            print(f"{module} MISSING: cannot run")
            continue
        for rel, text in files[module].items():
            (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
            (stubs / rel).write_text(text)
        print(f"{module} missing: import-only stand-in used")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
EOF
[ -d "$WORK/stubs" ] && export PYTHONPATH="$PYTHONPATH:$WORK/stubs"
nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv >>"$OUT/env.txt" 2>&1
nproc >>"$OUT/env.txt"
cat "$OUT/env.txt"

bench() {  # bench NAME LIMIT_S ARGS...: one bench process with its own time limit
  local name=$1 limit=$2
  shift 2
  if [ "$limit" -lt 45 ]; then
    echo "== $name: skipped (only ${limit}s of the budget left)" | tee "$OUT/$name.log"
    return
  fi
  echo "== $name (limit ${limit}s, $(left)s of the budget left)"
  # shellcheck disable=SC2086  # GPU_CHECK_ARGS: extra flags, e.g. a tiny CPU config for a dry run of this script
  timeout -k 10 "$limit" "$PY" -m cs336_basics.basics.bench --preset full "$@" ${GPU_CHECK_ARGS:-} \
    --json "$OUT/$name.json" 2>&1 |
    tee "$OUT/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after ${SECONDS}s in all"
}

min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

# 1. What runs: bf16 + compile, package vs plain, and the same eager; then run_experiment's overhead share.
bench compiled "$(min 230 "$(left)")" --precision bf16 --compile on,off --steps 30 --warmup 5 --rounds 3 \
  --run 1500
# 2. Precisions and kernels, eager (no compile time), as far as the budget goes.
bench eager "$(($(left) - 5))" --precision tf32,fp32,bf16 --compile off --kernels fast,reference \
  --steps 20 --warmup 3 --rounds 3

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
reports = {n: json.loads((out / f"{n}.json").read_text()) for n in ("compiled", "eager") if (out / f"{n}.json").exists()}
if not reports:
    sys.exit("no results: see compiled.log and eager.log")
for name, r in reports.items():
    print(f"== {name}: {r['device']} | torch {r['torch']} | {r['rounds']} x {r['steps']} steps")
    for row in r["rows"]:
        mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        ratio = "" if row["vs_plain"] is None else f"  vs plain {row['vs_plain']:.3f}x"
        print(f"  {row['loop']:<8} {row['precision']:<5} compile={str(row['compile']):<5} {row['kernels']:<9} "
              f"{row['tokens_per_sec']:>12,.0f} tok/s  MFU {mfu:>6}  mem {(row['memory_bytes'] or 0) / 2**30:.2f} GiB  "
              f"startup {row['startup_s']:.1f}s{ratio}")
    sc = r.get("sync_check")
    if sc is not None:
        print(f"  host syncs outside log steps: {sc['host_syncs']}")  # a note instead of a count off CUDA
        for site, n in sc.get("sites", {}).items():
            print(f"    {n:>4} x {site}")
    if r.get("breakdown_ms"):
        print("  breakdown (ms):", {k: round(v, 2) for k, v in r["breakdown_ms"].items()})
    if r.get("run"):
        run = r["run"]
        print(f"  run_experiment {run['steps']} steps: eval+checkpoint {100 * run['share']:.2f}% of "
              f"{run['wallclock_s']:.1f}s, {run['tokens_per_sec']:,.0f} tok/s overall")
package = [x for x in reports.get("compiled", {}).get("rows", []) if x["loop"] == "package" and x["compile"]]
if package:
    print(f"run_experiment path: {package[0]['tokens_per_sec']:,.0f} tokens/s | target 2,000,000: "
          f"{'MET' if package[0]['tokens_per_sec'] >= 2e6 else 'NOT met'}")
EOF
echo "gpu_check: done in ${SECONDS}s; results in $OUT"
