"""Is a teacher better than chance? The declared test every fine-tuned model gets before students learn
from it, and the warning when a student beats its own teacher by more than noise.

Definitions, fixed before any data is seen (docs/analysis.md says the same):

- The check reads what the model's **best weights** predicted on its **report split** (``dev``; MNLI
  ``dev_matched``), as stored in ``best/predictions.safetensors``. The task kind comes from the tensors
  (:func:`gapkit.data.tasks.predictions_of`): float scores are a regression, ``(N, T)`` class ids a token
  task, ``(N,)`` class ids a classification.
- **Classification.** ``k`` of the ``n`` dev examples right. Two baselines: **chance**, ``1 / K`` (``K``
  classes), and the **majority** rate, the share of the most frequent class among the dev labels (what
  always predicting that class scores; never below chance). Each is a one-sided exact binomial test
  (``scipy.stats.binomtest(k, n, rate, alternative="greater")``): H0 "accuracy <= rate".
- **Regression.** Pearson's correlation of the predictions with the labels, one-sided test of ``r > 0``
  (``scipy.stats.pearsonr(..., alternative="greater")``). Both baselines are a correlation of 0 (a
  constant prediction has none), so one test serves both; constant predictions are not above chance
  (``p = 1``).
- **Token tasks** (CoNLL-2003). Entity F1 of the all-O tagger is 0 and any correct entity lifts it, so F1
  is not what is tested: per sentence (the independent unit), ``d = correct tags - correct tags of the
  baseline`` over the labeled tokens, the baseline being the all-O tagger (the majority tag of the dev
  labels: **majority**) or ``1 / K`` of the tokens (**chance**); one-sided one-sample t-test of
  ``mean(d) > 0`` over the sentences (``scipy.stats.ttest_1samp``). ``d`` identically 0 (a model that
  tags everything O) is not above (``p = 1``).
- **Verdict** at ``alpha`` (0.05 when a run ends; the report's ``1 - level`` in a report), per model, not
  corrected across teachers (a correction would only flag more good teachers; the error that matters,
  calling a chance-level teacher "above", has probability at most ``alpha`` for each): ``above majority``
  (rejects against the majority baseline, hence also against chance), ``above chance, not majority``,
  ``above chance`` (a regression: one test for both), ``not above chance``, or ``not tested (why)``. "Not
  above" means the data do not show it above, not that it is shown at chance: a small dev set can leave a
  real teacher unshown (the check's ``n`` says how small).
- A pre-trained teacher used as it is (the task-agnostic stage) has no labels to be checked on: ``not
  tested``, and that is said wherever its students appear.
- **Student above its teacher** (:func:`gapkit.analysis.above_teacher.student_above_teacher`): per student cell, ``student - teacher``
  on the same dev examples, each student replicate against the teacher fine-tune it learned from (its
  ``teacher_seed``), with the dev examples as a second, crossed source of variance where predictions are
  stored (:func:`gapkit.analysis.inference.contrast_stats`); one-sided t-test of ``> 0``, Holm-corrected
  across the cells at ``1 - level``. Established: the student beats the model it was told to imitate by
  more than noise, so the labels (or the student's own training), not the teacher, made that score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["ALPHA", "check_predictions", "check_run", "at_level", "flagged", "stops", "describe", "teacher_checks",
           "flagged_teachers", "VERDICTS", "NOT_TESTED", "TEACHER_CHECK_COLUMNS"]

ALPHA = 0.05  # the level a run's own check (result.json) and a sweep's teachers_must_beat use
ABOVE_MAJORITY = "above majority"
ABOVE_CHANCE_ONLY = "above chance, not majority"
ABOVE_CHANCE = "above chance"  # regression: one test for both baselines
NOT_ABOVE = "not above chance"
NOT_TESTED = "not tested"
VERDICTS = (ABOVE_MAJORITY, ABOVE_CHANCE_ONLY, ABOVE_CHANCE, NOT_ABOVE, NOT_TESTED)
IGNORE = -100  # gapkit.data.features.IGNORE_INDEX: a position without a label


# ----------------------------------------------------------------------------------------------------
# The test of one model's predictions
# ----------------------------------------------------------------------------------------------------
def not_tested(why: str, split: str | None = None) -> dict:
    """The check of a model that cannot be tested, with the reason."""
    return dict(verdict=f"{NOT_TESTED} ({why})", kind=None, split=split, reason=why)


def check_predictions(predictions, labels, num_labels: int | None = None, alpha: float = ALPHA,
                      split: str | None = None) -> dict:
    """The chance check of one model's stored predictions (module docstring).

    Args:
        predictions, labels: as a run stores them (tensors or arrays): ``(N,)`` class ids or float scores,
            or ``(N, T)`` class ids with -100 where a position has no label.
        num_labels: classes (K) of the task; None: the largest id seen + 1 (K can only be larger, so chance
            is at most this bound's and "above chance" is no easier to reach).
        alpha: the level of the verdict.
        split: the split's name, recorded.
    Returns:
        ``{verdict, kind, split, metric, score, chance, majority, n, p_chance, p_majority, alpha,
        above_chance, above_majority}`` (scores and rates in percent; ``n``: examples, or sentences of a
        token task), or a ``not tested`` verdict with ``reason``.
    """
    preds, gold = _numpy(predictions), _numpy(labels)
    if preds.shape != gold.shape:
        return not_tested(f"{preds.shape} predictions for {gold.shape} labels", split)
    if np.issubdtype(gold.dtype, np.floating) and np.issubdtype(preds.dtype, np.floating):
        out = _regression(preds.astype(float), gold.astype(float))
    elif preds.ndim == 2:
        out = _token(preds.astype(np.int64), gold.astype(np.int64), num_labels)
    elif preds.ndim == 1:
        out = _classification(preds.astype(np.int64), gold.astype(np.int64), num_labels)
    else:
        return not_tested(f"predictions of shape {preds.shape} are neither classes nor scores", split)
    if isinstance(out, str):
        return not_tested(out, split)
    return at_level(dict(out, split=split), alpha)


def _numpy(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _classification(preds: np.ndarray, gold: np.ndarray, num_labels: int | None):
    from scipy.stats import binomtest

    n = len(gold)
    if n == 0:
        return "no labeled examples"
    k_classes = num_labels or int(max(preds.max(), gold.max())) + 1
    k = int((preds == gold).sum())
    chance = 1.0 / max(k_classes, 1)
    majority = float(np.bincount(gold).max()) / n
    p_chance = float(binomtest(k, n, chance, alternative="greater").pvalue)
    p_majority = float(binomtest(k, n, majority, alternative="greater").pvalue) if majority < 1 else 1.0
    return dict(kind="classification", metric="accuracy", score=100.0 * k / n, chance=100.0 * chance,
                majority=100.0 * majority, n=n, p_chance=p_chance, p_majority=p_majority)


def _regression(preds: np.ndarray, gold: np.ndarray):
    from scipy.stats import pearsonr

    n = len(gold)
    if n < 3:
        return f"{n} labeled example(s): a correlation needs 3 or more"
    if np.ptp(gold) == 0:
        return "the labels are all equal: no correlation to test"
    if np.ptp(preds) == 0:  # a constant prediction carries no signal
        r, p = 0.0, 1.0
    else:
        r, p = (float(v) for v in pearsonr(preds, gold, alternative="greater"))
    return dict(kind="regression", metric="pearson", score=100.0 * r, chance=0.0, majority=0.0, n=n, p_chance=p,
                p_majority=p)


def _token(preds: np.ndarray, gold: np.ndarray, num_labels: int | None):
    from scipy.stats import ttest_1samp

    labeled = gold != IGNORE
    keep = labeled.any(1)
    preds, gold, labeled = preds[keep], gold[keep], labeled[keep]
    n = len(gold)
    if n < 2:
        return f"{n} labeled sentence(s): the test needs 2 or more"
    k_classes = num_labels or int(max(preds[labeled].max(), gold[labeled].max())) + 1
    tags = gold[labeled]
    top = int(np.bincount(tags).argmax())  # the all-O tagger's tag: the most frequent gold tag
    correct = ((preds == gold) & labeled).sum(1).astype(float)  # (N,)
    tokens = labeled.sum(1).astype(float)
    baseline = ((gold == top) & labeled).sum(1).astype(float)

    def one_sided(d: np.ndarray) -> float:
        if np.ptp(d) == 0:  # no spread: above only if every sentence is (never for a real tagger)
            return 0.0 if d[0] > 0 else 1.0
        return float(ttest_1samp(d, 0.0, alternative="greater").pvalue)

    return dict(kind="token", metric="token accuracy", score=100.0 * float(correct.sum() / tokens.sum()),
                chance=100.0 / max(k_classes, 1), majority=100.0 * float(baseline.sum() / tokens.sum()), n=n,
                p_chance=one_sided(correct - tokens / k_classes), p_majority=one_sided(correct - baseline))


def at_level(check: dict, alpha: float) -> dict:
    """``check`` with its verdict at ``alpha`` (from its p-values; a ``not tested`` check unchanged)."""
    if not check or check.get("p_chance") is None:
        return dict(check or not_tested("no check recorded"))
    above_chance = check["p_chance"] <= alpha
    above_majority = check["p_majority"] <= alpha
    if check.get("kind") == "regression":
        verdict = ABOVE_CHANCE if above_chance else NOT_ABOVE
    elif above_majority:
        verdict = ABOVE_MAJORITY
    else:
        verdict = ABOVE_CHANCE_ONLY if above_chance else NOT_ABOVE
    return dict(check, alpha=alpha, above_chance=bool(above_chance),
                above_majority=bool(above_majority if check.get("kind") != "regression" else above_chance),
                verdict=verdict)


def flagged(verdict) -> bool:
    """Whether a verdict marks its teacher's students: not shown above the majority baseline (chance-level
    teachers included; a regression: not above chance)."""
    return isinstance(verdict, str) and verdict in (NOT_ABOVE, ABOVE_CHANCE_ONLY)


def stops(check: dict | None, must_beat: str) -> bool:
    """Whether a sweep with ``teachers_must_beat: must_beat`` stops the students of a teacher with ``check``
    (a ``not tested`` teacher never: nothing says it is below the bar)."""
    if must_beat == "none" or not check or check.get("p_chance") is None:
        return False
    return not check["above_majority" if must_beat == "majority" else "above_chance"]


def describe(check: dict) -> str:
    """One phrase: ``accuracy 33.3 on dev (chance 33.3, majority 35.0; n 60; p 0.52 against majority)``."""
    if not check or check.get("p_chance") is None:
        return (check or {}).get("verdict", NOT_TESTED)
    on = f" on {check['split']}" if check.get("split") else ""
    units = "sentences" if check.get("kind") == "token" else "examples"
    if check.get("kind") == "regression":
        return f"pearson {check['score']:.1f}{on} (n {check['n']}; p {_p(check['p_chance'])} against 0)"
    return (f"{check['metric']} {check['score']:.1f}{on} (chance {check['chance']:.1f}, majority "
            f"{check['majority']:.1f}; n {check['n']} {units}; p {_p(check['p_chance'])} against chance, "
            f"{_p(check['p_majority'])} against majority)")


def _p(v: float) -> str:
    return "<0.001" if v < 0.001 else f"{v:.3g}"


# ----------------------------------------------------------------------------------------------------
# A run's check: written when it ends, read (or computed from its predictions) afterwards
# ----------------------------------------------------------------------------------------------------
def check_run(run_dir, split: str | None = None, num_labels: int | None = None, alpha: float = ALPHA,
              result=None) -> dict:
    """The chance check of a run folder's best weights: the one its ``result.json`` recorded (``chance_check``)
    when it is of ``split``, else computed from ``best/predictions.safetensors``.

    Args:
        run_dir: the run folder.
        split: the split to check (default: the result's report split, ``dev``).
        num_labels: classes, when known (a run passes its task's); else from the ids.
        alpha: the verdict's level.
        result: the run's :class:`~gapkit.distill.result.RunResult` when the caller holds it (a run ending):
            its recorded check is then not read back.
    """
    from ..distill.runfiles import RunDir
    from ..errors import ConfigError

    run = RunDir(run_dir)
    if result is None:
        try:
            result = run.result()
        except ConfigError as err:
            return not_tested(str(err), split)
        recorded = getattr(result, "chance_check", None) if result is not None else None
        if recorded and recorded.get("split") == (split or result.report_split):
            return at_level(recorded, alpha)
    split = split or (result.report_split if result is not None else "dev")
    if result is not None and result.stage == "agnostic":
        return not_tested("raw text: a task-agnostic run has no labels", split)
    got = run.predictions(split) if split else None
    if got is None:
        return not_tested(f"no stored {split} predictions in {Path(run_dir).name}/best", split)
    return check_predictions(*got, num_labels=num_labels, alpha=alpha, split=split)


# ----------------------------------------------------------------------------------------------------
# Teachers of a results table
# ----------------------------------------------------------------------------------------------------
TEACHER_CHECK_COLUMNS = ["task", "teacher", "teacher_seed", "verdict", "kind", "metric", "score", "chance",
                         "majority", "n", "p_chance", "p_majority", "alpha", "run_dir"]


def teacher_checks(table, alpha: float = ALPHA):
    """The chance check of every fine-tuned teacher run of a results table, one row per teacher fine-tune.

    Read from each run folder (its ``result.json``'s check, else its stored predictions) where ``run_dir``
    is there; else from the table's ``teacher_check`` column (the verdict at 0.05 only).

    Returns:
        :data:`TEACHER_CHECK_COLUMNS`; empty when the table has no fine-tuned teacher.
    """
    import pandas as pd

    need = {"role", "stage", "task", "teacher"}
    if not need <= set(table.columns):
        return pd.DataFrame(columns=TEACHER_CHECK_COLUMNS)
    rows = table[(table.role == "teacher") & (table.stage == "finetune")]
    if "status" in rows.columns:
        rows = rows[rows.status.fillna("completed") != "failed"]
    keys = ["task", "teacher"] + (["teacher_seed"] if "teacher_seed" in rows.columns else [])
    out = []
    for key, group in rows.groupby(keys, sort=True, dropna=False):
        first = group.iloc[0]
        run_dir = first.get("run_dir") if "run_dir" in group.columns else None
        if isinstance(run_dir, str) and Path(run_dir).is_dir():
            check = check_run(run_dir, alpha=alpha)
        else:
            recorded = first.get("teacher_check") if "teacher_check" in group.columns else None
            check = dict(verdict=recorded if isinstance(recorded, str) else f"{NOT_TESTED} (no run folder)")
        row = dict(zip(keys, key), run_dir=run_dir)
        row.update({c: check.get(c) for c in TEACHER_CHECK_COLUMNS if c in check})
        out.append(row)
    frame = pd.DataFrame(out, columns=TEACHER_CHECK_COLUMNS)
    if "teacher_seed" in frame.columns:
        frame["teacher_seed"] = frame.teacher_seed.astype("Int64")
    return frame


def flagged_teachers(table, alpha: float = ALPHA) -> dict:
    """``{(task, teacher): check}`` of the teachers whose students a table, report or figure marks (any
    fine-tune of it not shown above the majority baseline: :func:`flagged`), the first such check each."""
    checks = teacher_checks(table, alpha)
    out = {}
    for r in checks.itertuples():
        if flagged(r.verdict) and (r.task, r.teacher) not in out:
            out[(r.task, r.teacher)] = {c: getattr(r, c) for c in TEACHER_CHECK_COLUMNS}
    return out
