"""From a sweep spec to the runs it needs, in dependency order, each shared stage once.

Every run is a node: the ``DistillSpec`` it runs, built once here (or, for a truncated teacher, a
"prepare" step that writes the first k layers of a model), the nodes it depends on (their ``best/``
folders are its teacher or student, named in ``teacher_from``/``student_from``), and the labels the
results table needs (teacher, student shape, method, experts, task, seed). A node's folder is
``<output_dir>/runs/<slug>-<hash>``, the hash being the first :data:`ID_HASH` characters of
:func:`gapkit.distill.result.run_id` of its resolved ``DistillSpec`` (the ``run_id`` its ``result.json``
records), so a stage shared by several students (a teacher's fine-tuning, an assistant, a task-agnostic
student used on several tasks) is one node, and a changed setting, or a changed default of gapkit that
resolves into the config, is a new folder, never a reused one.

Order: prepare -> teacher fine-tuning -> assistant (agnostic, task) -> student agnostic -> student task.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..distill.config import STAGE_WEIGHTS, DataSpec, DistillSpec
from ..distill.result import run_id
from ..distill.runfiles import RunDir
from ..errors import ConfigError
from ..models.spec import StudentSpec, spec_from_name
from .spec import MethodSpec, SweepSpec, TeacherEntry

__all__ = ["Node", "plan", "format_plan", "estimate", "KNOWN_TRAIN_SIZES", "ID_HASH", "read_plan", "plan_changes",
           "PlanChanges"]

ID_HASH = 8  # characters of a run's run_id in its folder name

# Training-set sizes of the tasks (GLUE's official train splits, CoNLL-2003 sentences), for the
# compute estimate of a dry run before any data is read.
KNOWN_TRAIN_SIZES = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "qqp": 363846, "mnli": 392702,
                     "qnli": 104743, "rte": 2490, "wnli": 635, "conll": 14041}
# Each stage's weights before the sweep's own (gapkit.distill.config.STAGE_WEIGHTS); the kd method's task
# stage (``weights: {kd: ...}``) starts from the task stage's.
DEFAULT_WEIGHTS = {**STAGE_WEIGHTS, "kd": STAGE_WEIGHTS["task"]}


@dataclass
class Node:
    """One run of the sweep (or a prepare step).

    Attributes:
        id: the run folder's name under ``runs/``.
        kind: ``prepare``, ``finetune``, ``agnostic`` or ``task``.
        config: the run's resolved ``DistillSpec`` as a dict (``spec().to_dict()``: what its config.json
            holds), or ``{ref, layers}`` for a prepare step.
        deps: ids of the nodes whose folders this one reads.
        meta: the table's labels (role, teacher, teacher_kind, student, method, experts, task, seed,
            teacher_seed: the fine-tuning seed of the teacher replicate the run learned from, or its own for
            a teacher or assistant; None for a run that does not depend on a fine-tuned teacher ...).
        teacher_from, student_from: the node whose ``best/`` folder is this run's teacher or student (None:
            a model named in the sweep, or a fresh student).
        run: the ``DistillSpec`` (None for a prepare step; a plan read from plan.json builds it on first use).
    """

    id: str
    kind: str
    config: dict
    deps: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    teacher_from: str | None = None
    student_from: str | None = None
    run: DistillSpec | None = field(default=None, repr=False, compare=False)

    def folder(self, output_dir: str | Path) -> Path:
        return Path(output_dir) / "runs" / self.id

    def spec(self) -> DistillSpec:
        """The run's ``DistillSpec`` (the one the plan built)."""
        if self.kind == "prepare":
            raise ConfigError(f"{self.id} is a prepare step (a truncated teacher), not a run: it has no DistillSpec.")
        if self.run is None:
            self.run = DistillSpec.from_dict(self.config)
        return self.run

    def to_dict(self) -> dict:
        """The node as plan.json holds it (``run`` is ``config``)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "run"}


NODE_FIELDS = tuple(f.name for f in dataclasses.fields(Node) if f.name != "run")


class _Planner:
    def __init__(self, spec: SweepSpec):
        self.spec = spec
        self.nodes: dict[str, Node] = {}
        # Absolute: a student's config names its teacher's folder, and so does its hash; "runs/x" and
        # "/home/me/runs/x" must plan the same folders, or finished runs would look pending.
        self.runs = Path(spec.output_dir).resolve() / "runs"
        self.made: dict[str, str] = {}  # a node's best/ folder -> its id: what a later run names as its model
        self.memo: dict[tuple, Node] = {}  # shared stages asked for again by every student cell

    def add(self, kind: str, slug: str, config: dict, deps: list[str], meta: dict) -> Node:
        """The node of a run (``config``: DistillSpec fields) or a prepare step (``{ref, layers}``), built once;
        the node already planned when the same resolved config was added before."""
        run = None
        if kind != "prepare":  # every run must build: a bad combination fails the plan, before any run
            run = DistillSpec(**config, output_dir=str(self.runs / slug))
            config = run.to_dict()
        node_id = f"{slug}-{run_id(config)[:ID_HASH]}"
        if node_id not in self.nodes:
            if run is not None:  # where it is and its label: left out of run_id, set once it is known
                run.output_dir, run.name = str(self.runs / node_id), node_id
                config = run.to_dict()
            node = Node(node_id, kind, config, sorted(set(deps)), dict(meta, kind=kind),
                        teacher_from=self.made.get(str(run.teacher)) if run is not None else None,
                        student_from=self.made.get(str(run.student)) if run is not None else None, run=run)
            self.nodes[node_id] = node
            self.made[self.best(node)] = node_id
        return self.nodes[node_id]

    def best(self, node: Node) -> str:
        return str(RunDir(self.runs / node.id).best_dir)

    # -- pieces ----------------------------------------------------------------------------------------
    def weights(self, stage: str, method: MethodSpec | None = None) -> dict:
        w = dict(DEFAULT_WEIGHTS[stage], **self.spec.weights.get(stage, {}))
        if method is not None and method.option("load_balance") is not None:
            w["load_balance"] = float(method.option("load_balance"))
        return w

    def run_config(self, stage: str, student, teacher, data: DataSpec, seed: int, method: MethodSpec | None = None,
                   weights_stage: str | None = None, budget_stage: str | None = None) -> dict:
        """The fields of a run's ``DistillSpec``."""
        return dict(stage=stage, student=student, teacher=teacher, data=copy.deepcopy(data),
                    train=self.spec.train_spec(budget_stage or stage, seed),
                    weights=self.weights(weights_stage or stage, method), relation_heads=self.spec.relation_heads)

    def task_uses_teacher(self, method: MethodSpec) -> bool:
        """Whether the task stage after a task-agnostic one learns from the fine-tuned teacher (soft labels,
        hidden states or relations), or fine-tunes the student on the labels alone (the paper's
        task-agnostic setting: the teacher acts only through the first stage)."""
        w = self.weights("task", method)
        return any(w.get(term, 0) > 0 for term in ("soft", "hidden", "relation"))

    def agnostic_data(self, task: DataSpec) -> DataSpec:
        """The data of a task-agnostic run: ``agnostic_data``, or the task's own (unlabeled) stream, which
        has no labels to select on: its holdout settings are left out (the run selects on dev)."""
        if self.spec.agnostic_spec is not None:
            return self.spec.agnostic_spec
        return DataSpec(**{f.name: getattr(task, f.name) for f in dataclasses.fields(task)
                           if f.name not in ("select_on", "holdout")})

    def tseed_slug(self, tseed: int) -> str:
        """The teacher seed in a slug: only when the sweep has several (one keeps the folders it always had)."""
        return f"-t{tseed}" if len(self.spec.teacher_seeds()) > 1 else ""

    # -- teachers --------------------------------------------------------------------------------------
    def prepared(self, t: TeacherEntry) -> tuple[str, list[str]]:
        """The teacher's pre-trained weights as a reference (and the nodes that make them)."""
        if t.kind == "truncate":
            key = ("prepare", t.name)
            node = self.memo.get(key) or self.add("prepare", f"prepare-{_slug(t.name)}", dict(ref=t.ref, layers=t.layers), [],
                            dict(role="teacher", teacher=t.name, teacher_kind=t.kind, teacher_family=t.family))
            self.memo[key] = node
            return self.best(node), [node.id]
        return t.ref, []

    def finetuned(self, t: TeacherEntry, task: DataSpec, tseed: int) -> Node:
        """The teacher ``t`` fine-tuned on ``task`` with teacher seed ``tseed`` (one replicate)."""
        key = ("finetune", t.name, task.task, tseed)
        if key not in self.memo:
            self.memo[key] = self._finetuned(t, task, tseed)
        return self.memo[key]

    def _finetuned(self, t: TeacherEntry, task: DataSpec, tseed: int) -> Node:
        ref, deps = self.prepared(t)
        student = t.ref if t.kind == "scratch" else ref
        config = self.run_config("finetune", student, None, task, tseed)
        return self.add("finetune", f"teacher-{_slug(t.name)}-{task.task}{self.tseed_slug(tseed)}", config, deps,
                        dict(role="teacher", teacher=t.name, teacher_kind=t.kind, teacher_family=t.family,
                             student=t.name, method="finetune", task=task.task, seed=tseed, teacher_seed=tseed,
                             stage="finetune"))

    def relation_teacher(self, t: TeacherEntry, task: DataSpec, tseed: int) -> tuple[str, list[str], bool]:
        """The teacher of the task-agnostic stage: the pre-trained model, or (trained from scratch,
        there is no other) the fine-tuned one; and whether it is a teacher-seed replicate."""
        if t.kind == "scratch":
            node = self.finetuned(t, task, tseed)
            return self.best(node), [node.id], True
        return (*self.prepared(t), False)

    # -- students --------------------------------------------------------------------------------------
    def student(self, t: TeacherEntry, task: DataSpec, shape: str, method: MethodSpec, seed: int, tseed: int) -> None:
        """The runs of one student seed distilled from teacher ``t``'s replicate of teacher seed ``tseed``.
        A run that does not depend on that replicate (the task-agnostic stage from a pre-trained teacher)
        is one node for every teacher seed, with no teacher seed of its own."""
        spec, stages = self.spec, self.spec.stages
        ft = self.finetuned(t, task, tseed) if "task" in stages else None  # the task stage's teacher
        variant, experts = _variant(shape, method)
        meta = dict(role="student", teacher=t.name, teacher_kind=t.kind, teacher_family=t.family, student=shape,
                    method=method.label, method_name=method.name, experts=experts, task=task.task, seed=seed,
                    teacher_seed=tseed if ft is not None else None,
                    routing=method.option("routing", "learned") if method.name == "minimoe" else None)
        base = f"{_slug(t.name)}-{_slug(shape)}-{_slug(method.label)}-s{seed}"
        slug = base + self.tseed_slug(tseed)
        if method.name == "kd" or "agnostic" not in stages:
            if "task" in stages:
                self.add("task", f"task-{slug}-{task.task}", self.run_config(
                    "task", variant, self.best(ft), task, seed, method, "kd" if method.name == "kd" else "task"),
                    [ft.id], dict(meta, stage="task"))
            return
        teacher_agn, deps_agn, replicate = self.relation_teacher(t, task, tseed)
        labels_only = ft is not None and not self.task_uses_teacher(method)
        if labels_only:  # no fine-tuned teacher behind the task stage: its replicates do not apply
            ft = None
            meta["teacher_seed"] = None
            slug = base
        teacher_task, deps_task = (self.best(ft), [ft.id]) if ft is not None else (None, [])
        if method.name == "minilm_ta":
            assistant = str(method.option("assistant"))
            a_meta = dict(meta, role="assistant", student=assistant, experts="dense", seed=tseed, teacher_seed=tseed)
            a_slug = f"assistant-{_slug(t.name)}-{_slug(assistant)}{self.tseed_slug(tseed)}"
            a_agn = self.add("agnostic", a_slug, self.run_config(
                "agnostic", assistant, teacher_agn, self.agnostic_data(task), tseed), deps_agn,
                dict(a_meta, stage="agnostic", task=None if spec.agnostic_data else task.task))
            teacher_agn, deps_agn, replicate = self.best(a_agn), [a_agn.id], True
            if "task" in stages and not labels_only:  # fine-tuned on labels alone, no student learns from it
                a_task = self.add("task", f"{a_slug}-{task.task}",
                                  self.run_config("task", self.best(a_agn), teacher_task, task, tseed),
                                  deps_task + [a_agn.id], dict(a_meta, stage="task"))
                teacher_task, deps_task = self.best(a_task), [a_task.id]
        agn_meta = dict(meta, stage="agnostic", task=None if spec.agnostic_data else task.task,
                        teacher_seed=tseed if replicate else None)
        agn = self.add("agnostic", f"agn-{slug if replicate else base}" + ("" if spec.agnostic_data else
                                                                          f"-{task.task}"),
                       self.run_config("agnostic", variant, teacher_agn, self.agnostic_data(task), seed, method),
                       deps_agn, agn_meta)
        if "task" in stages:
            config = (self.run_config("finetune", self.best(agn), None, task, seed, method, "task", "task")
                      if labels_only else self.run_config("task", self.best(agn), teacher_task, task, seed, method))
            self.add("task", f"task-{slug}-{task.task}", config, deps_task + [agn.id], dict(meta, stage="task"))


def plan(spec: SweepSpec) -> list[Node]:
    """The sweep's runs in dependency order (each node after everything it reads), each shared stage once.

    Raises:
        ConfigError: a combination that cannot build (e.g. relation heads not dividing a size is found
            later, at build; a bad shape or setting here).
    """
    p = _Planner(spec)
    if "task" in spec.stages:  # an agnostic-only sweep distils from the teachers as they are
        for task, t, tseed in itertools.product(spec.task_data, spec.teacher_list, spec.teacher_seeds()):
            p.finetuned(t, task, tseed)
    for task, t, shape, method in itertools.product(spec.task_data, spec.teacher_list, spec.student_shapes,
                                                    spec.variants):
        if method.applies_to(shape):
            for tseed, seed in spec.replicates():  # a full cross, or paired
                p.student(t, task, shape, method, seed, tseed)
    order = {"prepare": 0, "finetune": 1}
    nodes = list(p.nodes.values())
    # A stable topological order: by kind rank, then declaration order, with every dependency first.
    done: dict[str, Node] = {}

    def visit(node: Node) -> None:
        if node.id in done:
            return
        for dep in node.deps:
            visit(p.nodes[dep])
        done[node.id] = node

    for node in sorted(nodes, key=lambda n: order.get(n.kind, 2)):
        visit(node)
    return list(done.values())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")[:48]


def _variant(shape: str, method: MethodSpec):
    """The student a method trains from a dense shape: (the run config's ``student`` value, experts label)."""
    if method.name != "minimoe":
        return shape, "dense"
    x, y = method.experts
    name = f"{shape}-{x},{y}E"
    extra = {k: method.option(k) for k in ("routing", "gate_noise") if method.option(k) is not None}
    if not extra:
        return name, f"{x},{y}E"
    # Ablations of the router are spec fields: the run gets the whole spec (still a random init).
    return StudentSpec.from_dict(dict(spec_from_name(name).to_dict(), **extra, name=None)), f"{x},{y}E"


# ----------------------------------------------------------------------------------------------------
# What a plan costs
# ----------------------------------------------------------------------------------------------------
def _model_spec(ref) -> StudentSpec | None:
    """The shape behind a run's ``student``/``teacher`` value, without weights or network; None when
    unknown offline (a Hub name that is not a preset)."""
    from ..flops import resolve_model

    if isinstance(ref, dict):
        return StudentSpec.from_dict(ref)
    try:
        return resolve_model(str(ref)).spec
    except Exception:  # noqa: BLE001 - unknown offline, or a folder a dependency has not written yet
        return None


def node_shape(node: Node, nodes: dict[str, Node]) -> StudentSpec | None:
    """The architecture a node trains, following ``@best`` references back to where it was declared."""
    if node.kind == "prepare":
        base = _model_spec(node.config["ref"])
        return None if base is None else StudentSpec.from_dict(dict(base.to_dict(), layers=node.config["layers"],
                                                                    name=None))
    if node.student_from in nodes:  # an earlier stage's best/ weights: the shape declared there
        return node_shape(nodes[node.student_from], nodes)
    student = node.spec().student
    return student if isinstance(student, StudentSpec) else _model_spec(student)


def estimate(nodes: list[Node], throughput=None) -> list[dict]:
    """Per node: params (total, active), GFLOPs per sequence (paper convention), training steps, the
    training compute in PFLOPs (flops convention: 2 x MACs; 3 passes per step for the trained model, one
    teacher forward) and GPU-hours (:mod:`gapkit.sweep.cost`: ``gpu_hours``, and ``rate``: ``measured``,
    ``assumed`` or ``partly measured``), where the shapes and data sizes are known.

    Args:
        nodes: the plan.
        throughput: a :class:`gapkit.sweep.cost.Throughput`; None uses the stated assumption alone.
    """
    from ..flops import analytic_count, count_params
    from ..flops import ResolvedModel
    from .cost import Throughput

    throughput = throughput if throughput is not None else Throughput()
    by_id = {n.id: n for n in nodes}
    rows = []
    for node in nodes:
        spec = node_shape(node, by_id)
        run = node.spec() if node.kind != "prepare" else None
        if spec is not None and run is not None and run.data.task == "synthetic":  # the task's vocabulary, as built
            spec = StudentSpec.from_dict(dict(spec.to_dict(), vocab_size=run.data.synthetic.get("vocab_size", 128),
                                              name=None))
        row = dict(id=node.id, kind=node.kind, params_total=None, params_active=None, gflops_paper=None,
                   steps=None, pflops=None, gpu_hours=None, rate=None, measured_shapes=[], assumed_shapes=[])
        if spec is not None:
            params = count_params(ResolvedModel(node.id, spec).build("meta"))
            row.update(params_total=params["total"], params_active=params["active"],
                       gflops_paper=analytic_count(spec, convention="paper") / 1e9)
        if run is not None:
            data, ts = run.data, run.train
            n = data.max_train_examples or KNOWN_TRAIN_SIZES.get(data.task)
            if data.task == "synthetic":
                n = n or data.synthetic.get("n_train", 2048)
            steps = ts.max_steps or (math.ceil(ts.epochs * (n // ts.batch_size)) if n else None)
            row["steps"] = steps
            teacher = by_id.get(node.teacher_from)
            t_spec = node_shape(teacher, by_id) if teacher is not None else (
                _model_spec(run.teacher) if run.teacher else None)
            L = data.max_len
            # A run whose teacher's shape is unknown offline is of unknown cost: its student's part alone
            # would look like the whole of it.
            if steps and spec is not None and (t_spec is not None or not run.teacher):
                per_step = 3 * analytic_count(spec, seq_len=L, batch=ts.batch_size, convention="flops")
                if t_spec is not None:
                    per_step += analytic_count(t_spec, seq_len=L, batch=ts.batch_size, convention="flops")
                row["pflops"] = steps * per_step / 1e15
                row.update(_gpu_hours(throughput, spec, t_spec, steps, ts.batch_size, L))
        rows.append(row)
    return rows


def _gpu_hours(throughput, spec: StudentSpec, teacher: StudentSpec | None, steps: int, batch: int,
               seq_len: int) -> dict:
    """A run's GPU-hours: its trained model's training steps plus its teacher's forwards (gapkit.sweep.cost)."""
    parts = [(spec, "train")] + ([(teacher, "forward")] if teacher is not None else [])
    seconds, kinds, out = 0.0, set(), dict(measured_shapes=[], assumed_shapes=[])
    for model, phase in parts:
        step, kind = throughput.step_seconds(model, phase, batch, seq_len)
        seconds += steps * step
        kinds.add(kind)
        out[f"{kind}_shapes"].append(f"{model.shape_name} {phase}")
    rate = kinds.pop() if len(kinds) == 1 else "partly measured"
    return dict(out, gpu_hours=seconds / 3600, rate=rate)


def format_plan(nodes: list[Node], spec: SweepSpec, throughput=None) -> str:
    """The dry-run table: runs in order, with what they train, their size, cost and dependencies, then the
    totals: compute, and GPU-hours per stage from ``throughput`` (a :class:`gapkit.sweep.cost.Throughput`;
    None: the stated assumption alone), naming which rates were measured and which assumed."""
    from .cost import Throughput

    throughput = throughput if throughput is not None else Throughput()
    rows = estimate(nodes, throughput)
    header = ("#", "kind", "teacher", "student", "method", "task", "seed", "teacher seed", "params (M) total/active",
              "GFLOPs (paper)", "steps", "PFLOPs (flops)", "GPU-h", "after")
    index = {n.id: i + 1 for i, n in enumerate(nodes)}
    body = []
    for i, (node, row) in enumerate(zip(nodes, rows), 1):
        m = node.meta
        student = m.get("student") or ""
        if m.get("experts") not in (None, "dense"):
            student = f"{student}-{m['experts']}"
        params = ("-" if row["params_total"] is None else
                  f"{row['params_total'] / 1e6:.1f}/{row['params_active'] / 1e6:.1f}")
        body.append((str(i), node.kind, str(m.get("teacher", "")), student, str(m.get("method", "")),
                     str(m.get("task") or "-"), str(m.get("seed", "-")),
                     "-" if m.get("teacher_seed") is None else str(m["teacher_seed"]), params,
                     "-" if row["gflops_paper"] is None else _number(row["gflops_paper"]),
                     "-" if row["steps"] is None else str(row["steps"]),
                     "-" if row["pflops"] is None else f"{row['pflops']:.3g}",
                     "-" if row["gpu_hours"] is None else _hours(row["gpu_hours"]) + ("*" if row["rate"] != "measured"
                                                                                      else ""),
                     ",".join(str(index[d]) for d in node.deps) or "-"))
    widths = [max(len(r[k]) for r in (header, *body)) for k in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    known = [r["pflops"] for r in rows if r["pflops"] is not None]
    unknown = sum(1 for r in rows if r["pflops"] is None and r["kind"] != "prepare")
    kinds = {k: sum(1 for n in nodes if n.kind == k) for k in ("prepare", "finetune", "agnostic", "task")}
    lines += ["", f"Sweep {spec.name!r}: {len(nodes)} runs ({', '.join(f'{v} {k}' for k, v in kinds.items() if v)}) "
                  f"into {Path(spec.output_dir) / 'runs'}.",
              f"Training compute: about {sum(known):.3g} PFLOPs (flops convention, 2 x MACs: 3 passes per step "
              f"for the trained model plus one teacher forward)"
              + (f"; {unknown} run(s) of unknown size or data left out." if unknown else ".")]
    lines += _gpu_hours_lines(nodes, rows, throughput, unknown)
    paper_axis = sorted({float(_number(r["gflops_paper"])) for n, r in zip(nodes, rows)
                         if n.meta.get("role") == "student" and r["gflops_paper"] is not None})
    if paper_axis:
        lines.append("Student GFLOPs on the paper's axis (linear layers, sequence length 128): "
                     + ", ".join(_number(g) for g in paper_axis) + ".")
    if spec.deviations:  # what the sweep knowingly does otherwise than the setup it reproduces
        lines.append(f"Deviations from the setup this sweep reproduces ({len(spec.deviations)}, declared in its file):")
        lines += [f"  - {d}" for d in spec.deviations]
    return "\n".join(lines)


def _gpu_hours_lines(nodes: list[Node], rows: list[dict], throughput, unknown: int) -> list[str]:
    """The dry run's GPU-hours: per stage and in all, and where each rate came from."""
    hours = {}
    for node, row in zip(nodes, rows):
        if row["gpu_hours"] is not None:
            hours[node.kind] = hours.get(node.kind, 0.0) + row["gpu_hours"]
    if not hours:
        return []
    measured = sorted({s for r in rows for s in r["measured_shapes"]})
    assumed = sorted({s for r in rows for s in r["assumed_shapes"]})
    stages = ", ".join(f"{kind} {_hours(h)}" for kind, h in hours.items())
    lines = [f"GPU-hours: about {_hours(sum(hours.values()))} ({stages}; training steps and teacher forwards at "
             f"max_len, evaluation not counted, a teacher pass shared by a group counted per student)"
             + (f"; {unknown} run(s) of unknown size or data left out." if unknown else ".")]
    if measured:
        machines = throughput.machines()
        lines.append(f"  measured rates ({', '.join(throughput.sources)}{'; ' + ', '.join(machines) if machines else ''}): "
                     + ", ".join(measured) + ".")
    if assumed:
        lines.append(f"  * {throughput.assumption.sentence()}, for " + ", ".join(assumed) + ": an assumption, not a "
                     "measurement; measure with benchmarks/throughput.py on the GPU (results/bench/throughput.csv, "
                     "read by default) or give rates with --throughput MODEL:PHASE=TOKENS_PER_S.")
    return lines


def _hours(value: float) -> str:
    """GPU-hours to three significant digits (whole hours from 1000 on)."""
    return f"{value:.0f}" if value >= 1000 else f"{value:.3g}"


def _number(value: float) -> str:
    """Two decimals, or three significant digits for the small values of tiny models."""
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.3g}"


def plan_json(nodes: list[Node], spec: SweepSpec) -> str:
    return json.dumps(dict(sweep=spec.to_dict(), nodes=[n.to_dict() for n in nodes]), indent=1)


def read_plan(output_dir: str | Path) -> tuple[dict, list[Node]]:
    """The plan a sweep wrote into its folder (``plan.json``)."""
    path = Path(output_dir) / "plan.json"
    if not path.is_file():
        raise ConfigError(f"{output_dir} holds no sweep (no plan.json): run `gapkit sweep CONFIG` first, or give "
                          f"the sweep's output_dir.")
    try:
        data = json.loads(path.read_text())
        return data["sweep"], [Node(**{k: v for k, v in n.items() if k in NODE_FIELDS}) for n in data["nodes"]]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path} is not a readable sweep plan ({type(err).__name__}): rerun the sweep to write "
                          f"it again.") from None


@dataclass
class PlanChanges:
    """How a new plan differs from the one a sweep folder already holds (:func:`plan_changes`).

    Attributes:
        dropped: ids of the earlier plan's runs that have a folder with something in it and are not in the
            new plan (they would drop out of ``results`` and ``status``).
        added: ids of the new plan's runs that the earlier plan did not have.
        settings: the sweep settings (top-level keys) that differ between the two.
    """

    dropped: list
    added: list
    settings: list

    def sentence(self, output_dir) -> str:
        """Why a sweep folder cannot simply be reused with the new plan, and what to do."""
        changed = (f"settings changed: {', '.join(self.settings)}" if self.settings else
                   "the same settings, resolved by this gapkit into other run configs")
        return (f"{output_dir} holds a sweep planned from other settings ({changed}): {len(self.dropped)} of its "
                f"started runs (e.g. {self.dropped[0]}) are not in this plan and would drop out of its results and "
                f"status; pass --replan to plan the folder anew (their run folders stay in runs/), or set "
                f"output_dir to a new folder.")


def plan_changes(output_dir: str | Path, nodes: list[Node], spec: SweepSpec) -> PlanChanges | None:
    """The difference between ``nodes`` (the plan of ``spec``) and the plan already in ``output_dir``; None
    when the folder holds no readable plan. Extending a sweep (more seeds, a new teacher) drops nothing."""
    try:
        sweep, old = read_plan(output_dir)
    except ConfigError:
        return None
    new = {n.id for n in nodes}
    dropped = [n.id for n in old if n.id not in new and n.folder(output_dir).is_dir()
               and any(n.folder(output_dir).iterdir())]
    before = {n.id for n in old}
    settings = sorted(k for k, v in spec.to_dict().items() if k != "output_dir" and json.dumps(
        sweep.get(k), sort_keys=True, default=str) != json.dumps(v, sort_keys=True, default=str))
    return PlanChanges(dropped, [n.id for n in nodes if n.id not in before], settings)
