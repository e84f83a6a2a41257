"""The compiled, length-bucketed training path (train.compile) against eager, on the CPU.

Graph capture and recompile counts use the ``aot_eager`` backend (graphs captured by dynamo and
AOTAutograd, run with eager kernels: no C++ compile); one small check runs inductor for its numbers.
Tolerance: compiled and eager agree to 1e-5 (relative and absolute) in fp32; gradients to 1e-4 relative
and 1e-5 of the largest gradient entry absolute. They are not bitwise
equal because the static MiniMoE dispatch multiplies every token by all experts' weights at once
(another GEMM shape, so another summation order) and because bucket padding makes softmax rows over
keys longer (the extra keys weigh exactly 0, but the reduction is reassociated).
"""

import json
from pathlib import Path

import pytest
import torch

from gapkit.distill import DistillSpec, Run, TeacherSide, run
from gapkit.distill.compiling import CompiledStudent, bucket_lengths, bucket_of, cut_student_output
from gapkit.distill.config import TrainSpec
from gapkit.distill.teacher_side import TeacherNeeds
from gapkit.errors import ConfigError
from gapkit.models import Student, StudentSpec
from gapkit.models.teacher import Teacher

TOL = dict(rtol=1e-5, atol=1e-5)
VOCAB = 100


def tiny(attn=2, ffn=4, layers=2, **fields) -> StudentSpec:
    fields = dict(dict(dropout=0.0, attention_dropout=0.0, gate_noise=0.0), **fields)
    return StudentSpec(layers=layers, hidden=36, heads=6, vocab_size=VOCAB, attn_experts=attn, ffn_experts=ffn, **fields)


def batch(B=3, T=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, T // 2:] = 0  # the batch's own padding
    return ids, mask


def graphs() -> int:
    """Graphs dynamo has compiled since the last reset."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def loss_of(out) -> torch.Tensor:
    """A loss with real gradients everywhere: sum(h^2) of a LayerNorm output with unit gain is constant,
    so its gradients would be rounding noise; a fixed random direction is not."""
    h = out.last_hidden_state
    direction = torch.randn(h.shape[1:], generator=torch.Generator().manual_seed(7))  # (T, H)
    return (h * direction).sum() + 0.01 * out.load_balance


def grads(model) -> dict:
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(got: dict, expected: dict) -> None:
    """Gradients agree to 1e-4 relative, 1e-5 of the largest gradient entry absolute (key biases have a
    true gradient of 0, softmax being shift-invariant: theirs is rounding noise on both sides)."""
    assert got.keys() == expected.keys()
    scale = max(float(g.abs().max()) for g in expected.values())
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-5 * scale, msg=name)


# -- buckets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_len, chosen, expected", [
    (128, None, (16, 32, 64, 128)),
    (100, None, (16, 32, 64, 100)),
    (16, None, (16,)),
    (8, None, (8,)),
    (128, [48, 200], (48, 128)),  # capped at max_len, max_len always last
    (64, [64], (64,)),
])
def test_bucket_lengths(max_len, chosen, expected):
    assert bucket_lengths(max_len, chosen) == expected


def test_bucket_of_takes_the_shortest_that_holds_the_batch():
    assert [bucket_of(n, (16, 32)) for n in (1, 16, 17, 32)] == [16, 16, 32, 32]
    with pytest.raises(ValueError, match="longer than the longest compile bucket"):
        bucket_of(33, (16, 32))


@pytest.mark.parametrize("settings, sentence", [
    (dict(compile="fast"), "TrainSpec.compile must be one of off, default, reduce-overhead, max-autotune, cudagraphs, aot_eager"),
    (dict(compile=True), "got true (YAML reads a bare on/yes/true as true)"),
    (dict(compile=3), "TrainSpec.compile must be a string"),
    (dict(compile_buckets=[16, 32]), "compile_buckets applies to compiled runs only"),
    (dict(compile="default", compile_buckets=[32, 16]), "must be a non-empty increasing list"),
    (dict(compile="default", compile_buckets=[]), "must be a non-empty increasing list"),
    (dict(compile="default", compile_buckets=[0, 16]), "must be a non-empty increasing list"),
    (dict(compile="default", compile_buckets=[True]), "must be a non-empty increasing list"),
    (dict(compile="default", compile_buckets="16"), "TrainSpec.compile_buckets must be a list"),
])
def test_bad_compile_settings_are_refused(settings, sentence):
    with pytest.raises(ConfigError, match=sentence.replace("(", r"\(").replace(")", r"\)")):
        TrainSpec(**settings)


def test_yaml_off_means_off():
    assert TrainSpec(compile=False).compile == "off"  # `compile: off` in YAML 1.1 is false
    assert TrainSpec(compile="reduce-overhead", compile_buckets=[32, 64]).compile_buckets == [32, 64]


# -- the static (sync-free) dispatch, eager ----------------------------------------------------------------
@pytest.mark.parametrize("experts", [(1, 4), (2, 4), (3, 1)])
def test_static_dispatch_equals_sorted_dispatch_forward_and_gradients(experts):
    """Dropout and gate noise on: both paths draw the same numbers in the same order."""
    spec = tiny(*experts, dropout=0.1, attention_dropout=0.1, gate_noise=0.1)
    torch.manual_seed(0)
    sorted_ = Student(spec, dispatch="sorted")
    static = Student(spec, dispatch="static")
    static.load_state_dict(sorted_.state_dict())
    ids, mask = batch()
    outs = []
    for model in (sorted_, static):
        model.train()
        torch.manual_seed(1)
        out = model(ids, mask, output_qkv=True)
        loss_of(out).backward()
        outs.append(out)
    a, b = outs
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, **TOL)
    torch.testing.assert_close(b.qkv, a.qkv, **TOL)
    torch.testing.assert_close(b.load_balance, a.load_balance, **TOL)
    for (_, _, x), (_, _, y) in zip(a.routing.blocks(), b.routing.blocks()):
        assert torch.equal(x.expert, y.expert)
    assert_grads_close(grads(static), grads(sorted_))


def test_load_balance_mask_counts_only_the_given_positions():
    torch.manual_seed(0)
    model = Student(tiny(), moefy=False).eval()
    ids, mask = batch(T=10)
    padded = torch.cat([ids, torch.zeros(3, 6, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 6, dtype=torch.long)], 1)
    counted = torch.arange(16) < 10
    with torch.no_grad():
        plain = model(ids, mask)
        masked = model(padded, padded_mask, load_balance_mask=counted.expand(3, 16))
        unmasked = model(padded, padded_mask)
    torch.testing.assert_close(masked.load_balance, plain.load_balance, **TOL)
    assert not torch.allclose(unmasked.load_balance, plain.load_balance, rtol=1e-4)  # padding counts otherwise
    torch.testing.assert_close(masked.last_hidden_state[:, :10], plain.last_hidden_state, **TOL)


# -- capture: one graph, no break --------------------------------------------------------------------------
@pytest.mark.parametrize("experts", [(1, 1), (2, 4)])
def test_training_forward_is_one_graph_without_breaks(experts, fresh_dynamo):
    torch.manual_seed(0)
    model = Student(tiny(*experts, dropout=0.1, gate_noise=0.1)).train()
    ids, mask = batch()
    explained = torch._dynamo.explain(model)(ids, mask, output_qkv=True, output_hidden_states=True,
                                              load_balance_mask=torch.ones_like(mask))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


# -- the compiled student against eager ----------------------------------------------------------------------
@pytest.mark.parametrize("experts", [(1, 1), (2, 4)])
def test_compiled_student_equals_eager_and_recompiles_once_per_bucket(experts, fresh_dynamo):
    torch.manual_seed(0)
    spec = tiny(*experts, layers=1)
    eager = Student(spec, num_labels=3, task="token").train()
    model = Student(spec, num_labels=3, task="token").train()
    model.load_state_dict(eager.state_dict())
    compiled = CompiledStudent(model, "aot_eager", bucket_lengths(32))  # buckets 16, 32
    lengths = [13, 5, 16, 17, 32, 9, 30]  # both buckets, most lengths padded
    for step, T in enumerate(lengths):
        ids, mask = batch(T=T, seed=step)
        outs = []
        for call, m in ((eager, eager), (compiled, model)):
            m.zero_grad()
            out = call(ids, mask, output_qkv=True, output_hidden_states=True)
            (loss_of(out) + out.logits.square().mean()).backward()
            outs.append(out)
        a, b = outs
        assert b.last_hidden_state.shape == a.last_hidden_state.shape == (3, T, 36)
        torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, **TOL)
        torch.testing.assert_close(b.hidden_states, a.hidden_states, **TOL)
        torch.testing.assert_close(b.qkv, a.qkv, **TOL)
        torch.testing.assert_close(b.logits, a.logits, **TOL)
        torch.testing.assert_close(b.load_balance, a.load_balance, **TOL)
        for (_, _, x), (_, _, y) in zip(a.routing.blocks(), b.routing.blocks()):
            assert torch.equal(x.expert, y.expert) and x.probs.shape == y.probs.shape
        assert_grads_close(grads(model), grads(eager))
    assert graphs() == 2  # one per bucket: 16, 32


def test_cut_student_output_keeps_per_sequence_tensors():
    torch.manual_seed(0)
    model = Student(tiny(), num_labels=2).eval()
    ids, mask = batch(T=16)
    with torch.no_grad():
        out = cut_student_output(model(ids, mask), 10)
    assert out.last_hidden_state.shape == (3, 10, 36) and out.pooler_output.shape == (3, 36)
    assert out.logits.shape == (3, 2)  # a sequence head: nothing to cut
    assert all(b.expert.shape == (3, 10) and b.probs.shape[:2] == (3, 10) for _, _, b in out.routing.blocks())


def test_inductor_numbers_match_eager(fresh_dynamo):
    """The one check with the real compiler (C++ on the CPU): a MiniMoE forward with attention experts."""
    torch.manual_seed(0)
    model = Student(tiny(2, 2, layers=1)).eval()
    compiled = CompiledStudent(model, "default", (16,))
    ids, mask = batch(T=11)
    with torch.no_grad():
        a = model(ids, mask, output_qkv=True)
        b = compiled(ids, mask, output_qkv=True)
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state, **TOL)
    torch.testing.assert_close(b.qkv, a.qkv, **TOL)
    torch.testing.assert_close(b.load_balance, a.load_balance, **TOL)


# -- the teacher ---------------------------------------------------------------------------------------------
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64))


def test_compiled_teacher_equals_eager_and_recompiles_once_per_bucket(fresh_dynamo):
    needs = TeacherNeeds(qkv=True, hidden=True)
    cpu = torch.device("cpu")
    bert = tiny_bert()
    eager = TeacherSide(Teacher(bert), "tiny", needs, cpu)
    compiled = TeacherSide(Teacher(tiny_bert()), "tiny", needs, cpu, compile="aot_eager", buckets=(16, 32))
    for step, T in enumerate([7, 20, 16, 31, 3]):
        ids, mask = batch(T=T, seed=step)
        b = dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        x, y = eager(b), compiled(b)
        assert y.qkv[0].shape == x.qkv[0].shape == (3, T, 32)
        torch.testing.assert_close(y.qkv, x.qkv, **TOL)
        torch.testing.assert_close(y.hidden_states, x.hidden_states, **TOL)
        torch.testing.assert_close(y.last_hidden_state, x.last_hidden_state, **TOL)
    assert graphs() == 2  # one per bucket (the warm-up call before compiling is eager)


# -- a run -----------------------------------------------------------------------------------------------
def test_run_with_compile_equals_the_eager_run(tmp_path, fresh_dynamo):
    """Relation distillation of a MiniMoE student (attention and FFN experts) for a few steps: the same
    losses with train.compile as without (dropout off: padded and unpadded batches draw differently)."""
    tiny_bert().save_pretrained(tmp_path / "teacher")
    student = dict(layers=2, hidden=36, heads=6, attn_experts=2, ffn_experts=2, dropout=0.0, attention_dropout=0.0,
                   gate_noise=0.0)

    def go(name, compile):
        spec = DistillSpec(stage="agnostic", student=student, teacher=str(tmp_path / "teacher"),
                           output_dir=str(tmp_path / name), relation_heads=2, relation_dropout=0.0,
                           data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=16,
                                     synthetic=dict(vocab_size=VOCAB)),
                           train=dict(lr=1e-3, max_steps=3, batch_size=8, eval_every=3, log_every=1, device="cpu",
                                      compile=compile))
        seen = []
        result = run(spec, callback=lambda step, logs, model: seen.append(logs), progress=False)
        return seen, result

    (eager, a), (compiled, b) = go("eager", "off"), go("compiled", "aot_eager")
    assert len(eager) == len(compiled) == 3
    for x, y in zip(eager, compiled):
        for term in ("relation", "load_balance", "total"):
            assert y[term] == pytest.approx(x[term], rel=1e-4), term
    assert b.metric("relation", model="final") == pytest.approx(a.metric("relation", model="final"), rel=1e-4)
    config = json.loads((Path(b.run_dir) / "config.json").read_text())
    assert config["train"]["compile"] == "aot_eager"
    # Training lengths of this task fall in 2 buckets (16, 32): a teacher graph and a student graph
    # (forward and backward) each, at most.
    assert graphs() <= 4


def test_compile_refuses_a_hugging_face_model_being_fine_tuned(tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=1, n_heads=4, hidden_dim=64, max_position_embeddings=64)).save_pretrained(
        tmp_path / "distil")
    spec = DistillSpec(stage="finetune", student=str(tmp_path / "distil"), output_dir=str(tmp_path / "run"),
                       data=dict(task="synthetic", max_len=32, max_train_examples=32, max_eval_examples=8,
                                 synthetic=dict(vocab_size=VOCAB)),
                       weights=dict(relation=0, hard=1.0),
                       train=dict(max_steps=1, batch_size=8, device="cpu", compile="aot_eager"))
    with pytest.raises(ConfigError, match="train.compile applies to gapkit students"):
        Run(spec, progress=False)
    assert not (tmp_path / "run" / "config.json").exists()  # refused before the folder was written


def test_every_compiled_forward_makes_room_in_the_shared_recompile_limit():
    """Students' compiled forwards share one function, whose graphs dynamo counts together: each one
    raises the limit by what it may need, so a group of many students never hits it."""
    from gapkit.distill import compiling

    before = torch._dynamo.config.recompile_limit
    planned = compiling._planned_graphs
    try:
        compiling.raise_recompile_limit(5 * 1000)
        assert torch._dynamo.config.recompile_limit == planned + 5000
        compiling.raise_recompile_limit(8)
        assert torch._dynamo.config.recompile_limit == planned + 5008
    finally:
        compiling._planned_graphs = planned
        torch._dynamo.config.recompile_limit = before
