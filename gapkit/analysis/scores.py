"""Scores of students and teachers from a results table, seeds aggregated.

Works on any table in the schema of :mod:`gapkit.sweep.table` (one row per run x split x metric). A
*score* is the value of the task's primary metric, for the weights selected on the dev split
(``model == "best"``), of a finished run (``status`` not ``failed``):

- a student's score: ``role == "student"`` and ``stage == "task"``;
- a teacher's own score: ``role == "teacher"`` and ``stage == "finetune"``.

Every function that reads a table names the columns it needs and raises one :class:`DataError`
sentence when some are missing.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DataError

__all__ = ["student_scores", "teacher_scores", "score_rows", "choose_metrics", "require_columns", "require_scores",
           "STUDENT_KEYS", "TEACHER_KEYS"]

METRIC_PREFERENCE = ("score", "glue", "f1", "accuracy", "relation")  # when the task's primary metric is not there


def default_metric(task, metrics) -> str | None:
    """The metric that scores ``task`` when none is named (a definition of :mod:`gapkit.analysis.verdicts`,
    which re-exports it): its primary metric (``score``: GLUE and the synthetic task; ``f1``: CoNLL-2003)
    when ``metrics`` has it, else the first of :data:`METRIC_PREFERENCE` there; None when none of them is."""
    from ..data.metrics import primary_metric

    try:
        primary = primary_metric(str(task)) if task is not None else None
    except DataError:  # a task gapkit does not know (the paper's "glue" average, a user's own)
        primary = None
    return next((m for m in ([primary] if primary else []) + list(METRIC_PREFERENCE) if m in set(metrics)), None)


# One student cell: seeds of the same task, teacher, student shape, experts and method.
STUDENT_KEYS = ["task", "teacher", "student", "experts", "method"]
TEACHER_KEYS = ["task", "teacher"]
# Columns that describe a cell (one value per cell; several values mean the table mixes runs).
STUDENT_SIZES = ["teacher_family", "teacher_params", "teacher_gflops", "params_total", "params_active", "gflops",
                 "convention"]
TEACHER_SIZES = ["teacher_family", "teacher_params", "teacher_gflops", "convention"]
SELECT_COLUMNS = ["role", "stage", "task", "split", "metric", "value", "model", "seed"]

SPLIT_PREFERENCE = ("dev", "dev_matched", "validation")  # the split each task selects its best weights on


def known(value) -> bool:
    """Whether a scalar cell holds a value (not None, NaN or pandas' NA)."""
    import pandas as pd

    return value is not None and not pd.isna(value)


def require_columns(table, columns, needed_by: str, error: type[Exception] = DataError) -> None:
    """Raise one sentence naming the columns of ``columns`` that ``table`` lacks (the one check of a table's
    columns: the tables raise :class:`DataError`, the figures pass ``ConfigError``)."""
    missing = [c for c in columns if c not in getattr(table, "columns", ())]
    if missing:
        raise error(
            f"The results table lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}, which "
            f"{needed_by} needs (a gapkit results table, gapkit.sweep.table.COLUMNS, has them all).")


def require_scores(table, where: str = "The results table") -> None:
    """Raise one :class:`DataError` sentence saying why ``table`` holds no score at all (no rows; every run
    failed; no finished task-stage student or fine-tuned teacher yet), naming ``where`` (a sweep folder or
    file); nothing when it holds one."""
    require_columns(table, SELECT_COLUMNS, "scoring runs")
    if table.empty:
        raise DataError(f"{where} holds no results (0 rows): no run of the sweep has finished or failed yet; "
                        f"`gapkit status` says where the sweep stands, `gapkit results` rebuilds the table.")
    if not score_rows(table).empty:
        return
    failed = table[table.status.fillna("") == "failed"] if "status" in table.columns else table.iloc[:0]
    if len(failed) == len(table):
        first = failed.iloc[0]
        raise DataError(f"{where} holds no score: all {failed.run.nunique() if 'run' in failed else len(failed)} "
                        f"run(s) in it failed (first: {first.get('run', '?')}: {first.get('reason', '?')}); fix the "
                        f"cause and rerun the sweep.")
    raise DataError(f"{where} holds {len(table)} row(s) but no score yet: no task-stage student or fine-tuned teacher "
                    f"has finished with best weights (only {', '.join(sorted(set(table.stage.dropna().astype(str))))} "
                    f"stage rows); let the sweep finish, `gapkit status` says where it stands.")


def choose_metrics(rows, metric: str | None = None, split: str | None = None) -> dict[str, tuple[str, str]]:
    """The split and metric scored for each task: ``{task: (split, metric)}``.

    Args:
        rows: candidate score rows (best weights of finished runs).
        metric: the metric for every task; None: each task's primary metric (``score`` for GLUE tasks and
            the synthetic task, ``f1`` for CoNLL-2003), else the first of score, glue, f1, accuracy present.
        split: the split for every task; None: ``dev``, else ``dev_matched`` (MNLI), else ``validation``,
            else the task's only split.
    Raises:
        DataError: the metric or split is not in the table for a task, or cannot be chosen.
    """
    chosen = {}
    for task, rows_of_task in rows.groupby("task", sort=True, dropna=False):
        splits = sorted(set(rows_of_task.split.dropna()))
        if split is not None:
            if split not in splits:
                raise DataError(f"Split {split!r} has no scores for task {task!r} (its splits: {', '.join(splits)}).")
            task_split = split
        else:
            preferred = [s for s in SPLIT_PREFERENCE if s in splits]
            if not preferred and len(splits) != 1:
                raise DataError(f"Cannot choose the split to score task {task!r} on among {', '.join(splits)}: "
                                f"pass split=.")
            task_split = preferred[0] if preferred else splits[0]
        metrics = sorted(set(rows_of_task[rows_of_task.split == task_split].metric.dropna()))
        if metric is not None:
            if metric not in metrics:
                raise DataError(f"Metric {metric!r} has no scores for task {task!r} on split {task_split!r} "
                                f"(its metrics there: {', '.join(metrics)}).")
            task_metric = metric
        else:
            task_metric = default_metric(task, metrics)
            if task_metric is None:
                raise DataError(f"Cannot choose the metric to score task {task!r} by among {', '.join(metrics)}: "
                                f"pass metric=.")
        chosen[task] = (task_split, task_metric)
    return chosen


def score_rows(table, metric: str | None = None, split: str | None = None):
    """The rows that hold scores: best weights of finished student (task stage) and teacher (fine-tuning)
    runs, on each task's chosen split and metric (see :func:`choose_metrics`).

    Returns:
        A copy of those rows of ``table`` (``value`` as float).
    Raises:
        DataError: missing columns, a non-numeric value, a metric or split that is not there.
    """
    import pandas as pd

    require_columns(table, SELECT_COLUMNS, "scoring runs")
    values = pd.to_numeric(table["value"], errors="coerce")
    bad = table["value"].notna() & values.isna()
    if bad.any():
        raise DataError(f"The results table has {int(bad.sum())} non-numeric value(s) in column 'value' (first: "
                        f"{table['value'][bad].iloc[0]!r}).")
    rows = table.assign(value=values)
    keep = (rows.model == "best") & rows.value.notna() & (
        ((rows.role == "student") & (rows.stage == "task")) | ((rows.role == "teacher") & (rows.stage == "finetune")))
    if "status" in rows.columns:
        keep &= rows.status.fillna("completed") != "failed"
    rows = rows[keep]
    if rows.empty:
        return rows.copy()
    # Students decide each task's metric; a task with no finished student yet goes by its teachers.
    chosen = choose_metrics(rows[rows.role == "student"], metric, split)
    chosen.update({t: c for t, c in choose_metrics(rows[rows.role == "teacher"], metric, split).items()
                   if t not in chosen})
    picked = [(rows.task == task) & (rows.split == s) & (rows.metric == m) for task, (s, m) in chosen.items()]
    return rows[np.logical_or.reduce(picked)].copy()


def student_rows(table, family: str | None = None, metric: str | None = None, split: str | None = None):
    """The score rows of students (:func:`score_rows`), restricted to one ``teacher_family`` when given.

    Raises:
        DataError: as :func:`score_rows`, or a family the table does not have (naming the ones it has).
    """
    rows = score_rows(table, metric, split)
    rows = rows[rows.role == "student"]
    if family is not None:
        require_columns(table, ["teacher_family"], "a family filter")
        families = sorted(set(table.teacher_family.dropna().astype(str)))
        if family not in families:
            raise DataError(f"No teacher of family {family!r} in the results table (its families: "
                            f"{', '.join(families) or 'none'}).")
        rows = rows[rows.teacher_family.astype(str) == family]
    return rows


def _one_value(rows, column: str, where: str):
    """The one value of ``column`` in ``rows`` (None when absent or all missing)."""
    if column not in rows.columns:
        return None
    values = rows[column].dropna().unique()
    if len(values) > 1:
        shown = ", ".join(map(str, values[:3]))
        raise DataError(f"{where} has several values of {column} ({shown}): the table mixes different runs under one "
                        f"label; filter it first.")
    return values[0] if len(values) else None


def cell_label(keys: list[str], key: tuple) -> str:
    """``task=sst2, teacher=bert-base, ...`` for messages."""
    return ", ".join(f"{k}={v}" for k, v in zip(keys, key) if known(v))


def _check_seeds(rows, keys: list[str]) -> None:
    """Two rows of one cell with the same seed would count one seed twice (e.g. two sweeps concatenated)."""
    dup = rows.duplicated(keys + ["seed"], keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        where = cell_label(keys, tuple(first[k] for k in keys))
        raise DataError(f"The results table has several runs with seed {first['seed']} for {where}: filter it to one "
                        f"sweep (column 'sweep') first.")


def _check_convention(rows) -> None:
    if "convention" in rows.columns:
        conventions = sorted(set(rows.convention.dropna()))
        if len(conventions) > 1:
            raise DataError(f"The results table mixes FLOP conventions ({', '.join(conventions)}): keep one, e.g. "
                            f"table[table.convention == {conventions[0]!r}].")


def aggregate(rows, keys: list[str], sizes: list[str], level: float = 0.95, with_values: bool = False):
    """Seed statistics of each cell of ``rows`` grouped by ``keys``.

    The interval is Student's t-interval over seeds: mean +- t(1 - (1 - level) / 2, n - 1) * std / sqrt(n),
    std with n - 1 degrees of freedom. A cell of one seed has no std and no interval (empty cells; its
    ``note`` says so).

    Returns:
        One row per cell: ``keys``, ``sizes``, split, metric, n_seeds, seeds, mean, std, ci_low, ci_high,
        ci_level, note; with ``with_values``, also ``values``: the cell's values in seed order (a tuple).
    """
    import pandas as pd
    from scipy import stats

    columns = [*keys, *sizes, "split", "metric", "n_seeds", "seeds", "mean", "std", "ci_low", "ci_high", "ci_level",
               "note"] + (["values"] if with_values else [])
    if not 0 < level < 1:
        raise DataError(f"The confidence level must be between 0 and 1, got {level}.")
    _check_seeds(rows, keys)
    _check_convention(rows)
    out = []
    for key, cell in rows.groupby(keys, sort=True, dropna=False):
        where = cell_label(keys, key)
        cell = cell.sort_values("seed")
        values = cell.value.to_numpy(dtype=float)
        n = len(values)
        row = dict(zip(keys, key))
        row.update({c: _one_value(cell, c, where) for c in sizes})
        seeds = sorted(int(s) for s in cell.seed.dropna())
        row.update(split=_one_value(cell, "split", where), metric=_one_value(cell, "metric", where), n_seeds=n,
                   seeds=",".join(map(str, seeds)), mean=float(values.mean()), ci_level=level, values=tuple(values))
        if n >= 2:
            std = float(values.std(ddof=1))
            half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1)) * std / math.sqrt(n)
            row.update(std=std, ci_low=row["mean"] - half, ci_high=row["mean"] + half, note="")
        else:
            row.update(std=np.nan, ci_low=np.nan, ci_high=np.nan, note="1 seed: no spread or interval")
        out.append(row)
    frame = pd.DataFrame(out, columns=columns)
    for c in ("teacher_params", "params_total", "params_active", "n_seeds"):
        if c in frame.columns:
            frame[c] = frame[c].astype("Int64")
    for c in ("teacher_gflops", "gflops", "mean", "std", "ci_low", "ci_high"):
        if c in frame.columns:
            frame[c] = frame[c].astype("float64")
    return frame


def student_scores(table, metric: str | None = None, split: str | None = None, level: float = 0.95):
    """Each student's score, seeds aggregated: one row per (task, teacher, student, experts, method).

    Args:
        table: a results table (:func:`gapkit.sweep.build_table`, ``results.parquet``/``.csv``).
        metric: the metric (default: each task's primary metric, see :func:`choose_metrics`).
        split: the split (default: ``dev``, ``dev_matched`` for MNLI).
        level: the confidence level of the t-interval over seeds.
    Returns:
        A DataFrame: task, teacher, student, experts, method, teacher_family, teacher_params, teacher_gflops,
        params_total, params_active, gflops, convention, split, metric, n_seeds, seeds, mean, std, ci_low,
        ci_high, ci_level, note, and the teacher/student size ratios ``ratio_params`` (teacher_params /
        params_total: the capacity gap, MiniMoE's extra experts count) and ``ratio_gflops``
        (teacher_gflops / gflops: the compute gap, one active expert). One seed: std and the interval
        are empty and ``note`` says so.
    Raises:
        DataError: missing columns, a cell with a seed twice, FLOP conventions mixed, ...
    """
    require_columns(table, SELECT_COLUMNS + STUDENT_KEYS, "student_scores")
    rows = score_rows(table, metric, split)
    frame = aggregate(rows[rows.role == "student"], STUDENT_KEYS, STUDENT_SIZES, level)
    frame["ratio_params"] = _ratio(frame.teacher_params, frame.params_total)
    frame["ratio_gflops"] = _ratio(frame.teacher_gflops, frame.gflops)
    return frame


def teacher_scores(table, metric: str | None = None, split: str | None = None, level: float = 0.95):
    """Each teacher's own (fine-tuned) score, seeds aggregated: one row per (task, teacher).

    Same arguments and statistics as :func:`student_scores`; columns: task, teacher, teacher_family,
    teacher_params, teacher_gflops, convention, split, metric, n_seeds, seeds, mean, std, ci_low, ci_high,
    ci_level, note.
    """
    require_columns(table, SELECT_COLUMNS + TEACHER_KEYS, "teacher_scores")
    rows = score_rows(table, metric, split)
    return aggregate(rows[rows.role == "teacher"], TEACHER_KEYS, TEACHER_SIZES, level)


def _ratio(numerator, denominator):
    num = numerator.astype("float64")
    den = denominator.astype("float64")
    return (num / den.where(den > 0)).astype("float64")
