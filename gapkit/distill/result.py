"""What a run reports: one fixed schema for every task and stage (``result.json``).

Metrics are rows (``split``, ``metric``, ``value``, ``step``, ``model``), never keys whose shape
varies by task, so that a sweep's table is a concatenation of these rows. ``model`` says which
weights were scored: ``best`` (the checkpoint that ``selection`` chose on its split) or ``final``
(the weights at the end, on the selection split). The scored splits (``selection.scored``: a labeled
test split, and the dev splits when a holdout carved from the training data selects) are scored with
the best weights and never take part in the selection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..io import json_dumps

SCHEMA_VERSION = 2
STATUSES = ("completed", "early_stopped", "failed")

__all__ = ["RunResult", "run_id", "git_revision", "SCHEMA_VERSION"]


# Train settings that watch a run without changing what it computes (and that runs from before them lack).
OBSERVING = ("tracking",)


def run_id(config: dict) -> str:
    """A short hash of a resolved run config, ``output_dir``, ``name`` and the :data:`OBSERVING` train
    settings left out (they place, label or watch a run; they do not change what it computes)."""
    keyed = {k: v for k, v in config.items() if k not in ("output_dir", "name")}
    if isinstance(keyed.get("train"), dict):
        keyed["train"] = {k: v for k, v in keyed["train"].items() if k not in OBSERVING}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def git_revision() -> str | None:
    """The git commit of the gapkit source tree (``+dirty`` with uncommitted changes), or None when
    gapkit is not run from a git checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


@dataclass
class RunResult:
    """A run's result (``result.json``).

    Attributes:
        run_dir, name: where the run lives and its label.
        run_id: hash of the resolved config (see :func:`run_id`).
        status: ``completed``, ``early_stopped`` or ``failed``; ``reason`` says why for the last two.
        stage, task: the run's stage and task.
        steps: optimizer steps taken; ``best_step``: the step of the selected weights.
        selection: how ``best`` was chosen: ``split`` (the selection split: ``dev``, MNLI's
            ``dev_matched+dev_mismatched``, or ``holdout``), ``metric``, ``higher_is_better``, ``scored``
            (the splits scored with the selected weights, never used to select) and ``examples`` (examples
            per split as the run built them, ``train`` included).
        metrics: rows ``{"split", "metric", "value", "step", "model"}``.
        student: ``{"ref", "init", "spec", "params_total", "params_active", "gflops": {convention:
            value}, "seq_len", "new_weights"}`` (``init``: random / pretrained; ``new_weights``: tensors
            initialised fresh on top of a checkpoint, e.g. a new task head).
        teacher: ``{"ref", "params"}`` or None.
        seeds: ``{"init", "data"}``.
        chance_check: whether the best weights beat chance and the majority class on the report split
            (:func:`gapkit.analysis.teacher_check.check_predictions`: verdict, metric, score, chance,
            majority, n, p-values, alpha 0.05); for a fine-tuned teacher, the check its students depend on.
            None in results written before gapkit recorded it (computed from the stored predictions then).
    """

    run_dir: str
    name: str
    run_id: str
    status: str
    stage: str
    task: str
    steps: int
    reason: str | None = None
    best_step: int | None = None
    selection: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    student: dict = field(default_factory=dict)
    teacher: dict | None = None
    seeds: dict = field(default_factory=dict)
    chance_check: dict | None = None
    gapkit_version: str = ""
    git_revision: str | None = None
    wall_time_s: float = 0.0
    schema: int = SCHEMA_VERSION

    # -- reading -------------------------------------------------------------------------------------
    @property
    def selected_on(self) -> str | None:
        """The split that selected the best weights (``dev``, ``holdout`` ...)."""
        return self.selection.get("split")

    @property
    def report_split(self) -> str | None:
        """The split a run's score is read on: the selection split, except when a holdout selected: then
        the first dev split scored with the selected weights (``dev``; MNLI ``dev_matched``)."""
        split = self.selection.get("split")
        if split == "holdout":
            return next((s for s in self.selection.get("scored", []) if s.startswith("dev")), split)
        return split

    def metric(self, metric: str, split: str | None = None, model: str = "best") -> float | None:
        """The value of ``metric`` for ``model`` weights on ``split`` (default: :attr:`report_split`)."""
        split = split or self.report_split
        for row in self.metrics:
            if row["metric"] == metric and row["split"] == split and row["model"] == model:
                return row["value"]
        return None

    def values(self, model: str = "best", split: str | None = None) -> dict[str, float]:
        """``{metric: value}`` of one model's rows on one split (default: :attr:`report_split`)."""
        split = split or self.report_split
        return {r["metric"]: r["value"] for r in self.metrics if r["model"] == model and r["split"] == split}

    @property
    def params_total(self) -> int:
        return self.student.get("params_total", 0)

    @property
    def params_active(self) -> int:
        return self.student.get("params_active", 0)

    def summary_row(self, convention: str = "paper") -> dict:
        """One line of a summary table: stage, model, params, GFLOPs (named convention), the selection
        metric of the best weights, and the run folder."""
        metric = self.selection.get("metric")
        model = self.student.get("ref")
        if self.student.get("spec"):  # the shape reads better than the folder of an earlier stage
            from ..models.spec import StudentSpec, parse_shape

            spec = StudentSpec.from_dict(self.student["spec"])
            base = f"{spec.layers}L-{spec.hidden}H"
            try:
                default_heads = parse_shape(base)["heads"]
            except ValueError:  # no default head count for this width: always name the heads
                default_heads = None
            if default_heads != spec.heads:
                base += f"-{spec.heads}A"
            if spec.ffn != 4 * spec.hidden:
                base += f"-{spec.ffn}F"
            model = base + (f"-{spec.experts}" if spec.is_moe else "")
        return dict(stage=self.stage, name=self.name, model=model,
                    params_total=self.params_total, params_active=self.params_active,
                    gflops=(self.student.get("gflops") or {}).get(convention), convention=convention,
                    metric=metric, value=self.metric(metric) if metric else None, run_dir=self.run_dir)

    # -- files ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json_dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "RunResult":
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not a result object")
        lacking = [k for k in ("run_id", "status", "metrics") if k not in data]
        if lacking:
            raise ValueError(f"it lacks {', '.join(lacking)}")
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"result schema {data.get('schema')!r} is not gapkit's current one ({SCHEMA_VERSION})")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str | Path) -> "RunResult":
        """Read a ``result.json``; a file that is not one of gapkit's results raises ``ConfigError``."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"{path} is not a readable gapkit result ({err}): move the folder away and "
                              f"rerun.") from None
