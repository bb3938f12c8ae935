#!/usr/bin/env bash
# Training-throughput check on one GPU (written for an H100), in one call of about 5-6 minutes:
#
#     OUT=/path/for/results bash benchmarks/gpu_check.sh
#
# Runs from the repository root with the preinstalled torch: PYTHONPATH=. python3 -m cs336_basics.basics.bench
# (no uv, no network). Everything lands in $OUT:
#   env.txt                    GPU, driver, torch, which optional packages were stubbed
#   full_variants.{json,log}   full preset: run_experiment's path (bf16 + compile) vs the plain loop,
#                              fp32 / tf32 / bf16 eager, the step breakdown, --sync-check, --overhead
#   cache_and_run.{json,log}   a second process (warm inductor cache: compile startup again) and a
#                              1500-step run_experiment at the full preset's intervals (eval/ckpt/log share)
#   extras.{json,log}          tf32+compile, naive attention, torch AdamW fused/foreach, compiled optimizer
#   summary.txt                the headline numbers against the targets
# Each bench call has its own time limit; results are saved after every variant, so a limit that cuts one
# short still leaves the finished rows in its JSON. GPU_CHECK_BUDGET_S (default 330) caps the total;
# GPU_CHECK_ARGS adds flags to every bench call (a dry run on CPU: "--device cpu --preset demo ...").
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

# 1. The table that matters: run_experiment's own path against the plain loop; precisions; sync check;
#    evaluation/checkpoint/logging cost at the preset's intervals.
bench full_variants "$(min 200 "$(left)")" --steps 30 --warmup 5 \
  --variants auto,plain,fp32,tf32,bf16,plain-bf16 --sync-check --overhead
# 2. A second process (warm inductor FX-graph/AOTAutograd cache: how much startup a resumed run saves),
#    then 1500 steps through run_experiment itself at the preset's log/eval/checkpoint intervals.
bench cache_and_run "$(min 120 "$(left)")" --steps 30 --warmup 5 --variants auto \
  --breakdown-steps 0 --overhead --overhead-run 1500
# 3. The rest of the table, as far as the budget goes.
bench extras "$(($(left) - 5))" --steps 30 --warmup 5 --breakdown-steps 0 \
  --variants tf32+compile,naive-attention,torch-adamw-fused,torch-adamw-foreach,compiled-optimizer

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None
full, cache, extras = load("full_variants"), load("cache_and_run"), load("extras")
if not full or not full.get("results"):
    sys.exit("no results in full_variants.json: see full_variants.log")
a = full["results"][0]
print(f"device {full['device']} | torch {full['torch']} | {full['runtime']['dtype']} compile={full['runtime']['compile']}")
print(f"run_experiment path: {a['tokens_per_sec']:,.0f} tokens/s ({a['ms_per_step']:.1f} ms/step), "
      f"MFU {'-' if a['mfu'] is None else format(100 * a['mfu'], '.1f') + '%'} vs {a['peak_source']} | target 2,000,000: "
      f"{'MET' if a['tokens_per_sec'] >= 2e6 else 'NOT met'}")
if full.get("package_vs_plain"):
    print(f"package / plain loop: {full['package_vs_plain']:.3f}x")
for report in (full, extras):
    for r in (report or {}).get("results", []):
        print(f"  {r['variant']:<22} {r['precision']:<5} compile={str(r['compile']):<5} {r['tokens_per_sec']:>12,.0f} tok/s"
              f"  MFU {'-' if r['mfu'] is None else format(100 * r['mfu'], '5.1f') + '%':>6}  startup {r['startup_s']:.1f}s  mem {(r['peak_memory_bytes'] or 0) / 2**30:.2f} GiB")
if full.get("breakdown_ms"):
    print("breakdown (instrumented, ms):", {k: round(v, 2) for k, v in full["breakdown_ms"].items()})
sc = full.get("sync_check")
if sc and sc.get("ran"):
    print(f"sync check: {sc['host_syncs']} host sync(s) in {sc['steps']} hot-loop steps (log steps excluded)")
    for site in sc["sites"]:
        print(f"  {site['count']:>4} x {site['where']}: {site['message']}")
elif sc:
    print(f"sync check: {sc['note']}")
for name, r in (("full_variants", full), ("cache_and_run", cache)):
    oh = (r or {}).get("overhead")
    if oh:
        print(f"{name}: computed overhead share {100 * oh['share']:.2f}% (with background writes "
              f"{100 * oh['share_with_background_writes']:.2f}%), eval {oh['eval_s']:.2f}s first {oh['eval_first_s']:.2f}s")
run = (cache or {}).get("overhead_run")
if run:
    print(f"run_experiment {run['steps']} steps: overhead {100 * run.get('share', run['share_incl_eval_compile']):.2f}% "
          f"(incl. eval compile {100 * run['share_incl_eval_compile']:.2f}%), training startup {run['train_startup_s']:.1f}s")
if cache and cache.get("results"):
    print(f"compile startup: cold process {a['startup_s']:.1f}s ({a.get('compile_cache')}), "
          f"second process {cache['results'][0]['startup_s']:.1f}s ({cache['results'][0].get('compile_cache')})")
EOF
echo "gpu_check: done in ${SECONDS}s; results in $OUT"
