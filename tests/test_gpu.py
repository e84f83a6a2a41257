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
    cpu = Student(spec, moefy=False).eval()  # (2, 2): 4 heads do not split as moefication needs
    gpu = Student(spec, moefy=False).eval().cuda()
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
    assert teacher.metric("accuracy") > 60
    agn = run(DistillSpec(stage="agnostic", student="2L-64H-4A-1,4E", teacher=str(tmp_path / "t" / "best"),
                          output_dir=str(tmp_path / "a"), data=data, relation_heads=8,
                          train=dict(lr=2e-3, max_steps=20, batch_size=32, device="cuda", bf16=True)), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    relation = [r["value"] for r in rows if r["metric"] == "relation" and r["split"] == "train"]
    assert relation and all(v == v and v < 10 for v in relation)  # finite
    assert agn.metric("relation", model="final") < relation[0]


@needs_cuda
def test_grouped_gemm_ffn_matches_sorted_dispatch_in_bf16():
    from gapkit.models.student import grouped_mm_applies

    spec = StudentSpec(layers=2, hidden=128, heads=4, vocab_size=500, ffn_experts=4, dropout=0.0, attention_dropout=0.0)
    fast = Student(spec, dispatch="auto").cuda().train()
    slow = Student(spec, dispatch="sorted").cuda().train()
    slow.load_state_dict(fast.state_dict())
    ids = torch.randint(1, 500, (8, 64), device="cuda")
    mask = torch.ones_like(ids)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert grouped_mm_applies(torch.zeros(1, device="cuda"), 128, 512)
        outs = []
        for model in (fast, slow):
            torch.manual_seed(0)  # the same gate noise
            out = model(ids, mask)
            (out.last_hidden_state.float().square().mean() + 0.01 * out.load_balance).backward()
            outs.append(out)
    for (_, _, a), (_, _, b) in zip(outs[0].routing.blocks(), outs[1].routing.blocks()):
        assert (a.expert == b.expert).float().mean() > 0.99
    torch.testing.assert_close(outs[0].last_hidden_state.float(), outs[1].last_hidden_state.float(), atol=5e-2, rtol=5e-2)
    grads = dict(slow.named_parameters())
    for name, p in fast.named_parameters():
        g, h = (q.grad.float() if q.grad is not None else torch.zeros_like(q, dtype=torch.float)
                for q in (p, grads[name]))
        if h.norm() < 1e-6:  # e.g. key biases: their true gradient is 0 (softmax shift invariance)
            continue
        assert torch.nn.functional.cosine_similarity(g.flatten(), h.flatten(), dim=0) > 0.98, name
