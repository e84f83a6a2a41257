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
from dataclasses import dataclass, field
from pathlib import Path

from ..configtools import check_fields, unknown_keys_message
from ..distill.config import DataSpec, TrainSpec, apply_overrides, read_config_file
from ..distill.losses import LossWeights
from ..errors import ConfigError
from ..models.spec import StudentSpec, spec_from_name

__all__ = ["SweepSpec", "TeacherEntry", "MethodSpec", "METHODS", "FAMILIES", "EXECUTORS"]

METHODS = ("minilm", "minimoe", "minilm_ta", "kd")
FAMILIES = ("single", "sizes", "truncate", "scratch")
EXECUTORS = ("inline", "local", "slurm")
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
        text = str(self.option("experts", "1,4E")).rstrip("E")
        x, _, y = text.partition(",")
        return int(x), int(y)


@dataclass
class SweepSpec:
    """A teacher x student x method grid over tasks and seeds.

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
            ``agnostic``, ``task``; ``all`` applies to every stage.
        weights: loss weights per stage (``agnostic``, ``task``, ``kd``) over gapkit's defaults.
        relation_heads: R of the relation loss.
        seeds: student seeds (each seed sets a student's init and data order).
        teacher_seed: the seed of teacher (and assistant) fine-tuning and distillation: one integer, or a
            list of distinct integers: every teacher (and assistant) is then fine-tuned once per teacher
            seed, and every student seed is distilled from every one of these replicates (a full cross),
            so that a teacher's size can be told apart from one particular fine-tune; or ``paired``: every
            teacher is fine-tuned once per student seed, with that seed, and each student seed is distilled
            from its own replicate only (a replicate is then a fresh teacher fine-tune and a fresh student:
            the cheapest design whose verdicts generalise over both).
        data_dir: a local data folder (``glue_data/``-style, or the CoNLL files) for every task that
            does not name its own; None loads from the Hub.
        executor: ``{kind: inline|local|slurm, ...}`` (see gapkit.sweep.execute).
        group_memory_gb: memory budget of one group of students trained on one teacher pass.
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

    def __post_init__(self):
        check_fields(self, "sweep")
        _check(bool(self.tasks), "sweep.tasks is empty: list at least one task, e.g. tasks: [{task: sst2}].")
        if self.data_dir is not None:  # one folder for the tasks that name none
            self.tasks = [dict(t, data_dir=t.get("data_dir") or self.data_dir) if isinstance(t, dict) else t
                          for t in self.tasks]
        for i, t in enumerate(self.tasks):
            _check(isinstance(t, dict), f"sweep.tasks[{i}] must be a mapping of data settings (e.g. {{task: sst2}}), "
                                        f"got {t!r}.")
        # A sweep's labeled stages select their best weights on a holdout of the training split, never on
        # the dev split that scores them (unless a task entry says select_on: dev).
        self.tasks = [t if t.get("task") == "text" else dict(t, select_on=t.get("select_on", "holdout"))
                      for t in self.tasks]
        for i, t in enumerate(self.tasks):
            _validate(DataSpec, t, f"sweep.tasks[{i}]")
        _check(bool(self.teachers), "sweep.teachers is empty: name at least one teacher (a Hub name, folder or family).")
        _check(bool(self.stages) and all(s in STAGES for s in self.stages),
               f"sweep.stages must be a non-empty list of {', '.join(STAGES)}, got {self.stages!r}.")
        _check(bool(self.seeds) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds),
               f"sweep.seeds must be a non-empty list of integers >= 0, got {self.seeds!r}.")
        ts = self.teacher_seed
        _check(ts == "paired" or isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 or isinstance(ts, list) and bool(ts) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in ts),
               f"sweep.teacher_seed must be an integer >= 0, a non-empty list of integers >= 0 or 'paired', got {ts!r}.")
        dupes = sorted({s for s in ts if ts.count(s) > 1}) if isinstance(ts, list) else []
        _check(not dupes, f"sweep.teacher_seed lists seed {', '.join(map(str, dupes))} twice: list each teacher seed "
                          f"once.")
        _check(self.relation_heads >= 1, f"sweep.relation_heads must be >= 1, got {self.relation_heads}.")
        _check(self.group_memory_gb > 0, f"sweep.group_memory_gb must be > 0, got {self.group_memory_gb}.")
        kind = self.executor.get("kind", "inline") if isinstance(self.executor, dict) else None
        _check(kind in EXECUTORS, f"sweep.executor.kind must be one of {', '.join(EXECUTORS)}, got {kind!r}.")
        unknown = set(self.budgets) - {"finetune", "agnostic", "task", "all"}
        _check(not unknown, f"sweep.budgets has unknown stage(s) {', '.join(sorted(unknown))}: use finetune, agnostic, "
                            f"task or all.")
        for stage, settings in self.budgets.items():
            _validate(TrainSpec, settings, f"sweep.budgets.{stage}")
        unknown = set(self.weights) - {"agnostic", "task", "kd", "finetune"}
        _check(not unknown, f"sweep.weights has unknown stage(s) {', '.join(sorted(unknown))}: use agnostic, task, kd "
                            f"or finetune.")
        for stage, w in self.weights.items():
            _validate(LossWeights, w, f"sweep.weights.{stage}")
        # Dense KD students read weights.kd in their task stage, the others weights.task: a sweep comparing
        # them that sets one and not the other would train them on different loss terms without a word.
        names = {m["name"] if isinstance(m, dict) else m for m in self.methods}
        if "task" in self.stages and "kd" in names and names - {"kd"} and ("kd" in self.weights) != (
                "task" in self.weights):
            given, missing = ("kd", "task") if "kd" in self.weights else ("task", "kd")
            _check(False, f"sweep.weights sets {given} but not {missing}: the kd students' task stage reads weights.kd "
                          f"and the other methods' weights.task, so they would learn from different loss terms; set "
                          f"weights.{missing} too (the same terms, to compare them).")
        if self.agnostic_data is not None:
            _validate(DataSpec, self.agnostic_data, "sweep.agnostic_data")
        needs_text = "agnostic" in self.stages and any(m.name != "kd" for m in self.method_variants())
        if needs_text and self.agnostic_data is None:
            real = [t["task"] for t in self.tasks if t.get("task", "synthetic") != "synthetic"]
            _check(not real, f"sweep.agnostic_data is missing: the task-agnostic stage of {', '.join(real)} needs "
                             f"raw text (e.g. agnostic_data: {{task: text, text: [wikimedia/wikipedia]}}).")
        # Expand everything once: a bad teacher, shape or method fails here, before any run.
        self.teacher_entries()
        self.student_specs()
        self.method_variants()

    # -- expansion -------------------------------------------------------------------------------------
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
                _check(isinstance(layers, list) and layers and all(isinstance(k, int) and k >= 1 for k in layers),
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

    def student_specs(self) -> list[str]:
        """The student shapes (dense), grid expanded, as shape strings."""
        s = self.students
        _check(isinstance(s, dict), f"sweep.students must be a mapping ({{layers: [...], hidden: [...]}} or "
                                    f"{{shapes: [...]}}), got {s!r}.")
        if "shapes" in s:
            _check(set(s) == {"shapes"}, "sweep.students takes either shapes or a layers x hidden grid, not both.")
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
        _check(bool(shapes), "sweep.students gives no student.")
        for shape in shapes:
            _shape_spec(shape, "sweep.students")
        return shapes

    def method_variants(self) -> list[MethodSpec]:
        """The methods, list-valued options expanded into one variant per value."""
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
                shapes = self.student_specs()
                _check(isinstance(students, list) and students and all(x in shapes for x in students),
                       f"{where}.students must be a non-empty list of the sweep's student shapes "
                       f"({', '.join(shapes)}), got {students!r}.")
                students = tuple(students)
            if m["name"] == "minilm_ta":
                options.setdefault("assistant", "12L-384H")
            axes = [(k, v if isinstance(v, list) else [v]) for k, v in sorted(options.items())]
            for values in itertools.product(*[vs for _, vs in axes]):
                chosen = tuple(zip([k for k, _ in axes], values))
                swept = [f"{k}={v}" for (k, vs), (_, v) in zip(axes, chosen) if len(vs) > 1]
                label = m["name"] + (f"[{','.join(swept)}]" if swept else "")
                variant = MethodSpec(m["name"], label, chosen, students)
                if variant.name == "minimoe":
                    x, y = variant.experts
                    _check(x >= 1 and y >= 1 and (x, y) != (1, 1),
                           f"{where}.experts must be 'x,yE' with more than one expert, got {variant.option('experts')!r}.")
                if variant.name == "minilm_ta":
                    _shape_spec(str(variant.option("assistant")), f"{where}.assistant")
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        _check(not unknown, f"{where}: " + unknown_keys_message("sweep", unknown, known))
        for key in ("tasks", "teachers", "students"):
            _check(key in data, f"{where} has no '{key}': a sweep needs tasks, teachers and students.")
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"{where}: {err}.") from None

    def to_dict(self) -> dict:
        return copy.deepcopy(dataclasses.asdict(self))


def _validate(cls, settings, where: str) -> None:
    """Build ``cls(**settings)`` once, so a bad setting fails here with ``where`` in its sentence."""
    _check(isinstance(settings, dict), f"{where} must be a mapping of settings, got {settings!r}.")
    try:
        cls(**settings)
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
