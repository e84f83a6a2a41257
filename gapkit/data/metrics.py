"""Task metrics in percent (0-100), as the paper's tables print them, and the GLUE average.

Every result dict has a ``score`` key: the one per-task number that enters the GLUE average and
selects the best checkpoint (``primary_metric``). NER results use ``f1``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from gapkit.data.glue import GLUE_TASKS, get_glue_task
from gapkit.errors import DataError

# MNLI is scored twice, on its matched and mismatched dev sets; these names keep them apart.
MNLI_ALIASES = ("mnli_m", "mnli_mm")

# metric name -> fn(predictions, labels) -> fraction; GlueTask.metrics names these keys. scipy, scikit-learn
# and seqeval are imported when a metric is computed: configs name metrics without them (a fast command line).
def _f1(p, g):
    from sklearn.metrics import f1_score

    return f1_score(g, p, zero_division=0)  # binary, positive class 1


def _mcc(p, g):
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(g, p)


def _pearson(p, g):
    from scipy.stats import pearsonr

    return pearsonr(p, g)[0]


def _spearman(p, g):
    from scipy.stats import spearmanr

    return spearmanr(p, g)[0]


_METRICS = {"accuracy": lambda p, g: (p == g).mean(), "f1": _f1, "mcc": _mcc, "pearson": _pearson,
            "spearmanr": _spearman}
# Which metrics score which kind of task (a data set of the user's own names them, gapkit.data.custom).
CLASSIFICATION_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearmanr")


def _task_name(task: str) -> str:
    return "mnli" if task in MNLI_ALIASES else get_glue_task(task).name


def _as_arrays(where: str, predictions, labels, regression: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as equal-shape (N,) arrays; logits are reduced by argmax."""
    preds, gold = np.asarray(predictions), np.asarray(labels)
    if regression:
        preds = preds.reshape(len(preds), -1)[:, 0]  # (N, 1) head output -> (N,)
    elif preds.ndim == 2:
        preds = preds.argmax(-1)  # (N, C) logits -> (N,)
    if preds.shape != gold.shape or not len(gold):
        raise DataError(f"{where} needs as many predictions as labels (at least one), "
                        f"got shapes {preds.shape} and {gold.shape}.")
    return preds, gold


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """Official metric(s) of a GLUE task, in percent, plus ``score`` (see ``glue_score``).

    Args:
        task: a GLUE task name; ``mnli_m``/``mnli_mm`` are accepted for MNLI's two dev sets.
        predictions: (N,) class ids, or (N, C) logits (argmax is taken); STS-B: (N,) or (N, 1) scores.
        labels: (N,) gold class ids or scores.

    Returns:
        cola: mcc; sst2, mnli, qnli, rte, wnli: accuracy; mrpc, qqp: f1 (positive class 1) and
        accuracy; stsb: pearson and spearmanr. Each dict also has ``score``.
    """
    spec = get_glue_task(_task_name(task))
    return named_metrics(spec.metrics, predictions, labels, spec.is_regression, f"glue_metrics({task!r})")


def named_metrics(metrics: Sequence[str], predictions, labels, regression: bool,
                  where: str = "named_metrics") -> dict[str, float]:
    """The named metrics in percent, plus ``score``: their mean (the GLUE rule of ``glue_score``).

    Args:
        metrics: names from CLASSIFICATION_METRICS (``f1``: binary, positive class id 1) or
            REGRESSION_METRICS.
        predictions: (N,) class ids or (N, C) logits; for regression (N,) or (N, 1) scores.
        labels: (N,) gold class ids or scores.
        regression: whether predictions are scores (else class ids or logits).
        where: what asked, for messages.
    """
    known = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    unknown = [m for m in metrics if m not in known]
    if unknown or not metrics:
        raise DataError(f"{where}: metric(s) {unknown or list(metrics)} cannot score a "
                        f"{'regression' if regression else 'classification'} task; use {', '.join(known)}.")
    preds, gold = _as_arrays(where, predictions, labels, regression)
    out = {m: 100 * float(_METRICS[m](preds, gold)) for m in metrics}
    out["score"] = float(np.mean([out[m] for m in metrics]))
    return out


def _task_score(task: str, metrics: Mapping[str, float]) -> float:
    """The one GLUE number of a task from its official metrics (the rule in ``glue_score``)."""
    spec = get_glue_task(task)
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise DataError(f"Metrics of {task!r} lack {missing}; pass the dict glue_metrics returned.")
    return float(np.mean([metrics[m] for m in spec.metrics]))


def glue_score(task_to_metrics: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE average as the paper reports it, over the tasks given.

    One number per task: CoLA MCC; STS-B the mean of Pearson and Spearman; MRPC and QQP the mean of
    F1 and accuracy; every other task accuracy. MNLI counts as two entries, matched and
    mismatched (keys ``mnli_m`` and ``mnli_mm``; a plain ``mnli`` key is taken as matched). This is
    the convention of the GLUE leaderboard's per-task columns and of the MiniLM/MiniMoE tables; the
    average is over whatever tasks are passed, so compare averages over the same task set only.

    Args:
        task_to_metrics: task name -> its ``glue_metrics`` dict (percent).

    Returns:
        The unweighted mean of the per-task numbers, in percent.
    """
    if not task_to_metrics:
        raise DataError("glue_score got no tasks; pass {task: glue_metrics(task, ...)} for at least one.")
    if "mnli" in task_to_metrics and "mnli_m" in task_to_metrics:
        raise DataError("glue_score got both 'mnli' and 'mnli_m' (the same dev set); pass only 'mnli_m'.")
    return float(np.mean([_task_score(_task_name(t), m) for t, m in task_to_metrics.items()]))


def ner_metrics(pred_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level NER metrics (seqeval, conlleval-compatible default mode) in percent.

    Args:
        pred_tags, gold_tags: one list of IOB2 tags per sentence, aligned word by word.

    Returns:
        f1, precision, recall (micro-averaged over entities), accuracy (per token).
    """
    from seqeval.metrics import accuracy_score as seq_accuracy
    from seqeval.metrics import f1_score as seq_f1
    from seqeval.metrics import precision_score as seq_precision
    from seqeval.metrics import recall_score as seq_recall

    pred, gold = [list(s) for s in pred_tags], [list(s) for s in gold_tags]
    if [len(s) for s in pred] != [len(s) for s in gold] or not gold:
        raise DataError("ner_metrics needs the same number of sentences and of tags per sentence in "
                        "predictions and gold; align them with features.align_predictions.")
    return {"f1": 100 * float(seq_f1(gold, pred)), "precision": 100 * float(seq_precision(gold, pred)),
            "recall": 100 * float(seq_recall(gold, pred)), "accuracy": 100 * float(seq_accuracy(gold, pred))}


def primary_metric(task: str) -> str:
    """The metric key that selects the best checkpoint: ``score`` for GLUE tasks and the synthetic
    task, ``f1`` (entity F1, as the paper selects) for CoNLL-2003."""
    if task in ("conll", "conll2003"):
        return "f1"
    if task == "synthetic" or task in MNLI_ALIASES or task.lower().replace("-", "") in GLUE_TASKS:
        return "score"
    raise DataError(f"Unknown task {task!r} for primary_metric; known tasks are conll, synthetic, "
                    f"{', '.join(GLUE_TASKS)}, {', '.join(MNLI_ALIASES)}.")


def classification_metrics(predictions, labels) -> dict[str, float]:
    """Accuracy in percent, with ``score`` = accuracy: for the synthetic task.

    Args:
        predictions: (N,) class ids or (N, C) logits.
        labels: (N,) class ids.
    """
    preds, gold = _as_arrays("classification_metrics", predictions, labels)
    accuracy = 100 * float(_METRICS["accuracy"](preds, gold))
    return {"accuracy": accuracy, "score": accuracy}
