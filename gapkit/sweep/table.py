"""The sweep's results as one tidy table, rebuilt from the run folders at any time.

One row per run x split x metric (a run that failed before it had metrics: one row with its reason):

    sweep, run, role, stage, teacher, teacher_kind, teacher_family, teacher_params, teacher_gflops,
    student, experts, method, params_total, params_active, gflops, convention, task, split, metric,
    value, model, step, seed, teacher_seed, selected_on, teacher_check, status, reason, wall_time_s,
    git_revision, run_dir

``teacher_params``/``teacher_gflops`` are the sweep teacher's (the fine-tuned one), also for the
students of an assistant chain; ``teacher_seed`` is the fine-tuning seed of the teacher replicate a
student (or assistant) learned from, a teacher's own fine-tuning seed on its rows, and empty for a run
that learned from no fine-tuned teacher (a task-agnostic stage from a pre-trained one);
``selected_on`` is the split that selected the run's best weights (``holdout``, ``dev`` ...; from
result.json): with ``holdout``, the ``split == "dev", model == "best"`` rows are scores of those weights
on a split that took no part in choosing them; ``teacher_check`` is the verdict of
:mod:`gapkit.analysis.teacher_check` (alpha 0.05) on the fine-tuned teacher a run learned from (a teacher's
own on its rows): ``above majority``, ``above chance, not majority``, ``above chance`` (regression), ``not
above chance`` or ``not tested (why)`` (e.g. a task-agnostic stage from a pre-trained teacher); a run that a
sweep's ``teachers_must_beat`` stopped is one row with status ``skipped`` and the sentence in ``reason``; ``gflops`` are per sequence of length 128 in the ``convention``
column's convention (``paper``: the paper's axis). Written as ``results.parquet`` and ``results.csv``.
"""

from __future__ import annotations

from pathlib import Path

from ..distill.runfiles import EXPORTED_FILES, RunDir
from ..io import atomic_write
from .plan import read_plan
from .status import TeacherGate, node_status

__all__ = ["build_table", "write_table", "export_table", "COLUMNS"]

COLUMNS = ["sweep", "run", "role", "stage", "teacher", "teacher_kind", "teacher_family", "teacher_params",
           "teacher_gflops", "student", "experts", "method", "params_total", "params_active", "gflops",
           "convention", "task", "split", "metric", "value", "model", "step", "seed", "teacher_seed", "selected_on",
           "teacher_check", "status", "reason",
           "wall_time_s", "git_revision", "run_dir"]


def build_table(output_dir: str | Path, convention: str = "paper"):
    """The results table of the sweep in ``output_dir`` (a pandas DataFrame with :data:`COLUMNS`).

    Raises:
        ConfigError: the folder holds no sweep plan, or a result file is unreadable.
    """
    sweep, nodes = read_plan(output_dir)
    results = {}
    for node in nodes:
        result = RunDir(node.folder(output_dir)).result() if node.kind != "prepare" else None
        if result is not None:
            results[node.id] = result
    teachers = {}  # (teacher name, task, teacher seed) -> the fine-tuned teacher's result
    gate = TeacherGate(nodes, output_dir, sweep.get("teachers_must_beat") or "none")
    verdicts = {}  # the same keys -> the teacher fine-tune's chance check verdict
    for node in nodes:
        if node.kind == "finetune" and node.id in results:
            m = node.meta
            key = (m.get("teacher"), m.get("task"), m.get("teacher_seed", m.get("seed")))
            teachers[key] = results[node.id]
            check = gate.check(node)
            verdicts[key] = check.get("verdict") if check else None
    states = {n.id: node_status(n, output_dir) for n in nodes if n.kind != "prepare" and n.id not in results}
    states.update(gate.skipped(states))
    rows = []
    by_id = {n.id: n for n in nodes}
    for node in nodes:
        if node.kind == "prepare":
            continue
        m = node.meta
        teacher = teachers.get((m.get("teacher"), m.get("task"), m.get("teacher_seed"))) or next(
            (r for (name, task, _), r in teachers.items() if name == m.get("teacher") and task == m.get("task")),
            None) or next((r for (name, _, _), r in teachers.items() if name == m.get("teacher")), None)
        verdict = verdicts.get((m.get("teacher"), m.get("task"), m.get("teacher_seed")))
        if not _after_finetune(node, by_id):
            verdict = "not tested (learned from the pre-trained teacher only: no labels to test it on)"
        base = dict(sweep=sweep.get("name"), run=node.id, role=m.get("role"), stage=node.kind,
                    teacher=m.get("teacher"), teacher_kind=m.get("teacher_kind"),
                    teacher_family=m.get("teacher_family"),
                    teacher_params=teacher.params_total if teacher else None,
                    teacher_gflops=(teacher.student.get("gflops") or {}).get(convention) if teacher else None,
                    student=m.get("student"), experts=m.get("experts"), method=m.get("method"),
                    convention=convention, task=m.get("task"), seed=m.get("seed"),
                    teacher_seed=m["teacher_seed"] if "teacher_seed" in m else _old_teacher_seed(node, sweep),
                    teacher_check=verdict,
                    run_dir=str(node.folder(Path(output_dir).resolve())))
        result = results.get(node.id)
        if result is None:
            status, reason = states[node.id]
            if status in ("failed", "skipped"):
                rows.append(dict(base, status=status, reason=reason))
            continue
        base.update(params_total=result.params_total, params_active=result.params_active,
                    gflops=(result.student.get("gflops") or {}).get(convention), status=result.status,
                    reason=result.reason, wall_time_s=result.wall_time_s, git_revision=result.git_revision,
                    selected_on=result.selected_on)
        if not result.metrics:
            rows.append(base)
        for metric in result.metrics:
            rows.append(dict(base, split=metric["split"], metric=metric["metric"], value=metric["value"],
                             model=metric["model"], step=metric["step"]))
    return results_frame(rows)


def results_frame(rows: list[dict]):
    """Rows as a results table: :data:`COLUMNS` in order, counts as nullable integers, values as floats
    (the one place the table's column types are set; the paper's numbers are built with it too)."""
    import pandas as pd

    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("teacher_params", "params_total", "params_active", "step", "seed", "teacher_seed"):
        table[col] = table[col].astype("Int64")
    for col in ("value", "gflops", "teacher_gflops", "wall_time_s"):
        table[col] = table[col].astype("float64")
    return table


def _after_finetune(node, by_id: dict) -> bool:
    """Whether a run is, or learns (through any run it needs) from, a fine-tuned teacher: the runs whose
    teacher has a chance check."""
    if node.kind == "finetune" and node.meta.get("role") == "teacher":
        return True
    return any(_after_finetune(by_id[d], by_id) for d in node.deps if d in by_id)


def _old_teacher_seed(node, sweep: dict) -> int | None:
    """The teacher seed of a node planned before plans recorded it (one integer teacher_seed then): a
    teacher's own seed, the sweep's teacher seed for what learned from a fine-tuned teacher."""
    if node.meta.get("role") == "teacher":
        return node.meta.get("seed")
    seed = sweep.get("teacher_seed")
    return seed if node.kind == "task" or node.meta.get("role") == "assistant" else None


def write_table(output_dir: str | Path):
    """Rebuild the table and write ``results.parquet`` and ``results.csv`` atomically; returns it."""
    table = build_table(output_dir)
    out = Path(output_dir)
    atomic_write(out / "results.parquet", lambda p: table.to_parquet(p, index=False))
    atomic_write(out / "results.csv", table.to_csv(index=False))
    return table


def export_table(output_dir: str | Path, out: str | Path, table=None):
    """The results of the sweep in ``output_dir`` as a folder that stands on its own (e.g. to commit beside a
    paper): ``out/results.parquet`` and ``results.csv``, whose ``run_dir`` is ``runs/<run>`` relative to
    ``out``, and of each run only ``runs/<run>/result.json``, ``config.json``, ``best/predictions.safetensors``
    (its dev predictions: what the curse and lift tests need for the dev examples' variance) and a MiniMoE
    run's ``routing.parquet`` (the routing figures), no weights.
    ``gapkit report out`` then gives the same verdicts as on the sweep folder. ``table``: the sweep's table
    when the caller has just built it (None: built here). Returns the exported table.

    Raises:
        ConfigError: ``out`` is the sweep folder itself.
    """
    import shutil

    from ..errors import ConfigError

    source, out = Path(output_dir).resolve(), Path(out).resolve()
    if out == source:
        raise ConfigError(f"gapkit results --export needs a folder other than the sweep's own ({out}).")
    table = (build_table(source) if table is None else table).copy()
    runs = table.run_dir.dropna().unique()
    for run_dir in runs:
        for name in EXPORTED_FILES:
            src = Path(run_dir) / name
            if src.is_file():
                dest = out / "runs" / Path(run_dir).name / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
    table["run_dir"] = table.run_dir.map(lambda d: f"runs/{Path(d).name}" if isinstance(d, str) else d)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.parquet", lambda p: table.to_parquet(p, index=False))
    atomic_write(out / "results.csv", table.to_csv(index=False))
    return table


def summary(table, metric: str | None = None):
    """The gap table: the selection metric of each student's best weights on dev, one column per
    teacher (teachers' own scores in the first row), seeds averaged."""
    import pandas as pd

    dev = table[(table.model == "best") & (table.split == "dev")]
    if metric is None:
        from ..analysis.verdicts import default_metric  # the one rule: the task's primary metric first

        metric = default_metric(next(iter(dev.task.dropna()), None), set(dev.metric))
    dev = dev[dev.metric == metric]
    teachers = dev[dev.role == "teacher"].groupby("teacher")["value"].mean()
    students = dev[(dev.role == "student") & (dev.stage == "task")]
    if students.empty:
        return pd.DataFrame()
    grid = students.pivot_table(index=["student", "experts", "method"], columns="teacher", values="value",
                                aggfunc="mean")
    order = [t for t in teachers.sort_values().index if t in grid.columns] + [
        t for t in grid.columns if t not in teachers.index]
    grid = grid[order]
    head = pd.DataFrame([teachers.reindex(order).values], columns=order,
                        index=pd.MultiIndex.from_tuples([("(teacher itself)", "", "")], names=grid.index.names))
    return pd.concat([head, grid]).round(2)
