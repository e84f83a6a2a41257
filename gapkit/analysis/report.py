"""All the analysis tables of one results table: computed, printed, written as CSV (``gapkit report``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .scores import known as _known
from .verdicts import default_baseline  # defined beside the lift test it serves; asked for here too

__all__ = ["load_table", "report", "format_report", "write_report", "not_estimable", "REPORT_TABLES", "seeds_plan",
           "format_seeds_plan", "warnings"]

REPORT_TABLES = ("teacher_check", "teacher_scores", "student_scores", "curse", "lift", "above_teacher",
                 "teacher_scale_fit", "gap_curves")


def load_table(path: str | Path):
    """A results table from a sweep folder (its results.parquet, else results.csv, else rebuilt from the run
    folders) or from a results ``.parquet``/``.csv`` file.

    Raises:
        DataError: nothing readable there (one sentence naming the path).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (path / name).is_file():
                return load_table(path / name)
        if (path / "plan.json").is_file():
            from ..sweep.table import build_table

            return build_table(path)
        raise DataError(f"{path} holds no results table (results.parquet or results.csv) and no sweep plan: give a "
                        f"sweep's output_dir or a results file.")
    if not path.exists():
        raise DataError(f"No results file or sweep folder at {path}: give a sweep's output_dir (it holds results once "
                        f"the sweep has run) or a results .parquet/.csv file.")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise DataError(f"{path} is neither a .parquet nor a .csv results table.")
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, dtype={"experts": "string", "student": "string", "teacher": "string"})
    except Exception as err:  # pyarrow and the CSV parser raise many types for a corrupt file
        first = " ".join(str(err).split())[:200]
        raise DataError(f"Cannot read {path} as a results table ({type(err).__name__}: {first}).") from None
    return resolve_run_dirs(table, path.resolve().parent)


def resolve_run_dirs(table, base: Path):
    """``table`` with the relative ``run_dir`` values of an exported table (gapkit results --export: runs named
    relative to the table's folder ``base``) made absolute; other values (a sweep's own table) unchanged."""
    if "run_dir" in table.columns:
        table["run_dir"] = table.run_dir.map(
            lambda d: str(base / d) if isinstance(d, str) and d and not Path(d).is_absolute() and (base / d).is_dir()
            else d)
    return table


def report(table, metric: str | None = None, split: str | None = None, baseline: str | None = None,
           family: str | None = None, level: float = 0.95, effect: float | None = None, examples: bool = True,
           token_tasks: bool = False) -> dict:
    """Every analysis table of ``table``.

    Args:
        table: a results table (see :func:`load_table`).
        metric, split, level: as in :func:`gapkit.analysis.student_scores`; ``level`` is also 1 - alpha of
            the curse and lift tests.
        baseline: the dense method whose curse the others lift (:func:`gapkit.analysis.lift_test`); None:
            :func:`default_baseline`.
        family: restrict the curse and lift tests to one ``teacher_family`` (None: all teachers of a task).
        effect: a curse (and lift) size in metric points to plan for: ``seeds_for`` in those tables.
        examples, token_tasks: use the runs' stored dev predictions for the example part of the variance
            (:class:`gapkit.analysis.verdicts.Design`).
    Returns:
        ``{name: DataFrame}`` for the names of :data:`REPORT_TABLES`: ``teacher_check`` (each teacher
        fine-tune against chance and the majority class at alpha ``1 - level``,
        :func:`gapkit.analysis.teacher_check.teacher_checks`), ``teacher_scores`` (with the verdict in
        ``check``), ``student_scores`` (students of a teacher not shown above the majority class carry a
        note), ``curse`` (:func:`~gapkit.analysis.curse_test`), ``lift`` (:func:`~gapkit.analysis.lift_test`),
        ``above_teacher`` (students above their own teacher by more than noise,
        :func:`gapkit.analysis.above_teacher.student_above_teacher`), ``teacher_scale_fit`` and ``gap_curves``
        (every axis, stacked).
    Raises:
        DataError: a table with no score at all (no rows, every run failed, no finished task-stage student or
            fine-tuned teacher), in one sentence that says which; missing columns.
    """
    from .gap import gap_curves, teacher_scale_fit
    from .scores import require_scores, student_scores, teacher_scores
    from .above_teacher import student_above_teacher
    from .teacher_check import teacher_checks
    from .verdicts import Design, curse_test, lift_test

    require_scores(table)

    baseline = default_baseline(table) if baseline is None else baseline
    checks = teacher_checks(table, 1 - level)
    table = _with_checks(table, checks)  # the verdicts' notes name a teacher not above chance
    design = Design(table, family, metric, split, examples, token_tasks)
    curse = curse_test(table, level=level, effect=effect, design=design)
    return dict(
        teacher_check=checks,
        teacher_scores=_mark_teachers(teacher_scores(table, metric, split, level), checks),
        student_scores=_mark_students(student_scores(table, metric, split, level), checks),
        curse=curse,
        lift=lift_test(table, baseline, level=level, effect=effect, design=design, curse=curse),
        above_teacher=student_above_teacher(table, level, examples, design),
        teacher_scale_fit=teacher_scale_fit(table, family, metric, split),
        gap_curves=gap_curves(table, metric, split, level),
    )


def _teacher_verdicts(checks) -> dict:
    """``{(task, teacher): verdict}`` over a teacher's fine-tunes: their one verdict, or each counted."""
    out = {}
    for (task, teacher), group in checks.groupby(["task", "teacher"], sort=False, dropna=False):
        counts = group.verdict.value_counts(sort=False)
        out[(task, teacher)] = (counts.index[0] if len(counts) == 1 else
                                ", ".join(f"{v} ({n} of {len(group)} fine-tunes)" for v, n in counts.items()))
    return out


def _with_checks(table, checks):
    """``table`` with ``teacher_check`` at the report's level (from ``checks``) where a teacher was checked:
    the column the curse and lift notes read."""
    if checks.empty:
        return table
    verdicts = _teacher_verdicts(checks)
    table = table.copy()
    fresh = [verdicts.get((t, n)) for t, n in zip(table.task, table.teacher)]
    old = table["teacher_check"] if "teacher_check" in table.columns else [None] * len(table)
    table["teacher_check"] = [f if f is not None and not (isinstance(o, str) and o.startswith("not tested (learned"))
                              else o for f, o in zip(fresh, old)]
    return table


def _mark_teachers(frame, checks):
    """The teachers table with each teacher's ``check``; a teacher not shown above the majority class gets a
    note with its numbers."""
    from .teacher_check import describe, flagged

    verdicts = _teacher_verdicts(checks)
    frame = frame.copy()
    frame["check"] = [verdicts.get((t, n), "") for t, n in zip(frame.task, frame.teacher)]
    for i, r in frame.iterrows():
        bad = checks[(checks.task == r.task) & (checks.teacher == r.teacher) & checks.verdict.map(flagged)]
        if len(bad):
            first = bad.iloc[0].to_dict()
            text = f"{first['verdict']}: {describe(first)}"
            frame.at[i, "note"] = f"{r.note}; {text}" if _known(r.note) and r.note else text
    return frame


def _mark_students(frame, checks):
    """Students of a teacher not shown above the majority class carry a note saying so."""
    from .teacher_check import flagged

    verdicts = _teacher_verdicts(checks)
    frame = frame.copy()
    for i, r in frame.iterrows():
        verdict = verdicts.get((r.task, r.teacher))
        if verdict is not None and any(flagged(v) for v in checks[(checks.task == r.task)
                                                                    & (checks.teacher == r.teacher)].verdict):
            text = (f"teacher {r.teacher} {verdict} on dev: this student did not learn from a working teacher "
                    f"(docs/analysis.md, teacher check)")
            frame.at[i, "note"] = f"{r.note}; {text}" if _known(r.note) and r.note else text
    return frame


def write_report(tables: dict, out_dir: str | Path) -> list[Path]:
    """Write each table as ``<name>.csv`` into ``out_dir`` (created; each file written atomically)."""
    from ..io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write(out / f"{name}.csv", frame.to_csv(index=False)) for name, frame in tables.items()]


# The estimate a table's notes refer to when a note does not name one ("not estimable: 1 teacher ...").
_ESTIMATES = {"curse": "curse", "lift": "lift", "teacher_scale_fit": "fit"}


def not_estimable(tables: dict):
    """Every estimate of a report the data cannot support, with the reason, one row each.

    Args:
        tables: ``{name: DataFrame}`` as :func:`report` returns (any subset); the ``note`` column of each
            table is read, its ``; ``-separated parts that say ``not estimable``.
    Returns:
        A DataFrame with ``table``, the row's labels (``task``, ``student``, ``experts``, ``method``;
        ``space`` for the fits), ``estimate`` (what cannot be estimated: ``onset``, ``test``,
        ``recovered``, ``R^2`` ...) and ``reason``; empty when everything was estimable.
    """
    import pandas as pd

    from .gap import NOT_ESTIMABLE

    labels = ["task", "student", "experts", "method", "space"]
    rows = []
    for name, frame in tables.items():
        if "note" not in frame.columns:
            continue
        for _, r in frame.iterrows():
            for part in (str(r["note"]).split("; ") if _known(r["note"]) else []):
                if NOT_ESTIMABLE not in part:
                    continue
                what, _, reason = part.partition(f"{NOT_ESTIMABLE}: ")
                rows.append(dict(table=name, **{c: r.get(c) for c in labels},
                                 estimate=what.strip() or _ESTIMATES.get(name, name), reason=reason.strip()))
    return pd.DataFrame(rows, columns=["table", *labels, "estimate", "reason"])


# ----------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------
def _params(v) -> str:
    if not _known(v):
        return ""
    v = float(v)
    if v == float("inf"):
        return "inf"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.0f}"


def _fixed(v, digits: int = 2) -> str:
    return f"{float(v):.{digits}f}" if _known(v) else ""


def _sig(v) -> str:
    return f"{float(v):.3g}" if _known(v) else ""


def _share(v) -> str:
    return f"{float(v):.0%}" if _known(v) else ""


def _with_interval(frame, column: str, fmt, bounds: str | None = None) -> list[str]:
    """``value [low, high]`` cells (just the value without an interval); the bounds are the columns
    ``<bounds>_low`` and ``<bounds>_high`` (``bounds`` defaults to ``column``)."""
    cells = []
    bounds = bounds or column
    for _, r in frame.iterrows():
        cell = fmt(r[column])
        low, high = r.get(f"{bounds}_low"), r.get(f"{bounds}_high")
        if cell and _known(low) and _known(high):
            cell += f" [{fmt(low)}, {fmt(high)}]"
        cells.append(cell)
    return cells


def _text(v) -> str:
    return str(v) if _known(v) else ""


def _display(name: str, frame):
    """The printed columns of one report table (formatted strings)."""
    import pandas as pd

    f = frame
    if name == "teacher_scores":
        cols = dict(task=f.task.map(_text), teacher=f.teacher.map(_text), params=f.teacher_params.map(_params),
                    gflops=f.teacher_gflops.map(_sig), metric=f.metric.map(_text), seeds=f.n_seeds.map(_text),
                    mean=f["mean"].map(_fixed), std=f["std"].map(_fixed),
                    interval=[f"[{_fixed(a)}, {_fixed(b)}]" if _known(a) else "" for a, b in zip(f.ci_low, f.ci_high)],
                    check=f.check.map(_text) if "check" in f else [""] * len(f), note=f.note.map(_text))
    elif name == "teacher_check":
        cols = {"task": f.task.map(_text), "teacher": f.teacher.map(_text), "FT seed": f.teacher_seed.map(_text),
                "verdict": f.verdict.map(_text), "metric": f.metric.map(_text), "score": f.score.map(_fixed),
                "chance": f.chance.map(_fixed), "majority": f.majority.map(_fixed), "n": f.n.map(_count),
                "p vs chance": f.p_chance.map(_p), "p vs majority": f.p_majority.map(_p)}
    elif name == "above_teacher":
        cols = {"task": f.task.map(_text), "teacher": f.teacher.map(_text), "student": f.student.map(_text),
                "experts": f.experts.map(_text), "method": f.method.map(_text),
                "n": [f"{_text(n)} {_units(u)}" if _known(n) else "" for n, u in zip(f.n_units, f.units)],
                "teacher score": f.teacher_score.map(_fixed), "student score": f.student_score.map(_fixed),
                "student - teacher": _with_interval(f, "above", _fixed), "p (Holm)": f.p_holm.map(_p),
                "verdict": f.verdict.map(_text), "note": f.note.map(_text)}
    elif name == "student_scores":
        cols = dict(task=f.task.map(_text), teacher=f.teacher.map(_text), student=f.student.map(_text),
                    experts=f.experts.map(_text), method=f.method.map(_text), params=f.params_total.map(_params),
                    active=f.params_active.map(_params), gflops=f.gflops.map(_sig),
                    **{"T/S params": f.ratio_params.map(_sig), "T/S gflops": f.ratio_gflops.map(_sig)},
                    metric=f.metric.map(_text), seeds=f.n_seeds.map(_text), mean=f["mean"].map(_fixed),
                    std=f["std"].map(_fixed),
                    interval=[f"[{_fixed(a)}, {_fixed(b)}]" if _known(a) else "" for a, b in zip(f.ci_low, f.ci_high)],
                    note=f.note.map(_text))
    elif name == "curse":
        cols = {"task": f.task.map(_text), "student": f.student.map(_text), "experts": f.experts.map(_text),
                "method": f.method.map(_text),
                "smallest -> largest": [f"{_text(a)} -> {_text(b)}" if _known(a) else "" for a, b in
                                        zip(f.smallest_teacher, f.largest_teacher)],
                "n": [f"{_text(n)} {_units(u)}" if _known(n) else "" for n, u in zip(f.n_units, f.units)],
                "drop": _with_interval(f, "curse_drop", _fixed, "drop"), "p (Holm)": f.p_holm.map(_p),
                "verdict": f.verdict.map(_text), "trend/2x": _with_interval(f, "trend", _fixed),
                "best teachers": f.best_teachers.map(_text), "onset T/S params": _onset_cells(f),
                "mde": f.mde.map(_fixed)}
        if f.get("seeds_for") is not None and f.seeds_for.notna().any():
            cols[f"{_units_name(f)} for {_fixed(f.effect.dropna().iloc[0])}"] = f.seeds_for.map(_count)
    elif name == "lift":
        cols = {"task": f.task.map(_text), "student": f.student.map(_text), "method": f.method.map(_text),
                "experts": f.experts.map(_text),
                "vs": [f"{_text(b)} {_text(bs)}" if _known(bs) and bs != st else _text(b)
                       for b, bs, st in zip(f.baseline, f.get("baseline_student", f.student), f.student)],
                "n": [f"{_text(n)} {_units(u)}" if _known(n) else "" for n, u in zip(f.n_units, f.units)],
                "drop base/method": [f"{_fixed(a)} / {_fixed(b)}" if _known(a) else "" for a, b in
                                     zip(f.baseline_drop, f.method_drop)],
                "lift": _with_interval(f, "lift", _fixed), "p (Holm)": f.p_holm.map(_p),
                "verdict": f.verdict.map(_text), "gain at largest": _with_interval(f, "gain_at_largest", _fixed, "gain"),
                "recovered": _with_interval(f, "recovered", _sig), "mde": f.mde.map(_fixed)}
        if f.get("seeds_for") is not None and f.seeds_for.notna().any():
            cols[f"{_units_name(f)} for {_fixed(f.effect.dropna().iloc[0])}"] = f.seeds_for.map(_count)
    elif name == "teacher_scale_fit":
        cols = dict(task=f.task.map(_text), experts=f.experts.map(_text), method=f.method.map(_text),
                    size=f["size"].map(_text), space=f.space.map(_text), points=f.n_points.map(_text),
                    slope=f.slope.map(_sig), intercept=f.intercept.map(_sig), r2=f.r2.map(_sig),
                    note=f.note.map(_text))
    else:
        return frame
    return pd.DataFrame({k: list(v) for k, v in cols.items()})


def _p(v) -> str:
    if not _known(v):
        return ""
    return "<0.001" if v < 0.001 else f"{float(v):.3f}"


def _count(v) -> str:
    if not _known(v):
        return ""
    return ">10000" if float(v) == float("inf") else f"{int(v)}"


def _units(u) -> str:
    return {"seeds": "seeds", "teacher fine-tunes": "FTs"}.get(u, _text(u))


def _units_name(f) -> str:
    units = set(f.units.dropna()) if "units" in f else set()
    return "fine-tunes" if units == {"teacher fine-tunes"} else "seeds"


def _onset_cells(f) -> list[str]:
    cells = []
    for kind, ratio in zip(f.onset_kind, f.onset_ratio_params):
        if not _known(ratio):
            cells.append("")
        else:
            cells.append(f"<= {_sig(ratio)}" if kind == "upper bound" else f"~{_sig(ratio)}")
    return cells


def _titles(level: float, baseline: str) -> dict:
    alpha = 1 - level
    return {
        "teacher_check": f"Teachers against chance and the majority class (best weights on dev; one-sided exact "
                         f"binomial test of accuracy, alpha {alpha:.2g} per teacher; regression: correlation > 0; "
                         f"token tasks: tags per sentence against the all-O tagger): a teacher not shown above the "
                         f"majority class taught its students nothing the labels do not",
        "teacher_scores": f"Teachers' own scores (best weights; mean over seeds, {level:.0%} t-interval; check: "
                          f"against chance, see above)",
        "student_scores": f"Student scores (best weights; mean over seeds, {level:.0%} t-interval; "
                          f"T/S = teacher/student)",
        "curse": f"Curse of capacity gap per student: drop = smallest teacher's student - largest teacher's, paired "
                 f"by replicate ({level:.0%} interval); verdict from the two-sided test, Holm-corrected over all "
                 f"students at alpha {alpha:.2g}; trend/2x: points per doubling of teacher size; mde: smallest drop "
                 f"detectable with 80% power",
        "lift": f"Lift of the curse against {baseline}: lift = drop({baseline}) - drop(method), paired by replicate; "
                f"Holm-corrected at alpha {alpha:.2g}; recovered = lift / drop({baseline}) (Fieller interval), only "
                f"where {baseline}'s curse is established",
        "above_teacher": f"Students above their own teacher by more than noise: student - teacher on the same dev "
                         f"examples, each replicate against the teacher fine-tune it learned from ({level:.0%} "
                         f"interval); one-sided test, Holm-corrected at alpha {alpha:.2g}; established: the labels, "
                         f"not the teacher, made that score",
        "teacher_scale_fit": "Top teacher size against student size, least squares over students whose top teacher is "
                             "inside the measured sizes (MiniMA, arXiv 2311.07052)",
        "gap_curves": "Gap curves",
    }


# The columns that name a row, repeated in every column group of a table too wide for the terminal.
KEY_COLUMNS = {"teacher_check": ("task", "teacher"), "above_teacher": ("task", "teacher", "student", "experts", "method"),
               "teacher_scores": ("task", "teacher"), "student_scores": ("task", "teacher", "student", "experts", "method"),
               "curse": ("task", "student", "experts", "method"), "lift": ("task", "student", "method", "experts"),
               "teacher_scale_fit": ("task", "experts", "method", "size", "space")}
WIDTH = 120  # a report fits this many columns unless asked for full width (gapkit report --wide)


def _rendered(shown) -> str:
    return shown.to_string(index=False, justify="left")


def _fit_columns(shown, keys: tuple[str, ...], width: int | None) -> str:
    """A table in column groups no wider than ``width``, each group led by the row-naming ``keys`` columns
    (one block when it fits, or when ``width`` is None)."""
    text = _rendered(shown)
    if width is None or max(map(len, text.splitlines()), default=0) <= width:
        return text
    keys = [k for k in keys if k in shown.columns]
    groups, current = [], []
    for column in [c for c in shown.columns if c not in keys]:
        trial = current + [column]
        if current and max(map(len, _rendered(shown[keys + trial]).splitlines())) > width:
            groups.append(current)
            trial = [column]
        current = trial
    groups.append(current)
    return "\n\n".join(_rendered(shown[keys + group]) for group in groups)


def wrap_lines(text: str, width: int | None, indent: str = "") -> str:
    """``text`` with each line longer than ``width`` wrapped (continuations indented past a list marker)."""
    import textwrap

    if width is None:
        return text
    def hang(line: str) -> str:  # under the text of "- ..." and "  [3] ..." items
        return indent or " " * (len(line) - len(line.lstrip(" -[]0123456789")))

    return "\n".join(textwrap.fill(line, width, subsequent_indent=hang(line), break_on_hyphens=False)
                     if len(line) > width else line for line in text.splitlines())


def format_report(tables: dict, level: float = 0.95, baseline: str = "minilm", width: int | None = WIDTH) -> str:
    """The report as aligned text: each table under its title (empty cells where nothing is estimable), the
    notes of the tables as numbered lines under them, and a closing summary of what the tests establish.
    ``gap_curves`` is summarised in one line (its CSV holds the points).

    Args:
        width: the widest line (default 120 columns): longer titles, notes and sentences wrap, and a table
            wider than this is printed in groups of columns, each led by the columns that name its rows.
            None prints every table in one piece (``gapkit report --wide``).
    """
    titles = _titles(level, baseline)
    parts = []
    for name, frame in tables.items():
        title = titles.get(name, name)
        if name == "gap_curves":
            axes = ", ".join(dict.fromkeys(frame.axis)) if len(frame) else "none"
            parts.append(wrap_lines(f"{title}: {len(frame)} points on the axes {axes} (gap_curves.csv).", width))
            continue
        shown = _display(name, frame)
        notes = ""
        if "note" in shown.columns and not frame.empty:
            # Notes leave the table (they are sentences): numbered under it, the row keeps the number.
            numbered, lines = [], []
            for i, r in enumerate(frame.reset_index(drop=True).itertuples()):
                note = getattr(r, "note", None)
                if _known(note) and note:
                    lines.append(f"  [{len(lines) + 1}] {_note_label(name, r._asdict())}: {note}")
                    numbered.append(f"[{len(lines)}]")
                else:
                    numbered.append("")
            shown = shown.assign(note=numbered) if lines else shown.drop(columns="note")
            notes = ("\nnotes:\n" + wrap_lines("\n".join(lines), width, indent="      ")) if lines else ""
        elif name in ("curse", "lift") and not frame.empty:
            lines = [f"  [{i + 1}] {_row_label(r)}: {r.note}" for i, r in frame.reset_index(drop=True).iterrows()
                     if _known(r.note) and r.note]
            notes = ("\nnotes:\n" + wrap_lines("\n".join(lines), width, indent="      ")) if lines else ""
        body = "(none)" if frame.empty else _fit_columns(shown, KEY_COLUMNS.get(name, ()), width)
        head = wrap_lines(title, width)
        rule = "-" * min(max(map(len, head.splitlines())), 100)
        parts.append(f"{head}\n{rule}\n{body}{notes}")
    warned = warnings(tables)
    if warned:
        parts.append(wrap_lines(warned, width, indent="  "))
    if "curse" in tables:
        parts.append(wrap_lines(summary(tables, level), width, indent="  "))
    return "\n\n".join(parts)


def warnings(tables: dict) -> str:
    """The report's warnings, in sentences: each teacher not shown above chance or the majority class (its
    students learned from no working teacher), and each student established above its own teacher (the labels
    did the work); empty when there is none."""
    from .teacher_check import describe, flagged

    lines = []
    checks = tables.get("teacher_check")
    if checks is not None:
        for r in checks.itertuples():
            if flagged(r.verdict):
                seed = f" (fine-tune seed {r.teacher_seed})" if _known(r.teacher_seed) else ""
                lines.append(f"- teacher {r.task} {r.teacher}{seed}: {r.verdict}: {describe(r._asdict())}. Its "
                             f"students learned from no working teacher: their scores, and every curse or lift test "
                             f"it enters, measure the labels and the students, not distillation from it.")
    above = tables.get("above_teacher")
    if above is not None:
        for _, r in above[above.established == "yes"].iterrows():
            experts = f"-{r.experts}" if _known(r.experts) and r.experts != "dense" else ""
            lines.append(f"- student {r.task} {r.student}{experts} {r.method} from {r.teacher}: above its own teacher "
                         f"by {_fixed(r.above)} points [{_fixed(r.above_low)}, {_fixed(r.above_high)}], p (Holm) "
                         f"{_p(r.p_holm)}: the hard labels (or the student's own training), not the teacher, made "
                         f"that score.")
    if not lines:
        return ""
    return "Warnings (teachers against chance; students above their own teacher by more than noise):\n" + \
        "\n".join(lines)


def _note_label(name: str, r: dict) -> str:
    """Who a table note is about: the row's naming columns (``KEY_COLUMNS``), the dense ``experts`` left out."""
    return " ".join(_text(r.get(k)) for k in KEY_COLUMNS.get(name, ("task",))
                    if _known(r.get(k)) and not (k == "experts" and r.get(k) == "dense"))


def _row_label(r) -> str:
    experts = f"-{r.experts}" if _known(r.get("experts")) and r.experts != "dense" else ""
    return f"{_text(r.task)} {_text(r.student)}{experts} {_text(r.method)}"


def summary(tables: dict, level: float = 0.95) -> str:
    """What the report's tests establish, in sentences: each established verdict with its effect, interval and
    Holm p; for the rest, that nothing is established, the smallest effect the design could detect, and the
    replicates a given effect needs."""
    lines = ["What the tests establish (two-sided, Holm-corrected, alpha "
             f"{1 - level:.2g}; docs/analysis.md):"]
    for name, what, column in (("curse", "curse", "curse_drop"), ("lift", "lift", "lift")):
        frame = tables.get(name)
        if frame is None or frame.empty:
            continue
        for _, r in frame.iterrows():
            label = _row_label(r)
            if name == "lift":
                other = r.get("baseline_student")
                label += f" vs {r.baseline}" + (f" {other}" if _known(other) and other != r.student else "")
            low, high = r.get("drop_low" if name == "curse" else "lift_low"), r.get(
                "drop_high" if name == "curse" else "lift_high")
            if r.established == "yes":
                lines.append(f"- {what} {label}: {r.verdict}, {_fixed(r[column])} points "
                             f"[{_fixed(low)}, {_fixed(high)}], p (Holm) {_p(r.p_holm)}, over {r.n_units} "
                             f"{r.units} ({r.scope}).")
            elif _known(r.get("p_holm")):
                need = ""
                if _known(r.get("seeds_for")) and float(r.seeds_for) == float("inf"):
                    need = (f"; no number of {r.units} would detect {_fixed(r.effect)} points with 80% power on these "
                            f"{_count(r.n_examples)} dev examples (their own variance is too large: a larger "
                            f"evaluation set is needed)" if _known(r.get("n_examples")) else
                            f"; more than 10000 {r.units} would be needed to detect {_fixed(r.effect)} points")
                elif _known(r.get("seeds_for")):
                    need = (f"; {_count(r.seeds_for)} {r.units} would detect {_fixed(r.effect)} points with 80% power")
                lines.append(f"- {what} {label}: not established ({_fixed(r[column])} points [{_fixed(low)}, "
                             f"{_fixed(high)}], p (Holm) {_p(r.p_holm)}); this design detects {_fixed(r.mde)} points "
                             f"with 80% power{need}.")
            else:
                lines.append(f"- {what} {label}: not tested ({r.note.split('; ')[0] if _known(r.note) else ''}).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Seeds for a planned sweep, from a pilot's variances
# ----------------------------------------------------------------------------------------------------
def seeds_plan(pilot, effect: float, level: float = 0.95):
    """How many replicates each student's curse (and each method's lift) test needs to detect ``effect``
    metric points with 80% power, from a finished pilot sweep's variance components.

    Returns:
        One row per test: ``test`` (curse or lift), task, student, experts, method, units, n_units (the
        pilot's), unit_sd, mde (the pilot design's), seeds_for, note.
    """
    import pandas as pd

    tables = report(pilot, level=level, effect=effect)
    columns = ["test", "task", "student", "experts", "method", "units", "n_units", "unit_sd", "mde", "seeds_for", "note"]
    frames = [tables[name].assign(test=name) for name in ("curse", "lift") if not tables[name].empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat([f[[c for c in columns if c in f.columns]] for f in frames], ignore_index=True)[columns]


def format_seeds_plan(plan, effect: float, pilot_dir, planned_seeds: int, planned_teacher_seeds: int = 1) -> str:
    """The seeds table under a dry run: per test, the replicates the pilot says are needed, against the plan."""
    import pandas as pd

    head = (f"Seeds to detect {effect:g} metric points with 80% power (two-sided, Holm over the pilot's tests), from "
            f"the variances of the pilot {pilot_dir}; this plan has {planned_seeds} seed(s)"
            f"{f' and {planned_teacher_seeds} teacher fine-tunes' if planned_teacher_seeds > 1 else ''}:")
    if plan.empty:
        return head + "\n(the pilot has no student with 2 or more teachers: nothing to plan from)"
    have = {"seeds": planned_seeds, "teacher fine-tunes": planned_teacher_seeds}
    enough = []
    for r in plan.itertuples():
        if not _known(r.seeds_for):
            enough.append("")
        else:
            planned = have.get(r.units, planned_seeds)
            enough.append("yes" if r.seeds_for <= planned else f"no ({planned})")
    shown = pd.DataFrame({"test": plan.test, "task": plan.task.map(_text), "student": plan.student.map(_text),
                          "experts": plan.experts.map(_text), "method": plan.method.map(_text),
                          "pilot": [f"{_text(n)} {_units(u)}" if _known(n) else "" for n, u in zip(plan.n_units, plan.units)],
                          "unit sd": plan.unit_sd.map(_fixed), "needed": plan.seeds_for.map(_count),
                          "planned enough": enough,
                          "note": [("" if _known(s) else (n.split("; ")[0] if _known(n) else "")) for s, n in
                                   zip(plan.seeds_for, plan.note)]})
    return head + "\n" + shown.to_string(index=False, justify="left")
