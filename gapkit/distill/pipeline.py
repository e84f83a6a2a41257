"""Pipelines: several runs in order, each stage able to use an earlier stage's model.

A stage names an earlier one with ``@name`` as its ``teacher`` or ``student``; that resolves to the
earlier run's ``best/`` folder. This is how the paper's stages chain (task-agnostic distillation then
task-specific distillation) and how teacher-assistant chains are declared:

    teacher -> assistant (agnostic, then task) -> student (agnostic from the assistant, then task)

Every stage runs in ``<output_dir>/<stage name>``; a stage whose run already finished is not run
again, so an interrupted pipeline is simply started again (``resume`` continues a stage cut mid-way).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import ConfigError
from .config import DistillSpec, apply_overrides, read_config_file
from .runfiles import RunDir
from .trainer import RunResult, run


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclass
class PipelineSpec:
    """Ordered stages sharing ``defaults``.

    Args:
        stages: stage dicts (DistillSpec fields plus a unique ``name``); ``teacher``/``student`` may be
            ``@<earlier stage name>``.
        defaults: settings merged under every stage (a stage's own settings win).
        output_dir: the pipeline folder; stage ``s`` runs in ``output_dir/s``.
        name: a label for the pipeline.
    """

    stages: list[dict]
    defaults: dict = field(default_factory=dict)
    output_dir: str = "runs/pipeline"
    name: str = "pipeline"

    def __post_init__(self):
        if not isinstance(self.stages, (list, tuple)) or not self.stages:
            raise ConfigError(f"A pipeline needs a non-empty list of stages under 'stages' (each a mapping of run "
                              f"settings with a name), got {self.stages!r}.")
        if not isinstance(self.defaults, dict):
            raise ConfigError(f"Pipeline 'defaults' must be a mapping of run settings (e.g. defaults: {{train: "
                              f"{{lr: 1e-4}}}}), got {self.defaults!r}.")
        for key in ("output_dir", "name"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"Pipeline '{key}' must be a non-empty string, got {getattr(self, key)!r}.")
        seen: list[str] = []
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, dict):
                raise ConfigError(f"Pipeline stage {i + 1} must be a mapping of run settings with a name (e.g. "
                                  f"{{name: teacher, stage: finetune, student: 4L-128H-4A}}), got {stage!r}.")
            name = stage.get("name")
            if not name or name in seen or "/" in str(name):
                raise ConfigError(f"Pipeline stage {i + 1} needs a unique name without '/' (got {name!r}).")
            for role in ("teacher", "student"):
                ref = stage.get(role)
                if isinstance(ref, str) and ref.startswith("@") and ref[1:] not in seen:
                    raise ConfigError(f"Stage {name!r} uses {role} {ref!r}, which is not an earlier stage "
                                      f"(earlier: {', '.join(seen) or 'none'}).")
            seen.append(name)
        self.resolved()  # every stage must build

    def stage_dir(self, name: str) -> Path:
        return Path(self.output_dir) / name

    def resolved(self) -> list[DistillSpec]:
        """The stages as DistillSpecs, ``@name`` references turned into folders."""
        specs = []
        for stage in self.stages:
            data = _merge(self.defaults, stage)
            for role in ("teacher", "student"):
                ref = data.get(role)
                if isinstance(ref, str) and ref.startswith("@"):
                    data[role] = str(RunDir(self.stage_dir(ref[1:])).best_dir)
            data["output_dir"] = str(self.stage_dir(stage["name"]))
            specs.append(DistillSpec.from_dict(data))
        return specs

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> "PipelineSpec":
        path = Path(path)
        data = read_config_file(path, "Pipeline file")
        if "stages" not in data:
            raise ConfigError(f"{path} is not a pipeline: it needs a 'stages' list.")
        if not isinstance(data.get("defaults", {}), dict):
            raise ConfigError(f"Pipeline 'defaults' in {path} must be a mapping of run settings, got "
                              f"{data['defaults']!r}.")
        # Pipeline-level keys (output_dir, name) are the pipeline's own; every other key goes to the
        # defaults that all stages share.
        top = [o for o in overrides or [] if o.partition("=")[0] in ("output_dir", "name")]
        apply_overrides(data, top)
        apply_overrides(data.setdefault("defaults", {}), [o for o in overrides or [] if o not in top])
        unknown = sorted(set(data) - {"stages", "defaults", "output_dir", "name"})
        if unknown:
            raise ConfigError(f"Unknown pipeline setting(s) {', '.join(unknown)} in {path}.")
        return cls(**data)


def ta_chain(teacher: str, assistant: str, student: str, task_teacher: str, output_dir: str,
             defaults: dict | None = None) -> PipelineSpec:
    """The paper's "MiniLM w/ TA" baseline as a pipeline: two identical rounds, teacher -> assistant -> student.

    Args:
        teacher: the pre-trained teacher (task-agnostic stage of the assistant).
        assistant: the assistant's shape (the paper: ``12L-384H``).
        student: the student's shape.
        task_teacher: the teacher fine-tuned on the task (task stage of the assistant).
        output_dir: pipeline folder; ``defaults``: settings shared by all stages (data, train ...).
    """
    stages = [
        dict(name="assistant_agnostic", stage="agnostic", teacher=teacher, student=assistant),
        dict(name="assistant_task", stage="task", teacher=task_teacher, student="@assistant_agnostic"),
        dict(name="student_agnostic", stage="agnostic", teacher="@assistant_agnostic", student=student),
        dict(name="student_task", stage="task", teacher="@assistant_task", student="@student_agnostic"),
    ]
    return PipelineSpec(stages=stages, defaults=defaults or {}, output_dir=output_dir, name="ta_chain")


def run_pipeline(spec: PipelineSpec, resume: bool = False, progress: bool = True) -> list[RunResult]:
    """Run every stage in order.

    A stage whose folder already holds a finished run of the *same* resolved config is read back, not
    rerun; one cut mid-way is resumed; a finished or unfinished stage of a different config (a changed
    setting, ``--set``) is refused with the folder named (results are never overwritten: give the
    pipeline another ``output_dir``).
    """
    results = []
    for stage in spec.resolved():
        folder = Path(stage.output_dir)
        started = folder.is_dir() and any(folder.iterdir())
        results.append(run(stage, resume=resume or started, progress=progress))
    return results
