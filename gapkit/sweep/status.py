"""Where each planned run of a sweep stands, read from its folder, and the sweep's failure records.

A run's own state comes from its run folder (:class:`gapkit.distill.runfiles.RunDir`, the one reader of
that layout), compared with the config the plan resolves for it now: a folder holding a run of another
config is ``stale``, never ``done``. A unit that ended without its run writing a result (a crashed worker,
a config that cannot be built) leaves a failure record, ``<sweep>/failures/<node>.json``, which the next
start of the sweep clears and tries again. How far each run is, and how long the sweep has left, is
:func:`sweep_progress` (from each run's progress record, :class:`gapkit.distill.runfiles.Progress`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..distill.runfiles import Progress, RunDir, RunStatus
from ..errors import GapkitError
from ..io import atomic_write, json_dumps
from .plan import Node

__all__ = ["node_status", "plan_status", "sweep_status", "sweep_progress", "teacher_lines", "FailureRecords",
           "TeacherGate", "SweepProgress", "RunProgress", "STATES"]

# skipped: not run because a teacher it learns from is not above the sweep's teachers_must_beat (TeacherGate)
STATES = ("done", "running", "interrupted", "stale", "failed", "skipped", "pending")


class FailureRecords:
    """The failure records of a sweep (``<output_dir>/failures/<node>.json``: run_dir, status, reason)."""

    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir) / "failures"

    def path(self, node_id: str) -> Path:
        return self.dir / f"{node_id}.json"

    def reason(self, node_id: str) -> RunStatus | None:
        """``failed`` with the recorded reason (or a sentence saying the record is unreadable), or None."""
        path = self.path(node_id)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return RunStatus("failed", f"The sweep's failure record {path} is not readable JSON: the run failed "
                                       f"for a reason now lost; rerunning the sweep tries it again.")
        return RunStatus("failed", record.get("reason"))

    def write(self, node_id: str, outcome: dict) -> None:
        self.dir.mkdir(exist_ok=True)
        atomic_write(self.path(node_id), json_dumps(outcome, indent=2))

    def clear(self, node_id: str) -> bool:
        """Remove a node's record (it is tried again); True when there was one."""
        path = self.path(node_id)
        if not path.is_file():
            return False
        path.unlink()
        return True


def _resolved(node: Node) -> dict | None:
    """The config the run of ``node`` has when built now (gapkit's defaults of today), or None when it cannot
    be built (the executor then records why)."""
    try:
        return node.spec().to_dict()
    except (GapkitError, TypeError, ValueError):
        return None


def node_status(node: Node, output_dir: str | Path) -> RunStatus:
    """``done``, ``failed``, ``stale`` (its folder holds a run of another config than the plan's, resolved now),
    ``running`` (a live process holds it), ``interrupted`` (started, not ended, no process on it: the next
    run of the sweep resumes it) or ``pending``, with a sentence for ``failed`` and ``stale``."""
    run = RunDir(node.folder(output_dir))
    if node.kind == "prepare":  # a truncated teacher: best/ as a Hugging Face folder, no run record
        status = RunStatus("done") if run.has_best() else run.status()
    else:
        status = run.status(_resolved(node))
    if status.state in ("interrupted", "pending"):
        return FailureRecords(output_dir).reason(node.id) or status
    return status


class TeacherGate:
    """The fine-tuned teachers of a sweep against chance (:mod:`gapkit.analysis.teacher_check`), and the runs
    its ``teachers_must_beat`` stops: every run not yet ended that needs, directly or through another run, a
    teacher fine-tune whose check does not pass the bar is ``skipped``, with the sentence saying why. Nothing
    is recorded: the gate is recomputed from the teachers' run folders and the setting each time, so a sweep
    started again with ``teachers_must_beat: none`` (or a better-trained teacher) trains those runs.

    Args:
        nodes: the plan.
        output_dir: the sweep folder.
        must_beat: ``none``, ``chance`` or ``majority`` (:data:`gapkit.sweep.spec.MUST_BEAT`).
    """

    def __init__(self, nodes: list[Node], output_dir: str | Path, must_beat: str = "none"):
        self.nodes, self.output_dir, self.must_beat = nodes, Path(output_dir), must_beat or "none"
        self._checks: dict[str, dict] = {}  # a finished teacher fine-tune's check (it no longer changes)

    def check(self, node: Node) -> dict | None:
        """The chance check of a finished teacher fine-tune (None for other nodes and unfinished ones)."""
        if node.kind != "finetune" or node.meta.get("role") != "teacher":
            return None
        if node.id not in self._checks:
            from ..analysis.teacher_check import check_run

            run = RunDir(node.folder(self.output_dir))
            try:
                result = run.result()
            except GapkitError:
                return None
            if result is None or result.status == "failed":
                return None
            self._checks[node.id] = check_run(run.dir)
        return self._checks[node.id]

    def below(self) -> list[tuple[Node, dict]]:
        """The finished teacher fine-tunes not shown above the majority baseline (chance-level ones among
        them), with their checks: the teachers every output names."""
        from ..analysis.teacher_check import flagged

        return [(n, c) for n in self.nodes if (c := self.check(n)) is not None and flagged(c.get("verdict"))]

    def sentence(self, node: Node, check: dict) -> str:
        """Why the runs that need teacher fine-tune ``node`` are skipped."""
        from ..analysis.teacher_check import describe

        bar = "the majority class" if self.must_beat == "majority" else "chance"
        return (f"teacher {node.meta.get('teacher')} ({node.id}) is not above {bar}: {describe(check)}; "
                f"teachers_must_beat: {self.must_beat} stops "
                f"the runs that learn from it (set teachers_must_beat: none to train them anyway, or give the "
                f"teacher a budget it learns in).")

    def skipped(self, states: dict) -> dict[str, RunStatus]:
        """``{node id: RunStatus("skipped", why)}`` for the runs of ``states`` (node id -> (state, reason))
        that have not ended and need a teacher that does not pass the bar."""
        from ..analysis.teacher_check import stops

        if self.must_beat == "none":
            return {}
        children: dict[str, list[Node]] = {}
        for n in self.nodes:
            for d in n.deps:
                children.setdefault(d, []).append(n)
        out: dict[str, RunStatus] = {}
        for teacher in self.nodes:
            check = self.check(teacher)
            if check is None or not stops(check, self.must_beat):
                continue
            why = self.sentence(teacher, check)
            todo = list(children.get(teacher.id, []))
            while todo:
                n = todo.pop()
                if n.id in out or states[n.id][0] not in ("pending", "interrupted"):
                    continue
                out[n.id] = RunStatus("skipped", why)
                todo += children.get(n.id, [])
        return out


def _states(nodes: list[Node], output_dir: str | Path, must_beat: str) -> tuple[list[RunStatus], TeacherGate]:
    states = {n.id: node_status(n, output_dir) for n in nodes}
    gate = TeacherGate(nodes, output_dir, must_beat)
    states.update(gate.skipped(states))
    return [states[n.id] for n in nodes], gate


def sweep_status(output_dir: str | Path):
    """Where every run of the sweep in ``output_dir`` stands, the sweep's ``teachers_must_beat`` applied.

    Returns:
        (the sweep's settings, its nodes, a :class:`RunStatus` per node, the :class:`TeacherGate`).
    Raises:
        ConfigError: the folder holds no readable plan.
    """
    from .plan import read_plan

    sweep, nodes = read_plan(output_dir)
    states, gate = _states(nodes, output_dir, sweep.get("teachers_must_beat") or "none")
    return sweep, nodes, states, gate


def teacher_lines(gate: TeacherGate) -> list[str]:
    """A line per finished teacher fine-tune not shown above the majority baseline (``gapkit status``)."""
    from ..analysis.teacher_check import describe, stops

    lines = []
    for node, check in gate.below():
        fate = ("its students are skipped" if stops(check, gate.must_beat) else
                "its students are trained; the report and figures mark them")
        lines.append(f"  teacher {node.meta.get('teacher')} ({node.id}): {check['verdict']}: {describe(check)}; "
                     f"{fate} (teachers_must_beat: {gate.must_beat})")
    return lines


def plan_status(nodes: list[Node], output_dir: str | Path, must_beat: str = "none"):
    """Where each planned run stands in ``output_dir`` (:func:`node_status`), as a table.

    Args:
        nodes: a plan (:func:`gapkit.sweep.plan`).
        output_dir: the sweep folder to look in (it need not exist: every run is then ``pending``).
        must_beat: the sweep's ``teachers_must_beat``: runs it stops are ``skipped`` (:class:`TeacherGate`).
    Returns:
        A DataFrame, one row per node in plan order: ``id``, ``kind``, ``teacher``, ``student``,
        ``method``, ``seed``, ``status`` (done, running, interrupted, stale, failed, skipped, pending) and
        ``reason``.
    """
    import pandas as pd

    states, _ = _states(nodes, output_dir, must_beat)
    rows = [dict(id=n.id, kind=n.kind, teacher=n.meta.get("teacher"), student=n.meta.get("student"),
                 method=n.meta.get("method"), seed=n.meta.get("seed"), **state._asdict())
            for n, state in zip(nodes, states)]
    frame = pd.DataFrame(rows, columns=["id", "kind", "teacher", "student", "method", "seed", "state", "reason"])
    return frame.rename(columns={"state": "status"})


# ----------------------------------------------------------------------------------------------------
# Progress: how far each run is, and how long the sweep has left
# ----------------------------------------------------------------------------------------------------
@dataclass
class RunProgress:
    """One planned run's progress, as ``gapkit status`` shows it.

    Attributes:
        node, state: the run and its state (:data:`STATES`).
        progress: its ``progress.json`` (:class:`~gapkit.distill.runfiles.Progress`), or None.
        seconds_left: the run's own work left (a pending run: all of it), or None when it cannot be estimated.
        basis: how ``seconds_left`` was estimated: ``rate`` (the run's own recent rate), ``own`` (an
            interrupted run's mean step time), ``alike`` (finished runs of the same stage and shape) or
            ``unknown``.
        note: a sentence about the progress record when it cannot be read.
    """

    node: Node
    state: str
    progress: Progress | None = None
    seconds_left: float | None = None
    basis: str = "unknown"
    note: str | None = None


@dataclass
class SweepProgress:
    """How far a sweep is and how long it has left (:func:`sweep_progress`).

    Attributes:
        runs: node id -> :class:`RunProgress`, for every run that is not done, failed, stale or skipped.
        seconds_left: the estimated time until the sweep ends, or None when some work cannot be estimated.
        how: the sentence saying how ``seconds_left`` was estimated (or why it was not).
        now: the time the estimate is for.
    """

    runs: dict
    seconds_left: float | None
    how: str
    now: float

    def detail(self, node_id: str) -> str | None:
        """What ``gapkit status`` adds to a run's line: step/total, rate, time left, or None."""
        rp = self.runs.get(node_id)
        if rp is None:
            return None
        p = rp.progress
        if rp.note:
            return rp.note
        if rp.state == "running":
            if p is None:
                return "starting (building its data and models; no step yet)"
            text = f"step {p.step}/{p.total_steps}"
            if p.steps_per_s is None:
                text += ", starting (no step logged yet)"
            else:
                text += f", {format_rate(p.steps_per_s)}"
                if p.tokens_per_s:
                    text += f" ({p.tokens_per_s:,.0f} tokens/s)"
                text += f", {format_duration(rp.seconds_left)} left" if rp.seconds_left is not None else ""
            if p.resumed_from:
                text += f"; resumed at step {p.resumed_from}"
            quiet = p.quiet_s(self.now)
            if quiet is not None:
                text += f"; no progress for {format_duration(quiet)} (a long evaluation, or a hang)"
            return text
        if rp.state == "interrupted" and p is not None:
            ago = format_duration(self.now - p.updated_at)
            return (f"stopped at step {p.step}/{p.total_steps}, last progress {ago} ago; the next `gapkit sweep` "
                    f"resumes it from its last checkpoint")
        return None

    def sentence(self) -> str:
        """The sweep's time left, and how it was estimated."""
        if self.seconds_left is None:
            return f"sweep time left: unknown ({self.how})"
        if self.seconds_left == 0:
            return "sweep time left: none (nothing left to run)"
        return f"sweep time left: about {format_duration(self.seconds_left)} ({self.how})"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_rate(steps_per_s: float) -> str:
    return f"{steps_per_s:.3g} steps/s" if steps_per_s >= 0.1 else f"{1 / steps_per_s:.3g} s/step"


def _alike_keys(node: Node) -> tuple:
    """(the same run but its seeds, the same stage and student shape): how a pending run is matched with
    finished ones."""
    exact = json.dumps({k: v for k, v in node.meta.items() if k not in ("seed", "teacher_seed")}, sort_keys=True,
                       default=str)
    return (node.kind, exact), (node.kind, node.meta.get("task"), json.dumps(node.meta.get("student"), default=str))


def _sharing(records: list[Progress]) -> list[int]:
    """For each record, how many runs its process trained at the same time (a sweep group steps its runs
    together, so each one's rate is the group's): records of one host and pid whose spans overlap."""
    out = []
    for r in records:
        out.append(sum(1 for o in records if (o.host, o.pid) == (r.host, r.pid)
                       and o.launched_at <= r.updated_at and r.launched_at <= o.updated_at))
    return out


def sweep_progress(nodes: list[Node], states: list[RunStatus], output_dir: str | Path, executor: dict | None = None,
                   now: float | None = None) -> SweepProgress:
    """How far each run of a sweep is, and an estimate of the sweep's time left.

    Each running run's time left is its remaining steps at its recent rate (:meth:`Progress.seconds_left`);
    runs one process trains together (a group) end together, so a process counts once, with its longest.
    An interrupted run has its remaining steps left at its own mean step time; a pending run takes as long as
    the finished runs like it (the same run but its seeds, else the same stage and student shape: their
    build time plus their mean step time times their steps, shared among the runs their process trained at
    once). Prepare steps (truncated teachers) are counted as taking no time, and runs that need a failed, stale
    or skipped run are left out (they will not run). The sweep's time left is the
    work left divided by the parallelism (the processes training runs now; else 1 for the ``inline``
    executor, else the executor's ``workers``), and never less than the longest running process. It is
    ``unknown`` (None) when some work has nothing to be estimated from, or the parallelism is unknown.

    Args:
        nodes, states: the plan and each node's :class:`RunStatus` (:func:`sweep_status`).
        output_dir: the sweep folder.
        executor: the sweep's executor settings (``{kind, workers, ...}``).
        now: the time to estimate at (default: ``time.time()``).
    """
    now = time.time() if now is None else now
    runs: dict[str, RunProgress] = {}
    records: dict[str, Progress] = {}
    state_of = {n.id: st.state for n, st in zip(nodes, states)}
    blocked: set[str] = set()  # runs that need a failed, stale or skipped one: they will not run
    for node in nodes:  # the plan is in dependency order
        if any(state_of[d] in ("failed", "stale", "skipped") or d in blocked for d in node.deps):
            blocked.add(node.id)
    for node, status in zip(nodes, states):
        if node.kind == "prepare" or node.id in blocked:
            continue
        note = None
        try:
            progress = RunDir(node.folder(output_dir)).progress()
        except GapkitError as err:
            progress, note = None, str(err)
        if progress is not None:
            records[node.id] = progress
        if status.state in ("running", "interrupted", "pending"):
            runs[node.id] = RunProgress(node, status.state, progress, note=note)
    ids = list(records)
    shares = dict(zip(ids, _sharing([records[i] for i in ids])))
    by_id = {n.id: n for n in nodes}

    costs: dict[tuple, list[float]] = {}  # alike key -> seconds a finished run took, its share of its process
    for node, status in zip(nodes, states):
        p = records.get(node.id)
        if status.state != "done" or p is None or not p.ended or p.mean_step_s is None:
            continue
        cost = p.build_s + p.mean_step_s * p.total_steps / shares[node.id]
        for key in _alike_keys(node):
            costs.setdefault(key, []).append(cost)

    def alike(node: Node) -> float | None:
        for key in _alike_keys(node):
            if key in costs:
                return sum(costs[key]) / len(costs[key])
        return None

    processes: dict[tuple, float] = {}  # a running process -> its longest run's time left
    work, unknown = 0.0, {"running": 0, "interrupted": 0, "pending": 0}
    for node_id, rp in runs.items():
        p, node = rp.progress, by_id[node_id]
        if rp.state == "running":
            left = p.seconds_left(now) if p is not None else None
            rp.basis = "rate" if left is not None else "unknown"
            if left is None and (full := alike(node)) is not None:
                started = p.launched_at if p is not None else now
                left, rp.basis = max(full - (now - started), 0.0), "alike"
            rp.seconds_left = left
            if left is None:
                unknown["running"] += 1
            else:
                key = (p.host, p.pid) if p is not None else ("?", node_id)
                processes[key] = max(processes.get(key, 0.0), left)
            continue
        left = None
        if rp.state == "interrupted" and p is not None and p.mean_step_s is not None:
            left, rp.basis = p.build_s + p.remaining_steps * p.mean_step_s / shares[node_id], "own"
        elif (full := alike(node)) is not None:
            done_part = p.step / p.total_steps if p is not None and p.total_steps else 0.0
            left, rp.basis = full * (1 - done_part), "alike"
        rp.seconds_left = left
        if left is None:
            unknown[rp.state] += 1
        else:
            work += left
    work += sum(processes.values())

    live = {(p.host, p.pid) for rp in runs.values() if rp.state == "running" and (p := rp.progress) is not None}
    executor = executor or {}
    kind = executor.get("kind", "inline")
    if live:
        parallel, where = len(live), f"{len(live)} process{'es' if len(live) > 1 else ''} training runs now"
    elif kind == "inline":
        parallel, where = 1, "one run at a time (executor inline)"
    elif kind == "local" and executor.get("workers"):
        parallel, where = executor["workers"], f"{executor['workers']} workers (executor.workers)"
    else:
        parallel, where = None, None

    counted = {s: sum(1 for rp in runs.values() if rp.state == s and rp.seconds_left is not None)
               for s in ("running", "interrupted", "pending")}
    parts = []
    if counted["running"]:
        parts.append(f"{counted['running']} running at their recent rates")
    if counted["interrupted"]:
        parts.append(f"{counted['interrupted']} interrupted at their own step times")
    if counted["pending"]:
        parts.append(f"{counted['pending']} pending timed by finished runs like them")
    missing = [f"{n} {s}" for s, n in unknown.items() if n]
    if not runs:
        return SweepProgress(runs, 0.0, "nothing left to run", now)
    if missing:
        why = (f"{' and '.join(missing)} run(s) have nothing to time them by yet (no rate logged, and no finished run "
               f"of the same stage and student shape)")
        return SweepProgress(runs, None, why, now)
    if parallel is None:
        return SweepProgress(runs, None, f"{format_duration(work)} of run time left ({'; '.join(parts)}), but how "
                                         f"many run at once is unknown until the sweep's runs are running "
                                         f"(executor {kind})", now)
    longest = max(processes.values(), default=0.0)
    seconds = max(work / parallel, longest)
    return SweepProgress(runs, seconds, f"{'; '.join(parts)}; over {where}", now)
