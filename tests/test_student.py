"""Students: spec validation, equivalence with Hugging Face BertModel, MiniMoE behaviour."""

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

from gapkit.errors import ConfigError, ModelError
from gapkit.models import PRESETS, Router, Student, StudentSpec, dispatch_loop, dispatch_sorted, spec_from_name
from gapkit.models.moefy import moefy_linear
from gapkit.routing import (BlockRouting, RoutingAccumulator, RoutingRecord, load_balance_of, routing_rows,
                            switch_load_balance)

TINY = dict(layers=2, hidden=48, heads=4, vocab_size=100, max_positions=64)
# Attention experts are moefied from whole thirds of their heads (the authors' rule): 6 heads of 8.
TINY_ATTN = dict(TINY, heads=6)


def batch(B=3, T=10, vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1 % B, 6:] = 0
    mask[B - 1, 3:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1
    return ids, mask, types


def hf_twin(student, attn_implementation):
    s = student.spec
    config = BertConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        intermediate_size=s.ffn, max_position_embeddings=s.max_positions, hidden_dropout_prob=s.dropout,
        attention_probs_dropout_prob=s.attention_dropout, attn_implementation=attn_implementation,
    )
    model = BertModel(config)
    model.load_state_dict(student.state_dict(), strict=True)
    return model


# -- spec -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, word",
    [
        (dict(hidden=100, heads=12), "hidden"),
        (dict(ffn_experts=0), "ffn_experts"),
        (dict(attn_experts=-1), "attn_experts"),
        (dict(layers=0), "layers"),
        (dict(ffn=-5), "ffn"),
        (dict(routing="top2"), "routing"),
        (dict(dropout=1.5), "dropout"),
        (dict(gate_noise=-0.1), "gate_noise"),
    ],
)
def test_spec_rejects_impossible_shapes(fields, word):
    with pytest.raises(ValueError, match=word):
        StudentSpec(**fields)


def test_load_balance_weight_moved_to_the_run():
    message = r"StudentSpec.load_balance_weight is no longer a student setting: it moved to the run's weights.load_balance"
    with pytest.raises(ValueError, match=message):
        StudentSpec.from_dict(dict(layers=2, load_balance_weight=0.01))
    with pytest.raises(ValueError, match=message):
        spec_from_name("3L-384H-1,4E", load_balance_weight=0.02)
    assert "load_balance_weight" not in StudentSpec().to_dict()


def test_spec_presets_names_and_round_trip():
    spec = spec_from_name("3L-384H", ffn_experts=4)
    assert (spec.layers, spec.hidden, spec.heads, spec.ffn, spec.ffn_experts) == (3, 384, 12, 1536, 4)
    assert spec.name == "3L-384H-1,4E" and spec.experts == "1,4E" and spec.gate_noise == spec.dropout
    assert StudentSpec.from_name("3L-384H-1,4E") == spec
    assert StudentSpec.from_name("bert-base").name == "bert-base"
    assert StudentSpec.from_name("bert-large").heads == 16
    assert StudentSpec.from_name("2L-192H").head_size == 16
    assert StudentSpec.from_name("5L-256H-4A").heads == 4
    assert StudentSpec.from_json(spec.to_json()) == spec
    assert set(PRESETS) >= {"bert-base", "bert-large", "12L-384H", "6L-384H", "4L-384H", "3L-384H", "2L-384H", "2L-192H"}
    with pytest.raises(ValueError, match="Unknown student"):
        spec_from_name("huge-model")
    with pytest.raises(ValueError, match="Unknown StudentSpec field"):
        StudentSpec.from_dict({"layers": 2, "colour": "red"})
    assert spec.dense_twin().experts == "dense"


# -- dense == Hugging Face BertModel ---------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_dense_student_matches_hf_bert_forward_and_gradients(attn_implementation):
    torch.manual_seed(0)
    student = Student(StudentSpec(**TINY, dropout=0.0, attention_dropout=0.0))
    hf = hf_twin(student, attn_implementation)
    ids, mask, types = batch()
    ours = student(ids, mask, types, output_hidden_states=True)
    ref = hf(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    torch.testing.assert_close(ours.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)
    assert len(ours.hidden_states) == len(ref.hidden_states) == 3
    for a, b in zip(ours.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # Gradients of a loss on real tokens.
    w = torch.randn_like(ours.last_hidden_state) * mask[..., None]
    ((ours.last_hidden_state * w).sum() + ours.pooler_output.sum()).backward()
    ((ref.last_hidden_state * w).sum() + ref.pooler_output.sum()).backward()
    hf_grads = dict(hf.named_parameters())
    for name, p in student.named_parameters():
        torch.testing.assert_close(p.grad, hf_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    assert ours.routing.is_moe is False and float(ours.load_balance) == 1.0


def test_dense_student_qkv_output_is_last_layer_projection():
    student = Student(StudentSpec(**TINY)).eval()
    ids, mask, types = batch()
    out = student(ids, mask, output_hidden_states=True, output_qkv=True)
    layer = student.encoder.layer[-1]
    expected_q = layer.attention.self.query(out.hidden_states[-2])
    torch.testing.assert_close(out.qkv[0], expected_q)
    first = student(ids, mask, output_qkv=True, qkv_layer=0).qkv[2]
    torch.testing.assert_close(first, student.encoder.layer[0].attention.self.value(out.hidden_states[0]))


# -- MiniMoE ------------------------------------------------------------------------------------
def test_one_expert_minimoe_path_equals_dense_forward_and_gradients():
    """Route every block through the MiniMoE path with a single expert: identical to the dense student."""
    torch.manual_seed(1)
    spec = StudentSpec(**TINY, dropout=0.0, attention_dropout=0.0)
    dense = Student(spec)
    moe = copy.deepcopy(dense)
    for layer in moe.encoder.layer:
        layer.attn_gate = Router(spec.hidden, 1, "learned", noise=0.1)
        layer.ffn_gate = Router(spec.hidden, 1, "learned", noise=0.1)
    ids, mask, types = batch()
    for model in (dense, moe):
        model.train()
    out_d, out_m = dense(ids, mask, types), moe(ids, mask, types)
    torch.testing.assert_close(out_m.last_hidden_state, out_d.last_hidden_state, atol=1e-6, rtol=0)
    assert out_m.routing.is_moe and float(out_m.load_balance.detach()) == pytest.approx(1.0)
    assert torch.all(out_m.routing.ffn[0].prob == 1.0)
    out_d.last_hidden_state.square().sum().backward()
    out_m.last_hidden_state.square().sum().backward()
    moe_grads = dict(moe.named_parameters())
    for name, p in dense.named_parameters():
        torch.testing.assert_close(moe_grads[name].grad, p.grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("experts", [(1, 4), (2, 2), (3, 3)])
def test_sorted_dispatch_matches_loop_reference(experts):
    spec = StudentSpec(**TINY_ATTN, attn_experts=experts[0], ffn_experts=experts[1], dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(2)
    fast = Student(spec, dispatch="sorted")
    slow = Student(spec, dispatch="loop")
    slow.load_state_dict(fast.state_dict())
    ids, mask, types = batch(B=4, T=12)
    outs = []
    for model in (fast, slow):
        model.train()
        torch.manual_seed(3)  # same gate noise in both
        out = model(ids, mask, types)
        (out.last_hidden_state.square().sum() + 0.01 * out.load_balance).backward()
        outs.append(out)
    torch.testing.assert_close(outs[0].last_hidden_state, outs[1].last_hidden_state, atol=1e-6, rtol=0)
    for (_, _, a), (_, _, b) in zip(outs[0].routing.blocks(), outs[1].routing.blocks()):
        assert torch.equal(a.expert, b.expert)
    slow_grads = dict(slow.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, slow_grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_dispatch_functions_agree_on_random_tokens():
    x = torch.randn(50, 8)
    expert = torch.randint(0, 5, (50,))
    expert[expert == 3] = 4  # an expert without tokens
    fn = lambda e, xe: xe * (e + 1) + e
    torch.testing.assert_close(dispatch_sorted(x, expert, 5, fn), dispatch_loop(x, expert, 5, fn))
    torch.testing.assert_close(dispatch_sorted(x, expert, 5, fn), x * (expert[:, None] + 1) + expert[:, None])


def test_routing_record_and_load_balance_follow_the_paper():
    spec = StudentSpec(**TINY_ATTN, attn_experts=2, ffn_experts=4)
    torch.manual_seed(0)
    model = Student(spec).eval()
    ids, mask, types = batch(B=4, T=12)
    out = model(ids, mask, types)
    rec = out.routing
    assert len(rec.attn) == len(rec.ffn) == spec.layers
    for layer, block, r in rec.blocks():
        E = 2 if block == "attn" else 4
        assert r.expert.shape == (4, 12) and r.probs.shape == (4, 12, E)
        torch.testing.assert_close(r.prob, r.probs.max(-1).values)
        assert torch.equal(r.expert, r.probs.argmax(-1))
        # Switch form over every token position, padding included (the authors' convention).
        frac = torch.bincount(r.expert.flatten(), minlength=E).float() / r.expert.numel()
        expected = E * (r.probs.reshape(-1, E).mean(0) * frac).sum()
        torch.testing.assert_close(r.load_balance, expected)
    attn = torch.stack([b.load_balance for b in rec.attn]).mean()
    ffn = torch.stack([b.load_balance for b in rec.ffn]).mean()
    torch.testing.assert_close(out.load_balance, (attn + ffn) / 2)
    assert not hasattr(out, "aux_loss")  # its weight is the run's (LossWeights.load_balance)
    # Only one expert per token: the FFN output of a token depends on its expert's weights alone.
    assert out.load_balance.requires_grad


def test_load_balance_gradient_reaches_the_gates():
    model = Student(StudentSpec(**TINY, ffn_experts=4)).train()
    ids, mask, _ = batch()
    out = model(ids, mask)
    out.load_balance.backward()
    gate = model.encoder.layer[0].ffn_gate
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0


def test_gate_noise_only_in_training():
    spec = StudentSpec(**TINY, ffn_experts=4, gate_noise=5.0)  # large noise: routing must change
    model = Student(spec)
    ids, mask, _ = batch(B=4, T=16)
    model.eval()
    a, b = model(ids, mask), model(ids, mask)
    assert torch.equal(a.routing.ffn[0].expert, b.routing.ffn[0].expert)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state)
    model.train()
    torch.manual_seed(0)
    c = model(ids, mask)
    assert not torch.equal(a.routing.ffn[0].expert, c.routing.ffn[0].expert)


def test_hash_and_random_routing_ablations():
    ids, mask, _ = batch(B=2, T=16)
    hashed = Student(StudentSpec(**TINY, ffn_experts=3, routing="hash")).eval()
    out = hashed(ids, mask)
    assert torch.equal(out.routing.ffn[0].expert, ids % 3)
    assert torch.all(out.routing.ffn[0].prob == 1.0)
    assert not hasattr(hashed.encoder.layer[0].ffn_gate, "weight")
    rand = Student(StudentSpec(**TINY_ATTN, attn_experts=2, ffn_experts=4, routing="random")).eval()
    r = rand(ids, mask).routing
    assert r.ffn[0].expert.min() >= 0 and r.ffn[0].expert.max() < 4
    assert r.ffn[0].expert.unique().numel() > 1
    with pytest.raises(ValueError, match="input_ids"):
        hashed(inputs_embeds=torch.randn(2, 16, 48))


def test_moefication_shares_two_thirds_of_units():
    spec = StudentSpec(**TINY_ATTN, attn_experts=2, ffn_experts=4)  # heads 6 -> 4 shared, ffn 192 -> 128 shared
    model = Student(spec)
    layer = model.encoder.layer[0]
    w1 = layer.intermediate.dense.weight  # (4, 192, 48)
    assert w1.shape == (4, 192, 48)
    for e in range(1, 4):
        assert torch.equal(w1[e, :128], w1[0, :128])
        assert not torch.equal(w1[e, 128:], w1[0, 128:])
    w2 = layer.output.dense.weight  # (4, 48, 192)
    assert torch.equal(w2[1, :, :128], w2[0, :, :128]) and not torch.equal(w2[1, :, 128:], w2[0, :, 128:])
    q = layer.attention.self.query.weight  # (2, 48, 48): 6 heads of 8, 4 shared
    assert torch.equal(q[1, :32], q[0, :32]) and not torch.equal(q[1, 32:], q[0, 32:])
    # Independent parameters after the split.
    assert w1.data_ptr() != layer.intermediate.dense.weight[1].data_ptr()


@pytest.mark.parametrize(
    "fields",
    [
        dict(heads=4, attn_experts=2),  # 2/3 of 4 heads is not whole: the authors' code asserts
        dict(heads=8, hidden=64, attn_experts=4),
        dict(heads=2, hidden=48, attn_experts=3, ffn_experts=2),
    ],
)
def test_moefication_refuses_heads_that_do_not_split_in_thirds(fields):
    spec = StudentSpec(**dict(TINY, **fields))
    with pytest.raises(ConfigError, match=rf"heads must be a multiple of 3 \(got {spec.heads}\).*moefy=False"):
        Student(spec)
    assert Student(spec, moefy=False).spec == spec  # loading weights needs no moefication


def test_moefication_of_ffn_not_divisible_by_3_warns(caplog):
    spec = StudentSpec(**TINY, ffn=128, ffn_experts=2)
    with caplog.at_level("WARNING", logger="gapkit.models.moefy"):
        layer = Student(spec).encoder.layer[0]
    assert "floor(2/3 * 128) = 85" in caplog.text
    w1 = layer.intermediate.dense.weight  # (2, 128, 48)
    assert torch.equal(w1[1, :85], w1[0, :85]) and not torch.equal(w1[1, 85:], w1[0, 85:])


def test_moefy_linear_matches_the_strided_split_by_hand():
    wide = torch.arange(12.0).reshape(12, 1)  # 12 units, 2 experts of 6 units: 4 shared
    w, b = moefy_linear(wide, torch.arange(12.0), num_experts=2, expert_units=6)
    assert w[0].flatten().tolist() == [0, 1, 2, 3, 4, 6]
    assert w[1].flatten().tolist() == [0, 1, 2, 3, 5, 7]
    assert b[1].tolist() == [0, 1, 2, 3, 5, 7]
    wide_cols = torch.arange(12.0).reshape(1, 12)
    w, b = moefy_linear(wide_cols, torch.ones(1), 2, 6, split_dim=1)
    assert w[1].flatten().tolist() == [0, 1, 2, 3, 5, 7] and torch.equal(b[0], torch.ones(1))


def test_switch_load_balance_extremes():
    probs = torch.full((8, 4), 0.25)
    assert float(switch_load_balance(probs, torch.arange(8) % 4)) == pytest.approx(1.0)
    onehot = torch.zeros(8, 4)
    onehot[:, 2] = 1
    assert float(switch_load_balance(onehot, torch.full((8,), 2))) == pytest.approx(4.0)


def test_one_load_balance_formula_for_training_and_statistics():
    """The differentiable term, per-batch statistics and pooled statistics agree (one formula)."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 6, 3, generator=g), -1)  # (B, T, E)
    expert = probs.argmax(-1)
    block = BlockRouting(expert, probs.max(-1).values, probs, switch_load_balance(probs.reshape(-1, 3), expert.flatten()))
    record = RoutingRecord(attn=[None], ffn=[block])
    by_hand = 3 * (probs.reshape(-1, 3).mean(0) * torch.bincount(expert.flatten(), minlength=3) / 12).sum()
    torch.testing.assert_close(block.load_balance, by_hand)
    torch.testing.assert_close(load_balance_of(probs.reshape(-1, 3).mean(0), torch.bincount(expert.flatten(), minlength=3) / 12), by_hand)
    rows = routing_rows(record)
    acc = RoutingAccumulator()
    acc.add(record)
    assert rows[0]["load_balance"] == pytest.approx(float(by_hand))
    assert acc.rows()[0]["load_balance"] == pytest.approx(float(by_hand))


def test_protocol_properties_and_hf_style_api(tmp_path):
    spec = StudentSpec(**TINY, ffn_experts=2)
    student = Student(spec, num_labels=2, moefy=False).eval()
    assert (student.hidden_size, student.max_positions, student.is_moe) == (48, 64, True)
    assert Student(spec.dense_twin()).is_moe is False
    student.save_pretrained(tmp_path / "s", label_names=["neg", "pos"])
    loaded = Student.from_pretrained(tmp_path / "s")
    assert loaded.num_labels == 2 and loaded.spec == spec
    loaded, report = Student.from_pretrained(tmp_path / "s", num_labels=0, return_report=True)
    assert loaded.num_labels == 0 and {"classifier.bias", "classifier.weight"} <= set(report.dropped)


def test_relation_projection_init_and_errors():
    student = Student(StudentSpec(**TINY))
    assert student.relation is None
    with pytest.raises(ModelError, match="add_relation_projection"):
        student.relation_qkv(torch.zeros(1, 2, 48))
    torch.manual_seed(0)
    relation = student.add_relation_projection()
    assert set(relation) == {"query", "key", "value"}
    for lin in relation.values():
        assert lin.weight.shape == (48, 48) and torch.equal(lin.bias, torch.zeros(48))
        assert lin.weight.std().item() == pytest.approx(0.02, rel=0.1)  # normal(0, initializer_range)
    ids, mask, _ = batch()
    out = student(ids, mask)
    q, k, v = student.relation_qkv(out.last_hidden_state)
    assert q.shape == k.shape == v.shape == (3, 10, 48)
    torch.testing.assert_close(k, relation["key"](out.last_hidden_state))
    # It goes wherever the student goes (created on the student's dtype).
    half = Student(StudentSpec(**TINY)).to(torch.float64)
    assert half.add_relation_projection()["query"].weight.dtype == torch.float64


def test_parameters_total_and_active():
    spec = StudentSpec(**TINY, ffn_experts=4)
    moe, dense = Student(spec), Student(spec.dense_twin())
    gates = spec.layers * (spec.hidden * 4 + 4)
    assert moe.num_parameters(active=True) == dense.num_parameters() + gates
    ffn = spec.layers * (2 * spec.hidden * spec.ffn + spec.ffn + spec.hidden)
    assert moe.num_parameters() == dense.num_parameters() + 3 * ffn + gates


def test_bad_forward_inputs_are_explained():
    model = Student(StudentSpec(**TINY))
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="task"):
        Student(StudentSpec(**TINY), num_labels=2, task="span")


def test_task_heads_shapes():
    ids, mask, _ = batch()
    seq = Student(StudentSpec(**TINY), num_labels=3)(ids, mask)
    tok = Student(StudentSpec(**TINY), num_labels=5, task="token")(ids, mask)
    assert seq.logits.shape == (3, 3) and tok.logits.shape == (3, 10, 5)
