"""Figures of a sweep's results table and of a run's routing statistics.

Every ``plot_*`` function reads a results table (the schema of :func:`gapkit.sweep.build_table`, one row
per run x split x metric) or a run's ``routing.parquet``, returns the matplotlib ``Figure``, and raises
:class:`~gapkit.errors.ConfigError` with one sentence when the table cannot support the figure. A
student's score is its task-stage row (``role=student, stage=task``) of the best weights on dev for the
task's primary metric (``score``), averaged over seeds; error bars are 95% Student-t intervals over
seeds (none with one seed). :func:`plot_sweep` writes every figure a sweep's results support.

    plot_curse          score vs student GFLOPs, one line per teacher, without / with assistant
    plot_moe_vs_dense   score vs teacher size per student: dense solid, MiniMoE dashed, the gain shaded
    plot_gap_curve      score vs one size axis (teacher, student or teacher/student ratio), one line per series
    plot_ablations      score and load balance per MiniMoE setting (experts, routing, load balance, noise)
    plot_pareto         score vs GFLOPs of every student, the Pareto front highlighted
    plot_expert_share   layer x expert token shares of one run (a heatmap per block)
    plot_routing_training  load balance and gate entropy over training steps
    plot_top_tokens     the tokens each expert of one layer receives most
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ..distill.runfiles import ROUTING, RunDir
from ..errors import ConfigError
from ..io import atomic_write
from .style import figure_style, method_colours, method_marker, ordered_colours, save_figure

__all__ = ["student_points", "plot_curse", "plot_moe_vs_dense", "plot_gap_curve", "plot_ablations", "plot_pareto", "pareto_table",
           "plot_expert_share", "plot_routing_training", "plot_top_tokens", "read_routing", "run_load_balance",
           "plot_sweep"]

SCORE_COLUMNS = ("role", "stage", "model", "split", "metric", "value", "teacher", "student", "method", "task")
ROUTING_COLUMNS = ("step", "split", "layer", "block", "expert", "token_fraction", "load_balance", "gate_entropy")
# Ablation settings a MiniMoE method label can name (gapkit.sweep's ``minimoe[routing=random]``).
ABLATION_TITLES = {"experts": "experts (attention,FFN)", "routing": "routing", "load_balance": "load-balance weight",
                   "gate_noise": "gate noise"}
ROUTING_ORDER = {"learned": 0, "random": 1, "hash": 2}


# ----------------------------------------------------------------------------------------------------
# The numbers a figure draws
# ----------------------------------------------------------------------------------------------------
def _need_columns(table, columns, figure: str) -> None:
    """The tables' one column check (:func:`~gapkit.analysis.scores.require_columns`), as a figure's ConfigError."""
    from .scores import require_columns

    require_columns(table, list(columns), f"the {figure}", error=ConfigError)


def student_points(table, metric: str | None = None, task: str | None = None, split: str | None = None):
    """Seed-averaged task scores of the students of a results table (:func:`~gapkit.analysis.scores.
    student_scores`: each task's primary metric, best weights on dev, failed runs left out).

    Args:
        table: a results table.
        metric, split: as in ``student_scores`` (default: each task's primary metric, on dev).
        task: the task to draw; None when the table holds one task; ``"mean"`` for the mean over every
            task of the table (per seed, then over seeds, as the paper's GLUE average), which needs each
            student scored on every task.
    Returns:
        One row per (teacher, student, experts, method): ``mean``, ``ci_low``/``ci_high`` (95% t-interval
        over seeds, NaN with one seed), ``n_seeds``, sizes (``teacher_params``, ``teacher_gflops``,
        ``gflops``, ``params_active`` ...), ``metric``, ``task``.
    Raises:
        ConfigError: the table lacks the columns, holds no student task score, or several tasks without
            ``task``.
    """
    from ..errors import DataError
    from .scores import STUDENT_KEYS, STUDENT_SIZES, aggregate, score_rows, student_scores

    _need_columns(table, SCORE_COLUMNS, "student scores")
    try:
        if task == "mean":
            rows = score_rows(table, metric, split)
            points = aggregate(_task_mean(rows[rows.role == "student"]), STUDENT_KEYS, STUDENT_SIZES)
        else:
            points = student_scores(table, metric, split)
    except DataError as err:
        raise ConfigError(str(err)) from None
    if points.empty:
        raise ConfigError("The table has no finished task-stage student (role=student, stage=task, best weights "
                          "on dev): run the sweep's task stage first.")
    tasks = sorted(set(points.task.dropna()))
    if task is None and len(tasks) > 1:
        raise ConfigError(f"The table holds several tasks ({', '.join(tasks)}): pass task= one of them, or "
                          f"task='mean' for the mean over tasks.")
    if task not in (None, "mean"):
        if task not in tasks:
            raise ConfigError(f"The table has no student score on task {task!r} (tasks: {', '.join(tasks)}).")
        points = points[points.task == task]
    return points.reset_index(drop=True)


def _task_mean(rows):
    """Each student's per-seed mean over the tasks (task ``mean``); every task must be there."""
    keys = ["teacher", "student", "experts", "method", "seed"]
    tasks = sorted(set(rows.task.dropna()))
    counts = rows.groupby(keys, dropna=False).task.nunique()
    if (counts < len(tasks)).any():
        teacher, student, experts, method, seed = counts[counts < len(tasks)].index[0]
        raise ConfigError(f"Student {student} ({method}, seed {seed}) from teacher {teacher} lacks a score on some "
                          f"of the tasks {', '.join(tasks)}: the mean over tasks needs every one (pass task= one "
                          f"task instead).")
    sizes = [c for c in ("teacher_family", "teacher_params", "teacher_gflops", "params_total", "params_active",
                         "gflops", "convention", "split") if c in rows.columns]
    out = rows.groupby(keys, dropna=False).agg(value=("value", "mean"), **{c: (c, "first") for c in sizes},
                                               metric=("metric", lambda m: "/".join(sorted(set(m)))))
    return out.reset_index().assign(task="mean")


def _score_label(points) -> str:
    task = points.task.iloc[0]
    where = "mean over tasks" if task == "mean" else task
    split = points.split.iloc[0] if "split" in points.columns else "dev"
    return f"{points.metric.iloc[0]} ({where}, {split})"


def _convention(table) -> str:
    conventions = sorted(set(table["convention"].dropna())) if "convention" in table.columns else []
    if len(conventions) > 1:
        raise ConfigError(f"The table mixes FLOP conventions ({', '.join(conventions)}): build it under one "
                          f"(gapkit.sweep.build_table(dir, convention=...)).")
    return conventions[0] if conventions else "unknown"


def _yerr(mean, low, high):
    """Error-bar lengths; NaN (no bar, no cap) where a point has no interval (one seed)."""
    import numpy as np

    mean, low, high = (np.asarray(v, dtype=float) for v in (mean, low, high))
    return np.vstack([mean - low, high - mean])


def _on_log_axis(xs, a, b, per_segment: int = 64):
    """(x, a, b) resampled along a log x axis, each line straight in log x as drawn, so that shading between
    two lines switches sides where they really cross on that axis (``fill_between(interpolate=True)`` finds
    crossings on a linear scale and leaves wedges outside both lines on a log one)."""
    import numpy as np

    logs = np.log10(xs)
    fine = np.unique(np.concatenate([np.linspace(lo, hi, per_segment) for lo, hi in zip(logs, logs[1:])]
                                    or [logs]))
    a_fine, b_fine = np.interp(fine, logs, a), np.interp(fine, logs, b)
    # the crossing points themselves, so each side's region closes exactly on the other line
    diff = a_fine - b_fine
    cross = np.flatnonzero(np.sign(diff[:-1]) * np.sign(diff[1:]) < 0)
    at = fine[cross] + (fine[cross + 1] - fine[cross]) * diff[cross] / (diff[cross] - diff[cross + 1])
    fine = np.sort(np.concatenate([fine, at]))
    return 10 ** fine, np.interp(fine, logs, a), np.interp(fine, logs, b)


def _errorbar(ax, x, points, **kwargs):
    """Means with their 95% interval as error bars."""
    import numpy as np

    return ax.errorbar(np.asarray(x, dtype=float), points["mean"].to_numpy(float),
                       yerr=_yerr(points["mean"], points.ci_low, points.ci_high), **kwargs)


def _seed_text(points) -> str:
    low, high = int(points.n_seeds.min()), int(points.n_seeds.max())
    seeds = f"{low}" if low == high else f"{low}-{high}"
    bars = "; bars: 95% t-interval over seeds" if high > 1 else ""
    return f"mean over {seeds} seed(s) per point{bars}"


def _seed_note(fig, points, verdicts: str = "", y: float = -0.02) -> None:
    """Say how many seeds each point averages (and, given, what the tests establish) under the figure, from
    height ``y`` (figure coordinates) down."""
    text = _seed_text(points) + (f"\n{verdicts}" if verdicts else "")
    fig.text(0.01, y, text, fontsize=7, color="0.35", ha="left", va="top")


def verdict_caption(table, task: str | None = None, metric: str | None = None, kind: str = "curse") -> str:
    """One caption line of what the declared tests establish for the students drawn (the ``curse`` or the
    ``lift`` verdicts of :func:`gapkit.analysis.curse_test` / :func:`~gapkit.analysis.lift_test`), so that a
    figure never shows a curse or a lift the tests do not establish. Empty when nothing can be tested."""
    from ..errors import DataError
    from .verdicts import curse_test, lift_test

    try:
        frame = curse_test(table, metric=metric) if kind == "curse" else lift_test(table, metric=metric)
    except DataError:
        return ""
    if task is not None:
        frame = frame[frame.task == task]
    if frame.empty:
        return ""
    label = [f"{r.student}{'-' + r.experts if r.experts not in (None, 'dense') and r.experts == r.experts else ''} "
             f"{r.method}" + (f" vs {r.baseline_student}" if kind == "lift" and getattr(r, "baseline_student", None)
                              not in (None, r.student) else "") for r in frame.itertuples()]
    yes = [f"{name} ({r.verdict})" for name, r in zip(label, frame.itertuples()) if r.established == "yes"]
    test = ("curse test: smallest vs largest teacher, paired, Holm" if kind == "curse"
            else "lift test: drop(baseline) - drop(method), paired, Holm")
    if yes:
        return f"{test}: established for {', '.join(yes)}; not established for the other {len(frame) - len(yes)}"
    what = "students" if kind == "curse" else "comparisons"
    return f"{test}: not established for any of the {len(frame)} {what} (gapkit report: power, seeds needed)"


def teacher_flags(table, task: str | None = None) -> dict:
    """``{teacher: verdict}`` of the teachers not shown above the majority class on dev (the table's
    ``teacher_check``, :mod:`gapkit.analysis.teacher_check`), on ``task`` when given: their students' points
    are drawn hollow and grey."""
    from .teacher_check import flagged

    if "teacher_check" not in getattr(table, "columns", ()):
        return {}
    rows = table[table.teacher_check.map(flagged)]
    if task is not None and task != "mean":
        rows = rows[rows.task == task]
    return dict(zip(rows.teacher, rows.teacher_check))


def _mark_flagged(ax, x, points, flags: dict) -> None:
    """Hollow grey markers over the points whose teacher is in ``flags`` (:func:`teacher_flags`)."""
    import numpy as np

    keep = points.teacher.isin(list(flags)).to_numpy()
    if keep.any():
        ax.plot(np.asarray(x, dtype=float)[keep], points["mean"].to_numpy(float)[keep], linestyle="none",
                marker="o", markersize=8, markerfacecolor="white", markeredgecolor="0.5", markeredgewidth=1.4,
                zorder=5)


def flag_caption(flags: dict) -> str:
    """The caption line of the marked points (empty when none is marked)."""
    if not flags:
        return ""
    import textwrap

    named = ", ".join(f"{t} ({v})" for t, v in sorted(flags.items()))
    return textwrap.fill(f"hollow grey markers: students of a teacher not shown above the majority class on dev "
                         f"(teacher check, one-sided test, alpha 0.05): {named}", 130)


def _teacher_order(points) -> list[str]:
    size = "teacher_params" if "teacher_params" in points.columns else "teacher_gflops"
    if size not in points.columns:
        return sorted(set(points.teacher))
    first = points.groupby("teacher")[size].first()
    return sorted(first.index, key=lambda t: (_num(first[t]), t))


def _num(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(value) else value


def _number_label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _read_parquet(path: Path, remedy: str):
    """``path`` as a DataFrame; ConfigError naming the file and ``remedy`` when it cannot be read."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise ConfigError(f"{path} is not a readable parquet file ({type(err).__name__}): {remedy}") from None


def _spaced(values: list[float], share: float = 1 / 12) -> set[float]:
    """The sorted positive ``values`` whose tick labels can be written without overlapping on a log axis:
    from the left, each at least ``share`` of the axis' log span from the last one kept; the largest value
    is always kept (in place of the last kept one when those two are too close)."""
    if len(values) < 3:
        return set(values)
    logs = [math.log10(v) for v in values]
    gap = (logs[-1] - logs[0]) * share
    kept = [0]
    for i in range(1, len(values)):
        if logs[i] - logs[kept[-1]] >= gap:
            kept.append(i)
    if kept[-1] != len(values) - 1:
        if logs[-1] - logs[kept[-1]] < gap and len(kept) > 1:
            kept.pop()
        kept.append(len(values) - 1)
    return {values[i] for i in kept}


def _log_x(ax, values, labels=None) -> None:
    """A log x axis whose ticks are the plotted values (labelled with ``labels`` or the numbers) when
    there are few of them, so a reader sees each point's size, not just powers of ten."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    values = sorted({float(v) for v in values})
    if len(values) <= 8:
        labels = labels or {v: _number_label(v) for v in values}
        shown = _spaced(values)
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.set_xticks(values, [labels[v] if v in shown else "" for v in values])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(values) == 1:  # one point: give the axis some width around it
        ax.set_xlim(values[0] / 1.5, values[0] * 1.5)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------------------------------
# 1. The curse of capacity gap
# ----------------------------------------------------------------------------------------------------
CURSE_PANELS = (("minilm", "without assistant (MiniLM)"), ("minilm_ta", "with assistant (MiniLM w/ TA)"),
                ("kd", "plain logit KD"))


def _paper_points(paper):
    """The paper's student points (``source == "paper"`` rows when the column is there), one per
    (teacher, method, GFLOPs)."""
    rows = paper
    if "source" in rows.columns:
        rows = rows[rows.source == "paper"]
    if "role" in rows.columns:
        rows = rows[rows.role.isna() | (rows.role == "student")]
    _need_columns(rows, ("teacher", "method", "gflops", "value"), "paper overlay")
    rows = rows[rows.gflops.notna()]  # Table 1's students have no size on the figure's axis
    keys = ["teacher", "method", "gflops"] + [c for c in ("task", "metric", "split") if c in rows.columns]
    return rows.groupby(keys, as_index=False, dropna=False)["value"].mean()


def _same_score(points, ours) -> bool:
    """Whether the paper's values measure what the table's points do (task, metric and split), so they may
    share one y axis; the paper's GLUE averages never sit under another metric's label."""
    for column in ("task", "metric", "split"):
        theirs = set(ours[column].dropna()) if column in ours.columns else set()
        mine = set(points[column].dropna()) if column in points.columns else set()
        if theirs != mine:
            return False
    return True


def _paper_label(ours) -> str:
    """The y label of the paper's values: what they measure, on which split (``glue`` is the GLUE average)."""
    def one(column: str, default: str) -> str:
        return "/".join(sorted(map(str, set(ours[column].dropna())))) if column in ours.columns else default

    metric, task, split = one("metric", "score"), one("task", ""), one("split", "dev")
    what = "GLUE average" if metric == "glue" else f"{metric} ({task})" if task else metric
    return f"paper (dashed): {what}, {split}"


def plot_curse(table, paper=None, metric: str | None = None, task: str | None = None):
    """The paper's curse figure: student score vs student GFLOPs (log axis), one line per teacher, in
    two panels, students distilled without (``minilm``) and with a teacher assistant (``minilm_ta``).

    Args:
        table: a results table.
        paper: optional table of the paper's numbers (rows with ``source == "paper"``; columns teacher,
            method, gflops, value), drawn dashed with hollow markers.
        metric, task: as in :func:`student_points`.
    Returns:
        The Figure (one axes per panel that has points).
    Raises:
        ConfigError: no panel has students from at least 2 teachers.
    """
    import matplotlib.pyplot as plt

    _need_columns(table, SCORE_COLUMNS + ("gflops",), "curse figure")
    points = student_points(table, metric, task)
    points = points[points.method.isin([m for m, _ in CURSE_PANELS]) & points.gflops.notna()]
    teachers_per_panel = points.groupby("method").teacher.nunique()
    if teachers_per_panel.empty or teachers_per_panel.max() < 2:
        found = ", ".join(f"{m}: {n}" for m, n in teachers_per_panel.items()) or "none"
        raise ConfigError(f"The curse figure needs students distilled with minilm, minilm_ta or kd from at least 2 "
                          f"teachers; the table's task-stage students per method come from {found} teacher(s).")
    convention = _convention(table)
    if paper is not None and "convention" in paper.columns:  # one GFLOPs axis: one convention
        theirs = sorted(set(paper.convention.dropna()))
        if theirs and convention != "unknown" and theirs != [convention]:
            raise ConfigError(f"The paper's points are counted in the {', '.join(theirs)} FLOP convention and the "
                              f"table's students in {convention}, so they cannot share the GFLOPs axis: build the "
                              f"table under {theirs[0]} (gapkit.sweep.build_table(dir, convention={theirs[0]!r})).")
    ours = _paper_points(paper) if paper is not None else None
    panels = [(m, title) for m, title in CURSE_PANELS
              if (points.method == m).any() or (ours is not None and (ours.method == m).any())]
    order = _teacher_order(points)
    extra = [t for t in (sorted(set(ours.teacher)) if ours is not None else []) if t not in order]
    colours = ordered_colours(order + extra)
    # The paper's values share the y axis only when they measure the same thing; otherwise (its GLUE average
    # over a sweep's other metric) they get their own axis on the right, with its own label.
    shared = ours is None or points.empty or _same_score(points, ours)
    flags = teacher_flags(table, task)
    with figure_style():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + (0 if shared else 0.8), 3.4),
                                 sharey=True, squeeze=False)
        twins, legend = [], []
        for ax, (method, title) in zip(axes[0], panels):
            handles = []  # each teacher, then its paper line
            right = ax if shared else ax.twinx()
            if right is not ax:
                right.grid(False)  # the panel's own grid is the one to read
                if twins:
                    right.sharey(twins[0])
                twins.append(right)
            for teacher in order + extra:
                p = points[(points.method == method) & (points.teacher == teacher)].sort_values("gflops")
                if not p.empty:
                    handles.append(_errorbar(ax, p.gflops, p, color=colours[teacher], marker="o", label=teacher))
                    _mark_flagged(ax, p.gflops, p, flags)
                q = ours[(ours.method == method) & (ours.teacher == teacher)].sort_values("gflops") \
                    if ours is not None else p.iloc[0:0]
                if not q.empty:
                    handles += right.plot(q.gflops, q.value, linestyle="--", marker="o", markerfacecolor="white",
                                          color=colours[teacher], label=f"{teacher} (paper)")
            xs = list(points.gflops) + (list(ours.gflops) if ours is not None else [])
            _log_x(ax, xs)
            ax.set_title(title)
            ax.set_xlabel(f"student GFLOPs ({convention} convention, log scale)")
            legend = max(legend, handles, key=len)
        if not points.empty:
            axes[0][0].set_ylabel(_score_label(points))
        elif ours is not None:
            axes[0][0].set_ylabel(_paper_label(ours))
        if twins:
            twins[-1].set_ylabel(_paper_label(ours))
            for twin in twins[:-1]:
                twin.tick_params(labelright=False, right=False)
        # One legend for the panels, under them, where it covers no line.
        fig.legend(handles=legend, labels=[h.get_label() for h in legend], title="teacher", loc="upper center",
                   bbox_to_anchor=(0.5, 0.0), ncol=min(len(legend), 4), fontsize=7)
        fig.suptitle("Curse of capacity gap: student score by teacher")
        # Under the legend (a row per 4 teachers, and its title), never across it.
        _seed_note(fig, points, flag_caption({t: v for t, v in flags.items() if t in set(points.teacher)}),
                   y=-0.04 - 0.07 * (math.ceil(len(legend) / 4) + 1))
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# 2. Dense vs MiniMoE
# ----------------------------------------------------------------------------------------------------
def _moe_method(points, moe: str | None) -> str:
    present = sorted(set(points.method))
    if moe is not None:
        if moe not in present:
            raise ConfigError(f"The table has no student of method {moe!r} (methods: {', '.join(present)}).")
        return moe
    candidates = [m for m in present if m.split("[")[0] == "minimoe"]
    if "minimoe" in candidates or len(candidates) == 1:
        return "minimoe" if "minimoe" in candidates else candidates[0]
    if not candidates:
        raise ConfigError("The dense-vs-MiniMoE figure needs MiniMoE students (method minimoe); the table has "
                          f"none (methods: {', '.join(present)}).")
    raise ConfigError(f"The table has several MiniMoE variants ({', '.join(candidates)}): pass moe= the one to "
                      f"compare with the dense students.")


def plot_moe_vs_dense(table, dense: str = "minilm", moe: str | None = None, x: str = "teacher_params",
                      metric: str | None = None, task: str | None = None):
    """Dense and MiniMoE students on the same axes: score vs teacher size, one colour per student shape,
    dense solid, MiniMoE dashed with hollow markers, and the band between them shaded (where MiniMoE is
    above: how much of the curse it lifts).

    Args:
        table: a results table.
        dense: the dense method label.
        moe: the MiniMoE method label (default ``minimoe``, or the table's only MiniMoE variant).
        x: ``teacher_params`` or ``teacher_gflops``.
        metric, task: as in :func:`student_points`.
    Raises:
        ConfigError: no student shape has both dense and MiniMoE students from at least 2 teachers.
    """
    import matplotlib.pyplot as plt

    if x not in ("teacher_params", "teacher_gflops"):
        raise ConfigError(f"x must be teacher_params or teacher_gflops, got {x!r}.")
    _need_columns(table, SCORE_COLUMNS + (x,), "dense-vs-MiniMoE figure")
    points = student_points(table, metric, task)
    moe = _moe_method(points, moe)
    points = points[points.method.isin([dense, moe]) & points[x].notna()]
    shapes = []
    for student, p in points.groupby("student"):
        teachers = [set(p[p.method == m].teacher) for m in (dense, moe)]
        if len(teachers[0] & teachers[1]) >= 2:
            shapes.append((_num(p.gflops.iloc[0]) if "gflops" in p else 0.0, student))
    if not shapes:
        raise ConfigError(f"The dense-vs-MiniMoE figure needs, for one student shape, {dense} and {moe} students "
                          f"distilled from the same 2 or more teachers; the table has none.")
    students = [s for _, s in sorted(shapes)]
    colours = ordered_colours(students)
    scale = 1e6 if x == "teacher_params" else 1.0
    with figure_style():
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        for student in students:
            p = points[points.student == student]
            d = p[p.method == dense].sort_values(x)
            m = p[p.method == moe].sort_values(x)
            experts = m.experts.iloc[0] if "experts" in m and m.experts.notna().any() else "MoE"
            _errorbar(ax, d[x].astype(float) / scale, d, color=colours[student], marker="o", linestyle="-",
                      label=f"{student} dense")
            _errorbar(ax, m[x].astype(float) / scale, m, color=colours[student], marker="D", linestyle="--",
                      markerfacecolor="white", label=f"{student} MiniMoE {experts}")
            both = d.merge(m, on=x, suffixes=("_d", "_m")).sort_values(x)
            xs, dense_y, moe_y = _on_log_axis(both[x].astype(float).to_numpy() / scale, both.mean_d.to_numpy(float),
                                              both.mean_m.to_numpy(float))
            # Gains and losses both shown: filled where MiniMoE is above dense, hatched where it is below.
            ax.fill_between(xs, dense_y, moe_y, where=moe_y >= dense_y, color=colours[student], alpha=0.18,
                            linewidth=0)
            ax.fill_between(xs, dense_y, moe_y, where=moe_y <= dense_y, facecolor="none", edgecolor=colours[student],
                            hatch="////", alpha=0.5, linewidth=0)
        shown = points[points.student.isin(students)]
        sizes = shown.groupby("teacher")[x].first().astype(float) / scale
        _log_x(ax, sizes.values, {v: f"{t}\n{_number_label(v)}" for t, v in sizes.items()})
        ax.set_xlabel("teacher parameters (M, log scale)" if x == "teacher_params"
                      else f"teacher GFLOPs ({_convention(table)} convention, log scale)")
        ax.set_ylabel(_score_label(points))
        ax.set_title(f"Dense ({dense}, solid) vs MiniMoE ({moe}, dashed)\n"
                     f"filled: MiniMoE above dense; hatched: below")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="student")
        lifted = table[table.method.isin([dense, moe])] if "method" in table.columns else table
        _seed_note(fig, points[points.student.isin(students)], verdict_caption(lifted, task, metric, kind="lift"))
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# 2b. Gap curves on any size axis
# ----------------------------------------------------------------------------------------------------
GAP_AXIS_LABELS = {
    "teacher_params": "teacher parameters (M, log scale)",
    "teacher_gflops": "teacher GFLOPs ({convention} convention, log scale)",
    "student_params": "student parameters, total (M, log scale)",
    "student_params_active": "student parameters, active (M, log scale)",
    "student_gflops": "student GFLOPs ({convention} convention, active path, log scale)",
    "ratio_params": "teacher / student parameters (capacity gap, log scale)",
    "ratio_gflops": "teacher / student GFLOPs (compute gap, log scale)",
}
_MILLIONS = ("teacher_params", "student_params", "student_params_active")


def plot_gap_curve(table, x: str = "teacher_params", metric: str | None = None, task: str | None = None):
    """Gap curves on one size axis: student score against ``x`` (log), one line per series of
    :func:`gapkit.analysis.gap_curve` (per student shape on the teacher and ratio axes, per teacher on the
    student axes). A colour per student shape (or teacher), in order of size; dense solid, MiniMoE dashed
    with hollow markers; error bars as in every score figure.

    Args:
        table: a results table.
        x: an axis of :data:`gapkit.analysis.AXES` (``teacher_params``, ``ratio_params`` ...).
        metric: as in :func:`student_points`.
        task: the task to draw; None when the table holds one (the mean over tasks is not drawn here).
    Returns:
        The Figure.
    Raises:
        ConfigError: an unknown axis, several tasks without ``task``, or no student with a known ``x``.
    """
    import matplotlib.pyplot as plt

    from ..errors import DataError
    from .gap import AXES, gap_curve
    from .scores import known

    if x not in AXES:
        raise ConfigError(f"Unknown gap-curve axis {x!r}; the axes are {', '.join(AXES)}.")
    _need_columns(table, SCORE_COLUMNS, "gap-curve figure")
    try:
        curve = gap_curve(table, x, metric)
    except DataError as err:
        raise ConfigError(str(err)) from None
    tasks = sorted(set(curve.task.dropna()))
    if task is None and len(tasks) > 1:
        raise ConfigError(f"The table holds several tasks ({', '.join(tasks)}): pass task= one of them.")
    if task is not None:
        if task not in tasks:
            raise ConfigError(f"The table has no student score on task {task!r} with a known {x} (tasks: "
                              f"{', '.join(tasks) or 'none'}).")
        curve = curve[curve.task == task]
    if curve.empty:
        raise ConfigError(f"The {x} gap curve has no point: the table has no finished task-stage student (best "
                          f"weights on dev) whose {AXES[x][0]} is known.")
    by = AXES[x][1][0]  # the colour key: "student" (teacher and ratio axes) or "teacher" (student axes)
    size = "gflops" if by == "student" else "teacher_params"
    first = curve.groupby(by)[size].first()
    colours = ordered_colours(sorted(first.index, key=lambda k: (_num(first[k]), str(k))))
    scale = 1e6 if x in _MILLIONS else 1.0
    flags = teacher_flags(table, task)
    with figure_style():
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        order = curve.assign(_size=[_num(v) for v in curve[size]]).sort_values(["_size", "series"], kind="stable")
        for label in dict.fromkeys(order.series):
            p = curve[curve.series == label].sort_values("x")
            moe = known(p.experts.iloc[0]) and p.experts.iloc[0] != "dense"
            _errorbar(ax, p.x / scale, p, color=colours[p[by].iloc[0]], marker=method_marker(str(p.method.iloc[0])),
                      linestyle="--" if moe else "-", markerfacecolor="white" if moe else None, label=label)
            _mark_flagged(ax, p.x / scale, p, flags)
        values = curve.x.astype(float) / scale
        labels = None
        if by == "student":  # teacher axes: name each teacher at its tick
            if x in ("teacher_params", "teacher_gflops"):
                sizes = curve.groupby("teacher").x.first().astype(float) / scale
                labels = {v: f"{t}\n{_number_label(v)}" for t, v in sizes.items()}
        distinct = sorted(set(values))
        if all(b / a >= 1.6 for a, b in zip(distinct, distinct[1:])):  # ticks at the points, labels apart
            _log_x(ax, values, labels if labels and len(labels) == len(distinct) else None)
        else:  # close values (e.g. dense and MiniMoE ratios): 1-2-5 ticks, whose labels do not collide
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _number_label(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(GAP_AXIS_LABELS[x].format(convention=_convention(table)))
        ax.set_ylabel(_score_label(curve))
        ax.set_title(f"Gap curve: student score against {GAP_AXIS_LABELS[x].split(' (')[0]}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="teacher" if by == "teacher" else "student")
        caption = [verdict_caption(table, task, metric) if by == "student" else "",
                   flag_caption({t: v for t, v in flags.items() if t in set(curve.teacher)})]
        _seed_note(fig, curve, "\n".join(c for c in caption if c))
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# 3. Ablations
# ----------------------------------------------------------------------------------------------------
def method_options(label: str) -> tuple[str, dict[str, str]]:
    """``minimoe[experts=1,4E,routing=hash]`` -> (``minimoe``, {experts: 1,4E, routing: hash})."""
    match = re.fullmatch(r"([^\[\]]+)(?:\[(.*)\])?", str(label))
    if not match:
        return str(label), {}
    name, inner = match.group(1), match.group(2) or ""
    # values may hold commas (experts=1,4E): split only before the next "key="
    options = dict(re.findall(r"(\w+)=(.*?)(?=,\w+=|$)", inner))
    return name, options


def _value_order(axis: str, value: str):
    if axis == "experts":
        numbers = re.findall(r"\d+", str(value))
        return tuple(int(n) for n in numbers) or (math.inf,)
    if axis == "routing":
        return (ROUTING_ORDER.get(value, 9), str(value))
    return (_num(value), str(value))


def read_routing(run):
    """A run's routing table: ``run`` is a run folder (its ``routing.parquet``), a parquet file or a
    DataFrame already read.

    Raises:
        ConfigError: no routing.parquet (a dense student records none), an unreadable file, or missing
            columns.
    """
    import pandas as pd

    if isinstance(run, pd.DataFrame):
        frame, where = run, "the routing table given"
    else:
        path = Path(run)
        path = (RunDir(path).routing() or path / ROUTING) if path.is_dir() else path
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: only MiniMoE students record routing (routing.parquet in "
                              f"their run folder).")
        frame = _read_parquet(path, "a corrupt routing record.")
        where = str(path)
    missing = [c for c in ROUTING_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"{where} lacks the routing column(s) {', '.join(missing)}: it is not a gapkit "
                          f"routing.parquet.")
    if frame.empty:
        raise ConfigError(f"{where} holds no routing rows.")
    return frame


def _pick_split(frame, split: str | None) -> str:
    splits = set(frame.split)
    if split is None:
        split = "dev" if "dev" in splits else ("train" if "train" in splits else sorted(splits)[0])
    if split not in splits:
        raise ConfigError(f"The routing table has no rows for split {split!r} (splits: {', '.join(sorted(splits))}).")
    return split


def _pick_step(frame, split: str, step: int | None) -> int:
    steps = sorted(set(frame[frame.split == split].step))
    if step is None:
        return int(steps[-1])
    if step not in steps:
        raise ConfigError(f"The routing table has no rows for step {step} on {split} (steps: "
                          f"{', '.join(map(str, steps[:5]))}{' ...' if len(steps) > 5 else ''}).")
    return int(step)


def run_load_balance(run, split: str | None = None) -> float:
    """A run's load balance at its last recorded step: the mean over its MoE blocks (layers, and
    attention and FFN blocks) of each block's Switch load balance (1.0 = perfectly balanced). This is
    the MiniMoE authors' aggregate whenever all layers have experts in the same blocks.

    Args:
        run: as in :func:`read_routing`.
        split: ``dev`` by default when recorded (pooled over the whole dev set), else ``train``.
    """
    frame = read_routing(run)
    split = _pick_split(frame, split)
    rows = frame[(frame.split == split) & (frame.step == _pick_step(frame, split, None))]
    return float(rows.groupby(["layer", "block"]).load_balance.first().mean())


def _ablation_points(table, points):
    """The MiniMoE points, each with its ablation settings and its load balance over seeds (``lb_mean``,
    ``lb_low``, ``lb_high``, from the runs' routing.parquet; NaN where no run recorded routing)."""
    import pandas as pd

    from .scores import aggregate

    keys = ["teacher", "student", "experts", "method"]
    moe = points[[method_options(m)[0] == "minimoe" for m in points.method]]
    if moe.empty:
        return moe
    balance = []
    if "run_dir" in table.columns:
        runs = table[(table.role == "student") & (table.stage == "task") & table.run_dir.notna()
                     & table.method.isin(set(moe.method))]
        if "status" in runs.columns:
            runs = runs[runs.status.fillna("completed") != "failed"]
        for run in runs.drop_duplicates("run").itertuples():
            try:
                value = run_load_balance(run.run_dir)
            except ConfigError:  # no routing recorded: the bar stays empty
                continue
            balance.append(dict(teacher=run.teacher, student=run.student, experts=run.experts, method=run.method,
                                seed=run.seed, value=value))
    lb = pd.DataFrame(balance, columns=keys + ["seed", "value"])
    lb = aggregate(lb, keys, []).rename(columns=dict(mean="lb_mean", ci_low="lb_low", ci_high="lb_high"))
    moe = moe.merge(lb[keys + ["lb_mean", "lb_low", "lb_high"]], on=keys, how="left")
    return moe.assign(options=[method_options(m)[1] for m in moe.method])


def _ablation_axes(moe) -> list[tuple[str, object]]:
    """(setting, its rows with columns ``setting`` and ``group``) for each setting that takes two or more
    values among comparable MiniMoE students."""
    axes = []
    if moe.experts.nunique() >= 2:
        rows = moe.assign(setting=moe.experts.astype(str),
                          group=[_group_label(r, {k: v for k, v in r.options.items() if k != "experts"})
                                 for r in moe.itertuples()])
        axes.append(("experts", rows))
    for key in ("routing", "load_balance", "gate_noise"):
        named = moe[[key in o for o in moe.options]]
        if named.empty or len({o[key] for o in named.options}) < 2:
            continue
        rows = named.assign(setting=[o[key] for o in named.options],
                            group=[_group_label(r, {k: v for k, v in r.options.items() if k != key})
                                   for r in named.itertuples()])
        axes.append((key, rows))
    return axes


def _group_label(row, others: dict) -> str:
    extra = "".join(f", {k}={v}" for k, v in sorted(others.items()))
    return f"{row.student} from {row.teacher}{extra}"


def _grouped_bars(ax, rows, value: str, low: str, high: str, settings, groups, colours) -> None:
    import numpy as np

    width = 0.8 / len(groups)
    for g, group in enumerate(groups):
        sub = rows[rows.group == group].set_index("setting").reindex(settings)
        xs = np.arange(len(settings)) - 0.4 + width * (g + 0.5)
        ax.bar(xs, sub[value], width=width * 0.92, color=colours[group], label=group)
        ax.errorbar(xs, sub[value], yerr=_yerr(sub[value], sub[low], sub[high]), fmt="none", ecolor="0.2",
                    elinewidth=1)
    ax.set_xticks(range(len(settings)), settings)


def plot_ablations(table, metric: str | None = None, task: str | None = None):
    """MiniMoE ablations: for every setting the table varies (attention and FFN expert counts, routing
    mode, load-balance weight, gate noise) one row of two panels, the student score (bars, 95%
    intervals over seeds) and its load balance (the runs' routing.parquet, mean over blocks at the
    last step; dashed line: perfect balance 1.0). Bars of one colour are students that differ in that
    setting only (same shape, teacher and other settings).

    Raises:
        ConfigError: no MiniMoE students differ in one of those settings.
    """
    import matplotlib.pyplot as plt

    points = student_points(table, metric, task)
    moe = _ablation_points(table, points)
    axes_rows = _ablation_axes(moe) if not moe.empty else []
    if not axes_rows:
        raise ConfigError("The ablation figure needs MiniMoE students that differ in one setting (experts, "
                          "routing, load_balance or gate_noise, e.g. methods [{name: minimoe, routing: [learned, "
                          "random]}]); the table has none.")
    groups_all = sorted({g for _, rows in axes_rows for g in rows.group})
    colours = ordered_colours(groups_all)
    with figure_style():
        fig, axes = plt.subplots(len(axes_rows), 2, figsize=(8.4, 2.9 * len(axes_rows)), squeeze=False)
        for (key, rows), (ax_score, ax_lb) in zip(axes_rows, axes):
            settings = sorted(set(rows.setting), key=lambda v: _value_order(key, v))
            groups = sorted(set(rows.group))
            _grouped_bars(ax_score, rows, "mean", "ci_low", "ci_high", settings, groups, colours)
            ax_score.set_xlabel(ABLATION_TITLES[key])
            ax_score.set_ylabel(_score_label(points))
            # the scores' own range (bars from zero would hide differences of a point or two)
            low = min(rows["mean"].min(), rows.ci_low.min() if rows.ci_low.notna().any() else math.inf)
            high = max(rows["mean"].max(), rows.ci_high.max() if rows.ci_high.notna().any() else -math.inf)
            pad = 0.25 * (high - low) if high > low else 1.0
            ax_score.set_ylim(max(0.0, low - pad), high + pad)
            ax_score.set_title(f"score by {ABLATION_TITLES[key]}")
            if rows.lb_mean.notna().any():
                _grouped_bars(ax_lb, rows, "lb_mean", "lb_low", "lb_high", settings, groups, colours)
                ax_lb.axhline(1.0, color="0.4", linestyle="--", linewidth=1)
                ax_lb.set_xlabel(ABLATION_TITLES[key])
                ax_lb.set_ylabel("load balance (1 = balanced)")
                ax_lb.set_title(f"load balance by {ABLATION_TITLES[key]}")
            else:
                _empty(ax_lb, "no routing.parquet for these runs")
        handles = {h.get_label(): h for ax in axes[:, 0] for h in ax.containers if h.get_label() in colours}
        fig.suptitle("MiniMoE ablations")
        fig.tight_layout()
        fig.legend([handles[g] for g in groups_all if g in handles], [g for g in groups_all if g in handles],
                   loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, len(groups_all)),
                   title=f"student from teacher (other settings); {_seed_text(moe)}")
    return fig


# ----------------------------------------------------------------------------------------------------
# 4. Pareto front
# ----------------------------------------------------------------------------------------------------
def pareto_front(points, x: str = "gflops", y: str = "mean"):
    """The points no other point beats (at most the compute and at least as good a score, one of them
    strictly), by increasing ``x``; "better" as the verdicts orient the points' metric (a loss: lower)."""
    from .verdicts import orientation

    sign = orientation(points.metric.iloc[0]) if "metric" in points.columns and len(points) else 1.0
    ordered = points.assign(_better=sign * points[y].astype(float)).sort_values([x, "_better"],
                                                                               ascending=[True, False])
    keep, best = [], -math.inf
    for index, row in ordered.iterrows():
        if row["_better"] > best:
            keep.append(index)
            best = row["_better"]
    return ordered.loc[keep].drop(columns="_better")


def pareto_table(table, metric: str | None = None, task: str | None = None):
    """Every student point of the Pareto figure, named, with ``on_front`` (the figure names only those):
    task, student, experts, method, teacher, gflops (active path), mean, ci_low, ci_high, n_seeds, on_front,
    sorted by GFLOPs then score."""
    points = student_points(table, metric, task)
    points = points[points.gflops.notna()]
    front = pareto_front(points) if len(points) else points
    columns = [c for c in ("task", "student", "experts", "method", "teacher", "gflops", "metric", "mean", "ci_low",
                           "ci_high", "n_seeds") if c in points.columns]
    return (points[columns].assign(on_front=points.index.isin(front.index))
            .sort_values(["gflops", "mean"], ascending=[True, False]).reset_index(drop=True))


def plot_pareto(table, metric: str | None = None, task: str | None = None):
    """Score vs active GFLOPs of every student of a sweep (colour and marker by method), the Pareto front
    (the best score at each compute) drawn as a black step line, its points outlined and named.

    Raises:
        ConfigError: fewer than 2 students with a score and GFLOPs.
    """
    import matplotlib.pyplot as plt

    _need_columns(table, SCORE_COLUMNS + ("gflops",), "Pareto figure")
    points = student_points(table, metric, task)
    points = points[points.gflops.notna()]
    if len(points) < 2:
        raise ConfigError(f"The Pareto figure needs at least 2 students with a task score and GFLOPs; the table "
                          f"has {len(points)}.")
    front = pareto_front(points)
    colours = method_colours(sorted(set(points.method)))
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.8, 3.8))
        for method in sorted(set(points.method)):
            p = points[points.method == method]
            _errorbar(ax, p.gflops, p, color=colours[method], marker=method_marker(method), linestyle="none",
                      alpha=0.85, label=method)
        ax.step(front.gflops, front["mean"], where="post", color="black", linewidth=1.2, label="Pareto front")
        ax.scatter(front.gflops, front["mean"], s=70, facecolors="none", edgecolors="black", linewidths=1.3,
                   zorder=5)
        middle = math.sqrt(points.gflops.min() * points.gflops.max())  # log-axis middle
        for row in front.itertuples():
            experts = "" if str(row.experts) in ("dense", "nan", "None", "<NA>") else f" {row.experts}"
            right = row.gflops > middle  # name the right half's points on their left, inside the axes
            ax.annotate(f"{row.student}{experts} from {row.teacher}", (row.gflops, row.mean), fontsize=6,
                        xytext=(-6 if right else 6, 4), textcoords="offset points", color="0.25",
                        ha="right" if right else "left", va="bottom")
        _log_x(ax, points.gflops)
        ax.set_xlabel(f"student GFLOPs ({_convention(table)} convention, active path, log scale)")
        ax.set_ylabel(_score_label(points))
        ax.set_title("Score vs compute: every student; the Pareto front in black, named\n"
                     "(every point named in pareto.csv beside the figure: gapkit plot)", fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method")
        _seed_note(fig, points)
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# 5. Routing of one run
# ----------------------------------------------------------------------------------------------------
def _run_name(run) -> str:
    import pandas as pd

    return "routing table" if isinstance(run, pd.DataFrame) else Path(run).name


def plot_expert_share(run, step: int | None = None, split: str | None = None):
    """Layer x expert heatmap of the share of tokens each expert receives, one panel per block type
    (attention, FFN), on one step and split (default: the last step on dev, else train). The colour
    scale is centred on the uniform share 100/E %: red is more than its share, blue less.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = read_routing(run)
    split = _pick_split(frame, split)
    step = _pick_step(frame, split, step)
    rows = frame[(frame.split == split) & (frame.step == step)]
    blocks = [b for b in ("attn", "ffn") if (rows.block == b).any()] + sorted(set(rows.block) - {"attn", "ffn"})
    titles = {"attn": "attention experts", "ffn": "FFN experts"}
    with figure_style():
        fig, axes = plt.subplots(1, len(blocks), figsize=(0.9 + 3.6 * len(blocks), 0.9 + 0.35 * rows.layer.nunique()
                                                           + 1.2), squeeze=False)
        for ax, block in zip(axes[0], blocks):
            grid = rows[rows.block == block].pivot_table(index="layer", columns="expert", values="token_fraction") * 100
            experts = grid.shape[1]
            # symmetric around the uniform share: 0% and twice the uniform share are the two ends
            sns.heatmap(grid, ax=ax, cmap="vlag", center=100 / experts, vmin=0, vmax=min(100, 200 / experts),
                        annot=grid.size <= 160, fmt=".0f",
                        cbar_kws=dict(label="% of tokens"), linewidths=0.5, linecolor="white")
            ax.set_xlabel("expert")
            ax.set_ylabel("layer")
            ax.set_title(f"{titles.get(block, block)} (uniform: {100 / experts:.0f}%)")
        fig.suptitle(f"Token share per expert: {_run_name(run)}, {split}, step {step}", fontsize=9)
        fig.tight_layout()
    return fig


def plot_routing_training(run, split: str = "train"):
    """Load balance and gate entropy over training steps: one thin line per layer and block, their mean
    in black; dashed: perfect balance (1.0) and a uniform gate (ln E); dev evaluations as markers when
    recorded.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    frame = read_routing(run)
    split = _pick_split(frame, split)
    per_block = frame.groupby(["split", "step", "layer", "block"], as_index=False).agg(
        load_balance=("load_balance", "first"), gate_entropy=("gate_entropy", "first"),
        experts=("expert", "nunique"))
    train = per_block[per_block.split == split]
    blocks = sorted(set(zip(train.layer, train.block)))
    marker = "." if train.step.nunique() <= 30 else None  # a few recorded steps: show each one
    shades = ordered_colours([f"{b} {layer}" for layer, b in blocks])
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
        for ax, column, title in ((axes[0], "load_balance", "load balance"), (axes[1], "gate_entropy",
                                                                              "gate entropy (nats)")):
            for layer, block in blocks:
                b = train[(train.layer == layer) & (train.block == block)].sort_values("step")
                ax.plot(b.step, b[column], linewidth=0.9, alpha=0.7, color=shades[f"{block} {layer}"], marker=marker,
                        label=f"layer {layer} {block}" if len(blocks) <= 8 else None)
            mean = train.groupby("step")[column].mean()
            ax.plot(mean.index, mean.values, color="black", linewidth=2, marker=marker, label=f"mean ({split})")
            dev = per_block[(per_block.split == "dev")] if split != "dev" else per_block.iloc[0:0]
            if not dev.empty:
                d = dev.groupby("step")[column].mean()
                ax.plot(d.index, d.values, linestyle="none", marker="o", color="black", markerfacecolor="white",
                        label="mean (dev)")
            if column == "load_balance":
                ax.axhline(1.0, color="0.5", linestyle="--", linewidth=1, label="balanced (1.0)")
            else:
                experts = int(train.experts.max())
                ax.axhline(float(np.log(experts)), color="0.5", linestyle="--", linewidth=1,
                           label=f"uniform gate (ln {experts})")
            ax.set_xlabel("training step")
            ax.set_ylabel(title)
            ax.set_title(f"{title} over training")
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)  # under the axes
        fig.suptitle(f"Routing during training: {_run_name(run)}", fontsize=9)
        fig.tight_layout()
    return fig


def _tokenizer_of(run):
    """The run's tokenizer: the one saved in ``best/``, else, for gapkit's synthetic task, its id tokenizer
    (which names the special ids [PAD], [CLS], [SEP] ...); None when neither is there (ids show as ``#7``)."""
    import pandas as pd

    if isinstance(run, pd.DataFrame):
        return None
    folder = Path(run)
    run_dir = RunDir(folder if folder.is_dir() else folder.parent)
    saved = run_dir.tokenizer_dir()
    if saved is not None:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(saved, local_files_only=True)
        except (OSError, ValueError):
            return None
    try:
        config = run_dir.config() or {}
    except ConfigError:
        return None
    if (config.get("data") or {}).get("task") == "synthetic":
        from .inspection import synthetic_tokenizer

        rule = (config["data"].get("synthetic") or {}).get("rule", "counts")
        return synthetic_tokenizer(2**31 - 1, rule)  # names ids only: nothing to bound
    return None


def plot_top_tokens(run, step: int | None = None, split: str | None = None, layer: int | None = None,
                    block: str | None = None, k: int = 10, tokenizer=None):
    """The ``k`` tokens each expert of one block receives most (the ``top_tokens`` column of the run's
    routing.parquet), one panel per expert, token counts as bars. Tokens are decoded with ``tokenizer``
    or the run's own (``best/``); without one (synthetic tasks) they show as ids, ``#42``.

    Args:
        run: a run folder, parquet file or routing DataFrame.
        step, split: default: the last step on dev, else train.
        layer: default the last layer.
        block: ``ffn`` (default when present) or ``attn``.
        k: tokens per expert.
        tokenizer: anything with ``convert_ids_to_tokens``.
    Raises:
        ConfigError: the routing table has no ``top_tokens`` (a run recorded before token counts were kept).
    """
    import matplotlib.pyplot as plt

    from ..routing import parse_top_tokens

    frame = read_routing(run)
    if "top_tokens" not in frame.columns or frame.top_tokens.isna().all():
        raise ConfigError(f"The routing table of {_run_name(run)} has no top_tokens column: the run did not record "
                          f"which tokens each expert receives.")
    split = _pick_split(frame[frame.top_tokens.notna()], split)
    step = _pick_step(frame[frame.top_tokens.notna()], split, step)
    rows = frame[(frame.split == split) & (frame.step == step)]
    block = block or ("ffn" if (rows.block == "ffn").any() else sorted(set(rows.block))[0])
    layer = int(rows.layer.max()) if layer is None else layer
    rows = rows[(rows.block == block) & (rows.layer == layer)].sort_values("expert")
    if rows.empty:
        raise ConfigError(f"The routing table of {_run_name(run)} has no {block} block in layer {layer}.")
    tokenizer = tokenizer if tokenizer is not None else _tokenizer_of(run)

    def name(token_id: int) -> str:
        if tokenizer is None:
            return f"#{token_id}"
        token = tokenizer.convert_ids_to_tokens(int(token_id))
        return token if token == f"#{token_id}" else f"{token} ({token_id})"

    experts = len(rows)
    cols = min(experts, 4)
    nrows = math.ceil(experts / cols)
    colours = ordered_colours(list(rows.expert))
    with figure_style():
        fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 0.6 + 0.22 * k * nrows + 0.5 * nrows),
                                 squeeze=False)
        for ax, row in zip(axes.flat, rows.itertuples()):
            top = parse_top_tokens(row.top_tokens)[:k]
            if not top:
                _empty(ax, "no tokens")
            else:
                labels = [name(t) for t, _ in top][::-1]
                ax.barh(range(len(top)), [c for _, c in top][::-1], color=colours[row.expert])
                ax.set_yticks(range(len(top)), labels, fontsize=7)
                ax.set_xlabel("tokens routed")
            ax.set_title(f"expert {row.expert} ({100 * row.token_fraction:.0f}% of tokens)")
        for ax in list(axes.flat)[experts:]:
            ax.axis("off")
        fig.suptitle(f"Most frequent tokens per expert: {_run_name(run)}, layer {layer} {block}, {split}, step {step}",
                     fontsize=9)
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# Every figure of a sweep
# ----------------------------------------------------------------------------------------------------
ROUTING_FIGURES = (("expert_share", plot_expert_share), ("routing_training", plot_routing_training),
                   ("top_tokens", plot_top_tokens))


def _slug(label: str) -> str:
    """A method label as a file name part: ``minimoe[routing=random]`` -> ``minimoe_routing-random``."""
    return re.sub(r"[^A-Za-z0-9.,-]+", "_", str(label).replace("=", "-")).strip("_")


def routing_runs(table, which: str = "representative") -> list:
    """The MiniMoE student runs whose routing to draw: ``all`` of them (task stage, with a
    routing.parquet), or per MiniMoE method one ``representative``: the largest teacher, then the
    largest student, then the first seed; ``none``."""
    if which == "none" or "run_dir" not in table.columns:
        return []
    runs = table[(table.role == "student") & (table.stage == "task") & table.method.fillna("").str.startswith("minimoe")
                 & table.run_dir.notna()].drop_duplicates("run")
    if runs.empty:  # (a list-of-nothing index would select columns, not rows)
        return []
    runs = runs[[RunDir(d).routing() is not None for d in runs.run_dir]]
    if which == "all":
        return list(runs.run_dir)
    if which != "representative":
        raise ConfigError(f"routing must be representative, all or none, got {which!r}.")
    chosen = []
    for _, group in runs.groupby("method"):
        key = group.assign(_t=[-_num(v) for v in group.teacher_gflops], _s=[-_num(v) for v in group.gflops])
        chosen.append(key.sort_values(["_t", "_s", "seed", "run"]).run_dir.iloc[0])
    return chosen


def _sweep_gap_curve(table, task: str | None):
    """The gap curve on the teacher-size axis, when the students learned from 2 or more teachers (with one,
    each line would be a single point)."""
    students = table[(table.role == "student") & (table.stage == "task")] if "role" in table.columns else table
    if "teacher" not in students.columns or students.teacher.nunique() < 2:
        raise ConfigError("The gap curve needs students distilled from at least 2 teachers; the table has "
                          f"{students.teacher.nunique() if 'teacher' in students.columns else 0}.")
    return plot_gap_curve(table, "teacher_params", task=task)


def plot_sweep(sweep_dir: str | Path, out: str | Path | None = None, routing: str = "representative",
               paper=None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write every figure a sweep's results support, as PNG and PDF.

    Args:
        sweep_dir: a sweep's output folder (its ``results.parquet``).
        out: where to write (default ``sweep_dir/figures``); routing figures go to ``out/routing/``.
        routing: which MiniMoE runs get routing figures (:func:`routing_runs`).
        paper: optional table of the paper's numbers to overlay on the curse figure.
    Returns:
        (files written, [(figure name, why it was skipped)]).
    Raises:
        ConfigError: no or an unreadable results.parquet.
        DataError: a table with no score to draw (no rows, every run failed ...: one sentence says which).
    """
    import matplotlib.pyplot as plt

    from .scores import require_scores

    sweep_dir = Path(sweep_dir)
    results = sweep_dir / "results.parquet"
    if not results.is_file():
        raise ConfigError(f"{sweep_dir} has no results.parquet: is it a sweep's output_dir? (`gapkit results "
                          f"{sweep_dir}` rebuilds the table from the run folders).")
    from .report import resolve_run_dirs

    table = resolve_run_dirs(_read_parquet(results, f"rebuild it with `gapkit results {sweep_dir}`."), results.parent)
    require_scores(table, str(results))
    out = Path(out) if out is not None else sweep_dir / "figures"
    written, skipped = [], []

    def draw(name: str, make, stem: Path) -> None:
        try:
            fig = make()
        except ConfigError as err:
            skipped.append((name, " ".join(str(err).split())))
            return
        try:
            written.extend(save_figure(fig, stem))
        finally:
            plt.close(fig)

    students = table[(table.role == "student") & (table.stage == "task")] if "role" in table.columns else table
    tasks = sorted(set(students.task.dropna())) if "task" in students.columns else []
    variants = [(t, f"-{t}") for t in tasks] + [("mean", "-mean")] if len(tasks) > 1 else [(None, "")]
    moes = sorted({m for m in students.method.dropna() if m.split("[")[0] == "minimoe"}) \
        if "method" in students.columns else []
    for task, suffix in variants:
        jobs = [("curse", lambda task=task: plot_curse(table, paper=paper, task=task)),
                ("gap_curve", lambda task=task: _sweep_gap_curve(table, task))]
        if len(moes) > 1:  # one figure per MiniMoE variant
            jobs += [(f"moe_vs_dense-{_slug(m)}", lambda task=task, m=m: plot_moe_vs_dense(table, moe=m, task=task))
                     for m in moes]
        else:
            methods = set(students.method.dropna()) if "method" in students.columns else set()
            dense = "minilm" if "minilm" in methods or "kd" not in methods else "kd"
            jobs.append(("moe_vs_dense", lambda task=task: plot_moe_vs_dense(table, dense=dense, task=task)))
        jobs += [("ablations", lambda task=task: plot_ablations(table, task=task)),
                 ("pareto", lambda task=task: plot_pareto(table, task=task))]
        for name, make in jobs:
            draw(name + suffix, make, out / f"{name}{suffix}")
        if out / f"pareto{suffix}.png" in written:  # the figure names the front; the table names every point
            path = out / f"pareto{suffix}.csv"
            atomic_write(path, pareto_table(table, task=task).to_csv(index=False))
            written.append(path)
    runs = routing_runs(table, routing)
    if not runs and routing != "none":
        skipped.append(("routing", "no MiniMoE student run with a routing.parquet in the table."))
    for run_dir in runs:
        for name, make in ROUTING_FIGURES:
            run_name = Path(run_dir).name
            draw(f"{name} of {run_name}", lambda make=make, run_dir=run_dir: make(run_dir),
                 out / "routing" / f"{run_name}-{name}")
    return written, skipped
