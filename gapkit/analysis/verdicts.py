"""The curse of capacity gap and a method's lift of it, as declared tests: the only place where gapkit
decides whether a bigger teacher made a worse student, which teachers can be best, and whether MiniMoE
(or any method) lifts the curse. Every table, figure and notebook reads these verdicts.

Definitions, fixed before any data is seen (docs/analysis.md says the same). The first three are
functions of this module that every table, figure and summary calls (:func:`default_metric`,
:func:`orientation`, :func:`top_teacher`):

- A **score** is a task's primary metric (``score`` for GLUE and the synthetic task, ``f1`` for
  CoNLL-2003; else the first of :data:`METRIC_PREFERENCE` the table has) of the best weights, **oriented**
  so that larger is better: the losses of :data:`LOWER_IS_BETTER` (``relation``, ``hidden``) are negated.
- The **top teacher** of a student is the teacher whose students have the highest mean oriented score; of
  tied means, the smaller teacher. It is a description, not a verdict (see best teachers below).
- A **block** is one student (task, shape, experts, method) distilled from two or more teachers of
  different sizes, the teachers ordered by ``teacher_params``.
- **Replicates** are matched across the cells a contrast compares: student seeds, or teacher fine-tunes
  where a sweep fine-tuned each teacher several times (``teacher_seed``; their students' seeds averaged
  within each). Where runs kept their dev predictions, dev examples are a second, crossed source of
  variance (:mod:`gapkit.analysis.inference`): the verdict then generalises over training randomness and
  over examples, not only over seeds on this dev set.
- **curse**: ``drop = score(smallest teacher) - score(largest teacher)``, paired by replicate. The curse is
  *established* when the two-sided test of ``drop == 0`` (:func:`~gapkit.analysis.inference.contrast_stats`)
  has a Holm-adjusted p-value at or below ``alpha = 1 - level`` across every curse test of the call (all
  students, methods and tasks) and ``drop > 0``; a bigger teacher is established as *better* when the same
  holds with ``drop < 0``. Nothing else is ever called a curse.
- **trend**: the least-squares slope of score against log2(teacher parameters), per replicate, in points
  per doubling of the teacher; described with its interval, not a verdict.
- **best teachers**: the teachers no other teacher of the block beats significantly (paired one-sided
  tests at ``alpha / (T - 1)``, T teachers): a confidence set for the best teacher. ``top_teacher`` is only
  the highest mean.
- **onset**: only where the curse is established. The teacher/student ratio of the top teacher; when the
  top teacher is the smallest measured, the onset is an upper bound (``<=``): it may lie at any smaller
  ratio. Never an interval.
- **lift** of a method over a dense baseline of the same shape (default ``minilm``, or ``kd``): the
  interaction ``drop(baseline) - drop(method)`` over the same smallest and largest teachers, paired by
  replicate, tested and Holm-corrected across the call's lift tests like the curse. ``recovered =
  lift / drop(baseline)`` (1: the method has no curse; 0: the same curse) only where the baseline's curse
  is established, with Fieller's interval, which is bounded exactly when the denominator is significantly
  above 0; otherwise not estimable.
- **power**: ``mde``, the smallest true contrast the design detects with 80% probability at the
  strictest Holm step (``alpha / m``, m tests), from its estimated variances; ``seeds_for``, the
  replicates needed for a given effect (``effect=``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .inference import contrast_stats, detectable_effect, fieller, holm, seeds_needed, signflip_p
from .scores import METRIC_PREFERENCE, STUDENT_KEYS, default_metric, require_columns, student_rows
# default_metric (and METRIC_PREFERENCE) are one of this module's definitions, written in .scores, which this
# module imports: the score tables need the rule and must not import the verdicts back.
from .scores import known as _known

__all__ = ["curse_test", "lift_test", "CURSE_COLUMNS", "LIFT_COLUMNS", "EXAMPLE_GROUPS", "verdict_of", "orientation",
           "top_teacher", "default_metric", "higher_is_better", "LOWER_IS_BETTER", "METRIC_PREFERENCE"]

# ----------------------------------------------------------------------------------------------------
# What a score is and which teacher is on top: one definition each (the module docstring), called by the
# score tables (gapkit.analysis.scores), the fits (gap), the figures (plots) and the sweep's summary.
# ----------------------------------------------------------------------------------------------------
LOWER_IS_BETTER = frozenset({"relation", "hidden"})  # distillation losses; every other metric is a score


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (all metrics but the losses of :data:`LOWER_IS_BETTER`)."""
    return metric not in LOWER_IS_BETTER


def orientation(metric: str) -> float:
    """+1 for a score, -1 for a loss: ``orientation(metric) * value`` is larger when better."""
    return 1.0 if higher_is_better(metric) else -1.0


def top_teacher(means, metric: str) -> int:
    """The index of the top teacher: the highest mean oriented score (``means`` of the teachers ordered from
    small to large); of tied means the first, the smaller teacher."""
    return int(np.argmax(orientation(metric) * np.asarray(means, dtype=float)))


NOT_ESTIMABLE = "not estimable"
EXAMPLE_GROUPS = 100  # grouped-jackknife groups of dev examples (fewer when the split is smaller)
BLOCK_KEYS = ["task", "student", "experts", "method"]
TOKEN_TASKS = ("conll",)


# ----------------------------------------------------------------------------------------------------
# The design: blocks, their cells and replicates, example groups from stored predictions
# ----------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One teacher of a block: its size and its runs ``{(teacher_seed, seed): (value, run_dir)}``."""

    teacher: str
    teacher_params: float
    teacher_gflops: float
    params_total: float
    gflops: float
    runs: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean([v for v, _ in self.runs.values()]))

    @property
    def ratio_params(self) -> float:
        return self.teacher_params / self.params_total if self.params_total else float("nan")

    @property
    def ratio_gflops(self) -> float:
        return self.teacher_gflops / self.gflops if _known(self.gflops) and self.gflops else float("nan")


@dataclass
class Block:
    key: tuple  # (task, student, experts, method)
    metric: str
    split: str
    sign: float  # +1: larger is better; -1 for a loss
    cells: list  # Cell, small to large teacher
    problem: str | None = None  # why the teachers cannot be compared


@dataclass
class Contrast:
    """The data of one contrast: ``x`` (R, G), what its replicates are, and what limits it."""

    x: np.ndarray | None
    units: str = "seeds"
    n_examples: int | None = None
    scope: str = ""
    note: str = ""


class Design:
    """The blocks of a results table and the replicate x example-group data of any contrast over them.

    Args:
        table: a results table (:mod:`gapkit.sweep.table`).
        family, metric, split: restrict teachers to one ``teacher_family``; the metric and split to score.
        examples: use stored dev predictions (the runs' ``best/predictions.safetensors``) for the example
            component of the variance; False: seeds only (the verdict is then conditional on the dev set).
        token_tasks: also for token tasks (entity F1 recomputed 100 times per run: slower).
    """

    def __init__(self, table, family: str | None = None, metric: str | None = None, split: str | None = None,
                 examples: bool = True, token_tasks: bool = False):
        require_columns(table, STUDENT_KEYS + ["teacher_params", "params_total", "seed"], "the curse tests")
        rows = student_rows(table, family, metric, split)
        self.family = family
        self.examples = examples
        self.token_tasks = token_tasks
        self._pseudo: dict = {}
        self.blocks = [self._block(key, block) for key, block in rows.groupby(BLOCK_KEYS, sort=True, dropna=False)]

    def _block(self, key, rows) -> Block:
        metric, split = rows.metric.iloc[0], rows.split.iloc[0]
        has_tseed = "teacher_seed" in rows.columns
        cells = []
        for teacher, r in rows.groupby("teacher", sort=False, dropna=False):
            first = r.iloc[0]
            cell = Cell(str(teacher), _num(first.teacher_params), _num(first.get("teacher_gflops")),
                        _num(first.params_total), _num(first.get("gflops")))
            for run in r.itertuples():
                tseed = int(run.teacher_seed) if has_tseed and _known(run.teacher_seed) else 0
                unit = (tseed, int(run.seed) if _known(run.seed) else 0)
                if unit in cell.runs:
                    raise DataError(f"The results table has several runs with teacher seed {unit[0]} and seed {unit[1]} "
                                    f"for {_label(key)}, teacher {teacher}: filter it to one sweep (column 'sweep') "
                                    f"first.")
                cell.runs[unit] = (float(run.value), getattr(run, "run_dir", None))
            cells.append(cell)
        block = Block(tuple(key), metric, split, orientation(metric), cells)
        sizes = [c.teacher_params for c in cells]
        if len(cells) < 2:
            block.problem = f"{NOT_ESTIMABLE}: {len(cells)} teacher (needs 2 or more of different sizes)"
        elif any(not _known(s) for s in sizes):
            missing = ", ".join(c.teacher for c in cells if not _known(c.teacher_params))
            raise DataError(f"Teacher(s) {missing} have no teacher_params in the results table, so they cannot be "
                            f"ordered by size.")
        elif len(set(sizes)) < len(sizes):
            dup = [c for c in cells if sizes.count(c.teacher_params) > 1]
            block.problem = (f"{NOT_ESTIMABLE}: teachers {' and '.join(c.teacher for c in dup)} have the same size "
                             f"({int(dup[0].teacher_params)} parameters)")
        block.cells = sorted(cells, key=lambda c: (c.teacher_params if _known(c.teacher_params) else 0, c.teacher))
        return block

    # -- one contrast ---------------------------------------------------------------------------------
    def contrast(self, terms: list[tuple[Block, Cell, float]]) -> Contrast:
        """The (R, G) data of ``sum(weight * oriented score)`` over ``terms`` (block, cell, weight), paired by
        replicate; R < 2 or unmatched replicates come back with ``x`` None and the reason in ``note``."""
        tseeds = {u[0] for _, c, _ in terms for u in c.runs}
        by_teacher = len(tseeds) > 1
        units = "teacher fine-tunes" if by_teacher else "seeds"
        keys = [set(u[0] if by_teacher else u[1] for u in c.runs) for _, c, _ in terms]
        common = sorted(set.intersection(*keys))
        note = []
        if any(len(k) != len(common) for k in keys):
            note.append(f"{sum(len(k) for k in keys) - len(common) * len(keys)} unmatched run(s) left out "
                        f"(replicates are paired by {'teacher seed' if by_teacher else 'seed'})")
        if len(common) < 2:
            return Contrast(None, units, scope=units, note=f"{NOT_ESTIMABLE}: {len(common)} matched {units[:-1]}"
                                                           f"{'s' if len(common) != 1 else ''} (needs 2 or more)")
        # Student seeds present under every teacher fine-tune of every cell (within a replicate, averaged).
        seeds = sorted(set.intersection(*[{u[1] for u in c.runs} for _, c, _ in terms])) if by_teacher else None
        values = []
        for block, cell, weight in terms:
            y = np.array([np.mean([cell.runs[(r, s)][0] for s in seeds if (r, s) in cell.runs]) if by_teacher
                          else cell.runs[(next(u for u in cell.runs if u[1] == r))][0] for r in common])
            values.append(block.sign * weight * y[:, None])
        rows = np.sum(values, axis=0)
        groups, n_examples, ex_note = self._groups(terms, common, by_teacher, seeds)
        if groups is not None:
            x = groups
            scope = f"{units} + dev examples"
        else:
            x = rows
            scope = f"{units}, this dev set"
            if ex_note:
                note.append(ex_note)
        if by_teacher:
            paired = all(len({s for (r, s) in c.runs if r == u}) == 1 for _, c, _ in terms for u in common)
            scope = scope.replace("teacher fine-tunes", "teacher fine-tunes (one student seed each)" if paired
                                  else "teacher fine-tunes (seeds within)")
        return Contrast(x, units, n_examples, scope, "; ".join(note))

    def _groups(self, terms, common, by_teacher, seeds):
        """(R, G) grouped-jackknife data of the contrast from stored predictions, or (None, None, reason)."""
        block = terms[0][0]
        task = str(block.key[0]).lower().replace("-", "")
        if not self.examples:
            return None, None, ""
        if task in TOKEN_TASKS and not self.token_tasks:
            return None, None, ("example variance not included for a token task by default (entity F1 recomputed "
                                "per example group is slow): token_tasks=True")
        total = None
        labels = None  # (number of examples, a digest of their labels), the same for every run
        for b, cell, weight in terms:
            per_unit = []
            for r in common:
                runs = ([cell.runs[(r, s)] for s in seeds if (r, s) in cell.runs] if by_teacher
                        else [cell.runs[next(u for u in cell.runs if u[1] == r)]])
                pseudo = [self._pseudo_values(b, run_dir) for _, run_dir in runs]
                if any(isinstance(p, str) for p in pseudo):
                    return None, None, next(p for p in pseudo if isinstance(p, str))
                per_unit.append(np.mean([p[0] for p in pseudo], axis=0))
                seen = {p[1] for p in pseudo} | ({labels} if labels else set())
                if len(seen) > 1:  # the same examples in the same order are what makes groups comparable
                    return None, None, "example variance not included: runs scored different dev examples"
                labels = seen.pop()
            part = b.sign * weight * np.stack(per_unit)  # (R, G)
            total = part if total is None else total + part
        return total, labels[0], ""

    def _pseudo_values(self, block: Block, run_dir):
        """(pseudo-values (G,), (n_examples, labels digest)) of one run's stored predictions, or a string saying
        why not."""
        if run_dir in self._pseudo:
            return self._pseudo[run_dir]
        from ..data.tasks import score_predictions
        from .examples import run_predictions

        got = run_predictions(run_dir if isinstance(run_dir, str) else None, block.split)
        if got is None:
            out = (f"example variance not included: no stored {block.split} predictions in {run_dir} "
                   f"(best/predictions.safetensors; runs written before gapkit stored predictions, or run folders "
                   f"no longer there)")
        else:
            preds, labels = got
            n = len(labels)
            G = min(EXAMPLE_GROUPS, n)
            group = np.random.default_rng(0).permutation(n) % G  # a fixed split of the examples into G groups
            task = block.key[0]
            # run_dir: a data set of the user's own is scored by the metrics its run config names
            full = score_predictions(task, block.split, preds, labels, run_dir=run_dir)[block.metric]
            import torch

            leave_out = np.array([score_predictions(task, block.split, preds[torch.from_numpy(group != g)],
                                                    labels[torch.from_numpy(group != g)], run_dir=run_dir)[block.metric]
                                  for g in range(G)])
            digest = hashlib.sha256(labels.numpy().tobytes()).hexdigest()
            out = (G * full - (G - 1) * leave_out, (n, digest))  # (G,) pseudo-values: group means for a mean metric
        self._pseudo[run_dir] = out
        return out


def _num(v) -> float:
    return float(v) if _known(v) else float("nan")


def _label(key) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(BLOCK_KEYS, key) if _known(v))


# ----------------------------------------------------------------------------------------------------
# Verdicts
# ----------------------------------------------------------------------------------------------------
def verdict_of(estimate: float, p_holm: float, alpha: float, positive: str, negative: str) -> str:
    """``positive``/``negative`` where the Holm-adjusted test rejects at ``alpha`` (by the estimate's sign),
    else ``not established``."""
    if not _known(p_holm) or p_holm > alpha:
        return "not established"
    return positive if estimate > 0 else negative


CURSE_COLUMNS = ["task", "family", "student", "experts", "method", "metric", "split", "n_teachers", "smallest_teacher",
                 "largest_teacher", "units", "n_units", "n_examples", "scope", "smallest_score", "largest_score",
                 "curse_drop", "drop_low", "drop_high", "df", "p", "p_holm", "p_signflip", "verdict", "established",
                 "trend", "trend_low", "trend_high", "trend_p", "top_teacher", "best_teachers", "onset_kind",
                 "onset_teacher", "onset_ratio_params", "onset_ratio_gflops", "unit_sd", "mde", "effect", "seeds_for",
                 "ci_level", "note"]


def curse_test(table, family: str | None = None, metric: str | None = None, split: str | None = None,
               level: float = 0.95, effect: float | None = None, examples: bool = True, token_tasks: bool = False,
               design: Design | None = None):
    """The declared curse test of every student (module docstring), Holm-corrected across them.

    Args:
        table: a results table.
        family, metric, split: as in :class:`Design`.
        level: 1 - alpha of the tests and the intervals (two-sided).
        effect: a curse size in metric points: ``seeds_for`` says how many replicates detect it with 80%
            power at the strictest Holm step.
        examples, token_tasks: as in :class:`Design`.
    Returns:
        One row per student: :data:`CURSE_COLUMNS`. ``curse_drop`` > 0: the largest teacher's students score
        lower; ``verdict`` is ``curse``, ``bigger teacher better`` or ``not established``, ``established``
        yes/no; estimates the data cannot support are empty with the reason in ``note``.
    """
    import pandas as pd

    alpha = _check(level, effect)
    design = design or Design(table, family, metric, split, examples, token_tasks)
    rows, stats = [], []
    for block in design.blocks:
        row, st = _curse_row(design, block, level)
        rows.append(row)
        stats.append(st)
    _correct(rows, stats, alpha, effect, "curse_drop", "curse", "bigger teacher better")
    for row, block, st in zip(rows, design.blocks, stats):
        if row.get("verdict") == "curse":
            row.update(zip(["onset_kind", "onset_teacher", "onset_ratio_params", "onset_ratio_gflops"], _onset(block)))
        elif st is not None:
            _add_note(row, f"onset {NOT_ESTIMABLE}: no established curse")
    _teacher_notes(table, rows)
    frame = pd.DataFrame(rows, columns=CURSE_COLUMNS)
    return _typed(frame, ["n_teachers", "n_units", "n_examples", "seeds_for"])


def _curse_row(design: Design, block: Block, level: float):
    task, student, experts, method = block.key
    row = dict(task=task, family=design.family or "all", student=student, experts=experts, method=method,
               metric=block.metric, split=block.split, n_teachers=len(block.cells), ci_level=level, note="")
    if block.problem:
        return dict(row, note=block.problem), None
    small, large = block.cells[0], block.cells[-1]
    top = top_teacher([c.mean for c in block.cells], block.metric)
    row.update(smallest_teacher=small.teacher, largest_teacher=large.teacher, smallest_score=small.mean,
               largest_score=large.mean, top_teacher=block.cells[top].teacher)
    c = design.contrast([(block, small, 1.0), (block, large, -1.0)])
    row.update(units=c.units, n_examples=c.n_examples, scope=c.scope)
    notes = [c.note] if c.note else []
    if c.x is None:
        return dict(row, curse_drop=block.sign * (small.mean - large.mean), note="; ".join(notes)), None
    st = contrast_stats(c.x)
    low, high = st.interval(level)
    row.update(n_units=st.n_rep, curse_drop=float(st.estimate), drop_low=float(low), drop_high=float(high),
               df=float(st.df), p=float(st.p), p_signflip=float(signflip_p(c.x.mean(-1))),
               unit_sd=float(np.sqrt(st.per_replicate())))
    if not _known(st.p):
        notes.append(f"test {NOT_ESTIMABLE}: the {c.units} give identical differences (no variance)")
    if len(block.cells) > 2:
        logs = np.log2([cell.teacher_params for cell in block.cells])
        w = (logs - logs.mean()) / ((logs - logs.mean()) ** 2).sum()
        trend = design.contrast([(block, cell, float(wi)) for cell, wi in zip(block.cells, w)])
        if trend.x is not None:
            ts = contrast_stats(trend.x)
            t_low, t_high = ts.interval(level)
            row.update(trend=float(ts.estimate), trend_low=float(t_low), trend_high=float(t_high), trend_p=float(ts.p))
    row["best_teachers"] = _best_set(design, block, 1 - level)
    return dict(row, note="; ".join(notes)), st


def _best_set(design: Design, block: Block, alpha: float) -> str:
    """The teachers no other teacher beats significantly (one-sided paired tests at alpha / (T - 1))."""
    from scipy import stats

    T = len(block.cells)
    beaten = set()
    for i in range(T):
        for j in range(T):
            if i == j:
                continue
            c = design.contrast([(block, block.cells[j], 1.0), (block, block.cells[i], -1.0)])  # j - i
            if c.x is None:
                return ""
            st = contrast_stats(c.x)
            if not _known(st.p):
                return ""
            one_sided = float(stats.t.sf(st.estimate / st.se, st.df))
            if one_sided <= alpha / (T - 1):
                beaten.add(i)
    return ", ".join(c.teacher for k, c in enumerate(block.cells) if k not in beaten)


def _onset(block: Block) -> list:
    """[kind, teacher, ratio_params, ratio_gflops] of an established curse (module docstring)."""
    top = top_teacher([c.mean for c in block.cells], block.metric)
    cell = block.cells[top]
    return ["upper bound" if top == 0 else "estimate", cell.teacher, cell.ratio_params, cell.ratio_gflops]


def _correct(rows: list[dict], stats: list, alpha: float, effect, column: str, positive: str, negative: str) -> None:
    """Holm across the tested rows, their verdicts and power columns (in place)."""
    tested = [i for i, st in enumerate(stats) if st is not None and _known(st.p)]
    m = len(tested)
    adjusted = holm(np.array([stats[i].p for i in tested])) if m else []
    strict = alpha / max(m, 1)  # Holm's first step: the threshold every test is sure to meet
    for row in rows:  # untested rows (a reason in their note) establish nothing either
        row.update(verdict="not established", established="no")
    for i, q in zip(tested, adjusted):
        row = rows[i]
        row.update(p_holm=float(q), verdict=verdict_of(row[column], q, alpha, positive, negative),
                   mde=detectable_effect(stats[i], strict))
        row["established"] = "yes" if row["verdict"] != "not established" else "no"
        if effect is not None:
            row.update(effect=effect, seeds_for=seeds_needed(stats[i], effect, strict))


def _teacher_notes(table, rows: list[dict]) -> None:
    """A note on each test whose smallest or largest teacher is not shown above the majority class on dev (the
    table's ``teacher_check``, :mod:`gapkit.analysis.teacher_check`): the test stands, and says so."""
    from .teacher_check import flagged

    if "teacher_check" not in getattr(table, "columns", ()):
        return
    marked = table[table.teacher_check.map(flagged)]
    verdicts = {(t, n): v for t, n, v in zip(marked.task, marked.teacher, marked.teacher_check)}
    for row in rows:
        for end in ("smallest", "largest"):
            verdict = verdicts.get((row.get("task"), row.get(f"{end}_teacher")))
            if verdict is not None:
                _add_note(row, f"its {end} teacher {row[f'{end}_teacher']} is {verdict} on dev (teacher check): "
                               f"that end measures students of a teacher that taught nothing beyond the labels")


def _add_note(row: dict, text: str) -> None:
    row["note"] = f"{row['note']}; {text}" if row.get("note") else text


def _typed(frame, counts):
    """Count columns as Int64, except where a count is infinite (``seeds_for`` beyond reach): then float."""
    for c in counts:
        if c in frame.columns:
            values = frame[c].astype("float64")
            frame[c] = values if np.isinf(values).any() else values.round().astype("Int64")
    return frame


def _check(level: float, effect) -> float:
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise DataError(f"The confidence level must be between 0 and 1, got {level!r}.")
    if effect is not None and (isinstance(effect, bool) or not isinstance(effect, (int, float))
                               or not math.isfinite(effect) or effect <= 0):
        raise DataError(f"The effect to plan seeds for must be a positive number of metric points, got {effect!r}.")
    return 1 - level


# ----------------------------------------------------------------------------------------------------
# The lift of a method over a dense baseline
# ----------------------------------------------------------------------------------------------------
LIFT_COLUMNS = ["task", "family", "student", "method", "experts", "baseline", "baseline_student", "comparison", "metric", "split", "smallest_teacher",
                "largest_teacher", "units", "n_units", "n_examples", "scope", "baseline_drop", "method_drop", "lift",
                "lift_low", "lift_high", "df", "p", "p_holm", "verdict", "established", "gain_at_largest",
                "gain_low", "gain_high", "recovered", "recovered_low", "recovered_high", "unit_sd", "mde", "effect",
                "seeds_for", "ci_level", "note"]


def default_baseline(table) -> str:
    """The dense method a sweep's other methods are measured against: ``minilm`` (the paper's) when the table
    has MiniLM students, else plain logit ``kd`` when it has those (the figures make the same choice)."""
    methods = set(table.method.dropna()) if "method" in getattr(table, "columns", ()) else set()
    return "kd" if "minilm" not in methods and "kd" in methods else "minilm"


def lift_test(table, baseline: str | None = None, family: str | None = None, metric: str | None = None,
              split: str | None = None, level: float = 0.95, effect: float | None = None, examples: bool = True,
              token_tasks: bool = False, design: Design | None = None, curse=None):
    """The declared lift test of every method against the dense baseline of the same student shape.

    Args:
        table: a results table.
        baseline: the dense method whose curse is lifted (None: ``minilm``, or ``kd`` without MiniLM
            students).
        family, metric, split, level, effect, examples, token_tasks: as in :func:`curse_test`.
        curse: the :func:`curse_test` frame of the same table (computed when None): ``recovered`` needs the
            baseline's curse established there.
    Returns:
        :data:`LIFT_COLUMNS`, one row per comparison (``comparison``):

        - ``same shape``: every (task, shape, method, experts) other than the baseline against the baseline
          of the same shape (always, with a note where that baseline is missing);
        - ``wider FFN``: a baseline student whose FFN is wider than 4 H (``2L-192H-3072F``) against the
          baseline of the same L, H and heads with the usual FFN: the lift of parameters alone;
        - ``same parameters``: a MiniMoE student (``x,yE``) against a dense baseline of the same L, H and
          heads whose FFN is y times as wide, where the sweep trained one: as many parameters, all active.

        ``lift`` > 0: the method (or student) loses less than ``baseline_student`` trained with ``baseline``
        from the smallest to the largest teacher; ``verdict`` is ``lift``, ``larger curse`` or ``not
        established``, Holm-corrected over every row.
    """
    import pandas as pd

    alpha = _check(level, effect)
    baseline = baseline or default_baseline(table)
    design = design or Design(table, family, metric, split, examples, token_tasks)
    if curse is None:
        curse = curse_test(table, family, metric, split, level, design=design)
    blocks = {b.key: b for b in design.blocks}
    rows, stats = [], []
    for block, base, comparison in _comparisons(blocks, baseline):
        row, st = _lift_row(design, block, base, baseline, curse, level)
        row.update(comparison=comparison, baseline_student=base.key[1] if base is not None else block.key[1])
        rows.append(row)
        stats.append(st)
    _correct(rows, [st[0] if st else None for st in stats], alpha, effect, "lift", "lift", "larger curse")
    for row, st in zip(rows, stats):
        if st is not None:
            _recovered(row, *st[1:], level)
    _teacher_notes(table, rows)
    frame = pd.DataFrame(rows, columns=LIFT_COLUMNS)
    return _typed(frame, ["n_units", "n_examples", "seeds_for"])


def _comparisons(blocks: dict, baseline: str):
    """(block, baseline block or None, comparison) of every lift row: see :func:`lift_test`."""
    from ..models.spec import spec_from_name

    def shape(student):
        try:
            spec = spec_from_name(str(student))
        except ValueError:  # a Hub name or folder: only the same-shape comparison applies
            return None
        return spec.layers, spec.hidden, spec.heads, spec.ffn

    dense = {(t, shape(s)): b for (t, s, e, m), b in blocks.items() if m == baseline and e == "dense"}
    for (task, student, experts, method), block in blocks.items():
        own = shape(student)
        if method != baseline:
            base = [b for (t, s, _, m), b in blocks.items() if (t, s, m) == (task, student, baseline)]
            yield block, base[0] if base else None, "same shape"
        elif experts == "dense" and own is not None and own[3] > 4 * own[1]:
            narrow = dense.get((task, own[:3] + (4 * own[1],)))
            if narrow is not None:
                yield block, narrow, "wider FFN"
        if method != baseline and own is not None and experts not in (None, "dense") and isinstance(experts, str):
            y = spec_from_name(f"{student}-{experts}").ffn_experts
            wide = dense.get((task, own[:3] + (y * own[3],)))
            if wide is not None and wide is not block:
                yield block, wide, "same parameters"


def _lift_row(design, block: Block, base: Block | None, baseline: str, curse, level: float):
    task, student, experts, method = block.key
    row = dict(task=task, family=design.family or "all", student=student, method=method, experts=experts,
               baseline=baseline, metric=block.metric, split=block.split, ci_level=level, note="")
    if base is None:
        return dict(row, note=f"{NOT_ESTIMABLE}: no {baseline} (baseline) runs for this student shape"), None
    shared = [c.teacher for c in base.cells if c.teacher in {m.teacher for m in block.cells}]
    if len(shared) < 2:
        return dict(row, note=f"{NOT_ESTIMABLE}: {method} and {baseline} share {len(shared)} teacher(s) (needs 2)"), None
    if base.problem or block.problem:
        return dict(row, note=base.problem or block.problem), None
    cells = {c.teacher: c for c in block.cells}
    bcells = {c.teacher: c for c in base.cells}
    s, l = shared[0], shared[-1]
    row.update(smallest_teacher=s, largest_teacher=l,
               baseline_drop=base.sign * (bcells[s].mean - bcells[l].mean),
               method_drop=block.sign * (cells[s].mean - cells[l].mean))
    lift = design.contrast([(base, bcells[s], 1.0), (base, bcells[l], -1.0), (block, cells[s], -1.0),
                            (block, cells[l], 1.0)])
    row.update(units=lift.units, n_examples=lift.n_examples, scope=lift.scope)
    notes = [lift.note] if lift.note else []
    if lift.x is None:
        return dict(row, lift=row["baseline_drop"] - row["method_drop"], note="; ".join(notes)), None
    st = contrast_stats(lift.x)
    low, high = st.interval(level)
    row.update(n_units=st.n_rep, lift=float(st.estimate), lift_low=float(low), lift_high=float(high),
               df=float(st.df), p=float(st.p), unit_sd=float(np.sqrt(st.per_replicate())))
    gain = design.contrast([(block, cells[l], 1.0), (base, bcells[l], -1.0)])
    if gain.x is not None:
        gs = contrast_stats(gain.x)
        g_low, g_high = gs.interval(level)
        row.update(gain_at_largest=float(gs.estimate), gain_low=float(g_low), gain_high=float(g_high))
    drop = design.contrast([(base, bcells[s], 1.0), (base, bcells[l], -1.0)])
    established = curse[(curse.task == task) & (curse.student == base.key[1]) & (curse.method == baseline)
                        & (curse.experts == base.key[2])]
    base_ok = bool(len(established)) and established.established.iloc[0] == "yes" \
        and established.verdict.iloc[0] == "curse" and established.largest_teacher.iloc[0] == l \
        and established.smallest_teacher.iloc[0] == s
    return dict(row, note="; ".join(notes)), (st, lift.x, drop.x if base_ok and drop.x is not None else None,
                                              baseline)


def _recovered(row: dict, lift_x, drop_x, baseline: str, level: float) -> None:
    """recovered = lift / drop(baseline) with Fieller's interval, where the baseline's curse is established."""
    if drop_x is None or lift_x.shape != drop_x.shape:
        _add_note(row, f"recovered {NOT_ESTIMABLE}: {baseline} has no established curse over the same teachers "
                            f"(nothing established to recover)")
        return
    a, b = contrast_stats(lift_x), contrast_stats(drop_x)
    both = contrast_stats(lift_x + drop_x)
    cov = (both.se ** 2 - a.se ** 2 - b.se ** 2) / 2
    row["recovered"] = float(a.estimate / b.estimate)
    bounds = fieller(float(a.estimate), float(b.estimate), float(a.se ** 2), float(b.se ** 2), float(cov),
                     float(min(a.df, b.df)), level)
    if bounds is None:
        _add_note(row, f"recovered interval {NOT_ESTIMABLE}: {baseline}'s drop is not clearly above 0 at this "
                            f"level (Fieller's interval is unbounded)")
    else:
        row["recovered_low"], row["recovered_high"] = (float(v) for v in bounds)
