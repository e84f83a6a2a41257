"""The curse with intervals over dev examples: a paired bootstrap of the predictions each run's best weights
made (``best/predictions.safetensors``, written by every run with a labeled task).

Seeds measure how training varies; a finite dev set adds its own noise, and with one seed it is the only
interval there is. Within one task every run scored the same dev examples, so each resample draws one set of
example indices and rescores every run on it (paired: the teachers' students are compared on the same
examples). Per student (shape, experts, method), with the teachers ordered by size and a score the mean
over seeds of the task's primary metric recomputed from the predictions:

    best teacher   the highest score (of ties, the smaller teacher), as in :func:`curse_onset`
    curse_drop     score(best teacher) - score(largest teacher)   (>= 0)

and on each resample the same; ``best_share`` is the share of resamples with the same best teacher,
``curse_share`` the share with a curse (a best teacher smaller than the largest, strictly better than it).
The interval of ``curse_drop`` is the percentile interval of the resampled drops. Definitions:
docs/analysis.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .gap import NOT_ESTIMABLE, _check_bootstrap, _interval, _rng
from .scores import STUDENT_KEYS, require_columns, score_rows

__all__ = ["example_curse", "run_predictions", "EXAMPLE_COLUMNS"]

EXAMPLE_COLUMNS = ["task", "student", "experts", "method", "metric", "split", "n_teachers", "n_seeds", "n_examples",
                   "best_teacher", "best_score", "best_share", "largest_teacher", "largest_score", "curse",
                   "curse_share", "curse_drop", "curse_drop_low", "curse_drop_high", "n_resamples", "note"]


def run_predictions(run_dir, split: str):
    """(predictions, labels) tensors a run's best weights made on ``split``, or None when the run folder or
    its ``best/predictions.safetensors`` (or that split in it) is not there."""
    from safetensors.torch import load_file

    from ..distill.runfiles import PREDICTIONS

    if run_dir is None or not isinstance(run_dir, str) or not run_dir:
        return None
    path = Path(run_dir) / "best" / PREDICTIONS
    if not path.is_file():
        return None
    tensors = load_file(path)
    if f"{split}.prediction" not in tensors or f"{split}.label" not in tensors:
        return None
    return tensors[f"{split}.prediction"], tensors[f"{split}.label"]


def example_curse(table, metric: str | None = None, split: str | None = None, n_resamples: int = 1000,
                  seed: int = 0, level: float = 0.95, token_tasks: bool = False):
    """The curse per student with intervals over dev examples (module docstring).

    Args:
        table: a results table with ``run_dir`` (a sweep's table: each run's folder).
        metric, split: as in :func:`gapkit.analysis.student_scores` (default: each task's primary metric on
            the split it selects on).
        n_resamples, seed, level: the bootstrap's (its generator is seeded by ``seed`` and the student's labels).
        token_tasks: also resample token tasks (CoNLL-2003: entity F1 is recomputed with seqeval on every
            resample, seconds per hundred resamples); without it their rows say so.
    Returns:
        A DataFrame with :data:`EXAMPLE_COLUMNS`, one row per student with 2 or more teachers; what cannot be
        estimated is empty with the reason in ``note``.
    Raises:
        DataError: a table without the needed columns, or bad bootstrap settings.
    """
    import pandas as pd

    from ..data.tasks import score_predictions

    _check_bootstrap(n_resamples, seed, level)
    require_columns(table, ["run_dir", "teacher_params"], "intervals over dev examples")
    rows = score_rows(table, metric, split)
    rows = rows[rows.role == "student"]
    out = []
    for key, block in rows.groupby([k for k in STUDENT_KEYS if k != "teacher"], dropna=False, sort=True):
        task, student, experts, method = key
        block = block.sort_values(["teacher_params", "teacher"], kind="stable")
        row = dict(task=task, student=student, experts=experts, method=method, metric=block.metric.iloc[0],
                   split=block.split.iloc[0], n_teachers=block.teacher.nunique(), n_seeds=int(block.seed.nunique()),
                   n_resamples=n_resamples)
        note = _problem(block)
        if note is None and str(task).lower().replace("-", "") in ("conll", "conll2003") and not token_tasks:
            note = (f"{NOT_ESTIMABLE} by default for a token task (entity F1 recomputed on every resample is slow): "
                    f"example_curse(..., token_tasks=True)")
        runs = {}
        if note is None:
            runs, note = _load(block, row["split"])
        if note is None:
            out.append(dict(row, **_bootstrap(task, row["split"], row["metric"], block, runs, n_resamples,
                                              _rng(seed, key), level, score_predictions)))
        else:
            out.append(dict(row, note=note))
    frame = pd.DataFrame(out, columns=EXAMPLE_COLUMNS)
    return frame


def _problem(block) -> str | None:
    """Why the teachers of a student cannot be compared, or None."""
    sizes = block.drop_duplicates("teacher")
    if len(sizes) < 2:
        return f"{NOT_ESTIMABLE}: {len(sizes)} teacher (needs 2 or more of different sizes)"
    if sizes.teacher_params.isna().any() or sizes.teacher_params.duplicated().any():
        return f"{NOT_ESTIMABLE}: teachers without a size, or of the same size, cannot be ordered"
    return None


def _load(block, split: str):
    """{(teacher, seed): (predictions, labels)} of the block's runs, or a note naming what is missing."""
    runs, labels = {}, None
    for r in block.itertuples():
        got = run_predictions(r.run_dir, split)
        if got is None:
            return {}, (f"{NOT_ESTIMABLE}: no stored predictions for {r.run} on {split} (best/predictions.safetensors "
                        f"in {r.run_dir}; runs written before gapkit stored predictions have none)")
        if labels is None:
            labels = got[1]
        elif got[1].shape != labels.shape or not bool((got[1] == labels).all()):
            return {}, f"{NOT_ESTIMABLE}: the runs of this student were scored on different {split} examples"
        runs[(r.teacher, r.seed)] = got
    return runs, None


def _bootstrap(task, split, metric, block, runs, n_resamples, rng, level, score) -> dict:
    teachers = list(dict.fromkeys(block.teacher))  # small to large
    seeds = {t: sorted(s for (tt, s) in runs if tt == t) for t in teachers}
    labels = next(iter(runs.values()))[1]
    n = len(labels)

    def scores(idx) -> np.ndarray:  # (teachers,) seed means of the metric on the examples idx
        return np.array([np.mean([score(task, split, runs[(t, s)][0][idx], labels[idx])[metric] for s in seeds[t]])
                         for t in teachers])

    def decide(values: np.ndarray) -> tuple[int, float]:
        best = int(np.flatnonzero(values == values.max())[0])  # of ties, the smaller teacher
        return best, float(values[best] - values[-1])

    point = scores(np.arange(n))
    best, drop = decide(point)
    row = dict(n_examples=n, best_teacher=teachers[best], best_score=float(point[best]), largest_teacher=teachers[-1],
               largest_score=float(point[-1]), curse="yes" if best < len(teachers) - 1 and drop > 0 else "no",
               curse_drop=drop, note="")
    if n_resamples == 0:
        return dict(row, note=f"intervals {NOT_ESTIMABLE}: n_resamples is 0")
    import torch

    draws = [decide(scores(torch.from_numpy(rng.integers(0, n, size=n)))) for _ in range(n_resamples)]
    bests = np.array([b for b, _ in draws])
    drops = np.array([d for _, d in draws])
    low, high = _interval(drops, level)
    return dict(row, best_share=float(np.mean(bests == best)),
                curse_share=float(np.mean((bests < len(teachers) - 1) & (drops > 0))),
                curse_drop_low=low, curse_drop_high=high)
