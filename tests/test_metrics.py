"""Task metrics against hand-worked values, the GLUE average, NER entity F1, primary metrics."""

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from gapkit.data import (classification_metrics, glue_metrics, glue_score, ner_metrics,
                         primary_metric)
from gapkit.errors import DataError

# a small binary confusion: TP=3, TN=2, FP=1, FN=1
LABELS = [1, 1, 1, 1, 0, 0, 0]
PREDS = [1, 1, 1, 0, 1, 0, 0]


def test_cola_mcc_by_hand():
    mcc = (3 * 2 - 1 * 1) / math.sqrt((3 + 1) * (3 + 1) * (2 + 1) * (2 + 1))  # 5/12
    out = glue_metrics("cola", PREDS, LABELS)
    assert out == pytest.approx({"mcc": 100 * mcc, "score": 100 * mcc})


def test_mrpc_qqp_f1_and_accuracy_by_hand():
    f1, acc = 2 * 3 / (2 * 3 + 1 + 1), 5 / 7
    for task in ("mrpc", "qqp"):
        out = glue_metrics(task, PREDS, LABELS)
        assert out == pytest.approx({"f1": 100 * f1, "accuracy": 100 * acc, "score": 50 * (f1 + acc)})


def test_accuracy_tasks_take_ids_or_logits():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = glue_metrics("mnli_mm", logits, [1, 0, 2, 2])  # argmax: 1, 0, 2, 1
    assert out == {"accuracy": 75.0, "score": 75.0}
    for task in ("sst2", "qnli", "rte", "wnli", "mnli"):
        assert set(glue_metrics(task, PREDS, LABELS)) == {"accuracy", "score"}
    assert classification_metrics(logits, [1, 0, 2, 2]) == {"accuracy": 75.0, "score": 75.0}


def test_stsb_against_scipy():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 50)
    pred = gold + rng.normal(0, 1, 50)
    out = glue_metrics("stsb", pred[:, None], gold)  # (N, 1) regression head output
    p, s = 100 * pearsonr(pred, gold)[0], 100 * spearmanr(pred, gold)[0]
    assert out == pytest.approx({"pearson": p, "spearmanr": s, "score": (p + s) / 2})
    assert 0 < out["spearmanr"] < 100 and out["pearson"] != out["spearmanr"]


def test_glue_score_counts_mnli_twice():
    per_task = {
        "cola": {"mcc": 40.0},
        "stsb": {"pearson": 80.0, "spearmanr": 90.0},
        "mrpc": {"f1": 90.0, "accuracy": 86.0},
        "mnli_m": {"accuracy": 80.0},
        "mnli_mm": {"accuracy": 81.0},
        "sst2": {"accuracy": 92.0},
    }
    expected = (40 + 85 + 88 + 80 + 81 + 92) / 6
    assert glue_score(per_task) == pytest.approx(expected)
    # the dicts glue_metrics returns (with their score key) give the same average
    assert glue_score({"cola": glue_metrics("cola", PREDS, LABELS)}) == pytest.approx(100 * 5 / 12)
    # a plain "mnli" is the matched set
    assert glue_score({"mnli": {"accuracy": 70.0}, "mnli_mm": {"accuracy": 72.0}}) == pytest.approx(71.0)


def test_glue_score_and_metrics_errors():
    with pytest.raises(DataError, match="both 'mnli' and 'mnli_m'"):
        glue_score({"mnli": {"accuracy": 1.0}, "mnli_m": {"accuracy": 1.0}})
    with pytest.raises(DataError, match=r"lack \['accuracy'\]"):
        glue_score({"mrpc": {"f1": 90.0}})
    with pytest.raises(DataError, match="no tasks"):
        glue_score({})
    with pytest.raises(DataError, match="as many predictions as labels"):
        glue_metrics("sst2", [1, 0], [1, 0, 1])
    with pytest.raises(DataError, match="Unknown GLUE task"):
        glue_metrics("squad", [1], [1])


def test_ner_entity_f1_differs_from_token_accuracy():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]
    # tokens: 5 of 6 right; entities: gold PER(0-1), LOC, ORG; predicted PER(0) is a different span
    out = ner_metrics(pred, gold)
    assert out == pytest.approx({"accuracy": 500 / 6, "precision": 200 / 3, "recall": 200 / 3, "f1": 200 / 3})
    assert ner_metrics(gold, gold)["f1"] == 100.0
    with pytest.raises(DataError, match="same number of sentences and of tags"):
        ner_metrics([["O"]], [["O", "O"]])


def test_primary_metric_is_in_the_metrics_dict():
    for task in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli_m", "mnli_mm", "qnli", "rte", "wnli"):
        preds = np.linspace(0, 1, 7) if task == "stsb" else PREDS
        assert primary_metric(task) in glue_metrics(task, preds, LABELS)
    assert primary_metric("conll") == "f1" and primary_metric("synthetic") == "score"
    with pytest.raises(DataError, match="Unknown task 'squad'"):
        primary_metric("squad")
