"""Students above their own teacher by more than noise: the warning that the labels, not the teacher, made a
student's score (definition: :mod:`gapkit.analysis.teacher_check`'s docstring and docs/analysis.md).

Per student cell, ``student - teacher`` on the same dev examples, each student replicate against the teacher
fine-tune it learned from (its ``teacher_seed``), with the dev examples as a second, crossed source of variance
where predictions are stored (:func:`gapkit.analysis.inference.contrast_stats`, the curse test's machinery);
one-sided t-test of ``> 0``, Holm-corrected across the cells at ``1 - level``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["student_above_teacher", "ABOVE_TEACHER_COLUMNS"]


ABOVE_TEACHER_COLUMNS = ["task", "teacher", "student", "experts", "method", "metric", "split", "units", "n_units",
                         "n_examples", "scope", "teacher_score", "student_score", "above", "above_low", "above_high",
                         "p", "p_holm", "verdict", "established", "ci_level", "note"]


def student_above_teacher(table, level: float = 0.95, examples: bool = True, design=None):
    """Whether each student cell scores above its own teacher by more than noise (module docstring).

    Args:
        table: a results table.
        level: 1 - alpha of the one-sided tests (Holm over the cells) and of the two-sided intervals.
        examples: use the runs' stored dev predictions for the example part of the variance.
        design: a :class:`gapkit.analysis.verdicts.Design` of the same table (its cache of per-run example
            pseudo-values is shared); None builds one.
    Returns:
        :data:`ABOVE_TEACHER_COLUMNS`, one row per (task, teacher, student, experts, method) that learned from
        a fine-tuned teacher; ``verdict`` ``student above teacher`` or ``not established``.
    """
    import pandas as pd
    from scipy import stats

    from .inference import contrast_stats, holm
    from .scores import known, score_rows
    from .verdicts import NOT_ESTIMABLE, Design, orientation

    rows = score_rows(table)
    alpha = 1 - level
    teachers = rows[rows.role == "teacher"]
    students = rows[rows.role == "student"]
    if teachers.empty or students.empty:
        return pd.DataFrame(columns=ABOVE_TEACHER_COLUMNS)
    if design is None:
        design = Design(table, examples=examples)
    has_tseed = "teacher_seed" in rows.columns
    tseed_of = (lambda r: int(r.teacher_seed) if has_tseed and known(r.teacher_seed) else 0)
    out, tested = [], []
    for key, cell in students.groupby(["task", "teacher", "student", "experts", "method"], sort=True, dropna=False):
        task, teacher = key[0], key[1]
        metric, split = cell.metric.iloc[0], cell.split.iloc[0]
        sign = orientation(metric)
        row = dict(zip(["task", "teacher", "student", "experts", "method"], key), metric=metric, split=split,
                   ci_level=level, note="")
        own = teachers[(teachers.task == task) & (teachers.teacher == teacher)]
        t_runs = {tseed_of(r): (float(r.value), getattr(r, "run_dir", None)) for r in own.itertuples()}
        pairs = [(tseed_of(r), int(r.seed) if known(r.seed) else 0, float(r.value), getattr(r, "run_dir", None))
                 for r in cell.itertuples() if tseed_of(r) in t_runs and (not has_tseed or known(r.teacher_seed))]
        if not pairs:
            out.append(dict(row, note=f"{NOT_ESTIMABLE}: no fine-tuned teacher run this student learned from"))
            tested.append(None)
            continue
        tseeds = sorted({t for t, *_ in pairs})
        by_teacher = len(tseeds) > 1
        units = "teacher fine-tunes" if by_teacher else "seeds"
        groups = {}
        for t, s, v, d in pairs:
            groups.setdefault(t if by_teacher else s, []).append((t, v, d))
        row.update(teacher_score=float(np.mean([t_runs[t][0] for t in tseeds])),
                   student_score=float(np.mean([v for *_, v, _ in pairs])), units=units)
        if len(groups) < 2:
            out.append(dict(row, above=sign * (row["student_score"] - row["teacher_score"]),
                            note=f"{NOT_ESTIMABLE}: {len(groups)} {units[:-1]} (needs 2 or more)"))
            tested.append(None)
            continue
        x, scope, n_examples, note = _above_data(design, task, split, metric, sign, groups, t_runs)
        st = contrast_stats(x)
        low, high = st.interval(level)
        p = float(stats.t.sf(st.estimate / st.se, st.df)) if st.se > 0 else float("nan")
        row.update(n_units=st.n_rep, n_examples=n_examples, scope=f"{units}{scope}", above=float(st.estimate),
                   above_low=float(low), above_high=float(high), p=p, note=note)
        if not known(p):
            row["note"] = "; ".join(filter(None, [note, f"test {NOT_ESTIMABLE}: the {units} give identical "
                                                        f"differences (no variance)"]))
        out.append(row)
        tested.append(p if known(p) else None)
    idx = [i for i, p in enumerate(tested) if p is not None]
    adjusted = holm(np.array([tested[i] for i in idx])) if idx else []
    for row in out:
        row.update(verdict="not established", established="no")
    for i, q in zip(idx, adjusted):
        out[i]["p_holm"] = float(q)
        if q <= alpha:
            out[i].update(verdict="student above teacher", established="yes")
    frame = pd.DataFrame(out, columns=ABOVE_TEACHER_COLUMNS)
    for c in ("n_units", "n_examples"):
        frame[c] = frame[c].astype("Int64")
    return frame


def _above_data(design, task, split, metric, sign, groups: dict, t_runs: dict):
    """(x (R, G), scope suffix, n examples, note) of ``student - teacher`` per replicate, oriented: the
    dev examples' pseudo-values where every run stored predictions, else one column (this dev set)."""
    from .verdicts import TOKEN_TASKS, Block

    block = Block((task, None, None, None), metric, split, sign, [])
    units = [members for _, members in sorted(groups.items())]
    rows = np.array([np.mean([v - t_runs[t][0] for t, v, _ in members]) for members in units])[:, None]
    fallback = (sign * rows, ", this dev set", None)
    if not design.examples:
        return (*fallback, "")
    if str(task).lower().replace("-", "") in TOKEN_TASKS and not design.token_tasks:
        return (*fallback, "example variance not included for a token task by default")
    per_unit, labels = [], None
    for members in units:
        diffs = []
        for t, _, run_dir in members:
            got = [design._pseudo_values(block, d) for d in (run_dir, t_runs[t][1])]
            bad = next((g for g in got if isinstance(g, str)), None)
            if bad is not None:
                return (*fallback, bad)
            if got[0][1] != got[1][1] or (labels is not None and got[0][1] != labels):
                return (*fallback, "example variance not included: student and teacher scored different dev "
                                   "examples")
            labels = got[0][1]
            diffs.append(got[0][0] - got[1][0])
        per_unit.append(np.mean(diffs, axis=0))
    return sign * np.stack(per_unit), " + dev examples", labels[0], ""
