"""Gap curves, the curse of capacity gap quantified, and the optimal-teacher-size fit.

Everything here starts from the seed-aggregated student scores (:func:`student_scores`). Teachers are
ordered by size (``teacher_params``); a *block* is one student (task, shape, experts, method) distilled
from several teachers. Definitions (also in docs/analysis.md):

- **best teacher**: the teacher whose students score best on average over seeds (for the ``relation``
  loss: lowest); among tied means, the smaller teacher.
- **curse**: some teacher strictly bigger than the best teacher gives a strictly worse student.
- **curse onset**: the teacher/student size ratio of the best teacher when the curse is present. Beyond
  that ratio no measured teacher helps: a bigger one scores the same or worse. Reported as
  ``teacher_params / params_total`` (capacity; a MiniMoE student counts all its experts) and
  ``teacher_gflops / gflops`` (compute; one active expert). Without a curse (the best teacher is the
  largest, or bigger teachers only tie) the onset is not estimable: it lies beyond the measured sizes.
- **lost**: score the baseline (dense MiniLM) student loses to the curse, ``s_base(best) - s_base(largest)``
  (>= 0), its best teacher against the largest teacher.
- **recovered**: the fraction of that loss a method wins back with the largest teacher,
  ``(s_method(largest) - s_base(largest)) / lost``. 1: the method with the largest teacher scores what
  the baseline scores with its best teacher; 0: no better than the baseline; below 0: worse; above 1:
  more than the loss. Not estimable when nothing is lost (no curse for the baseline).

Intervals are percentile bootstrap intervals over seeds: each cell's seeds are resampled with
replacement, independently per cell, ``n_resamples`` times; every estimate (best teacher included) is
recomputed on each resample; the bounds are the order statistics at (1 - level) / 2 and
(1 + level) / 2, rounded outward (numpy's ``lower``/``higher`` quantiles) so that they are values a
resample produced. The generator of each block is seeded by ``seed`` and the block's labels, so
filtering a table never changes another block's numbers.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import DataError
from .scores import STUDENT_KEYS, STUDENT_SIZES, aggregate, higher_is_better, require_columns, score_rows
from .scores import known as _known

__all__ = ["AXES", "gap_curve", "gap_curves", "curse_onset", "recovered_gap", "teacher_scale_fit",
           "NOT_ESTIMABLE"]

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
BLOCK_KEYS = ["task", "student", "experts", "method"]


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
# Blocks and the bootstrap
# ----------------------------------------------------------------------------------------------------
def _student_cells(table, family: str | None, metric, split, level):
    """Seed-aggregated student cells (with their values), restricted to one teacher family."""
    require_columns(table, STUDENT_KEYS + ["teacher_params", "params_total"], "the curse analysis")
    rows = score_rows(table, metric, split)
    rows = rows[rows.role == "student"]
    if family is not None:
        require_columns(table, ["teacher_family"], "a family filter")
        families = sorted(set(table.teacher_family.dropna().astype(str)))
        if family not in families:
            raise DataError(f"No teacher of family {family!r} in the results table (its families: "
                            f"{', '.join(families) or 'none'}).")
        rows = rows[rows.teacher_family.astype(str) == family]
    cells = aggregate(rows, STUDENT_KEYS, STUDENT_SIZES, level, with_values=True)
    cells["ratio_params"] = cells.teacher_params.astype("float64") / cells.params_total.astype("float64")
    cells["ratio_gflops"] = cells.teacher_gflops.astype("float64") / cells.gflops.astype("float64")
    return cells


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
    sizes = block.teacher_params.astype("int64")
    dup = sizes.duplicated(keep=False)
    if dup.any():
        names = " and ".join(map(str, block.teacher[dup]))
        return f"{NOT_ESTIMABLE}: teachers {names} have the same size ({int(sizes[dup].iloc[0])} parameters)"
    return None


def _rng(seed: int, key) -> np.random.Generator:
    """The block's generator: from the user's seed and the block's labels (stable under filtering)."""
    label = "|".join(str(k) if _known(k) else "" for k in key)
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def _resampled_means(values, n_resamples: int, rng) -> np.ndarray:
    """(n_resamples,) means of ``values`` resampled with replacement."""
    values = np.asarray(values, dtype=float)
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))  # (B, n)
    return values[idx].mean(axis=1)


def _interval(samples, level: float) -> tuple[float, float]:
    """Percentile bounds at (1 -+ level) / 2, rounded outward to resample values."""
    alpha = (1 - level) / 2
    return (float(np.quantile(samples, alpha, method="lower")),
            float(np.quantile(samples, 1 - alpha, method="higher")))


def _check_bootstrap(n_resamples: int, seed: int, level: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise DataError(f"n_resamples must be a non-negative integer, got {n_resamples!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"The bootstrap seed must be a non-negative integer, got {seed!r}.")
    if not 0 < level < 1:
        raise DataError(f"The confidence level must be between 0 and 1, got {level}.")


def _one_seed(block) -> str | None:
    """Why a block has no bootstrap (a cell of one seed), or None."""
    thin = block[block.n_seeds < 2]
    if len(thin):
        return f"intervals {NOT_ESTIMABLE}: 1 seed for teacher {thin.teacher.iloc[0]}"
    return None


# ----------------------------------------------------------------------------------------------------
# Best teacher and curse onset
# ----------------------------------------------------------------------------------------------------
ONSET_COLUMNS = ["task", "family", "student", "experts", "method", "params_total", "gflops", "metric", "split",
                 "n_teachers", "n_seeds", "best_teacher", "best_teacher_params", "best_score", "best_share",
                 "best_params_low", "best_params_high", "largest_teacher", "largest_score", "curse", "curse_share",
                 "curse_drop", "curse_drop_low", "curse_drop_high", "onset_teacher", "onset_ratio_params",
                 "onset_ratio_params_low", "onset_ratio_params_high", "onset_ratio_gflops", "onset_ratio_gflops_low",
                 "onset_ratio_gflops_high", "n_resamples", "bootstrap_seed", "ci_level", "note"]


def curse_onset(table, family: str | None = None, metric: str | None = None, split: str | None = None,
                n_resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """Best teacher and curse onset of each student (task, shape, experts, method).

    Definitions (module docstring): the best teacher maximises the seed-mean score (smaller teacher on a
    tie); the curse is present when a strictly bigger teacher gives a strictly worse student; the onset
    is then the best teacher's teacher/student ratio, in parameters and in GFLOPs.

    Args:
        table: a results table.
        family: a ``teacher_family`` label to restrict the teachers to; None: all teachers of the task
            (column ``family`` reads ``all``).
        metric, split: as in :func:`student_scores`.
        n_resamples: bootstrap resamples (0: no intervals).
        seed: the bootstrap's seed.
        level: the confidence level.
    Returns:
        One row per student: the columns of :data:`ONSET_COLUMNS`. ``best_share`` / ``curse_share``: the
        fraction of resamples whose best teacher is the same / that show the curse; ``curse_drop``: how much
        worse (>= 0, in metric points) the largest teacher's student is than the best teacher's;
        ``best_params_low/high``: interval of the best teacher's parameters. An onset bound of ``inf``
        means resamples without a curse (onset beyond the largest teacher) lie in the interval.
        Estimates the data cannot support are empty, with ``note`` saying ``not estimable: <reason>``.
    """
    import pandas as pd

    _check_bootstrap(n_resamples, seed, level)
    cells = _student_cells(table, family, metric, split, level)
    rows = []
    for key, block in cells.groupby(BLOCK_KEYS, sort=True, dropna=False):
        rows.append(_onset_row(key, _ordered(block), family, n_resamples, seed, level))
    frame = pd.DataFrame(rows, columns=ONSET_COLUMNS)
    for c in ("params_total", "best_teacher_params", "n_teachers", "n_seeds", "n_resamples", "bootstrap_seed"):
        frame[c] = frame[c].astype("Int64")
    return frame


def _onset_row(key, block, family, n_resamples, seed, level) -> dict:
    first = block.iloc[0]
    row = dict(zip(BLOCK_KEYS, key), family=family or "all", params_total=first.params_total, gflops=first.gflops,
               metric=first.metric, split=first.split, n_teachers=len(block), n_seeds=int(block.n_seeds.min()),
               n_resamples=n_resamples, bootstrap_seed=seed, ci_level=level)
    problem = _size_problem(block)
    if problem:
        return dict(row, note=problem)
    sign = 1.0 if higher_is_better(first.metric) else -1.0
    means = sign * block["mean"].to_numpy(dtype=float)  # oriented: larger is better
    last = len(block) - 1
    best = int(np.argmax(means))  # the first maximum: the smaller teacher on a tie
    curse = bool(best < last and means[best + 1:].min() < means[best])
    notes = []
    row.update(best_teacher=block.teacher[best], best_teacher_params=block.teacher_params[best],
               best_score=block["mean"][best], largest_teacher=block.teacher[last], largest_score=block["mean"][last],
               curse="yes" if curse else "no", curse_drop=float(means[best] - means[last]))
    if curse:
        row.update(onset_teacher=block.teacher[best], onset_ratio_params=block.ratio_params[best],
                   onset_ratio_gflops=block.ratio_gflops[best])
    elif best == last:
        notes.append(f"onset {NOT_ESTIMABLE}: no curse, the largest teacher ({block.teacher[last]}) gives the best "
                     f"student")
    else:
        notes.append(f"onset {NOT_ESTIMABLE}: no curse, the teachers bigger than {block.teacher[best]} tie with it")
    thin = _one_seed(block)
    if thin or n_resamples == 0:
        notes.append(thin or f"intervals {NOT_ESTIMABLE}: n_resamples=0")
        return dict(row, note="; ".join(notes))
    rng = _rng(seed, (*key, family))
    resampled = np.stack([_resampled_means(v, n_resamples, rng) for v in block["values"]], axis=1)  # (B, T)
    resampled *= sign
    best_b = resampled.argmax(axis=1)  # (B,)
    top = resampled.max(axis=1)
    bigger = np.arange(len(block))[None, :] > best_b[:, None]  # (B, T): teachers bigger than the best
    curse_b = ((resampled < top[:, None]) & bigger).any(axis=1)
    params = block.teacher_params.to_numpy(dtype=float)
    row.update(best_share=float((best_b == best).mean()), curse_share=float(curse_b.mean()))
    row["best_params_low"], row["best_params_high"] = (int(v) for v in _interval(params[best_b], level))
    row["curse_drop_low"], row["curse_drop_high"] = _interval(top - resampled[:, last], level)
    if curse:
        for axis in ("params", "gflops"):
            ratios = block[f"ratio_{axis}"].to_numpy(dtype=float)
            onset_b = np.where(curse_b, ratios[best_b], np.inf)  # no curse: the onset lies beyond the largest
            if not np.isnan(onset_b).any():
                row[f"onset_ratio_{axis}_low"], row[f"onset_ratio_{axis}_high"] = _interval(onset_b, level)
        if not curse_b.all():
            notes.append(f"no curse in {int((~curse_b).sum())} of {n_resamples} resamples (onset bound inf)")
    return dict(row, note="; ".join(notes))


# ----------------------------------------------------------------------------------------------------
# The part of the curse a method recovers
# ----------------------------------------------------------------------------------------------------
RECOVERED_COLUMNS = ["task", "family", "student", "method", "experts", "baseline", "metric", "split",
                     "baseline_best_teacher", "largest_teacher", "baseline_best", "baseline_largest",
                     "method_largest", "lost", "lost_low", "lost_high", "gain", "gain_low", "gain_high", "recovered",
                     "recovered_low", "recovered_high", "n_seeds", "n_resamples", "bootstrap_seed", "ci_level", "note"]


def recovered_gap(table, baseline: str = "minilm", family: str | None = None, metric: str | None = None,
                  split: str | None = None, n_resamples: int = 2000, seed: int = 0, level: float = 0.95):
    """The fraction of the curse each method recovers against a dense baseline, per student shape.

    With the baseline's teachers ordered by size, ``best`` its best teacher and ``largest`` its largest:

        lost      = s_base(best) - s_base(largest)          (>= 0; the score lost to the curse)
        gain      = s_method(largest) - s_base(largest)
        recovered = gain / lost

    (for the ``relation`` loss the differences are taken in the better direction). The bootstrap
    recomputes the baseline's best teacher on each resample; resamples where the baseline shows no curse
    (lost = 0) have no ratio: when they are more than (1 - level) / 2 of all, the curse itself is not
    established at this level and the interval of ``recovered`` is not estimable.

    Args:
        table: a results table.
        baseline: the dense method label whose curse is measured (default ``minilm``, the recipe MiniMoE
            and the TA chain build on).
        family, metric, split, n_resamples, seed, level: as in :func:`curse_onset`.
    Returns:
        One row per (task, student shape, method other than the baseline): the columns of
        :data:`RECOVERED_COLUMNS`; what cannot be estimated is empty, with ``note`` saying why.
    """
    import pandas as pd

    _check_bootstrap(n_resamples, seed, level)
    cells = _student_cells(table, family, metric, split, level)
    rows = []
    for (task, student), block in cells.groupby(["task", "student"], sort=True, dropna=False):
        base = _ordered(block[block.method == baseline])
        for (method, experts), cell in block[block.method != baseline].groupby(["method", "experts"], sort=True,
                                                                               dropna=False):
            rows.append(_recovered_row((task, student, method, experts), base, cell, baseline, family, n_resamples,
                                       seed, level))
    frame = pd.DataFrame(rows, columns=RECOVERED_COLUMNS)
    for c in ("n_seeds", "n_resamples", "bootstrap_seed"):
        frame[c] = frame[c].astype("Int64")
    return frame


def _recovered_row(key, base, cell, baseline, family, n_resamples, seed, level) -> dict:
    task, student, method, experts = key
    first = cell.iloc[0]
    row = dict(task=task, family=family or "all", student=student, method=method, experts=experts, baseline=baseline,
               metric=first.metric, split=first.split, n_resamples=n_resamples, bootstrap_seed=seed, ci_level=level)
    if base.empty:
        return dict(row, note=f"{NOT_ESTIMABLE}: no {baseline} (baseline) runs for this student")
    problem = _size_problem(base)
    if problem:
        return dict(row, note=problem.replace(NOT_ESTIMABLE, f"{NOT_ESTIMABLE} ({baseline})", 1))
    last = len(base) - 1
    largest = base.teacher[last]
    at_largest = cell[cell.teacher == largest]
    if at_largest.empty:
        return dict(row, largest_teacher=largest,
                    note=f"{NOT_ESTIMABLE}: {method} has no run with the largest teacher ({largest})")
    at_largest = at_largest.iloc[0]
    sign = 1.0 if higher_is_better(first.metric) else -1.0
    means = sign * base["mean"].to_numpy(dtype=float)
    best = int(np.argmax(means))
    lost = float(means[best] - means[last])
    gain = float(sign * at_largest["mean"] - means[last])
    row.update(baseline_best_teacher=base.teacher[best], largest_teacher=largest, baseline_best=base["mean"][best],
               baseline_largest=base["mean"][last], method_largest=at_largest["mean"], lost=lost, gain=gain,
               n_seeds=int(min(base.n_seeds.min(), at_largest.n_seeds)))
    notes = []
    if lost > 0:
        row["recovered"] = gain / lost
    else:
        notes.append(f"recovered {NOT_ESTIMABLE}: no curse for {baseline}, its best teacher is "
                     f"{'the largest' if best == last else 'tied with the largest'} ({largest}), nothing to recover")
    thin = _one_seed(base) or (_one_seed(cell[cell.teacher == largest]))
    if thin or n_resamples == 0:
        notes.append(thin or f"intervals {NOT_ESTIMABLE}: n_resamples=0")
        return dict(row, note="; ".join(notes))
    rng = _rng(seed, (*key, baseline, family))
    resampled = sign * np.stack([_resampled_means(v, n_resamples, rng) for v in base["values"]], axis=1)  # (B, T)
    method_b = sign * _resampled_means(at_largest["values"], n_resamples, rng)  # (B,)
    lost_b = resampled.max(axis=1) - resampled[:, last]
    gain_b = method_b - resampled[:, last]
    row["lost_low"], row["lost_high"] = _interval(lost_b, level)
    row["gain_low"], row["gain_high"] = _interval(gain_b, level)
    defined = lost_b > 0
    undefined = int((~defined).sum())
    if lost > 0:
        if undefined > (1 - level) / 2 * n_resamples:
            notes.append(f"recovered interval {NOT_ESTIMABLE}: {baseline} shows no curse in {undefined} of "
                         f"{n_resamples} resamples (more than {(1 - level) / 2:.1%}), the curse is not established")
        else:
            row["recovered_low"], row["recovered_high"] = _interval(gain_b[defined] / lost_b[defined], level)
            if undefined:
                notes.append(f"recovered interval over the {n_resamples - undefined} resamples with a curse")
    return dict(row, note="; ".join(notes))


# ----------------------------------------------------------------------------------------------------
# Optimal teacher size against student size (MiniMA, arXiv 2311.07052)
# ----------------------------------------------------------------------------------------------------
FIT_COLUMNS = ["task", "family", "experts", "method", "size", "space", "n_points", "students", "slope", "intercept",
               "r2", "slope_stderr", "n_at_edge", "note"]
_FIT_SIZES = {"params": ("params_total", "teacher_params"), "gflops": ("gflops", "teacher_gflops")}


def teacher_scale_fit(table, family: str | None = None, metric: str | None = None, split: str | None = None,
                      size: str = "params"):
    """Least-squares fit of the best teacher's size against the student's size.

    MiniMA (arXiv 2311.07052) finds the optimal teacher scale grows almost linearly with the student
    scale. For each (task, experts, method), each student shape with 2 or more teachers of distinct sizes
    gives one point (student size, its best teacher's size; best teacher as in :func:`curse_onset`), and
    two ordinary least-squares lines are fitted: ``space="linear"`` (y = slope * x + intercept) and
    ``space="log-log"`` (log10 y = slope * log10 x + intercept, slope = the exponent of a power law).

    Args:
        table: a results table.
        family, metric, split: as in :func:`curse_onset`.
        size: ``params`` (student params_total, teacher_params) or ``gflops`` (student gflops,
            teacher_gflops).
    Returns:
        Two rows per series: the columns of :data:`FIT_COLUMNS`. ``n_at_edge``: points whose best teacher
        is the smallest or the largest measured (the optimum may lie outside the range: the fit is then
        a bound more than an estimate). Fewer than 3 students (or all of one size) is not estimable;
        R^2 is not estimable when every student has the same best teacher.
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
            sign = 1.0 if higher_is_better(block.metric.iloc[0]) else -1.0
            best = int(np.argmax(sign * block["mean"].to_numpy(dtype=float)))
            points.append((student, block[x_col][best], block[y_col][best], best in (0, len(block) - 1)))
        points = [p for p in points if _known(p[1]) and _known(p[2])]
        x = np.array([p[1] for p in points], dtype=float)
        y = np.array([p[2] for p in points], dtype=float)
        base = dict(task=task, family=family or "all", experts=experts, method=method, size=size,
                    n_points=len(points), students=" ".join(str(p[0]) for p in points),
                    n_at_edge=sum(p[3] for p in points))
        for space in ("linear", "log-log"):
            row = dict(base, space=space)
            if len(points) < 3:
                rows.append(dict(row, note=f"{NOT_ESTIMABLE}: {len(points)} student(s) with 2 or more teachers "
                                           f"(needs 3)"))
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
                notes.append(f"{base['n_at_edge']} of {len(points)} best teachers at the edge of the measured range")
            rows.append(dict(row, slope=float(fit.slope), intercept=float(fit.intercept), r2=r2,
                             slope_stderr=float(fit.stderr), note="; ".join(notes)))
    frame = pd.DataFrame(rows, columns=FIT_COLUMNS)
    for c in ("n_points", "n_at_edge"):
        frame[c] = frame[c].astype("Int64")
    return frame
