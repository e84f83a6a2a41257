#!/usr/bin/env bash
# GPU checks for a lent CUDA machine, one invocation, offline, at most about 9.5 minutes on an H200 (the
# parts' time limits; compiling takes most of it); run from the repository root:
#   1. the gpu-marked tests (the sync-free MiniMoE path, train.compile on CUDA, bf16 runs);
#   2. MiniMoE 1,4E vs its dense twin, 3L-384H and 4L-384H, batch 32 and 256, length 128, bf16: eager rows
#      and torch.compile(mode="reduce-overhead") rows (results/bench/moe_overhead.csv);
#   3. end-to-end relation distillation from a random BERT-base-shaped teacher, bf16: the teacher-forward
#      bound, 3L-384H dense and 1,4E students against it, and 4 students on one teacher pass vs one by
#      one, eager and reduce-overhead (results/bench/distill_throughput.csv);
#   4. the same 4 students as a sweep through the local executor, grouped vs one group each
#      (results/bench/sweep_gpu.csv);
#   5. with the time left, the same pair under the cudagraphs mode (CUDA graphs, no kernel compilation).
# Each part has a time limit (a part cut short keeps the rows it appended); compiling happens in the
# warm-up, outside the timed steps. Wheels missing there may be carried in .whl/. Copies the recorded
# results and the log to $OUT when that is set.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
LOG=/tmp/gpu-bench.log
: > "$LOG"
part() {  # part SECONDS COMMAND...: run with a time limit, log it, say how long it took
  local limit=$1; shift
  local t0=$SECONDS
  echo "### $* (limit ${limit} s)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" | grep -v -e "^W[0-9]" -e "Warning"
  echo "### done in $((SECONDS - t0)) s (exit ${PIPESTATUS[0]})" | tee -a "$LOG"
}
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"

part 150 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
part 170 python3 benchmarks/moe_overhead.py --device cuda --bf16 --batch 32 256 --repeats 20 --warmup 4 \
  --compile reduce-overhead
part 160 python3 benchmarks/distill_throughput.py --device cuda --compile reduce-overhead --steps 15 --warmup 4
part 90 python3 benchmarks/sweep_gpu.py --steps 40
if [ "$SECONDS" -lt 420 ]; then
  part $((480 - SECONDS)) python3 benchmarks/moe_overhead.py --device cuda --bf16 --batch 32 256 --repeats 20 \
    --warmup 4 --compile cudagraphs --no-eager
fi
echo "### gpu.sh took $SECONDS s" | tee -a "$LOG"
if [ -n "${OUT:-}" ]; then
  cp results/bench/moe_overhead.csv results/bench/distill_throughput.csv results/bench/sweep_gpu.csv "$LOG" "$OUT/" 2>/dev/null
fi
