#!/usr/bin/env bash
# The GPU measurements in one call, within a time budget: training-step images/s and MFU of the
# default model (batch 32/64 x eager/compiled/CUDA graphs x host/device-cached data), of MTAN
# (the seed-table row, batch 2 and 8), and jobs/hour of 1, 2, 4 and 8 MTAN batch-2 jobs packed
# on one GPU. Synthetic data: needs no dataset and no network.
#
#   bash benchmarks/gpu_suite.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_suite.sh --quick    # one tiny case of each on the CPU (a smoke test)
#
# Environment: OUT (result folder, default ./gpu_results), SUITE_BUDGET_S (seconds for all
# measurements, default 450, 900 with --quick; the summary follows), QUICK=1 (as --quick),
# PYTHON (default python). Writes at most 6 JSON files under OUT, one per group, each a list
# of runs with their rc, seconds and the benchmark's JSON (or the error's last lines):
# env.json, step_eager.json, step_compile.json, step_mtan.json, sweep_packs.json, and
# suite.json (what ran, failed, timed out or was skipped for the budget). A failing or
# timed-out measurement does not stop the others; measurements run in order of importance,
# and one whose estimated cost exceeds the time left is skipped and named. Exit status: 0
# when every measurement that ran succeeded, 1 otherwise, 2 when it cannot start.
set -u -o pipefail

QUICK=${QUICK:-0}
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument '$arg' (only --quick)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
OUT=${OUT:-./gpu_results}
BUDGET=${SUITE_BUDGET_S:-$((QUICK ? 900 : 450))}
if ! "$PY" -c "import xtask_mt, hydra" 2>/dev/null; then
  echo "gpu_suite.sh: '$PY' cannot import xtask_mt and hydra: install the project first," >&2
  echo "  from a local wheel cache: pip install --no-index --find-links <wheel dir> -e ." >&2
  echo "  or with network access:   pip install -e ." >&2
  exit 2
fi
if ((!QUICK)) && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_suite.sh: torch sees no CUDA GPU; --quick runs the CPU smoke test" >&2
  exit 2
fi
mkdir -p "$OUT" || exit 2
WORK=$(mktemp -d) || exit 2
trap 'rm -rf "$WORK"' EXIT
# compiled runs of one shape share inductor's cache (the device-cached twin compiles faster)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$WORK/inductor}
rm -f "$OUT"/{env,step_eager,step_compile,step_mtan,sweep_packs,suite}.json

# record GROUP NAME STATUS SECONDS RC STDOUT STDERR REASON CMD...: append one run to
# OUT/GROUP.json and OUT/suite.json
record() {
  "$PY" - "$OUT" "$@" <<'EOF'
import json, sys
from pathlib import Path
out, group, name, status, seconds, rc, stdout, stderr, reason, *command = sys.argv[1:]
run = {"name": name, "status": status, "seconds": float(seconds), "rc": int(rc),
       "command": command}
if reason:
    run["reason"] = reason
text = Path(stdout).read_text() if stdout and Path(stdout).is_file() else ""
try:
    run["result"] = json.loads(text) if text.strip() else None
except json.JSONDecodeError:
    run["result"] = None
    run["stdout_tail"] = text[-2000:]
if status != "ok" and stderr and Path(stderr).is_file():
    run["stderr_tail"] = Path(stderr).read_text()[-4000:]
for file, entry in ((f"{group}.json", run),
                    ("suite.json", {k: v for k, v in run.items() if k != "result"}
                     | {"group": group})):
    path = Path(out) / file
    runs = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(runs + [entry], indent=1) + "\n")
EOF
}

# measure GROUP NAME COST CAP CMD...: run CMD (a benchmark printing JSON) under `timeout CAP`
# (less if less budget is left), unless its estimated COST seconds exceed the budget left.
# A benchmark that writes partial JSON to $WORK/partial.json is read from there on a timeout.
FAILED=0 LAST_STATUS=
measure() {
  local group=$1 name=$2 cost=$3 cap=$4; shift 4
  local left=$((BUDGET - SECONDS))
  if ((left < cost)); then
    echo "[gpu_suite] skip $name: needs ~${cost}s, ${left}s of the budget left"
    record "$group" "$name" skipped 0 0 "" "" "budget: needs ~${cost}s, ${left}s left" "$@"
    LAST_STATUS=skipped
    return
  fi
  local limit=$((cap < left ? cap : left)) start=$SECONDS rc status
  echo "[gpu_suite] $name (up to ${limit}s)"
  rm -f "$WORK/partial.json"
  timeout --kill-after=15 "$limit" "$@" >"$WORK/stdout" 2>"$WORK/stderr"
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  LAST_STATUS=$status
  [[ $status == ok ]] || FAILED=1
  if [[ $status != ok && ! -s $WORK/stdout && -s $WORK/partial.json ]]; then
    cp "$WORK/partial.json" "$WORK/stdout"
  fi
  record "$group" "$name" "$status" $((SECONDS - start)) "$rc" "$WORK/stdout" "$WORK/stderr" \
    "" "$@"
  echo "[gpu_suite]   -> $status in $((SECONDS - start))s"
}

STEP=("$PY" benchmarks/train_step.py)
if ((QUICK)); then
  DEVICE=(trainer.device=cpu)
  DEFAULT=(encoder=resnet18 dataset.height=32 dataset.width=64 weighting=uncertainty
           trainer.precision=bf16-mixed trainer.channels_last=true dataset.train_size=8)
  MTAN=(seed_table=cityscapes/mtan dataset=synthetic dataset.height=32 dataset.width=64
        dataset.train_size=8)
  SWEEP=(seed_table=cityscapes/mtan dataset=synthetic dataset.height=32 dataset.width=64
         dataset.train_size=4 dataset.val_size=2 trainer.epochs=1 trainer.device=cpu)
  STEPS=(--steps 1 --steady-steps 1 --data-batches 1)
  PACKS=1,2
  COST_EAGER=20 COST_COMPILE=60 COST_WARM=60 COST_SWEEP=120 CAP_STEP=300 CAP_SWEEP=600
else
  DEVICE=()
  DEFAULT=(encoder=resnet34 dataset.height=128 dataset.width=256 weighting=uncertainty
           trainer.precision=bf16-mixed trainer.channels_last=true dataset.train_size=512
           dataset.num_workers=12)
  # the seed's MTAN row (conf/seed_table/cityscapes/mtan.yaml) on synthetic 128x256 scenes
  MTAN=(seed_table=cityscapes/mtan dataset=synthetic dataset.train_size=512
        dataset.num_workers=12)
  # device-cached scenes: rendered once per job, not in every step of every packed job
  SWEEP=(seed_table=cityscapes/mtan dataset=synthetic dataset.device_cache=true
         dataset.train_size=600 dataset.val_size=16 trainer.epochs=1)
  STEPS=(--warmup 3 --steps 20 --steady-steps 30)
  PACKS=1,2,4,8
  # estimated seconds: compiling takes ~1 min a shape and mode on 16 cores, a run that finds
  # its graphs in inductor's cache (its other-data twin ran) far less
  COST_EAGER=40 COST_COMPILE=110 COST_WARM=60 COST_SWEEP=170 CAP_STEP=240 CAP_SWEEP=300
fi

# default BATCH CACHE [MODE]: the default model, eager or compiled in MODE
declare -A WARM=()
default() {
  local batch=$1 cache=$2 mode=${3:-}
  local run=(dataset.batch_size="$batch" dataset.device_cache="$cache")
  if [[ -z $mode ]]; then
    measure step_eager "default b$batch eager cache=$cache" "$COST_EAGER" "$CAP_STEP" \
      "${STEP[@]}" "${STEPS[@]}" "${DEFAULT[@]}" "${DEVICE[@]}" "${run[@]}"
    return
  fi
  local compile=(trainer.compile=true trainer.compile_mode="$mode") label=$mode
  if ((QUICK)); then  # on a CPU aot_eager stands in for inductor's minutes of C++ compiling
    compile=(trainer.compile=true trainer.compile_backend=aot_eager) label=aot_eager
  fi
  local cost=$COST_COMPILE
  [[ -n ${WARM[$batch $mode]:-} ]] && cost=$COST_WARM
  measure step_compile "default b$batch compile=$label cache=$cache" "$cost" "$CAP_STEP" \
    "${STEP[@]}" "${STEPS[@]}" "${DEFAULT[@]}" "${DEVICE[@]}" "${run[@]}" "${compile[@]}"
  [[ $LAST_STATUS == ok ]] && WARM[$batch $mode]=1
}

mtan() {
  measure step_mtan "mtan b$1 eager" "$COST_EAGER" "$CAP_STEP" \
    "${STEP[@]}" "${STEPS[@]}" "${MTAN[@]}" "${DEVICE[@]}" dataset.batch_size="$1"
}

sweep() {
  measure sweep_packs "mtan b2 packs $PACKS" "$COST_SWEEP" "$CAP_SWEEP" \
    "$PY" benchmarks/sweep_throughput.py --modes packed --packs "$PACKS" \
    --out "$WORK/partial.json" "${SWEEP[@]}"
}

"$PY" - "$OUT/env.json" <<'EOF'
import json, os, subprocess, sys
import torch
env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
       "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
for key, cmd in (("commit", ["git", "rev-parse", "HEAD"]),
                 ("nvidia_smi", ["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,"
                                 "power.limit,driver_version", "--format=csv,noheader"])):
    try:
        env[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        env[key] = f"unavailable: {exc}"
open(sys.argv[1], "w").write(json.dumps(env, indent=1) + "\n")
EOF

# in order of importance: what the budget cuts is at the end
if ((QUICK)); then
  default 2 false; default 2 true; mtan 2; sweep; default 2 false default
else
  default 64 false; default 64 true; mtan 2; mtan 8
  default 64 true reduce-overhead; sweep; default 64 true default
  default 32 false; default 32 true
  default 64 false reduce-overhead; default 64 false default
  default 32 true reduce-overhead; default 32 true default
  default 32 false reduce-overhead; default 32 false default
fi

"$PY" - "$OUT" "$SECONDS" "$BUDGET" <<'EOF'
import json, sys
from pathlib import Path
out, seconds, budget = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = json.loads((out / "suite.json").read_text()) if (out / "suite.json").is_file() else []
results = {}
for group in ("step_eager", "step_mtan", "step_compile", "sweep_packs"):
    path = out / f"{group}.json"
    for run in json.loads(path.read_text()) if path.is_file() else []:
        results[run["name"]] = run.get("result") or {}


def fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else "-"


print(f"\ngpu_suite: {seconds}s of a {budget}s budget; results in {out}/")
print(f"{'measurement':<42} {'status':<8} {'s':>5} {'img/s':>8} {'steady':>8} {'TFLOP/s':>8}"
      f" {'MFU':>6}")
for run in runs:
    r = results.get(run["name"], {})
    print(f"{run['name']:<42} {run['status']:<8} {run['seconds']:>5.0f} "
          f"{fmt(r.get('images_per_s'), '8.1f')} {fmt(r.get('steady_images_per_s'), '8.1f')} "
          f"{fmt(r.get('steady_achieved_tflops', r.get('achieved_tflops')), '8.2f')} "
          f"{fmt(r.get('steady_mfu', r.get('mfu')), '6.1%')}")
    for sweep in r.get("runs", []):
        print(f"  {sweep['mode']} {sweep['jobs']} at once: {sweep['wall_s']:.0f}s, "
              f"{sweep['jobs_per_hour']:.0f} jobs/h, {sweep['finished']}/{sweep['jobs']} "
              f"finished")
skipped = [run["name"] for run in runs if run["status"] == "skipped"]
if skipped:
    print("skipped for the time budget: " + "; ".join(skipped))
EOF
exit "$FAILED"
