"""The MiniMoE paper's published numbers (results/paper/) in the results-table schema, and what compares a
sweep with them: the GLUE average as the paper computes it, the fine-tuned teachers against the paper's,
and the paper's figure with its own axes and layout.

Source: Zhang et al., "Lifting the Curse of Capacity Gap in Distilling Language Models", ACL 2023,
arXiv 2305.12129: the motivation figure (GLUE of MiniLM students from BERT-base and BERT-large, with and
without a teacher assistant), read from the copy of that figure in the authors' repository README, and
Table 1 (teachers and plain-KD students). results/paper/README.md says how the values were read.

The paper's GLUE average (:func:`glue_average`): the mean of one number per entry over SST-2, MRPC, STS-B,
QNLI, RTE, QQP, MNLI-m and MNLI-mm (MNLI's matched and mismatched dev sets are two entries; CoLA is not in
it, the authors' scripts have no CoLA), each entry the task's GLUE number (``gapkit.data.metrics.glue_score``:
MRPC and QQP the mean of F1 and accuracy, STS-B of Pearson and Spearman, the others accuracy).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import DataError

__all__ = ["paper_results", "glue_average", "teachers_vs_paper", "format_teachers_vs_paper", "plot_paper_figure",
           "figure_axes", "PAPER_DIR", "PAPER_GLUE_TASKS"]

PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"
# The paper's Hugging Face teachers -> gapkit's labels and presets (configs/sweeps/paper_glue.yaml).
TEACHERS = {"bert-base-uncased": "bert-base", "bert-large-uncased": "bert-large"}
# Table 1's students are 10% of BERT-base and 5% of BERT-large (similar sizes, shapes not given): one label,
# as the paper compares them, and never the empty label of the figure's unknown smallest student.
TABLE1_STUDENT = "table1-student"
# The tasks of the paper's GLUE average (MNLI counts twice: matched and mismatched), in the paper's order.
PAPER_GLUE_TASKS = ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte")
# The paper's figure: x linear from 0 to 1.4 GFLOPs (its five student sizes, 0.04 to 1.36), panels stacked.
PAPER_XLIM = (0.0, 1.4)


@lru_cache(maxsize=None)
def _size(preset: str) -> tuple[int, float]:
    """(parameters of the encoder without a task head, GFLOPs on the paper's axis) of a shape."""
    from ..flops import describe

    row = describe(preset, convention="paper")
    return int(row["params_total"]), float(row["gflops"])


def _read(path: Path, columns: list[str]):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"The paper's reference numbers are not at {path} (they ship in the gapkit repository's "
                        f"results/paper/); pass folder= the folder that holds fig1_curse.csv and table1_excerpt.csv.")
    frame = pd.read_csv(path, comment="#", dtype={"student": "string"})
    if list(frame.columns) != columns:
        raise DataError(f"{path} has columns {', '.join(frame.columns)}; expected {', '.join(columns)}.")
    return frame


def paper_results(folder: str | Path | None = None):
    """The paper's numbers as results-table rows, to overlay on measured ones.

    Args:
        folder: the folder of ``fig1_curse.csv`` and ``table1_excerpt.csv`` (default: the repository's
            results/paper/).
    Returns:
        A DataFrame with :data:`gapkit.sweep.table.COLUMNS` plus ``source`` (``"paper"``) and
        ``student_scale`` (Table 1's student/teacher size ratio). ``task`` and ``metric`` are ``glue``,
        ``convention`` is ``paper``, ``split`` is ``dev``, ``model`` is ``best``, seeds are empty (one value
        per point); ``sweep`` names the source (``paper:fig1``, ``paper:table1``). Teachers are
        ``bert-base``/``bert-large``; teacher rows (role ``teacher``, stage ``finetune``) hold the teachers'
        own GLUE. Parameter counts and GFLOPs are computed from the shapes (exact, paper convention: the
        figure prints them rounded, 0.11 for 2L-192H's 0.1132), so that ratios such as teacher / student
        GFLOPs are exact; the figure's smallest student has no shape (empty) and keeps the figure's own
        rounded x, 0.04, the one value not computed. Table 1's
        KD students (10% of BERT-base, 5% of BERT-large: similar sizes the paper compares as one) are
        ``student = "table1-student"`` with their ``student_scale``, sizes empty.
    Raises:
        DataError: a file is missing or has other columns, or a student's shape does not count the figure's x.
    """
    import pandas as pd

    from ..sweep.table import results_frame

    folder = Path(folder) if folder is not None else PAPER_DIR
    fig1 = _read(folder / "fig1_curse.csv", ["gflops", "student", "teacher", "method", "glue"])
    table1 = _read(folder / "table1_excerpt.csv", ["method", "teacher", "student_scale", "glue"])
    unknown = sorted((set(fig1.teacher) | set(table1.teacher)) - set(TEACHERS))
    if unknown:
        raise DataError(f"Unknown teacher(s) {', '.join(unknown)} in {folder}; known: {', '.join(TEACHERS)}.")

    def teacher_columns(hub_name: str) -> dict:
        label = TEACHERS[hub_name]
        params, gflops = _size(label)
        return dict(teacher=label, teacher_kind="pretrained", teacher_family="bert", teacher_params=params,
                    teacher_gflops=gflops)

    common = dict(convention="paper", task="glue", split="dev", metric="glue", model="best", status="completed",
                  source="paper")
    rows = []
    for r in fig1.itertuples(index=False):
        student = None if pd.isna(r.student) else str(r.student)
        params, gflops = _size(student) if student else (None, float(r.gflops))
        if abs(gflops - float(r.gflops)) > 0.005:  # the figure prints two decimals of the shape's count
            raise DataError(f"{folder / 'fig1_curse.csv'} gives student {student} at {r.gflops} GFLOPs, but that "
                            f"shape counts {gflops:.4f} on the paper's axis: fix the student or the gflops column.")
        rows.append(dict(common, **teacher_columns(r.teacher), sweep="paper:fig1", role="student", stage="task",
                         student=student, experts="dense", method=r.method, params_total=params, params_active=params,
                         gflops=gflops, value=float(r.glue), run_dir=str(folder / "fig1_curse.csv"),
                         run=f"paper:fig1:{TEACHERS[r.teacher]}:{r.method}:{r.gflops}"))
    for r in table1.itertuples(index=False):
        teacher = teacher_columns(r.teacher)
        where = dict(sweep="paper:table1", run=f"paper:table1:{teacher['teacher']}:{r.method}",
                     run_dir=str(folder / "table1_excerpt.csv"), student_scale=float(r.student_scale),
                     value=float(r.glue))
        if r.method == "teacher":
            rows.append(dict(common, **teacher, **where, role="teacher", stage="finetune", student=teacher["teacher"],
                             experts="dense", method="finetune", params_total=teacher["teacher_params"],
                             params_active=teacher["teacher_params"], gflops=teacher["teacher_gflops"]))
        else:  # student_scale x its teacher's size, shape not given; the paper compares the two as one student
            rows.append(dict(common, **teacher, **where, role="student", stage="task", student=TABLE1_STUDENT,
                             experts="dense", method=r.method))
    frame = results_frame(rows)  # the table's columns and types, then the paper's own two
    frame["source"] = [r.get("source") for r in rows]
    frame["student_scale"] = pd.Series([r.get("student_scale") for r in rows], dtype="float64")
    return frame


# ----------------------------------------------------------------------------------------------------
# The paper's GLUE average of a sweep's runs
# ----------------------------------------------------------------------------------------------------
# What identifies one run across the tasks of a sweep (a student or teacher trained once per task).
RUN_KEYS = ["sweep", "role", "stage", "teacher", "student", "experts", "method", "seed", "teacher_seed"]
# Columns that describe the run, the same on each of its tasks (the first one is kept).
RUN_SIZES = ["teacher_kind", "teacher_family", "teacher_params", "teacher_gflops", "params_total", "params_active",
             "gflops", "convention", "selected_on"]


def glue_entries() -> list[tuple[str, str, str]]:
    """(task, dev split, entry name) of each entry of the paper's GLUE average, in the paper's order."""
    from ..data.glue import GLUE_TASKS, glue_entry

    return [(task, split, glue_entry(task, split)) for task in PAPER_GLUE_TASKS
            for split in GLUE_TASKS[task].dev_splits]


def glue_average(table):
    """Each run's GLUE average as the paper computes it (the module docstring: 8 entries, MNLI-m and MNLI-mm
    apart, no CoLA), from a results table's best weights on the dev sets.

    A run is a student (task stage) or a fine-tuned teacher, identified across tasks by :data:`RUN_KEYS`.
    Args:
        table: a results table (:data:`gapkit.sweep.table.COLUMNS`).
    Returns:
        One row per run with a score on at least one of the entries, in the table's schema: ``task`` and
        ``metric`` ``glue``, ``split`` ``dev``, ``model`` ``best``, ``value`` the average; a run that lacks
        an entry has ``value`` NaN and ``reason`` naming what it lacks (never an average over fewer tasks,
        which would not be the paper's number). Empty when the table holds none of the GLUE tasks.
    Raises:
        DataError: the table lacks the columns.
    """
    import pandas as pd

    from ..data.metrics import glue_score
    from ..sweep.table import results_frame
    from .scores import require_columns

    require_columns(table, [*RUN_KEYS, "task", "split", "metric", "value", "model"], "the paper's GLUE average")
    entries = glue_entries()
    rows = table.assign(value=pd.to_numeric(table["value"], errors="coerce"))
    keep = (rows.model == "best") & rows.value.notna() & (
        ((rows.role == "student") & (rows.stage == "task")) | ((rows.role == "teacher") & (rows.stage == "finetune")))
    if "status" in rows.columns:
        keep &= rows.status.fillna("completed") != "failed"
    pairs = pd.Series(list(zip(rows.task, rows.split)), index=rows.index)
    keep &= pairs.isin([(task, split) for task, split, _ in entries])
    rows = rows[keep]
    out = []
    for key, run in rows.groupby(RUN_KEYS, dropna=False, sort=False):
        scored = {name: dict(zip(run[(run.task == task) & (run.split == split)].metric,
                                 run[(run.task == task) & (run.split == split)].value))
                  for task, split, name in entries}
        missing = [name for name, metrics in scored.items() if not metrics]
        first = run.iloc[0]
        row = dict(zip(RUN_KEYS, key), **{c: first[c] for c in RUN_SIZES if c in run.columns},
                   run=f"glue:{first['run']}" if "run" in run.columns else None, task="glue", split="dev",
                   metric="glue", model="best", status="completed", value=float("nan"))
        if missing:
            row.update(status="incomplete", reason=f"no dev score on {', '.join(missing)}: the paper's GLUE average "
                                                   f"needs all {len(entries)} entries")
        else:
            row["value"] = glue_score(scored)
        out.append(row)
    return results_frame(out)


# ----------------------------------------------------------------------------------------------------
# Do the fine-tuned teachers reach the paper's?
# ----------------------------------------------------------------------------------------------------
def teachers_vs_paper(table, paper=None, tolerance: float = 1.0):
    """The fine-tuned BERT-base and BERT-large teachers of a sweep against the paper's (Table 1: 86.7 and
    88.3 GLUE): a student distilled from a teacher that falls short of the paper's is not the paper's setting.

    Args:
        table: a results table; its teachers named ``bert-base``/``bert-large`` (as in
            configs/sweeps/paper_glue.yaml) or by their Hub names are checked, the others left out.
        paper: the paper's numbers (default :func:`paper_results`).
        tolerance: GLUE points within which a teacher counts as reaching the paper's score.
    Returns:
        One row per checked teacher and teacher seed: ``teacher``, ``teacher_seed``, ``measured`` (its GLUE
        average as the paper computes it; NaN when it lacks an entry), ``paper``, ``difference`` (measured -
        paper), ``within`` (``|difference| <= tolerance``; False when not measured) and ``note``. Empty
        when the table has none of the paper's teachers.
    """
    import pandas as pd

    if tolerance < 0:
        raise DataError(f"teachers_vs_paper's tolerance is a number of GLUE points >= 0, got {tolerance!r}.")
    paper = paper_results() if paper is None else paper
    published = {r.teacher: float(r.value) for r in paper[paper.role == "teacher"].itertuples()}
    labels = {**{label: label for label in TEACHERS.values()}, **TEACHERS}  # a label or its Hub name
    columns = ["teacher", "teacher_seed", "measured", "paper", "difference", "within", "note"]
    teachers = glue_average(table)
    teachers = teachers[(teachers.role == "teacher") & teachers.teacher.isin(list(labels))]
    out = []
    for r in teachers.sort_values(["teacher", "teacher_seed"]).itertuples():
        label = labels[r.teacher]
        measured, theirs = float(r.value), published[label]
        difference = measured - theirs
        within = bool(abs(difference) <= tolerance)  # False for NaN
        if measured != measured:
            note = r.reason
        elif within:
            note = f"within {tolerance:g} GLUE point(s) of the paper's"
        else:
            note = (f"{abs(difference):.1f} GLUE points {'below' if difference < 0 else 'above'} the paper's: students "
                    f"distilled from it are not distilled from the paper's teacher")
        out.append(dict(teacher=r.teacher, teacher_seed=r.teacher_seed, measured=measured, paper=theirs,
                        difference=difference, within=within, note=note))
    frame = pd.DataFrame(out, columns=columns)
    frame["teacher_seed"] = frame["teacher_seed"].astype("Int64")
    return frame


def format_teachers_vs_paper(check) -> str:
    """:func:`teachers_vs_paper`'s rows as lines a person reads: measured vs paper and the difference."""
    if check.empty:
        return ("No teacher of these results is one of the paper's (bert-base, bert-large), fine-tuned on its GLUE "
                "tasks: nothing to check against Table 1.")
    lines = ["Fine-tuned teachers against the paper's Table 1 (GLUE average, dev, 8 entries: MNLI-m and -mm apart, "
             "no CoLA):"]
    for r in check.itertuples():
        seed = "" if r.teacher_seed is None or r.teacher_seed != r.teacher_seed else f" (teacher seed {r.teacher_seed})"
        if r.measured != r.measured:  # NaN: an entry is missing
            lines.append(f"  {r.teacher}{seed}: not measured vs paper {r.paper:.1f}: {r.note}.")
        else:
            lines.append(f"  {r.teacher}{seed}: measured {r.measured:.1f} vs paper {r.paper:.1f}, difference "
                         f"{r.difference:+.1f}: {r.note}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The paper's figure, on its own axes
# ----------------------------------------------------------------------------------------------------
def _measured_points(table, task: str | None, metric: str | None):
    """A sweep's student points for the paper's figure: the paper's GLUE average when the table holds
    every one of its tasks (or ``task="glue"``), else :func:`~gapkit.analysis.plots.student_points`."""
    from ..errors import ConfigError
    from .plots import student_points

    conventions = sorted(set(table["convention"].dropna())) if "convention" in table.columns else []
    if conventions and conventions != ["paper"]:
        raise ConfigError(f"The table's students are counted in the {', '.join(conventions)} FLOP convention and the "
                          f"paper's axis in paper: build the table under it "
                          f"(gapkit.sweep.build_table(dir, convention='paper')).")
    tasks = set(table.task.dropna()) if "task" in table.columns else set()
    if task == "glue" or (task is None and metric is None and set(PAPER_GLUE_TASKS) <= tasks):
        missing = sorted(set(PAPER_GLUE_TASKS) - tasks)
        if missing:
            raise ConfigError(f"The paper's GLUE average needs scores on {', '.join(PAPER_GLUE_TASKS)}; the table "
                              f"lacks {', '.join(missing)}: pass task= one of its tasks instead.")
        return student_points(glue_average(table))
    return student_points(table, metric, task)


def _same_score(points, ours) -> bool:
    return all(set(points[c].dropna()) == set(ours[c].dropna()) for c in ("task", "metric", "split"))


def _label(rows, whose: str = "") -> str:
    """A y label naming what is drawn: the metric, its task and split (and whose values, when given)."""
    metric, task, split = (rows[c].dropna().iloc[0] for c in ("metric", "task", "split"))
    where = "mean over tasks" if task == "mean" else task
    what = f"GLUE average ({split})" if metric == "glue" else f"{metric} ({where}, {split})"
    return f"{what}, {whose}" if whose else what


def plot_paper_figure(paper=None, measured=None, task: str | None = None, metric: str | None = None):
    """The paper's curse figure as the paper draws it: student GLUE against student GFLOPs on a linear axis
    from 0 to 1.4 (paper convention), one line per teacher, the panels (without / with a teacher assistant,
    and plain KD when a sweep has it) stacked, sharing the x axis.

    Args:
        paper: the paper's numbers (default :func:`paper_results`); its figure points are drawn (hollow
            markers, dashed when a sweep is drawn too). Their x is the exact count of each student's shape;
            the smallest student, whose shape the paper does not give, sits at the figure's own rounded 0.04.
        measured: optional results table of a sweep, drawn solid with 95% intervals over seeds. Its
            students are drawn by the paper's GLUE average (:func:`glue_average`) when it holds all the
            paper's GLUE tasks, else by ``task``/``metric`` as in
            :func:`~gapkit.analysis.plots.student_points`.
        task, metric: what to draw of ``measured`` (``task="glue"``: the paper's average).
    Returns:
        The Figure: one axes per panel; where the sweep's score is not the paper's (another task or metric),
        the paper's points get a y axis of their own on the right, labelled with what they measure.
    Raises:
        ConfigError: the sweep's table cannot give the points, or counts GFLOPs in another convention.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from .plots import CURSE_PANELS
    from .style import figure_style, ordered_colours

    paper = paper_results() if paper is None else paper
    ours = paper[(paper.source == "paper") & (paper.role == "student") & paper.gflops.notna()]
    mine = _measured_points(measured, task, metric) if measured is not None else None
    has = (lambda frame, m: frame is not None and (frame.method == m).any())
    panels = [(m, title) for m, title in CURSE_PANELS if has(ours, m) or has(mine, m)]
    shared = mine is None or _same_score(mine, ours)
    teachers = list(TEACHERS.values())  # smallest first, as gapkit colours teachers
    if mine is not None:
        teachers += sorted(set(mine.teacher) - set(teachers))
    colours = ordered_colours(teachers)
    xs = list(ours.gflops) + (list(mine.gflops.dropna()) if mine is not None else [])
    right_edge = PAPER_XLIM[1] if max(xs) <= PAPER_XLIM[1] else 1.05 * max(xs)  # a bigger sweep widens it
    with figure_style():
        fig, axes = plt.subplots(len(panels), 1, sharex=True, sharey=True, squeeze=False,
                                 figsize=(5.0, 2.6 * len(panels) + 0.9))
        legend, twins = {}, []
        for ax, (method, title) in zip(axes[:, 0], panels):
            right = ax
            if not shared and has(ours, method):  # the paper's values on a y axis of their own
                right = ax.twinx()
                right.grid(False)  # the panel's own grid is the one to read
                if twins:
                    right.sharey(twins[0])
                twins.append(right)
            for teacher in teachers:
                if mine is not None:
                    p = mine[(mine.method == method) & (mine.teacher == teacher)].sort_values("gflops")
                    if not p.empty:
                        yerr = np.vstack([p["mean"] - p.ci_low, p.ci_high - p["mean"]]).astype(float)
                        legend[teacher] = ax.errorbar(p.gflops.astype(float), p["mean"].astype(float), yerr=yerr,
                                                      color=colours[teacher], marker="o", label=teacher)
                q = ours[(ours.method == method) & (ours.teacher == teacher)].sort_values("gflops")
                if not q.empty:
                    name = f"{teacher} (paper)" if mine is not None else teacher
                    legend[name], = right.plot(q.gflops, q.value, linestyle="--" if mine is not None else "-",
                                               marker="o", markerfacecolor="white", color=colours[teacher], label=name)
            ax.set_title(title)
            ax.set_xlim(PAPER_XLIM[0], right_edge)
            if mine is not None and not shared:
                ax.set_ylabel(_label(mine, "measured"))
                if right is not ax:
                    right.set_ylabel(_label(ours, "paper"))
            else:  # one score: the legend tells the sweep's lines from the paper's (dashed)
                ax.set_ylabel(_label(ours, "paper") if mine is None else _label(mine))
        bottom = axes[-1, 0]
        if right_edge == PAPER_XLIM[1]:
            bottom.set_xticks(np.round(np.arange(0.0, 1.41, 0.2), 1))
        bottom.set_xlabel("student GFLOPs (paper convention: linear layers, sequence length 128)")
        if mine is None:  # the paper's scores rise with student size: the top panel's lower right is free
            axes[0, 0].legend(handles=list(legend.values()), labels=list(legend), title="teacher", loc="lower right",
                              fontsize=7)
        else:  # a sweep's lines may be anywhere: beside the panels
            fig.legend(handles=list(legend.values()), labels=list(legend), title="teacher", loc="center left",
                       bbox_to_anchor=(1.0, 0.5), fontsize=7)
        fig.suptitle("Curse of capacity gap: student GLUE by teacher (the paper's figure)"
                     if mine is None else "Curse of capacity gap: a sweep beside the paper's figure")
        note = ("paper: values read from the figure in the authors' repository README (about +-0.1 GLUE)\n"
                "x: exact GFLOPs of each student's shape; 0.04 is the figure's own value (shape not given)")
        if mine is not None:
            n = mine.n_seeds
            note += f"\nsweep: mean over {n.min()}{'' if n.min() == n.max() else f'-{n.max()}'} seed(s) per point" + (
                "; bars: 95% t-interval over seeds" if n.max() > 1 else "")
        fig.text(0.01, -0.01, note, fontsize=6.5, color="0.35", ha="left", va="top")
        fig.tight_layout()
    return fig


def figure_axes(fig):
    """What each panel of a figure draws, for a reader (and a test) to check its axes: one row per panel
    (axes with a title, top to bottom) with its grid ``row`` and ``column``, ``xscale``, ``xmin``/``xmax``,
    ``xlabel`` (the panel's or, when shared, the bottom panel's), ``ylabel`` and ``right_ylabel`` (a
    twin y axis of its own, or empty)."""
    import pandas as pd

    panels = [ax for ax in fig.axes if ax.get_title()]
    xlabel = next((ax.get_xlabel() for ax in reversed(panels) if ax.get_xlabel()), "")
    rows = []
    for ax in panels:
        spec = ax.get_subplotspec()
        twin = next((t for t in fig.axes if t is not ax and not t.get_title()
                     and t.get_position().bounds == ax.get_position().bounds), None)
        lo, hi = ax.get_xlim()
        rows.append(dict(panel=ax.get_title(), row=spec.rowspan.start, column=spec.colspan.start,
                         xscale=ax.get_xscale(), xmin=round(lo, 4), xmax=round(hi, 4),
                         xlabel=ax.get_xlabel() or xlabel, ylabel=ax.get_ylabel(),
                         right_ylabel=twin.get_ylabel() if twin is not None else ""))
    return pd.DataFrame(rows, columns=["panel", "row", "column", "xscale", "xmin", "xmax", "xlabel", "ylabel",
                                       "right_ylabel"])
