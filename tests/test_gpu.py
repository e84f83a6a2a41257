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
    _assert_bf16_twins(fast, slow, outs)


def _assert_bf16_twins(fast, slow, outs) -> None:
    """Two dispatch paths of the same weights after one bf16 forward and backward each: the same experts
    for 99% of tokens, outputs to bf16 tolerance, gradients in the same direction (cosine > 0.98)."""
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


# -- the sync-free static dispatch and train.compile on CUDA -------------------------------------------------
def _moe(dispatch="static", **fields):
    """2 layers of 2 attention and 4 FFN experts, every size a multiple of 8 (grouped GEMMs apply in bf16)."""
    spec = StudentSpec(**dict(dict(layers=2, hidden=192, heads=6, vocab_size=500, attn_experts=2, ffn_experts=4,
                                   dropout=0.0, attention_dropout=0.0, gate_noise=0.0), **fields))
    torch.manual_seed(0)
    return Student(spec, dispatch=dispatch).cuda().train()


def _batch(B=8, T=50):
    ids = torch.randint(1, 500, (B, T), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, T // 2:] = 0
    return ids, mask


def _no_syncs(fn):
    """Run ``fn`` with CUDA's sync debug mode raising on any host synchronisation."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@needs_cuda
@pytest.mark.parametrize("bf16", [True, False])  # grouped GEMMs (Hopper) / every expert on every token
def test_static_dispatch_forward_has_no_host_sync(bf16):
    model = _moe()
    ids, mask = _batch()
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    with amp:
        model(ids, mask, output_qkv=True)  # lazy initialisations (cuBLAS handles ...) may sync once
        out = _no_syncs(lambda: model(ids, mask, output_qkv=True))
    assert torch.isfinite(out.last_hidden_state).all()


@needs_cuda
def test_static_dispatch_matches_sorted_on_gpu_in_bf16():
    fast, slow = _moe("static"), _moe("sorted")
    slow.load_state_dict(fast.state_dict())
    ids, mask = _batch()
    outs = []
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for model in (fast, slow):
            out = model(ids, mask)
            (out.last_hidden_state.float() * torch.linspace(-1, 1, 192, device="cuda")).sum().backward()
            outs.append(out)
    _assert_bf16_twins(fast, slow, outs)


@needs_cuda
@pytest.mark.parametrize("mode", ["reduce-overhead", "cudagraphs"])
def test_compiled_student_step_is_captured_without_host_syncs(mode):
    from gapkit.distill.compiling import CompiledStudent

    torch._dynamo.reset()
    eager, model = _moe("static"), _moe("static")
    compiled = CompiledStudent(model, mode, (64,))
    ids, mask = _batch(T=50)
    direction = torch.linspace(-1, 1, 192, device="cuda")

    def step(call):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = call(ids, mask, output_qkv=True)
            ((out.last_hidden_state.float() * direction).sum() + 0.01 * out.load_balance).backward()
        return out

    for _ in range(3):  # compile, warm up, record the CUDA graphs
        step(compiled)
    model.zero_grad()
    out = _no_syncs(lambda: step(compiled))
    ref = step(eager)
    assert out.last_hidden_state.shape == ref.last_hidden_state.shape == (8, 50, 192)
    torch.testing.assert_close(out.last_hidden_state.float(), ref.last_hidden_state.float(), atol=5e-2, rtol=5e-2)
    grads = dict(eager.named_parameters())
    for name, p in model.named_parameters():
        g, h = p.grad.float(), grads[name].grad.float()
        if h.norm() < 1e-6:
            continue
        assert torch.nn.functional.cosine_similarity(g.flatten(), h.flatten(), dim=0) > 0.98, name


@needs_cuda
def test_compiled_teacher_matches_eager_on_gpu():
    from transformers import BertConfig, BertModel

    from gapkit.distill.teacher_side import TeacherNeeds, TeacherSide
    from gapkit.models.teacher import Teacher

    torch._dynamo.reset()

    def side(compile):
        torch.manual_seed(0)
        bert = BertModel(BertConfig(vocab_size=500, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=256, max_position_embeddings=128))
        return TeacherSide(Teacher(bert), "tiny", TeacherNeeds(qkv=True), torch.device("cuda"), bf16=True,
                           compile=compile, buckets=(32, 64) if compile != "off" else None)

    eager, compiled = side("off"), side("reduce-overhead")
    for T in (20, 50, 40, 64, 50):
        ids, mask = _batch(T=T)
        batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        a, b = eager(batch), compiled(batch)
        for x, y in zip(a.qkv, b.qkv):
            assert y.shape == x.shape == (8, T, 128)
            torch.testing.assert_close(y.float(), x.float(), atol=5e-2, rtol=5e-2)


@needs_cuda
def test_compiled_distillation_run_on_gpu(tmp_path):
    """train.compile=reduce-overhead against eager: a few steps of relation distillation of a MiniMoE
    student with attention experts, bf16, losses within bf16 tolerance."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=64)).save_pretrained(tmp_path / "teacher")
    student = dict(layers=2, hidden=96, heads=6, attn_experts=2, ffn_experts=4, dropout=0.0, attention_dropout=0.0,
                   gate_noise=0.0)

    def go(name, compile):
        spec = DistillSpec(stage="agnostic", student=student, teacher=str(tmp_path / "teacher"),
                           output_dir=str(tmp_path / name), relation_heads=8, relation_dropout=0.0,
                           data=dict(task="synthetic", max_len=32, max_train_examples=256, max_eval_examples=32),
                           train=dict(lr=1e-3, max_steps=6, batch_size=32, eval_every=6, log_every=1, device="cuda",
                                      bf16=True, compile=compile))
        seen = []
        run(spec, callback=lambda step, logs, model: seen.append(logs), progress=False)
        return seen

    eager, compiled = go("eager", "off"), go("compiled", "reduce-overhead")
    for x, y in zip(eager, compiled):
        assert y["relation"] == pytest.approx(x["relation"], rel=5e-2)
        assert y["load_balance"] == pytest.approx(x["load_balance"], rel=5e-2)


@needs_cuda
def test_compiled_dropout_draws_follow_the_run_stream():
    """Under CUDA graphs the run's random stream (RunRNG, swapped in around each step) still drives
    dropout: draws advance from step to step, and the same seed replays the same draws."""
    from gapkit.distill.compiling import CompiledStudent
    from gapkit.distill.rng import RunRNG

    torch._dynamo.reset()
    model = _moe("static", dropout=0.1, attention_dropout=0.1)
    compiled = CompiledStudent(model, "reduce-overhead", (64,))
    ids, mask = _batch(T=50)

    def outputs(seed, n=5):
        rng, seen = RunRNG(seed, torch.device("cuda")), []
        for _ in range(n):
            with rng.active(), torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                seen.append(compiled(ids, mask).last_hidden_state.float().clone())
        return seen

    first, again = outputs(1), outputs(1)
    assert not torch.equal(first[-1], first[-2])  # dropout drew anew
    assert all(torch.equal(a, b) for a, b in zip(first[2:], again[2:]))  # replayed graphs, same stream
