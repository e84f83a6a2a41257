"""Gap curves and the optimal-teacher-size fit.

Everything here starts from the seed-aggregated student scores (:func:`student_scores`). Teachers are
ordered by size (``teacher_params``). Whether a bigger teacher made a worse student, which teachers can be
best, the curse onset and a method's lift are decided in one place, :mod:`gapkit.analysis.verdicts`, by
declared tests; this module only describes:

- **gap curves**: a student's score against a size axis (:data:`AXES`);
- **teacher-scale fit** (MiniMA, arXiv 2311.07052): the size of each student's top teacher (highest mean
  score) against the student's size, least squares. A top teacher at the smallest or largest measured
  size is only a bound on the optimum (it may lie outside the range), so such points are left out of the
  fit and counted (``n_at_edge``).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .scores import STUDENT_KEYS, STUDENT_SIZES, aggregate, require_columns, student_rows
from .scores import known as _known
from .verdicts import top_teacher

__all__ = ["AXES", "gap_curve", "gap_curves", "teacher_scale_fit", "NOT_ESTIMABLE"]

NOT_ESTIMABLE = "not estimable"

# axis name -> (the table column on x, the columns one curve holds fixed)
AXES = {
    "teacher_params": ("teacher_params", ("student", "experts", "method")),
    "teacher_gflops": ("teacher_gflops", ("student", "experts", "method")),
    "student_params": ("params_total", ("teacher", "experts", "method")),
    "student_params_active": ("params_active", ("teacher", "experts", "method")),
    "student_gflops": ("gflops", ("teacher", "experts", "method")),
    "ratio_params": ("ratio_params", ("student", "experts", "method")),
    "ratio_gflops": ("ratio_gflops", ("student", "experts", "method")),
}
_AXIS_NEEDS = {"ratio_params": ["teacher_params", "params_total"], "ratio_gflops": ["teacher_gflops", "gflops"]}


# ----------------------------------------------------------------------------------------------------
# Gap curves
# ----------------------------------------------------------------------------------------------------
def _series_label(row, fixed) -> str:
    experts = row["experts"] if _known(row["experts"]) and row["experts"] != "dense" else None
    if fixed[0] == "student":
        shape = str(row["student"]) if _known(row["student"]) else "?"
        return f"{shape}{'-' + experts if experts else ''} {row['method']}"
    return f"{row['teacher']}: {row['method']}{' ' + experts if experts else ''}"


def gap_curve(table, x: str = "teacher_params", metric: str | None = None, split: str | None = None,
              level: float = 0.95):
    """One gap curve per series, as a tidy frame: student score against one size axis.

    Args:
        table: a results table.
        x: the axis, one of :data:`AXES`: ``teacher_params``/``teacher_gflops`` (one curve per student:
            shape, experts, method), ``student_params`` (total), ``student_params_active``,
            ``student_gflops`` (one curve per teacher and method), ``ratio_params`` (teacher_params /
            params_total) or ``ratio_gflops`` (teacher_gflops / gflops), one curve per student.
        metric, split, level: as in :func:`student_scores`.
    Returns:
        The rows of :func:`student_scores` with x known, plus ``axis``, ``series`` (the curve's label)
        and ``x``, sorted by task, series and x.
    """
    import pandas as pd

    from .scores import student_scores

    if x not in AXES:
        raise DataError(f"Unknown gap-curve axis {x!r}; the axes are {', '.join(AXES)}.")
    column, fixed = AXES[x]
    require_columns(table, _AXIS_NEEDS.get(x, [column]), f"the {x} gap curve")
    scores = student_scores(table, metric, split, level)
    scores = scores[scores[column].notna()]
    if scores.empty:
        return pd.DataFrame(columns=["axis", "series", "x", *scores.columns])
    curve = scores.assign(axis=x, series=[_series_label(r, fixed) for _, r in scores.iterrows()],
                          x=scores[column].astype("float64"))
    curve = curve[["axis", "series", "x", *scores.columns]]
    return curve.sort_values(["task", "series", "x"], kind="stable").reset_index(drop=True)


def gap_curves(table, metric: str | None = None, split: str | None = None, level: float = 0.95):
    """Every axis of :data:`AXES` whose columns the table has, stacked (column ``axis``); see
    :func:`gap_curve`."""
    import pandas as pd

    axes = [a for a, (c, _) in AXES.items() if all(n in table.columns for n in _AXIS_NEEDS.get(a, [c]))]
    frames = [gap_curve(table, a, metric, split, level) for a in axes]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else gap_curve(table, axes[0] if axes else "teacher_params",
                                                                         metric, split, level)


# ----------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------
def _student_cells(table, family: str | None, metric, split, level):
    """Seed-aggregated student cells, restricted to one teacher family."""
    require_columns(table, STUDENT_KEYS + ["teacher_params", "params_total"], "the teacher-scale fit")
    rows = student_rows(table, family, metric, split)
    return aggregate(rows, STUDENT_KEYS, STUDENT_SIZES, level)


def _ordered(block):
    """The block's teachers from small to large; DataError without a size."""
    if block.teacher_params.isna().any():
        missing = ", ".join(map(str, block.teacher[block.teacher_params.isna()]))
        raise DataError(f"Teacher(s) {missing} have no teacher_params in the results table, so they cannot be "
                        f"ordered by size.")
    return block.sort_values(["teacher_params", "teacher"], kind="stable").reset_index(drop=True)


def _size_problem(block) -> str | None:
    """Why a block cannot be ordered into smaller and bigger teachers, or None."""
    if len(block) < 2:
        return f"{NOT_ESTIMABLE}: {len(block)} teacher (needs 2 or more of different sizes)"
    if block.teacher_params.astype("int64").duplicated().any():
        return f"{NOT_ESTIMABLE}: teachers of the same size"
    return None


# ----------------------------------------------------------------------------------------------------
# Optimal teacher size against student size (MiniMA, arXiv 2311.07052)
# ----------------------------------------------------------------------------------------------------
FIT_COLUMNS = ["task", "family", "experts", "method", "size", "space", "n_points", "students", "slope", "intercept",
               "r2", "slope_stderr", "n_at_edge", "note"]
_FIT_SIZES = {"params": ("params_total", "teacher_params"), "gflops": ("gflops", "teacher_gflops")}


def teacher_scale_fit(table, family: str | None = None, metric: str | None = None, split: str | None = None,
                      size: str = "params"):
    """Least-squares fit of the top teacher's size against the student's size.

    MiniMA (arXiv 2311.07052) finds the optimal teacher scale grows almost linearly with the student
    scale. For each (task, experts, method), each student shape with 3 or more teachers of distinct sizes
    whose top teacher (:func:`gapkit.analysis.verdicts.top_teacher`) lies strictly inside the measured range
    gives one point (student size, top teacher size). A top teacher at the smallest or largest size only
    bounds the optimum, so those students are left out (``n_at_edge`` counts them). Two ordinary
    least-squares lines are fitted: ``space="linear"`` (y = slope * x + intercept) and ``space="log-log"``
    (log10 y = slope * log10 x + intercept, slope = the exponent of a power law). The fit describes; it is
    not a test (the top teacher is a highest mean, see :func:`gapkit.analysis.curse_test` for which
    teachers can be best).

    Args:
        table: a results table.
        family, metric, split: as in :func:`gapkit.analysis.curse_test`.
        size: ``params`` (student params_total, teacher_params) or ``gflops`` (student gflops,
            teacher_gflops).
    Returns:
        Two rows per series: the columns of :data:`FIT_COLUMNS`. Fewer than 3 interior points (or all of one
        size) is not estimable; R^2 is not estimable when every student has the same top teacher.
    """
    import pandas as pd
    from scipy import stats

    if size not in _FIT_SIZES:
        raise DataError(f"size must be 'params' or 'gflops', got {size!r}.")
    x_col, y_col = _FIT_SIZES[size]
    require_columns(table, [x_col, y_col], f"teacher_scale_fit(size={size!r})")
    cells = _student_cells(table, family, metric, split, 0.95)
    rows = []
    for (task, experts, method), series in cells.groupby(["task", "experts", "method"], sort=True, dropna=False):
        points = []
        for student, block in series.groupby("student", sort=True, dropna=False):
            block = _ordered(block)
            if _size_problem(block):
                continue
            best = top_teacher(block["mean"], block.metric.iloc[0])
            points.append((student, block[x_col][best], block[y_col][best], best in (0, len(block) - 1)))
        points = [p for p in points if _known(p[1]) and _known(p[2])]
        at_edge = sum(p[3] for p in points)
        points = [p for p in points if not p[3]]  # a top teacher at the edge is a bound, not a point
        x = np.array([p[1] for p in points], dtype=float)
        y = np.array([p[2] for p in points], dtype=float)
        base = dict(task=task, family=family or "all", experts=experts, method=method, size=size,
                    n_points=len(points), students=" ".join(str(p[0]) for p in points),
                    n_at_edge=at_edge)
        for space in ("linear", "log-log"):
            row = dict(base, space=space)
            if len(points) < 3:
                rows.append(dict(row, note=f"{NOT_ESTIMABLE}: {len(points)} student(s) whose top teacher is inside "
                                           f"the measured sizes (needs 3; {at_edge} at the edge, where the top "
                                           f"teacher only bounds the optimum)"))
                continue
            if len(set(x)) < 2:
                rows.append(dict(row, note=f"{NOT_ESTIMABLE}: every student has the same size"))
                continue
            xs, ys = (np.log10(x), np.log10(y)) if space == "log-log" else (x, y)
            fit = stats.linregress(xs, ys)
            notes = []
            if len(set(y)) < 2:
                r2 = np.nan
                notes.append(f"R^2 {NOT_ESTIMABLE}: every student has the same best teacher")
            else:
                r2 = float(fit.rvalue ** 2)
            if base["n_at_edge"]:
                notes.append(f"{base['n_at_edge']} student(s) left out: top teacher at the edge of the measured range")
            rows.append(dict(row, slope=float(fit.slope), intercept=float(fit.intercept), r2=r2,
                             slope_stderr=float(fit.stderr), note="; ".join(notes)))
    frame = pd.DataFrame(rows, columns=FIT_COLUMNS)
    for c in ("n_points", "n_at_edge"):
        frame[c] = frame[c].astype("Int64")
    return frame
