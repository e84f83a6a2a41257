"""A sweep declared once: teachers (and teacher families), a student grid, methods, tasks, stages,
budgets and seeds (``SweepSpec``). Every error names the key and the fix.

    name: quickstart
    output_dir: runs/sweeps/quickstart
    tasks: [{task: synthetic, max_len: 32, synthetic: {rule: ladder}}]
    teachers:
      - {name: bert-base, ref: bert-base-uncased}                 # a Hub name or a local folder
      - {family: sizes, refs: [google/bert_uncased_L-2_H-128_A-2, google/bert_uncased_L-4_H-256_A-4]}
      - {family: truncate, ref: path/to/minilm, layers: [2, 4, 6]}  # first-k-layer truncations
      - {family: scratch, shapes: [1L-32H-4A, 2L-64H-4A]}        # trained from scratch on the task
    students: {layers: [2, 3], hidden: [192, 384]}                # or shapes: [2L-192H, 3L-384H]
    methods:
      - minilm                                                    # dense, MiniLM relations then task KD
      - {name: minimoe, experts: "1,4E", routing: [learned, random]}   # a list makes an ablation axis
      - {name: minilm_ta, assistant: 12L-384H}                    # the paper's "MiniLM w/ TA"
      - kd                                                        # plain logit KD from scratch
    stages: [agnostic, task]
    agnostic_data: {task: text, text: [wikimedia/wikipedia]}      # default: the task's own unlabeled stream
    budgets: {finetune: {epochs: 3}, agnostic: {max_steps: 1000}, task: {epochs: 3}}
    seeds: [0, 1, 2]
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..configtools import check_fields, coerce, unknown_keys_message
from ..distill.config import DataSpec, TrainSpec, apply_overrides, read_config_file
from ..distill.config import LossWeights
from ..errors import ConfigError
from ..models.spec import StudentSpec, spec_from_name

# teachers_must_beat: the baseline a teacher must be shown above (gapkit.analysis.teacher_check.stops decides)
MUST_BEAT = ("none", "chance", "majority")

__all__ = ["SweepSpec", "TeacherEntry", "MethodSpec", "METHODS", "FAMILIES", "EXECUTORS"]

METHODS = ("minilm", "minimoe", "minilm_ta", "kd")
FAMILIES = ("single", "sizes", "truncate", "scratch")
EXECUTORS = ("inline", "local", "slurm")
EXECUTOR_KEYS = ("kind", "workers", "cluster", "slurm")  # what gapkit.sweep.execute reads
STAGES = ("agnostic", "task")
# Ablation switches of a method; a list value makes one variant per value.
METHOD_OPTIONS = ("experts", "routing", "load_balance", "gate_noise", "assistant")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass(frozen=True)
class TeacherEntry:
    """One teacher of the sweep, after its family is expanded.

    Attributes:
        name: its label in tables (``bert-base``, ``minilm-L4``, ``2L-64H-4A``).
        ref: Hub name or folder (``single``/``sizes``/``truncate``), or a shape (``scratch``).
        kind: ``pretrained`` (loaded), ``truncate`` (the first ``layers`` layers of ``ref``) or
            ``scratch`` (trained from random init on the task).
        layers: the kept layers (``truncate``).
        family: the family entry it came from (its index and kind), for grouping curves.
    """

    name: str
    ref: str
    kind: str
    layers: int | None = None
    family: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """One method variant (``minimoe`` with ``routing: random`` is one variant).

    Attributes:
        name: ``minilm``, ``minimoe``, ``minilm_ta`` or ``kd``.
        label: the variant's label in tables (``minimoe[routing=random]``).
        options: its ablation settings (experts, routing, load_balance, gate_noise, assistant).
        students: the student shapes it is trained for (None: every shape of the sweep).
    """

    name: str
    label: str
    options: tuple = ()
    students: tuple | None = None

    def applies_to(self, shape: str) -> bool:
        return self.students is None or shape in self.students

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)

    @property
    def experts(self) -> tuple[int, int]:
        """(attention experts, FFN experts) of the students this method trains."""
        if self.name != "minimoe":
            return (1, 1)
        return parse_experts(self.option("experts", "1,4E"))


_EXPERTS = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*E?\s*$", re.IGNORECASE)


def parse_experts(value) -> tuple[int, int]:
    """``"x,yE"`` (attention experts, FFN experts) as ``(x, y)``; ConfigError when it is not of that form."""
    match = _EXPERTS.match(value) if isinstance(value, str) else None
    _check(match is not None, f"experts must be 'x,yE' (attention experts, FFN experts, e.g. '1,4E'), got {value!r}.")
    return int(match[1]), int(match[2])


@dataclass
class SweepSpec:
    """A teacher x student x method grid over tasks and seeds.

    The fields are the sweep file's keys, kept as written (``to_dict`` gives them back). ``__post_init__``
    checks them and expands them once into typed entries that planning reads: ``task_data`` (a
    ``DataSpec`` per task), ``agnostic_spec``, ``teacher_list`` (:class:`TeacherEntry`), ``student_shapes``,
    ``variants`` (:class:`MethodSpec`) and ``train_settings`` (each stage's ``TrainSpec`` settings).

    Args:
        name: the sweep's label.
        output_dir: the sweep folder: ``runs/`` (one folder per run), ``plan.json``, ``results.parquet``
            and ``results.csv``.
        tasks: run data settings (``DataSpec`` fields), one per task. Their labeled stages (teacher
            and assistant fine-tuning, students' task stage) select their best weights on a holdout carved
            from the training split (``select_on: holdout``, size ``holdout``: 0.1) unless the entry says
            ``select_on: dev``; the dev split is then scored only. Task-agnostic runs select on dev.
        teachers: teacher entries: ``{name?, ref}``; ``{family: sizes, refs: [...]}``;
            ``{family: truncate, ref, layers: [...]}``; ``{family: scratch, shapes: [...]}``.
        students: ``{layers: [...], hidden: [...], heads?}`` (a grid) or ``{shapes: [...]}``.
        methods: names or ``{name, <option>: value or list}`` (options: experts, routing,
            load_balance, gate_noise, assistant), plus ``students: [shape, ...]`` to train a method for
            some of the student shapes only (e.g. a wide dense control that MiniMoE needs no twin of).
        stages: ``[agnostic, task]`` (the paper's two stages), ``[task]`` or ``[agnostic]``.
        agnostic_data: data of the task-agnostic stage (``DataSpec`` fields); None uses each task's own
            unlabeled stream (synthetic) or is required (real tasks).
        budgets: ``TrainSpec`` settings per stage: ``finetune`` (teachers and assistants on the task),
            ``agnostic``, ``task``; ``all`` applies to every stage. Seeds come from ``seeds`` and
            ``teacher_seed``, never from here.
        weights: loss weights per stage (``agnostic``, ``task``, ``kd``) over gapkit's defaults.
        relation_heads: R of the relation loss.
        seeds: student seeds, each listed once (each seed sets a student's init and data order).
        teacher_seed: the seed of teacher (and assistant) fine-tuning and distillation: one integer, or a
            list of distinct integers: every teacher (and assistant) is then fine-tuned once per teacher
            seed, and every student seed is distilled from every one of these replicates (a full cross),
            so that a teacher's size can be told apart from one particular fine-tune; or ``paired``: every
            teacher is fine-tuned once per student seed, with that seed, and each student seed is distilled
            from its own replicate only (a replicate is then a fresh teacher fine-tune and a fresh student:
            the cheapest design whose verdicts generalise over both).
        data_dir: a local data folder (``glue_data/``-style, or the CoNLL files) for every task that
            does not name its own; None loads from the Hub.
        executor: ``{kind: inline|local|slurm, workers?, cluster?, slurm?}`` (see gapkit.sweep.execute).
        group_memory_gb: memory budget of one group of students trained on one teacher pass.
        teachers_must_beat: what a fine-tuned teacher must be shown above before students learn from it
            (:mod:`gapkit.analysis.teacher_check`: a one-sided test of its dev predictions at alpha 0.05):
            ``none`` (the default: every student is trained, and a teacher not above chance is named in the
            sweep's log, ``gapkit status``, the results table, the report and the figures), ``chance`` or
            ``majority`` (the majority class's rate): a teacher that is not stops the runs that need it,
            each ``skipped`` with the sentence saying why.
        deviations: what the sweep knowingly does otherwise than the setup it reproduces (a paper's, a
            colleague's), one sentence each: printed by ``gapkit sweep --dry-run`` and kept in ``plan.json``,
            so that whoever reads its numbers reads them too.
    """

    tasks: list
    teachers: list
    students: dict
    methods: list = field(default_factory=lambda: ["minilm"])
    name: str = "sweep"
    output_dir: str = "runs/sweep"
    stages: list = field(default_factory=lambda: ["agnostic", "task"])
    agnostic_data: dict | None = None
    budgets: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    relation_heads: int = 32
    seeds: list = field(default_factory=lambda: [0])
    teacher_seed: int | list | str = 0
    data_dir: str | None = None
    executor: dict = field(default_factory=lambda: {"kind": "inline"})
    group_memory_gb: float = 8.0
    teachers_must_beat: str = "none"
    deviations: list = field(default_factory=list)
    # __post_init__ also sets, as plain attributes (not settings: no field, so neither to_dict nor the config
    # reference lists them), the declaration expanded once: task_data (list[DataSpec]), agnostic_spec
    # (DataSpec | None), teacher_list (list[TeacherEntry]), student_shapes (list[str]), variants
    # (list[MethodSpec]) and train_settings (dict[str, dict]).

    def __post_init__(self):
        check_fields(self, "sweep")
        self._check_tasks()
        _check(bool(self.teachers), "sweep.teachers is empty: name at least one teacher (a Hub name, folder or family).")
        _check(bool(self.stages) and all(s in STAGES for s in self.stages),
               f"sweep.stages must be a non-empty list of {', '.join(STAGES)}, got {self.stages!r}.")
        self._check_seeds()
        _check(self.relation_heads >= 1, f"sweep.relation_heads must be >= 1, got {self.relation_heads}.")
        _check(self.group_memory_gb > 0, f"sweep.group_memory_gb must be > 0, got {self.group_memory_gb}.")
        self._check_executor()
        _check(self.teachers_must_beat in MUST_BEAT,
               f"sweep.teachers_must_beat must be one of {', '.join(MUST_BEAT)} (what a fine-tuned teacher must be "
               f"shown above before its students train), got {self.teachers_must_beat!r}.")
        _check(isinstance(self.deviations, list) and all(isinstance(d, str) and d.strip() for d in self.deviations),
               f"sweep.deviations must be a list of sentences (each what the sweep does otherwise than the setup it "
               f"reproduces), got {self.deviations!r}.")
        self.train_settings = self._train_settings()
        unknown = set(self.weights) - {"agnostic", "task", "kd", "finetune"}
        _check(not unknown, f"sweep.weights has unknown stage(s) {', '.join(sorted(unknown))}: use agnostic, task, kd "
                            f"or finetune.")
        for stage, w in self.weights.items():
            _build(LossWeights, w, f"sweep.weights.{stage}")
        # Expand everything once: a bad teacher, shape or method fails here, before any run.
        self.teacher_list = self._teacher_entries()
        self.student_shapes = self._student_shapes()
        self.variants = self._method_variants()
        # Dense KD students read weights.kd in their task stage, the others weights.task: a sweep comparing
        # them that sets one and not the other would train them on different loss terms without a word.
        names = {m.name for m in self.variants}
        if "task" in self.stages and "kd" in names and names - {"kd"} and ("kd" in self.weights) != (
                "task" in self.weights):
            given, missing = ("kd", "task") if "kd" in self.weights else ("task", "kd")
            _check(False, f"sweep.weights sets {given} but not {missing}: the kd students' task stage reads weights.kd "
                          f"and the other methods' weights.task, so they would learn from different loss terms; set "
                          f"weights.{missing} too (the same terms, to compare them).")
        self.agnostic_spec = None if self.agnostic_data is None else _build(DataSpec, self.agnostic_data,
                                                                           "sweep.agnostic_data")
        needs_text = "agnostic" in self.stages and any(m.name != "kd" for m in self.variants)
        if needs_text and self.agnostic_spec is None:
            real = [t.task for t in self.task_data if t.task != "synthetic"]
            _check(not real, f"sweep.agnostic_data is missing: the task-agnostic stage of {', '.join(real)} needs "
                             f"raw text (e.g. agnostic_data: {{task: text, text: [wikimedia/wikipedia]}}).")

    # -- checks ----------------------------------------------------------------------------------------
    def _check_tasks(self) -> None:
        _check(bool(self.tasks), "sweep.tasks is empty: list at least one task, e.g. tasks: [{task: sst2}].")
        for i, t in enumerate(self.tasks):
            _check(isinstance(t, dict), f"sweep.tasks[{i}] must be a mapping of data settings (e.g. {{task: sst2}}), "
                                        f"got {t!r}.")
        if self.data_dir is not None:  # one folder for the tasks that name none
            self.tasks = [dict(t, data_dir=t.get("data_dir") or self.data_dir) for t in self.tasks]
        # A sweep's labeled stages select their best weights on a holdout of the training split, never on
        # the dev split that scores them (unless a task entry says select_on: dev).
        self.tasks = [t if t.get("task") == "text" else dict(t, select_on=t.get("select_on", "holdout"))
                      for t in self.tasks]
        self.task_data = [_build(DataSpec, t, f"sweep.tasks[{i}]") for i, t in enumerate(self.tasks)]
        # Runs and table rows are told apart by the task's name: two entries of one task would share them.
        names = [t.task for t in self.task_data]
        for i, name in enumerate(names):
            _check(name not in names[:i], f"sweep.tasks[{i}] repeats task {name!r} (also sweep.tasks"
                                          f"[{names.index(name)}]): runs are told apart by task name, so list each "
                                          f"task once (two settings of one task are two sweeps).")

    def _check_seeds(self) -> None:
        def seed_list(values) -> bool:
            return isinstance(values, list) and bool(values) and all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values)

        _check(seed_list(self.seeds), f"sweep.seeds must be a non-empty list of integers >= 0, got {self.seeds!r}.")
        ts = self.teacher_seed
        _check(ts == "paired" or isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 or seed_list(ts),
               f"sweep.teacher_seed must be an integer >= 0, a non-empty list of integers >= 0 or 'paired', got {ts!r}.")
        for key, values in (("seeds", self.seeds), ("teacher_seed", ts if isinstance(ts, list) else [])):
            dupes = sorted({s for s in values if values.count(s) > 1})
            what = "seed" if key == "seeds" else "teacher seed"
            _check(not dupes, f"sweep.{key} lists seed {', '.join(map(str, dupes))} twice: list each {what} once "
                              f"(a repeated seed would be one run counted twice).")

    def _check_executor(self) -> None:
        ex = self.executor
        _check(isinstance(ex, dict), f"sweep.executor must be a mapping like {{kind: local, workers: 2}}, got {ex!r}.")
        kind = ex.get("kind", "inline")
        _check(kind in EXECUTORS, f"sweep.executor.kind must be one of {', '.join(EXECUTORS)}, got {kind!r}.")
        unknown = set(ex) - set(EXECUTOR_KEYS)
        _check(not unknown, unknown_keys_message("sweep.executor", unknown, EXECUTOR_KEYS))
        workers = ex.get("workers")
        _check(workers is None or isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1,
               f"sweep.executor.workers must be a whole number of CPU worker processes >= 1, got {workers!r}.")
        _check(ex.get("cluster") is None or isinstance(ex["cluster"], str),
               f"sweep.executor.cluster must be a submitit cluster name (e.g. local, slurm), got {ex.get('cluster')!r}.")
        _check(ex.get("slurm") is None or isinstance(ex["slurm"], dict),
               f"sweep.executor.slurm must be a mapping of submitit parameters (e.g. {{timeout_min: 240}}), got "
               f"{ex.get('slurm')!r}.")

    def _train_settings(self) -> dict[str, dict]:
        """Each stage's ``TrainSpec`` settings (``all`` under the stage's own), checked as merged."""
        unknown = set(self.budgets) - {"finetune", "agnostic", "task", "all"}
        _check(not unknown, f"sweep.budgets has unknown stage(s) {', '.join(sorted(unknown))}: use finetune, agnostic, "
                            f"task or all.")
        for stage, settings in self.budgets.items():
            _check(isinstance(settings, dict), f"sweep.budgets.{stage} must be a mapping of settings, got {settings!r}.")
            seeded = sorted(set(settings) & {"seed", "init_seed", "data_seed"})
            _check(not seeded, f"sweep.budgets.{stage}.{seeded[0] if seeded else ''}: a sweep sets each run's seeds "
                               f"from seeds and teacher_seed; remove it from budgets.")
            _build(TrainSpec, settings, f"sweep.budgets.{stage}")
        out = {}
        for stage in ("finetune", "agnostic", "task"):
            out[stage] = dict(self.budgets.get("all", {}), **self.budgets.get(stage, {}))
            _build(TrainSpec, out[stage], f"sweep.budgets (all and {stage} together)")
        return out

    # -- expansion -------------------------------------------------------------------------------------
    def train_spec(self, stage: str, seed: int) -> TrainSpec:
        """The ``TrainSpec`` of a run of ``stage`` (``finetune``, ``agnostic``, ``task``) with ``seed``."""
        return TrainSpec(**dict(self.train_settings[stage], seed=seed))

    def teacher_seeds(self) -> list[int]:
        """The teacher fine-tuning seeds, as a list (one for an integer ``teacher_seed``, the student seeds
        when ``paired``)."""
        if self.teacher_seed == "paired":
            return list(self.seeds)
        return list(self.teacher_seed) if isinstance(self.teacher_seed, list) else [self.teacher_seed]

    def replicates(self) -> list[tuple[int, int]]:
        """The (teacher seed, student seed) pairs every student cell is trained for: the full cross, or
        the student seeds with their own teacher seed when ``paired``."""
        if self.teacher_seed == "paired":
            return [(s, s) for s in self.seeds]
        return [(t, s) for t in self.teacher_seeds() for s in self.seeds]

    def teacher_entries(self) -> list[TeacherEntry]:
        """The teachers, families expanded, in declaration order."""
        return list(self.teacher_list)

    def student_specs(self) -> list[str]:
        """The student shapes (dense), grid expanded, as shape strings."""
        return list(self.student_shapes)

    def method_variants(self) -> list[MethodSpec]:
        """The methods, list-valued options expanded into one variant per value."""
        return list(self.variants)

    def _teacher_entries(self) -> list[TeacherEntry]:
        entries: list[TeacherEntry] = []
        for i, t in enumerate(self.teachers):
            where = f"sweep.teachers[{i}]"
            if isinstance(t, str):
                t = {"ref": t}
            _check(isinstance(t, dict), f"{where} must be a Hub name, a folder or a mapping, got {t!r}.")
            family = t.get("family", "single")
            _check(family in FAMILIES, f"{where}.family must be one of {', '.join(FAMILIES)}, got {family!r}.")
            allowed = {"single": {"family", "name", "ref"}, "sizes": {"family", "name", "refs"},
                       "truncate": {"family", "name", "ref", "layers"}, "scratch": {"family", "name", "shapes"}}[family]
            _check(not set(t) - allowed, unknown_keys_message(where, set(t) - allowed, allowed))
            label = f"{i}:{family}"
            if family == "single":
                _check(isinstance(t.get("ref"), str) and t["ref"], f"{where}.ref must name a Hub model or folder.")
                entries.append(TeacherEntry(t.get("name") or _short(t["ref"]), t["ref"], "pretrained", family=label))
            elif family == "sizes":
                refs = t.get("refs")
                _check(isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs),
                       f"{where}.refs must be a non-empty list of Hub names or folders.")
                entries += [TeacherEntry(_short(r), r, "pretrained", family=label) for r in refs]
            elif family == "truncate":
                layers = t.get("layers")
                _check(isinstance(t.get("ref"), str) and t["ref"], f"{where}.ref must name the model to truncate.")
                _check(isinstance(layers, list) and layers and all(
                    isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in layers),
                       f"{where}.layers must be a non-empty list of layer counts >= 1 (e.g. [2, 4, 6]).")
                base = t.get("name") or _short(t["ref"])
                entries += [TeacherEntry(f"{base}-L{k}", t["ref"], "truncate", k, label) for k in layers]
            else:
                shapes = t.get("shapes")
                _check(isinstance(shapes, list) and shapes, f"{where}.shapes must be a non-empty list of shapes "
                                                            f"(e.g. [2L-64H-4A, 4L-128H-4A]).")
                for s in shapes:
                    _shape_spec(s, f"{where}.shapes")
                entries += [TeacherEntry(s, s, "scratch", family=label) for s in shapes]
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _check(not dupes, f"sweep.teachers name the same teacher twice ({', '.join(dupes)}): give each a distinct "
                          f"name.")
        return entries

    def _student_shapes(self) -> list[str]:
        s = self.students
        _check(isinstance(s, dict), f"sweep.students must be a mapping ({{layers: [...], hidden: [...]}} or "
                                    f"{{shapes: [...]}}), got {s!r}.")
        if "shapes" in s:
            _check(set(s) == {"shapes"}, "sweep.students takes either shapes or a layers x hidden grid, not both.")
            _check(isinstance(s["shapes"], list) and bool(s["shapes"]),
                   f"sweep.students.shapes must be a non-empty list of shapes (e.g. [2L-192H, 3L-384H]), got "
                   f"{s['shapes']!r}.")
            shapes = list(s["shapes"])
        else:
            _check(not set(s) - {"layers", "hidden", "heads"},
                   unknown_keys_message("sweep.students", set(s) - {"layers", "hidden", "heads"},
                                        {"layers", "hidden", "heads", "shapes"}))
            layers, hidden = s.get("layers"), s.get("hidden")
            _check(isinstance(layers, list) and layers and isinstance(hidden, list) and hidden,
                   "sweep.students needs lists layers and hidden (e.g. {layers: [2, 3], hidden: [192, 384]}).")
            heads = s.get("heads")
            shapes = [f"{L}L-{H}H" + (f"-{heads}A" if heads else "") for L, H in itertools.product(layers, hidden)]
        # The same architecture twice (listed twice, or spelled two ways) would be one student trained twice.
        seen: dict[tuple, str] = {}
        for shape in shapes:
            arch = tuple(sorted((k, str(v)) for k, v in _shape_spec(shape, "sweep.students").to_dict().items()
                                if k != "name"))
            if arch in seen:
                twice = (f"the student shape {shape} twice" if seen[arch] == shape else
                         f"one student twice ({seen[arch]} and {shape} are the same architecture)")
                raise ConfigError(f"sweep.students lists {twice}: list each student once.")
            seen[arch] = shape
        return shapes

    def _method_variants(self) -> list[MethodSpec]:
        _check(isinstance(self.methods, list) and bool(self.methods),
               f"sweep.methods is empty: list at least one of {', '.join(METHODS)} (e.g. methods: [minilm]).")
        variants = []
        for i, m in enumerate(self.methods):
            where = f"sweep.methods[{i}]"
            m = {"name": m} if isinstance(m, str) else m
            _check(isinstance(m, dict) and m.get("name") in METHODS,
                   f"{where} must be one of {', '.join(METHODS)} (or {{name: ..., options}}), got {m!r}.")
            options = {k: v for k, v in m.items() if k not in ("name", "students")}
            unknown = set(options) - set(METHOD_OPTIONS)
            _check(not unknown, unknown_keys_message(where, unknown, set(METHOD_OPTIONS) | {"name", "students"}))
            students = m.get("students")
            if students is not None:
                shapes = self.student_shapes
                _check(isinstance(students, list) and students and all(x in shapes for x in students),
                       f"{where}.students must be a non-empty list of the sweep's student shapes "
                       f"({', '.join(shapes)}), got {students!r}.")
                students = tuple(students)
            if m["name"] == "minilm_ta":
                options.setdefault("assistant", "12L-384H")
            axes = [(k, v if isinstance(v, list) else [v]) for k, v in sorted(options.items())]
            for k, values in axes:
                _check(bool(values), f"{where}.{k} is an empty list: give one value, or a list of the values to "
                                     f"compare.")
            for values in itertools.product(*[vs for _, vs in axes]):
                chosen = tuple(zip([k for k, _ in axes], values))
                swept = [f"{k}={v}" for (k, vs), (_, v) in zip(axes, chosen) if len(vs) > 1]
                label = m["name"] + (f"[{','.join(swept)}]" if swept else "")
                variant = MethodSpec(m["name"], label, chosen, students)
                _check_variant(variant, where, (students or self.student_shapes)[0])
                variants.append(variant)
        labels = [v.label for v in variants]
        _check(len(set(labels)) == len(labels), "sweep.methods repeat a method variant: list each once.")
        return variants

    # -- files ---------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> "SweepSpec":
        """Load a sweep YAML file, with ``key.sub=value`` overrides."""
        return cls.from_dict(read_config_file(path, "Sweep file"), overrides, where=str(path))

    @classmethod
    def from_dict(cls, data: dict, overrides: list[str] | None = None, where: str = "sweep") -> "SweepSpec":
        """A sweep from a mapping of the keys a sweep file holds, with ``key.sub=value`` overrides.

        Args:
            data: the settings (not modified).
            overrides: ``key.sub=value`` strings (values parsed as YAML), as ``gapkit sweep --set``.
            where: what to name in error messages (the file's path for :meth:`from_file`).
        """
        _check(isinstance(data, dict), f"{where} must be a mapping of sweep settings, not {type(data).__name__}.")
        data = apply_overrides(copy.deepcopy(data), overrides or [])
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = set(data) - known
        _check(not unknown, f"{where}: " + unknown_keys_message("sweep", unknown, known))
        for key in ("tasks", "teachers", "students"):
            _check(key in data, f"{where} has no '{key}': a sweep needs tasks, teachers and students.")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"{where}: {err}.") from None

    def to_dict(self) -> dict:
        """The sweep's settings (the file's keys), as ``from_dict`` reads them."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}


def _check_variant(variant: MethodSpec, where: str, shape: str) -> None:
    """A method variant's options, each checked where it is declared (not at planning, as a traceback)."""
    if variant.name == "minimoe":
        try:
            x, y = variant.experts
        except ConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
        _check(x >= 1 and y >= 1 and (x, y) != (1, 1),
               f"{where}.experts must be 'x,yE' with more than one expert, got {variant.option('experts')!r}.")
        router = {k: variant.option(k) for k in ("routing", "gate_noise") if variant.option(k) is not None}
        try:  # the student it trains, with its router settings: the model's own sentence for a bad one
            StudentSpec.from_dict(dict(spec_from_name(f"{shape}-{x},{y}E").to_dict(), **router, name=None))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    else:
        given = sorted(k for k in ("experts", "routing", "gate_noise") if variant.option(k) is not None)
        _check(not given, f"{where}.{given[0] if given else ''} applies to minimoe only, not {variant.name}: remove it.")
    lb = variant.option("load_balance")
    if lb is not None:
        _check(coerce(lb, float, f"{where}.load_balance") >= 0,
               f"{where}.load_balance must be a number >= 0 (the load-balance loss weight), got {lb!r}.")
    if variant.name == "minilm_ta":
        _shape_spec(str(variant.option("assistant")), f"{where}.assistant")
    else:
        _check(variant.option("assistant") is None,
               f"{where}.assistant applies to minilm_ta only, not {variant.name}: remove it.")


def _build(cls, settings, where: str):
    """``cls(**settings)``, a bad setting failing here with ``where`` in its sentence."""
    _check(isinstance(settings, dict), f"{where} must be a mapping of settings, got {settings!r}.")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _short(ref: str) -> str:
    """A table label for a model reference: the last path component (``bert-base-uncased``)."""
    parts = [p for p in str(ref).rstrip("/").split("/") if p not in ("best", "model")]
    return parts[-1] if parts else str(ref)


def _shape_spec(shape, where: str) -> StudentSpec:
    """The spec of a shape string or preset; ConfigError naming ``where`` when it is not one."""
    _check(isinstance(shape, str), f"{where}: {shape!r} is not a shape string (e.g. 2L-192H).")
    try:
        return spec_from_name(shape)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
