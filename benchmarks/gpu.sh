#!/usr/bin/env bash
# GPU checks for a lent CUDA machine, run from the repository root: the gpu-marked tests, and the
# MiniMoE overhead benchmark in fp32 and bf16. Wheels missing there may be carried in .whl/.
# Copies the recorded results to $OUT when that is set.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tail -15
python3 benchmarks/moe_overhead.py --device cuda --repeats 30 --warmup 5
python3 benchmarks/moe_overhead.py --device cuda --bf16 --repeats 30 --warmup 5
python3 benchmarks/moe_overhead.py --device cuda --bf16 --dispatch sorted --repeats 30 --warmup 5
if [ -n "${OUT:-}" ]; then cp results/bench/moe_overhead.csv "$OUT/" 2>/dev/null; fi
