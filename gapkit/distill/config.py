"""Run configuration: what to train on (``DataSpec``), how (``TrainSpec``), and the distillation
(``DistillSpec``, which holds the other two). All round-trip to YAML/JSON and validate at construction.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.tasks import check_task_name
from ..errors import ConfigError
from ..models.spec import StudentSpec, spec_from_name
from .losses import LossWeights

STAGES = ("finetune", "agnostic", "task")
STUDENT_QKV = ("auto", "last", "projection")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class DataSpec:
    """Where the examples come from.

    Args:
        task: a GLUE task (``sst2``, ``mnli`` ...), ``conll`` (CoNLL-2003 NER), ``synthetic`` (gapkit's
            built-in task) or ``text`` (raw text, for task-agnostic distillation).
        data_dir: a local folder (``glue_data/``-style for GLUE, the CoNLL files for ``conll``); None
            loads from the Hugging Face Hub.
        text: for ``text``: local files/folders or a Hub dataset name (``wikitext``), one or several.
        text_config: Hub config for ``text`` (e.g. ``wikitext-103-raw-v1``).
        line_mode: ``sentence`` (one sentence a line, blank line between documents) or ``document``.
        tokenizer: a tokenizer folder or Hub name; None uses the teacher's (or the model's).
        max_len: maximum sequence length (the paper uses 128).
        max_train_examples, max_eval_examples: seeded subsets (None: all).
        synthetic: keyword arguments of ``SyntheticTask`` for ``synthetic``.
    """

    task: str = "synthetic"
    data_dir: str | None = None
    text: list[str] = field(default_factory=list)
    text_config: str | None = None
    line_mode: str = "sentence"
    tokenizer: str | None = None
    max_len: int = 128
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    synthetic: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.text, str):
            self.text = [self.text]
        self.task = check_task_name(self.task)
        _check(self.max_len >= 8, f"DataSpec.max_len must be at least 8, got {self.max_len}.")
        _check(self.task != "text" or bool(self.text),
               "DataSpec.text is empty: task 'text' needs local text files or a Hub dataset name in data.text.")
        for f in ("max_train_examples", "max_eval_examples"):
            v = getattr(self, f)
            _check(v is None or v >= 1, f"DataSpec.{f} must be a positive integer or null, got {v!r}.")


@dataclass
class TrainSpec:
    """Optimisation and bookkeeping of one run.

    Args:
        lr, weight_decay: AdamW (no decay on biases and LayerNorm weights).
        epochs: passes over the training data (``max_steps`` overrides it when set).
        max_steps: optimizer steps of the run (None: as many as ``epochs`` take).
        warmup: fraction of the steps with linear warmup, then linear decay to 0.
        batch_size: examples per optimizer step across all ranks (split over data-parallel ranks and
            ``grad_accum`` micro-batches).
        grad_accum: micro-batches per optimizer step.
        grad_clip: max global gradient norm (0: off).
        eval_every: optimizer steps between evaluations (None: at the end of each epoch).
        early_stopping: evaluations without improvement before stopping (None: off).
        checkpoint_every: optimizer steps between resumable checkpoints (None: at evaluations).
        log_every: steps between metric log rows.
        routing_every: steps between routing records (MiniMoE students).
        seed: sets both ``init_seed`` and ``data_seed`` when they are not given. A CPU run is bitwise
            reproducible at a fixed thread count (results differ across thread counts, by up to ~5e-3).
        init_seed: the run's weight initialisation and its own random stream (dropout, gate noise,
            relation dropout, random routing).
        data_seed: the order of the training examples (and seeded data subsets).
        bf16: bf16 autocast on GPU (CPU runs stay fp32).
        tensorboard: also write TensorBoard logs (needs the ``tensorboard`` extra).
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        eval_batch_size: examples per batch when evaluating (and when caching teacher logits).
    """

    lr: float = 3e-5
    weight_decay: float = 0.01
    epochs: float = 3.0
    max_steps: int | None = None
    warmup: float = 0.1
    batch_size: int = 32
    grad_accum: int = 1
    grad_clip: float = 1.0
    eval_every: int | None = None
    early_stopping: int | None = None
    checkpoint_every: int | None = None
    log_every: int = 10
    routing_every: int = 50
    seed: int = 0
    init_seed: int | None = None
    data_seed: int | None = None
    bf16: bool = True
    tensorboard: bool = False
    device: str = "auto"
    eval_batch_size: int = 64

    def __post_init__(self):
        _check(self.lr > 0 and math.isfinite(self.lr), f"TrainSpec.lr must be a positive number, got {self.lr!r}.")
        _check(self.weight_decay >= 0, f"TrainSpec.weight_decay must be >= 0, got {self.weight_decay!r}.")
        _check(self.epochs > 0, f"TrainSpec.epochs must be > 0, got {self.epochs!r}.")
        _check(self.max_steps is None or self.max_steps >= 1,
               f"TrainSpec.max_steps must be a positive integer or null, got {self.max_steps!r}.")
        _check(0 <= self.warmup < 1, f"TrainSpec.warmup is a fraction of the steps in [0, 1), got {self.warmup!r}.")
        _check(self.batch_size >= 1 and self.grad_accum >= 1,
               f"TrainSpec.batch_size and grad_accum must be >= 1, got {self.batch_size} and {self.grad_accum}.")
        _check(self.batch_size % self.grad_accum == 0,
               f"TrainSpec.batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum}).")
        _check(self.grad_clip >= 0, f"TrainSpec.grad_clip must be >= 0 (0 turns it off), got {self.grad_clip!r}.")
        for f in ("eval_every", "early_stopping", "checkpoint_every"):
            v = getattr(self, f)
            _check(v is None or v >= 1, f"TrainSpec.{f} must be a positive integer or null, got {v!r}.")
        _check(self.log_every >= 1 and self.routing_every >= 1, "TrainSpec.log_every and routing_every must be >= 1.")
        _check(self.device in ("auto", "cpu", "cuda"), f"TrainSpec.device must be auto, cpu or cuda, got {self.device!r}.")
        # One ``seed`` sets both streams; resolved here so config.json records what the run used.
        if self.init_seed is None:
            self.init_seed = self.seed
        if self.data_seed is None:
            self.data_seed = self.seed


@dataclass
class DistillSpec:
    """One run: fine-tune a model, or distil a teacher into a student.

    Args:
        stage: ``finetune`` (train ``student`` on task labels, no teacher; also how teachers are
            fine-tuned: ``student`` may then be any Hugging Face encoder), ``agnostic`` (MiniLM relation
            distillation on raw text) or ``task`` (task-specific distillation from a fine-tuned teacher).
        student: a StudentSpec, a preset/shape name (``3L-384H-1,4E``), or a model folder / Hub name
            (a gapkit or MiniMoE checkpoint, any HF BERT; for ``finetune``, any HF encoder).
        teacher: Hub name or local folder of the teacher (``agnostic`` and ``task``).
        data, train: see DataSpec and TrainSpec.
        weights: loss weights (relation, soft, hard, hidden, load_balance, temperature).
        relation_heads: R of the relation loss (32, as MiniLMv2 and the authors).
        teacher_layer: teacher layer whose Q/K/V are distilled (-1: last).
        student_qkv: ``last`` (the student's last layer), ``projection`` (the authors' extra Q/K/V
            projection of the final hidden states) or ``auto`` (projection for MiniMoE, last for dense).
        relation_dropout: dropout on the student's relations in training (the authors apply their
            attention dropout, 0.1).
        hidden_layers: the layer map of the hidden-state loss (``weights.hidden``): ``last`` (the
            student's last layer to the teacher's last), ``uniform`` (TinyBERT's map: student layer m to
            teacher layer m * N / M, embeddings to embeddings) or a list of ``[student, teacher]``
            pairs of layer indices (0 = the embeddings' output, L = the last layer).
        output_dir: the run folder.
        name: a label for tables; derived when not given.
    """

    stage: str = "task"
    student: StudentSpec | str = "2L-192H"
    teacher: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    weights: LossWeights = field(default_factory=LossWeights)
    relation_heads: int = 32
    teacher_layer: int = -1
    student_qkv: str = "auto"
    relation_dropout: float = 0.1
    hidden_layers: str | list = "last"
    output_dir: str = "runs/run"
    name: str | None = None

    def __post_init__(self):
        if isinstance(self.data, dict):
            self.data = DataSpec(**self.data)
        if isinstance(self.train, dict):
            self.train = TrainSpec(**self.train)
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        if isinstance(self.student, dict):
            self.student = StudentSpec.from_dict(self.student)
        _check(self.stage in STAGES, f"DistillSpec.stage must be one of {', '.join(STAGES)}, got {self.stage!r}.")
        _check(self.student_qkv in STUDENT_QKV,
               f"DistillSpec.student_qkv must be one of {', '.join(STUDENT_QKV)}, got {self.student_qkv!r}.")
        _check(self.stage == "finetune" or bool(self.teacher),
               f"DistillSpec.teacher is empty: stage '{self.stage}' distils from a teacher; name one (Hub name or folder).")
        _check(self.stage != "agnostic" or self.data.task in ("text", "synthetic"),
               f"Stage 'agnostic' distils on raw text: set data.task to 'text' (or 'synthetic'), not {self.data.task!r}.")
        _check(self.stage == "agnostic" or self.data.task != "text",
               f"data.task 'text' has no labels: use it with stage 'agnostic', not {self.stage!r}.")
        _check(self.relation_heads >= 1, f"DistillSpec.relation_heads must be >= 1, got {self.relation_heads}.")
        _check(0 <= self.relation_dropout < 1, f"DistillSpec.relation_dropout must lie in [0, 1), got {self.relation_dropout}.")
        _check(self.hidden_layers in ("last", "uniform") or (
            isinstance(self.hidden_layers, list) and len(self.hidden_layers) > 0 and all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                    isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)
                for pair in self.hidden_layers)),
               f"DistillSpec.hidden_layers must be 'last', 'uniform' or a list of [student_layer, teacher_layer] "
               f"pairs of layer indices >= 0, got {self.hidden_layers!r}.")
        if isinstance(self.hidden_layers, list):
            self.hidden_layers = [list(pair) for pair in self.hidden_layers]
        if self.name is None:
            path = Path(str(self.student))
            student = self.student.name if isinstance(self.student, StudentSpec) else (
                path.parent.name if path.name in ("best", "checkpoint") else path.name)
            self.name = f"{self.stage}-{self.data.task}-{student}"

    def student_spec(self) -> StudentSpec | None:
        """The student's spec when it is built fresh (a spec or a preset/shape name), else None."""
        if isinstance(self.student, StudentSpec):
            return self.student
        try:
            return spec_from_name(self.student)
        except ValueError:
            return None

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(self.student, StudentSpec):
            d["student"] = self.student.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "DistillSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"Unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        try:
            return cls(**data)
        except TypeError as e:  # an unknown field inside data/train/weights
            raise ConfigError(f"Bad run settings: {e}.") from None

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> "DistillSpec":
        """Load a YAML or JSON run config, with ``key.sub=value`` overrides (values parsed as YAML)."""
        path = Path(path)
        _check(path.is_file(), f"Config file {path} does not exist: check the path.")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path} is not valid YAML/JSON: {str(e).splitlines()[0]}.") from None
        _check(isinstance(data, dict), f"Config file {path} must hold a mapping of settings, not {type(data).__name__}.")
        apply_overrides(data, overrides or [])
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a nested config dict in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        _check(bool(sep) and bool(key), f"Override {item!r} is not of the form key=value (e.g. train.lr=1e-4).")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            _check(isinstance(node, dict), f"Override {item!r}: {p!r} is not a group of settings.")
        node[leaf] = yaml.safe_load(raw)
    return data
