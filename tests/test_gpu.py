"""GPU checks (deselected by default; run with ``python -m pytest -m gpu`` on a CUDA machine)."""

import json

import pytest
import torch

from gapkit.distill import DistillSpec, run
from gapkit.models import Student, StudentSpec

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("experts", [(1, 1), (1, 4), (2, 2)])
def test_student_on_gpu_matches_cpu(experts):
    spec = StudentSpec(layers=2, hidden=128, heads=4, vocab_size=500, attn_experts=experts[0], ffn_experts=experts[1])
    cpu = Student(spec).eval()
    gpu = Student(spec).eval().cuda()
    gpu.load_state_dict(cpu.state_dict())
    ids = torch.randint(1, 500, (4, 64))
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    torch.backends.cuda.matmul.allow_tf32 = False  # compare fp32 with fp32
    with torch.no_grad():
        a = cpu(ids, mask)
        b = gpu(ids.cuda(), mask.cuda())
    torch.testing.assert_close(b.last_hidden_state.cpu(), a.last_hidden_state, atol=2e-4, rtol=1e-3)
    for (_, _, x), (_, _, y) in zip(a.routing.blocks(), b.routing.blocks()):
        assert (x.expert == y.expert.cpu()).float().mean() > 0.99


@needs_cuda
def test_bf16_distillation_runs_on_gpu(tmp_path):
    data = dict(task="synthetic", max_len=32, max_train_examples=512, max_eval_examples=128)
    teacher = run(DistillSpec(stage="finetune", student="2L-128H-4A", output_dir=str(tmp_path / "t"), data=data,
                              train=dict(lr=2e-3, max_steps=40, batch_size=32, device="cuda", bf16=True),
                              weights=dict(relation=0, hard=1.0)), progress=False)
    assert teacher.best["accuracy"] > 60
    agn = run(DistillSpec(stage="agnostic", student="2L-64H-4A-1,4E", teacher=str(tmp_path / "t" / "best"),
                          output_dir=str(tmp_path / "a"), data=data, relation_heads=8,
                          train=dict(lr=2e-3, max_steps=20, batch_size=32, device="cuda", bf16=True)), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    relation = [r["value"] for r in rows if r["metric"] == "relation" and r["split"] == "train"]
    assert relation and all(v == v and v < 10 for v in relation)  # finite
    assert agn.final["relation"] < relation[0]
