"""A task, ready to train on: tokenized train and evaluation features plus how to score them.

``build_task(data_spec, tokenizer)`` is what the training loop calls; it reads and checks everything
(unknown task, missing split, malformed rows, a too-long max_len) before any training starts.

Selection split. With ``data.select_on: dev`` the dev split(s) select the best weights (``evals``) and
are scored with them. With ``data.select_on: holdout`` a holdout is carved from the training split
(:func:`carve_holdout`) and is the only selection split (``evals == {"holdout": ...}``); every dev split
(MNLI's two, CoNLL's dev) moves to ``tests`` beside any labeled test split: scored with the weights the
holdout selected, never used to select. ``max_eval_examples`` subsamples the dev and test splits, not
the holdout (its size is ``data.holdout``), with a fixed seed (:data:`EVAL_SEED`), not the run's: every run
of every seed scores the same examples, so that runs can be compared example by example (the curse and lift
tests take the dev examples' variance from that).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import DataError
from .conll import CONLL_LABELS, CONLL_SPLIT_FILES, load_conll
from .custom import CustomSpec, custom_metrics, load_custom
from .features import IGNORE_INDEX, align_predictions, tokenize_conll, tokenize_glue
from .glue import get_glue_task, load_glue, subsample
from .names import BUILT_IN_TASKS, _normal, check_task_name  # noqa: F401 (check_task_name re-exported)
from .metrics import classification_metrics, glue_metrics, named_metrics, ner_metrics, primary_metric
from .synthetic import RULE_DEFAULTS, SyntheticTask
from .text import HELD_OUT_EVERY, segments_needed, text_segments

EVAL_SEED = 0  # the seed of the dev/test subsets of max_eval_examples: the same examples for every run

KINDS = ("sequence", "regression", "token", "unlabeled")
HOLDOUT = "holdout"  # the name of the selection split carved from the training split

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """Features of one task.

    Attributes:
        task: the task name (``sst2``, ``conll``, ``synthetic``, ``text`` ...).
        kind: ``sequence`` (classification of the [CLS]), ``regression`` (STS-B), ``token`` (NER) or
            ``unlabeled`` (raw text).
        num_labels: classes (1 for regression, 0 unlabeled).
        train: per-example features (python lists, or a memory-mapped ``TokenSegments`` for raw text),
            for ``pad_batch``.
        evals: the selection split(s): name -> features (``dev``; MNLI ``dev_matched``,
            ``dev_mismatched``; or ``holdout`` alone with ``data.select_on: holdout``).
        tests: scored split name -> features (CoNLL-2003 ``test``; with ``select_on: holdout`` also the
            dev splits): scored with the weights that the ``evals`` selected, never used for selection.
        sizes: examples per split as built (``train``, each eval and test split), for result.json.
        pad_token_id: the padding id of the tokenizer (or the synthetic vocabulary).
        vocab_size: size of the vocabulary the ids come from.
        primary: the metric that selects the best checkpoint (higher is better).
    """

    task: str
    kind: str
    num_labels: int
    train: Sequence[dict]
    evals: dict[str, Sequence[dict]]
    pad_token_id: int
    vocab_size: int
    label_names: tuple[str, ...] | None = None
    primary: str = "score"
    tests: dict[str, Sequence[dict]] = field(default_factory=dict)
    _score: Callable | None = field(default=None, repr=False)

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), **{s: len(f) for s, f in (*self.evals.items(), *self.tests.items())}}

    @property
    def head(self) -> str | None:
        """The student head this task needs: ``sequence``, ``token`` or None."""
        return {"sequence": "sequence", "regression": "sequence", "token": "token"}.get(self.kind)

    def metrics(self, split: str, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Score an evaluation split. logits: (N, C) or (N, T, C); labels: (N,) or (N, T)."""
        if self._score is None:
            raise DataError(f"Task {self.task!r} has no labels to score.")
        return self._score(split, logits, labels)




def predictions_of(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """What a run keeps of its evaluation outputs, all its metrics can be recomputed from: class ids
    ((N,) or (N, T) for a token task, int32) or, for regression, the scores ((N,), float32)."""
    if kind == "regression":
        return logits.float().reshape(len(logits), -1)[:, 0].contiguous()
    return logits.argmax(-1).to(torch.int32)


def score_predictions(task: str, split: str, predictions: torch.Tensor, labels: torch.Tensor,
                      run_dir: str | Path | None = None) -> dict[str, float]:
    """A split's metrics from stored predictions (:func:`predictions_of`) and labels, without loading the
    data: the same numbers as the task's own scoring of the logits they came from.

    Args:
        task, split: the task's name and the scored split.
        predictions, labels: as the run stored them.
        run_dir: the run folder they came from: a data set of the user's own (``data.custom``) is scored by
            the metrics its run config names (its name alone does not say them); gapkit's tasks need none.
    Raises:
        DataError: an unknown task (or a custom one without its run folder), or predictions and labels
            that do not fit.
    """
    if _normal(task) not in BUILT_IN_TASKS:
        return _score_custom(task, predictions, labels, run_dir)
    name = check_task_name(task)
    preds, gold = predictions, labels
    if name == "conll":
        pred_tags, gold_tags = align_predictions(preds.long(), gold.long(), CONLL_LABELS)
        return ner_metrics(pred_tags, gold_tags)
    if name == "synthetic":
        return classification_metrics(preds.numpy(), gold.numpy())
    if name == "text":
        raise DataError("Raw text (task 'text') has no labels to score.")
    glue_name = name if name != "mnli" else ("mnli_mm" if "mismatched" in split else "mnli_m")
    return glue_metrics(glue_name, preds.numpy(), gold.numpy())


def _score_custom(task: str, predictions: torch.Tensor, labels: torch.Tensor, run_dir) -> dict[str, float]:
    """Stored predictions of a ``data.custom`` task, scored by the metrics its run's config.json names."""
    import json

    config = Path(run_dir) / "config.json" if run_dir else None
    if config is None or not config.is_file():
        raise DataError(f"Unknown task {task!r}: a data set of your own (data.custom) is scored by the metrics its run "
                        f"config names; pass the run folder (run_dir=) whose config.json has them.")
    custom = (json.loads(config.read_text()).get("data") or {}).get("custom")
    if not custom:
        raise DataError(f"The run config {config} has task {task!r} but no data.custom: gapkit does not know how to "
                        f"score it.")
    regression = predictions.dtype.is_floating_point  # predictions_of: scores for regression, class ids else
    metrics = custom_metrics(CustomSpec.from_dict(custom), regression)
    return named_metrics(metrics, predictions.numpy(), labels.numpy(), regression, f"task {task!r}")


def build_task(spec, tokenizer=None, seed: int = 0) -> TaskData:
    """Load, check and tokenize the task a :class:`gapkit.distill.DataSpec` names.

    Args:
        spec: a DataSpec (task, data_dir, text, max_len, subsets ...).
        tokenizer: a Hugging Face tokenizer (every task but ``synthetic``).
        seed: seed of the subsets and of text packing.
    Raises:
        DataError: unknown task, missing folder/split, malformed rows, no tokenizer where one is needed.
    """
    custom = getattr(spec, "custom", None)
    task = check_task_name(spec.task, custom)
    if task != "synthetic" and tokenizer is None:
        raise DataError(f"Task {spec.task!r} needs a tokenizer: set data.tokenizer or use a teacher with one.")
    if task == "synthetic":
        return _synthetic(spec, seed)
    if task == "conll":
        return _conll(spec, tokenizer, seed)
    if task == "text":
        return _text(spec, tokenizer, seed)
    if custom:
        return _custom(task, spec, tokenizer, seed)
    return _glue(task, spec, tokenizer, seed)


def _vocab_size(tokenizer) -> int:
    return len(tokenizer)


def holdout_size(holdout: float | int, n_train: int, max_train_examples: int | None = None) -> int:
    """Examples in the holdout: a count as given, or a fraction of the training examples the run uses
    (``max_train_examples`` of the split when set and smaller), at least 1."""
    if isinstance(holdout, int):
        return holdout
    used = min(n_train, max_train_examples) if max_train_examples else n_train
    return max(1, round(holdout * used))


def carve_holdout(examples: Sequence, spec, seed: int, task: str) -> tuple[list, list]:
    """Split the whole training split into (training examples, holdout), disjoint, reproducibly.

    The holdout (:func:`holdout_size` examples) is drawn from the whole split by a generator of its own,
    seeded by the run's data seed (the same seed, the same holdout; ``max_train_examples`` does not move
    it); ``max_train_examples`` then subsamples the rest as it would the whole split. When fewer than
    ``max_train_examples`` are left, training keeps every one left (logged, and visible in result.json's
    ``selection.examples``). Both keep file order.

    Raises:
        DataError: a holdout as large as the training split.
    """
    n = len(examples)
    k = holdout_size(spec.holdout, n, spec.max_train_examples)
    if k >= n:
        raise DataError(f"DataSpec.holdout ({spec.holdout!r}: {k} examples) leaves nothing to train on: the training "
                        f"split of task {task!r} has {n} examples; choose a smaller holdout.")
    chosen = set(random.Random(f"gapkit-holdout-{seed}").sample(range(n), k))
    held = [examples[i] for i in range(n) if i in chosen]
    rest = [examples[i] for i in range(n) if i not in chosen]
    wanted = spec.max_train_examples
    if wanted is not None and wanted > len(rest):
        logger.warning("Task %s: the training split has %d examples; after a holdout of %d, training keeps the %d "
                       "left (max_train_examples asks for %d).", task, n, k, len(rest), wanted)
    return subsample(rest, wanted, seed), held


def _train_and_holdout(examples: Sequence, spec, seed: int, task: str) -> tuple[list, list | None]:
    """(training examples, holdout or None): the holdout carved first when ``select_on: holdout``, else the
    split subsampled as it always was."""
    if spec.select_on == HOLDOUT:
        return carve_holdout(examples, spec, seed, task)
    return subsample(examples, spec.max_train_examples, seed), None


def _layout(scored: dict, holdout, tests: dict | None = None) -> tuple[dict, dict]:
    """(evals, tests): the dev splits select, or, with a holdout, the holdout selects and they are scored."""
    tests = dict(tests or {})
    if holdout is None:
        return scored, tests
    return {HOLDOUT: holdout}, {**scored, **tests}


def _glue(task: str, spec, tokenizer, seed: int) -> TaskData:
    glue = get_glue_task(task)
    train, holdout = _train_and_holdout(load_glue(task, "train", spec.data_dir), spec, seed, task)
    eval_splits = [s for s in glue.split_files if s != "train" and not (task == "mnli" and s == "dev")]
    evals = {s: load_glue(task, s, spec.data_dir, spec.max_eval_examples, EVAL_SEED) for s in eval_splits}
    kind = "regression" if glue.is_regression else "sequence"

    def score(split, logits, labels):
        name = task if task != "mnli" else ("mnli_mm" if "mismatched" in split else "mnli_m")
        preds = logits.float().numpy()
        return glue_metrics(name, preds, labels.numpy())

    dev = {s: tokenize_glue(ex, tokenizer, spec.max_len) for s, ex in evals.items()}
    evals, tests = _layout(dev, None if holdout is None else tokenize_glue(holdout, tokenizer, spec.max_len))
    return TaskData(
        task=task, kind=kind, num_labels=glue.num_labels,
        train=tokenize_glue(train, tokenizer, spec.max_len), evals=evals, tests=tests,
        pad_token_id=tokenizer.pad_token_id, vocab_size=_vocab_size(tokenizer),
        label_names=tuple(glue.label_names) if glue.label_names else None,
        primary=primary_metric(task), _score=score,
    )


def _custom(task: str, spec, tokenizer, seed: int) -> TaskData:
    """A data set of the user's own (gapkit.data.custom): tokenized as GLUE's, scored by its own metrics."""
    data = load_custom(spec.custom, task, spec.data_dir)
    train, holdout = _train_and_holdout(data.splits["train"], spec, seed, task)
    dev = subsample(data.splits["dev"], spec.max_eval_examples, EVAL_SEED)
    test = ({"test": tokenize_glue(subsample(data.splits["test"], spec.max_eval_examples, EVAL_SEED), tokenizer,
                                   spec.max_len)} if "test" in data.splits else {})
    if data.label_names is not None:
        logger.info("Task %s: classes by id: %s", task, ", ".join(f"{i}={n}" for i, n in enumerate(data.label_names)))

    def score(split, logits, labels):
        return named_metrics(data.metrics, logits.float().numpy(), labels.numpy(), data.regression, f"task {task!r}")

    evals, tests = _layout({"dev": tokenize_glue(dev, tokenizer, spec.max_len)},
                           None if holdout is None else tokenize_glue(holdout, tokenizer, spec.max_len), test)
    return TaskData(
        task=task, kind="regression" if data.regression else "sequence", num_labels=data.num_labels,
        train=tokenize_glue(train, tokenizer, spec.max_len), evals=evals, tests=tests,
        pad_token_id=tokenizer.pad_token_id, vocab_size=_vocab_size(tokenizer),
        label_names=data.label_names, primary="score", _score=score,
    )


def _conll(spec, tokenizer, seed: int) -> TaskData:
    train, holdout = _train_and_holdout(load_conll("train", spec.data_dir), spec, seed, "conll")
    dev = load_conll("dev", spec.data_dir, spec.max_eval_examples, EVAL_SEED)
    # The test split has labels (Hub and classic files); a local folder without test.txt has none.
    has_test = spec.data_dir is None or (Path(spec.data_dir) / CONLL_SPLIT_FILES["test"]).is_file()
    test = load_conll("test", spec.data_dir, spec.max_eval_examples, EVAL_SEED) if has_test else None

    def score(split, logits, labels):
        pred_tags, gold_tags = align_predictions(logits, labels, CONLL_LABELS)
        return ner_metrics(pred_tags, gold_tags)

    evals, tests = _layout({"dev": tokenize_conll(dev, tokenizer, spec.max_len)},
                           None if holdout is None else tokenize_conll(holdout, tokenizer, spec.max_len),
                           {"test": tokenize_conll(test, tokenizer, spec.max_len)} if test is not None else {})
    return TaskData(
        task="conll", kind="token", num_labels=len(CONLL_LABELS),
        train=tokenize_conll(train, tokenizer, spec.max_len), evals=evals, tests=tests,
        pad_token_id=tokenizer.pad_token_id, vocab_size=_vocab_size(tokenizer),
        label_names=CONLL_LABELS, primary="f1", _score=score,
    )


def _synthetic_task(spec) -> SyntheticTask:
    """The SyntheticTask a DataSpec describes (sequence length at most data.max_len; by default its rule's
    longest, 32 for ``counts``, 18 for ``span``)."""
    kwargs = dict(spec.synthetic)
    rule = kwargs.get("rule", "counts")
    longest = RULE_DEFAULTS.get(rule if isinstance(rule, str) else "counts", RULE_DEFAULTS["counts"])["max_len"]
    kwargs.setdefault("max_len", min(longest, spec.max_len))
    if kwargs["max_len"] > spec.max_len:
        raise DataError(f"synthetic.max_len {kwargs['max_len']} exceeds data.max_len {spec.max_len}; lower one of them.")
    try:
        return SyntheticTask(**kwargs)
    except TypeError as e:
        raise DataError(f"Bad data.synthetic settings: {e}.") from None


def _synthetic(spec, seed: int) -> TaskData:
    task = _synthetic_task(spec)
    train, holdout = _train_and_holdout(task.examples("train"), spec, seed, "synthetic")
    dev = subsample(task.examples("dev"), spec.max_eval_examples, EVAL_SEED)
    evals, tests = _layout({"dev": dev}, holdout)

    def score(split, logits, labels):
        return classification_metrics(logits.float().numpy(), labels.numpy())

    return TaskData(
        task="synthetic", kind="sequence", num_labels=task.num_labels, train=train, evals=evals, tests=tests,
        pad_token_id=task.pad_token_id, vocab_size=task.vocab_size, primary="score", _score=score,
    )


def synthetic_unlabeled(spec, n: int) -> list[dict]:
    """Unlabeled features of the synthetic task (its own stream), for task-agnostic distillation."""
    return list(_synthetic_task(spec).unlabeled(n))


def _text(spec, tokenizer, seed: int) -> TaskData:
    """Raw text packed into segment pairs, tokenised once into an on-disk cache (``text_segments``);
    every 20th segment is held out for evaluation. Only the segments the subsets use are packed."""
    n_train = spec.max_train_examples
    n_eval = spec.max_eval_examples or max(1, (n_train or 10**9) // 19)
    limit = segments_needed(n_train, n_eval, HELD_OUT_EVERY) if n_train is not None else None
    segments = text_segments(spec.text, tokenizer, spec.max_len, seed, line_mode=spec.line_mode,
                             text_config=spec.text_config, limit=limit)
    if len(segments) < 2:
        raise DataError(f"The text in data.text ({', '.join(spec.text)}) gave {len(segments)} segment(s); "
                        f"give more text (at least a few sentences).")
    train, held_out = segments.split(HELD_OUT_EVERY)  # views of one memory-mapped file, nothing copied
    train = train[:n_train] if n_train else train
    return TaskData(
        task="text", kind="unlabeled", num_labels=0, train=train, evals={"dev": held_out[:n_eval]},
        pad_token_id=tokenizer.pad_token_id, vocab_size=_vocab_size(tokenizer), primary="relation",
    )


__all__ = ["TaskData", "build_task", "carve_holdout", "holdout_size", "HOLDOUT", "check_task_name", "BUILT_IN_TASKS", "score_predictions", "predictions_of", "synthetic_unlabeled", "KINDS", "IGNORE_INDEX"]
