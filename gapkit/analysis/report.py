"""All the analysis tables of one results table: computed, printed, written as CSV (``gapkit report``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .scores import known as _known

__all__ = ["load_table", "report", "format_report", "write_report", "not_estimable", "REPORT_TABLES"]

REPORT_TABLES = ("teacher_scores", "student_scores", "curse", "curse_examples", "recovered", "teacher_scale_fit",
                 "gap_curves")


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
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"experts": "string", "student": "string", "teacher": "string"})
    except Exception as err:  # pyarrow and the CSV parser raise many types for a corrupt file
        first = " ".join(str(err).split())[:200]
        raise DataError(f"Cannot read {path} as a results table ({type(err).__name__}: {first}).") from None


def default_baseline(table) -> str:
    """The dense method a sweep's other methods are measured against: ``minilm`` (the paper's) when the table
    has MiniLM students, else plain logit ``kd`` when it has those (the figures make the same choice)."""
    methods = set(table.method.dropna()) if "method" in getattr(table, "columns", ()) else set()
    return "kd" if "minilm" not in methods and "kd" in methods else "minilm"


def report(table, metric: str | None = None, split: str | None = None, baseline: str | None = None,
           family: str | None = None, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Every analysis table of ``table``.

    Args:
        table: a results table (see :func:`load_table`).
        metric, split, level: as in :func:`gapkit.analysis.student_scores`.
        baseline: the dense method whose curse the others recover (:func:`gapkit.analysis.recovered_gap`);
            None: :func:`default_baseline`.
        family: restrict the curse analysis to one ``teacher_family`` (None: all teachers of a task).
        n_resamples, seed: the bootstrap's.
    Returns:
        ``{name: DataFrame}`` for the names of :data:`REPORT_TABLES`: ``teacher_scores``,
        ``student_scores``, ``curse`` (:func:`curse_onset`), ``recovered`` (:func:`recovered_gap`),
        ``teacher_scale_fit`` and ``gap_curves`` (every axis, stacked).
    """
    from .examples import example_curse
    from .gap import curse_onset, gap_curves, recovered_gap, teacher_scale_fit
    from .scores import student_scores, teacher_scores

    baseline = default_baseline(table) if baseline is None else baseline
    return dict(
        teacher_scores=teacher_scores(table, metric, split, level),
        student_scores=student_scores(table, metric, split, level),
        curse=curse_onset(table, family, metric, split, n_resamples, seed, level),
        curse_examples=(example_curse(table, metric, split, min(n_resamples, 1000), seed, level)
                        if "run_dir" in table.columns else _no_run_dirs()),
        recovered=recovered_gap(table, baseline, family, metric, split, n_resamples, seed, level),
        teacher_scale_fit=teacher_scale_fit(table, family, metric, split),
        gap_curves=gap_curves(table, metric, split, level),
    )


def _no_run_dirs():
    import pandas as pd

    from .examples import EXAMPLE_COLUMNS

    return pd.DataFrame([{c: None for c in EXAMPLE_COLUMNS} | dict(
        note="not estimable: the table has no run_dir column (a sweep's table points at its run folders)")])


def write_report(tables: dict, out_dir: str | Path) -> list[Path]:
    """Write each table as ``<name>.csv`` into ``out_dir`` (created; each file written atomically)."""
    from ..io import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write(out / f"{name}.csv", frame.to_csv(index=False)) for name, frame in tables.items()]


# The estimate a table's notes refer to when a note does not name one ("not estimable: 1 teacher ...").
_ESTIMATES = {"curse": "curse", "recovered": "recovered", "teacher_scale_fit": "fit"}


def not_estimable(tables: dict):
    """Every estimate of a report the data cannot support, with the reason, one row each.

    Args:
        tables: ``{name: DataFrame}`` as :func:`report` returns (any subset); the ``note`` column of each
            table is read, its ``; ``-separated parts that say ``not estimable``.
    Returns:
        A DataFrame with ``table``, the row's labels (``task``, ``student``, ``experts``, ``method``;
        ``space`` for the fits), ``estimate`` (what cannot be estimated: ``onset``, ``intervals``,
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


def _with_interval(frame, column: str, fmt) -> list[str]:
    """``value [low, high]`` cells (just the value without an interval)."""
    cells = []
    for _, r in frame.iterrows():
        cell = fmt(r[column])
        low, high = r.get(f"{column}_low"), r.get(f"{column}_high")
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
                    note=f.note.map(_text))
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
        cols = dict(_curse_columns(f), **{"onset T/S params": _with_interval(f, "onset_ratio_params", _sig),
                                          "onset T/S gflops": _with_interval(f, "onset_ratio_gflops", _sig),
                                          "note": f.note.map(_text)})
    elif name == "curse_examples":
        cols = _curse_columns(f, seeds=f.n_seeds.map(_text), examples=f.n_examples.map(_text))
        cols["note"] = f.note.map(_text)
    elif name == "recovered":
        cols = {"task": f.task.map(_text), "student": f.student.map(_text), "method": f.method.map(_text),
                "experts": f.experts.map(_text), "baseline": f.baseline.map(_text),
                "baseline best teacher": f.baseline_best_teacher.map(_text), "largest": f.largest_teacher.map(_text),
                "lost": _with_interval(f, "lost", _fixed), "gain": _with_interval(f, "gain", _fixed),
                "recovered": _with_interval(f, "recovered", _sig), "note": f.note.map(_text)}
    elif name == "teacher_scale_fit":
        cols = dict(task=f.task.map(_text), experts=f.experts.map(_text), method=f.method.map(_text),
                    size=f["size"].map(_text), space=f.space.map(_text), points=f.n_points.map(_text),
                    slope=f.slope.map(_sig), intercept=f.intercept.map(_sig), r2=f.r2.map(_sig),
                    note=f.note.map(_text))
    else:
        return frame
    return pd.DataFrame({k: list(v) for k, v in cols.items()})


def _curse_columns(f, **counts) -> dict:
    """The columns the two curse tables share (``counts`` go after ``teachers``)."""
    return {"task": f.task.map(_text), "student": f.student.map(_text), "experts": f.experts.map(_text),
            "method": f.method.map(_text), "teachers": f.n_teachers.map(_text), **counts,
            "best teacher": [f"{_text(t)} ({_share(s)})" if _known(t) and _known(s) else _text(t)
                             for t, s in zip(f.best_teacher, f.best_share)],
            "best": f.best_score.map(_fixed), "largest": f.largest_teacher.map(_text),
            "at largest": f.largest_score.map(_fixed),
            "curse": [f"{_text(c)} ({_share(s)})" if _known(s) else _text(c) for c, s in zip(f.curse, f.curse_share)],
            "drop": _with_interval(f, "curse_drop", _fixed)}


def _titles(level: float, baseline: str, n_resamples: int, seed: int) -> dict:
    boot = f"percentile bootstrap over seeds, {n_resamples} resamples, seed {seed}, {level:.0%} intervals"
    return {
        "teacher_scores": f"Teachers' own scores (best weights; mean over seeds, {level:.0%} t-interval)",
        "student_scores": f"Student scores (best weights; mean over seeds, {level:.0%} t-interval; "
                          f"T/S = teacher/student)",
        "curse": f"Curse of capacity gap per student: best teacher (share of resamples), onset ratio ({boot})",
        "curse_examples": f"The curse with intervals over dev examples: paired percentile bootstrap of each run's "
                          f"stored predictions ({min(n_resamples, 1000)} resamples, seed {seed}, {level:.0%} intervals)",
        "recovered": f"Part of the curse each method recovers against {baseline}: gain / lost at the largest teacher "
                     f"({boot})",
        "teacher_scale_fit": "Best teacher size against student size, least squares (MiniMA, arXiv 2311.07052)",
        "gap_curves": "Gap curves",
    }


def format_report(tables: dict, level: float = 0.95, baseline: str = "minilm", n_resamples: int = 2000,
                  seed: int = 0) -> str:
    """The report as aligned text: each table under its title (empty cells where nothing is estimable;
    ``note`` says why). ``gap_curves`` is summarised in one line (its CSV holds the points)."""
    titles = _titles(level, baseline, n_resamples, seed)
    parts = []
    for name, frame in tables.items():
        title = titles.get(name, name)
        if name == "gap_curves":
            axes = ", ".join(dict.fromkeys(frame.axis)) if len(frame) else "none"
            parts.append(f"{title}: {len(frame)} points on the axes {axes} (gap_curves.csv).")
            continue
        body = "(none)" if frame.empty else _display(name, frame).to_string(index=False, justify="left")
        parts.append(f"{title}\n{'-' * min(len(title), 100)}\n{body}")
    return "\n\n".join(parts)
