"""Running a sweep: a scheduler over the plan, and three executors that run its units unchanged.

A unit is a prepare step or a group of runs (:func:`gapkit.sweep.group.run_group`). The scheduler
submits every unit whose dependencies have finished, waits for any to end, and goes on; a run that
fails (bad input, NaN) is recorded with its reason, the runs that need it are marked blocked, and the
rest of the sweep continues. Rerunning a sweep skips finished runs and resumes interrupted ones (each
run folder keeps its own state; see :mod:`gapkit.distill.runfiles`). A run folder that holds a run of
another config than the one planned now (a changed setting, or a changed gapkit default) is ``stale``
(:mod:`gapkit.sweep.status`): the sweep refuses to start, naming the run and what differs, before it
writes or trains anything; it never reuses that result and never replaces it.

Executors (``executor: {kind: ...}`` in the sweep file, or ``--executor``):

* ``inline``: one process, units one after another.
* ``local``: a process pool over slots: one slot per visible GPU (``CUDA_VISIBLE_DEVICES`` set per
  worker), or ``workers`` CPU slots sharing the cores.
* ``slurm``: each unit a Slurm job through submitit (``submitit.AutoExecutor``; ready units are
  submitted together as a job array), requeued on preemption (a job's checkpoint is its run folders).
  ``cluster: local`` runs the same jobs as local processes (how it is tested); ``slurm: {...}`` are
  submitit's parameters (``timeout_min``, ``gpus_per_node``, ``slurm_partition``, ...). With
  ``tasks_per_node`` > 1 every task joins one torch.distributed group (submitit's environment), so the
  runs of a job train data-parallel.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from ..distill.config import DistillSpec
from ..distill.runfiles import RunDir
from ..errors import ConfigError
from ..io import atomic_write
from .group import Outcome, group_key, memory_estimate, prepare_truncated, run_group
from .plan import Node, estimate, node_shape, plan, plan_changes, plan_json
from .spec import EXECUTORS, SweepSpec
from .status import FailureRecords, TeacherGate, node_status, plan_status
from .table import write_table

__all__ = ["run_sweep", "SweepReport", "Unit", "node_status", "plan_status"]


class Unit:
    """What one worker runs: a prepare step, or a group of runs. Picklable (submitit, process pools)."""

    def __init__(self, node_ids: list[str], kind: str, payload: list[dict], progress: bool = False):
        self.node_ids, self.kind, self.payload, self.progress = node_ids, kind, payload, progress

    def __call__(self) -> list[dict]:
        rank = _maybe_distributed()
        if self.kind == "prepare":
            if rank != 0:  # one writer: the other tasks of a multi-task job leave the folder to task 0
                return []
            out = []
            for cfg in self.payload:
                try:
                    prepare_truncated(cfg["ref"], cfg["layers"], cfg["folder"])
                    out.append(asdict(Outcome(cfg["folder"], "completed")))
                except Exception as err:  # noqa: BLE001 - recorded for the user, the sweep goes on
                    out.append(asdict(Outcome(cfg["folder"], "failed", f"{type(err).__name__}: {err}")))
            return out
        specs = [DistillSpec.from_dict(cfg) for cfg in self.payload]
        return [asdict(o) for o in run_group(specs, progress=self.progress)]

    def checkpoint(self, *args, **kwargs):
        """submitit's requeue hook: the same unit again; each run resumes from its own folder."""
        import submitit

        return submitit.helpers.DelayedSubmission(Unit(self.node_ids, self.kind, self.payload, self.progress))


def _maybe_distributed() -> int:
    """Inside a multi-task submitit job, export torch.distributed's environment (rank, world, master);
    returns this task's global rank (0 outside such a job). submitit returns task 0's result."""
    try:
        import submitit

        env = submitit.JobEnvironment()
    except (ImportError, RuntimeError):
        return 0
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return env.global_rank


# ----------------------------------------------------------------------------------------------------
# Executors: submit(unit) -> a handle with done() and result()
# ----------------------------------------------------------------------------------------------------
class _Done:
    def __init__(self, value):
        self.value = value

    def done(self) -> bool:
        return True

    def result(self):
        return self.value


class InlineExecutor:
    def submit_all(self, units: list[Unit]) -> list:
        return [_Done(unit()) for unit in units]

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """Linux: a pool worker gets SIGKILL when the sweep process dies, however it dies, so no orphan
    goes on writing (and holding) run folders that the next start of the sweep will resume."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_slot(slots, threads: int) -> None:
    _die_with_parent()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # as the command line does: no load reports or bars per worker
    hf_logging.disable_progress_bar()
    slot = slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
    import torch

    torch.set_num_threads(threads)


class LocalExecutor:
    """A process pool: one worker per GPU, or ``workers`` CPU workers splitting the cores."""

    def __init__(self, workers: int | None = None):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        import torch

        gpus = torch.cuda.device_count()
        n = gpus if gpus else (workers or 1)
        ctx = mp.get_context("spawn")
        slots = ctx.Queue()
        for i in range(n):
            slots.put(i if gpus else None)
        threads = max(1, (os.cpu_count() or 1) // n)
        self.pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_slot,
                                        initargs=(slots, threads))

    def submit_all(self, units: list[Unit]) -> list:
        return [self.pool.submit(unit) for unit in units]

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class SlurmExecutor:
    """submitit: a job per unit, submitted as an array; ``cluster: local`` for local processes."""

    def __init__(self, folder: Path, cluster: str | None = None, parameters: dict | None = None):
        try:
            import submitit
        except ImportError:
            raise ConfigError("executor kind 'slurm' needs submitit: pip install 'gapkit[slurm]'.") from None
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(**(parameters or {}))

    def submit_all(self, units: list[Unit]) -> list:
        with self.executor.batch():
            jobs = [self.executor.submit(unit) for unit in units]
        return jobs

    def close(self) -> None:
        pass


def make_executor(spec: SweepSpec, kind: str | None = None):
    settings = dict(spec.executor)
    kind = kind or settings.pop("kind", "inline")
    settings.pop("kind", None)
    if kind not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}.")
    if kind == "inline":
        return InlineExecutor()
    if kind == "local":
        return LocalExecutor(settings.get("workers"))
    return SlurmExecutor(Path(spec.output_dir) / "slurm", settings.get("cluster"), settings.get("slurm"))


# ----------------------------------------------------------------------------------------------------
# The scheduler
# ----------------------------------------------------------------------------------------------------
class SweepReport:
    """How a sweep ended: per node ``done``/``failed``/``blocked``/``skipped``/``pending``, with reasons
    (``skipped``: a teacher it needs is not above the sweep's ``teachers_must_beat``)."""

    def __init__(self, nodes: list[Node], status: dict[str, tuple[str, str | None]], output_dir: str):
        self.nodes, self.status, self.output_dir = nodes, status, output_dir

    @property
    def failures(self) -> list[tuple[str, str, str | None]]:
        return [(n.id, *self.status[n.id]) for n in self.nodes if self.status[n.id][0] in ("failed", "blocked")]

    @property
    def skipped(self) -> list[tuple[str, str | None]]:
        """(node id, why) of the runs the sweep's ``teachers_must_beat`` stopped."""
        return [(n.id, self.status[n.id][1]) for n in self.nodes if self.status[n.id][0] == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failures and all(self.status[n.id][0] == "done" for n in self.nodes)


def _units(ready: list[Node], nodes: list[Node], output_dir: str, budget_bytes: float, progress: bool) -> list[Unit]:
    """Ready nodes packed into units: prepare steps together; runs grouped by teacher pass, each group
    cut where its students' memory would pass the budget."""
    units, groups = [], {}
    prepares = [n for n in ready if n.kind == "prepare"]
    if prepares:
        units.append(Unit([n.id for n in prepares], "prepare",
                          [dict(n.config, folder=str(n.folder(output_dir))) for n in prepares], progress))
    by_id = {n.id: n for n in nodes}
    rows = {r["id"]: r for r in estimate([n for n in ready if n.kind != "prepare"])}
    for node in ready:
        if node.kind != "prepare":  # runs without a teacher share nothing: each is its own unit
            spec = node.spec()
            groups.setdefault(group_key(spec) if spec.teacher else node.id, []).append(node)
    for members in groups.values():
        chunk, used = [], 0.0
        for node in members:
            spec, shape = node.spec(), node_shape(node, by_id)
            params = (rows.get(node.id) or {}).get("params_total")
            need = memory_estimate(spec, params, shape.hidden, shape.layers) if params and shape else 0
            if chunk and used + need > budget_bytes:
                units.append(Unit([n.id for n in chunk], "runs", [n.config for n in chunk], progress))
                chunk, used = [], 0.0
            chunk.append(node)
            used += need
        if chunk:
            units.append(Unit([n.id for n in chunk], "runs", [n.config for n in chunk], progress))
    return units


def run_sweep(spec: SweepSpec, executor: str | None = None, progress: bool = True, log=print,
              replan: bool = False) -> SweepReport:
    """Run (or continue) a sweep: every run of its plan, in dependency order, on the chosen executor.

    Args:
        spec: the sweep.
        executor: ``inline``, ``local`` or ``slurm`` (default: the spec's ``executor.kind``).
        progress: progress bars of the runs (inline) and a line per finished unit.
        log: where the scheduler's lines go.
        replan: go on when ``output_dir`` holds an earlier plan with started runs that this one drops (they
            leave the results and status; their folders stay). Without it, that is refused.
    Returns:
        A :class:`SweepReport`; the results table is written to ``output_dir/results.{parquet,csv}``.
    """
    nodes = plan(spec)
    out = Path(spec.output_dir)
    status = {n.id: node_status(n, out) for n in nodes}
    stale = [n.id for n in nodes if status[n.id][0] == "stale"]
    if stale:  # before anything is written or run: a finished result is never replaced behind the user's back
        more = len(stale) - 1
        raise ConfigError(f"Sweep {spec.name}: {status[stale[0]][1].rstrip('.')}" + (
            f"; {more} more planned run(s) are stale too (`gapkit status {out}` lists them)." if more else "."))
    changes = plan_changes(out, nodes, spec)  # the folder's earlier plan: runs it started must not vanish unsaid
    if changes is not None and changes.dropped and not replan:
        raise ConfigError(changes.sentence(out))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "plan.json", plan_json(nodes, spec))
    failures = FailureRecords(out)
    for n in nodes:  # a failure recorded by an earlier attempt of bad input is tried again
        if status[n.id][0] == "failed" and failures.clear(n.id):
            status[n.id] = node_status(n, out)
    # Teachers are checked against chance as they finish; the runs of one below the bar are skipped.
    gate = TeacherGate(nodes, out, spec.teachers_must_beat)
    told: set[str] = set()
    ex = make_executor(spec, executor)
    by_id = {n.id: n for n in nodes}
    in_flight: list[tuple[Unit, object]] = []
    submitted: set[str] = set()
    budget = spec.group_memory_gb * 1e9
    done_count = sum(1 for s, _ in status.values() if s == "done")
    log(f"sweep {spec.name}: {len(nodes)} runs, {done_count} already done; folder {out}")
    try:
        while True:
            status.update(gate.skipped(status))
            _tell_teachers(gate, status, told, log)
            for n in nodes:  # a run whose input failed cannot run
                if status[n.id][0] in ("pending", "interrupted") and any(status[d][0] in ("failed", "blocked")
                                                                    for d in n.deps):
                    bad = next(d for d in n.deps if status[d][0] in ("failed", "blocked"))
                    status[n.id] = ("blocked", f"needs {bad}, which {status[bad][0]}")
            ready = [n for n in nodes if n.id not in submitted and status[n.id][0] in ("pending", "interrupted")
                     and all(status[d][0] == "done" for d in n.deps)]
            if ready:
                units = _units(ready, nodes, str(out), budget, progress and isinstance(ex, InlineExecutor))
                submitted.update(n.id for n in ready)
                in_flight += list(zip(units, ex.submit_all(units)))
            if not in_flight:
                break
            finished = [(u, h) for u, h in in_flight if h.done()]
            if not finished:
                time.sleep(0.5)
                continue
            in_flight = [(u, h) for u, h in in_flight if not h.done()]
            for unit, handle in finished:
                try:
                    outcomes = handle.result()
                except Exception as err:  # noqa: BLE001 - a crashed worker or job: its runs are failed
                    outcomes = [dict(run_dir=str(by_id[i].folder(out)), status="failed",
                                     reason=f"{type(err).__name__}: {err}") for i in unit.node_ids]
                for node_id, o in zip(unit.node_ids, outcomes):
                    node = by_id[node_id]
                    if o["status"] == "failed" and not RunDir(node.folder(out)).result_file.is_file():
                        failures.write(node_id, o)
                    status[node_id] = node_status(node, out)
                    if status[node_id][0] not in ("done", "failed"):  # a job that ended without its run ending
                        status[node_id] = ("failed", o.get("reason") or "the job ended before the run did")
                done_count = sum(1 for s, _ in status.values() if s == "done")
                log(f"[{done_count}/{len(nodes)}] " + ", ".join(f"{i}: {status[i][0]}" for i in unit.node_ids))
    finally:
        ex.close()
    write_table(out)
    report = SweepReport(nodes, status, str(out))
    if report.skipped:
        log(f"{len(report.skipped)} run(s) skipped: a teacher they need is not above "
            f"{'the majority class' if spec.teachers_must_beat == 'majority' else 'chance'} "
            f"(teachers_must_beat: {spec.teachers_must_beat}; gapkit status {out} lists them).")
    return report


def _tell_teachers(gate: TeacherGate, status: dict, told: set, log) -> None:
    """Say once, as each teacher fine-tune ends, that it is not shown above the majority baseline, and what
    that does to its students (skipped by ``teachers_must_beat``, or trained and marked)."""
    from ..analysis.teacher_check import describe, stops

    for node, check in gate.below():
        if node.id in told:
            continue
        told.add(node.id)
        if stops(check, gate.must_beat):
            n = sum(1 for s, why in status.values() if s == "skipped" and why and node.id in why)
            log(f"teacher {node.meta.get('teacher')}: {check['verdict']} ({describe(check)}): {n} run(s) that learn "
                f"from it skipped (teachers_must_beat: {gate.must_beat}).")
        else:
            log(f"WARNING: teacher {node.meta.get('teacher')}: {check['verdict']} ({describe(check)}); its students "
                f"are trained anyway (teachers_must_beat: {gate.must_beat}) and marked in the results, the report "
                f"and the figures.")
