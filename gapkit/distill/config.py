"""Run configuration: what to train on (``DataSpec``), how (``TrainSpec``), the objective (``LossWeights``)
and the distillation (``DistillSpec``, which holds the other three). All round-trip to YAML/JSON and validate
at construction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..configtools import check_fields
from ..data.custom import CustomSpec
from ..data.names import check_task_name
from ..errors import ConfigError
from ..models.spec import HUB_CHECKPOINTS, PRESETS, StudentSpec, spec_from_name

STAGES = ("finetune", "agnostic", "task")
# data.select_on: the split that selects a run's best weights. ``holdout`` is carved from the training
# split (gapkit.data.tasks.carve_holdout); the dev split(s) are then only scored, with the selected weights.
SELECT_ON = ("dev", "holdout")
STUDENT_QKV = ("auto", "last", "projection")
LINE_MODES = ("sentence", "document")
# train.compile: off (eager), torch.compile with inductor (default, reduce-overhead = CUDA graphs,
# max-autotune), cudagraphs (CUDA graphs of the captured graph's eager kernels: compiles in seconds),
# or aot_eager (graphs captured, eager kernels: a capture check without a compiler).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "cudagraphs", "aot_eager")
TRACKERS = ("off", "mlflow")  # train.tracking (gapkit.distill.tracking)
# Loss-term names understood by ``LossWeights`` and ``gapkit.distill.losses.combine``, in the order a run
# computes, sums and scores them.
LOSS_TERMS = ("relation", "soft", "hard", "hidden", "load_balance")
# The loss terms each stage can train (the others need a teacher or labels the stage does not have);
# load balance is an auxiliary term and trains nothing by itself. ``LossWeights.active`` reads this.
STAGE_TERMS = {"finetune": ("hard",), "agnostic": ("relation", "hidden"),
               "task": ("relation", "soft", "hard", "hidden")}
# The weights a sweep gives each stage unless its ``weights:`` say otherwise (gapkit.sweep.plan reads this);
# the ``LossWeights`` defaults fill the rest (load balance 0.01, temperature 1). A single run's default is
# ``LossWeights()`` itself. The values are floats, as written into planned configs (and their hashes).
STAGE_WEIGHTS = {
    "finetune": dict(relation=0.0, soft=0.0, hard=1.0, hidden=0.0),
    "agnostic": dict(relation=1.0, soft=0.0, hard=0.0, hidden=0.0),
    "task": dict(relation=0.0, soft=1.0, hard=0.0, hidden=0.0),
}
# Preset names that are also pretrained checkpoints on the Hugging Face Hub: gapkit flops reads them as
# shapes, but as a run's student they mean the pretrained weights (never a random model behind the name).
HUB_MODEL_IDS = frozenset(HUB_CHECKPOINTS)
# Something that starts like a shape string ({L}L-{H}H...): a typo in it is reported as a bad shape, not
# as a missing folder or Hub model.
_SHAPE_LIKE = re.compile(r"^\d+L-\d+H(?![A-Za-z])", re.IGNORECASE)
_EXPERTS_SUFFIX = re.compile(r"^(?P<base>.+?)-(?P<x>\d+),(?P<y>\d+)E$")
# The full grammar of a shape string (gapkit.models.spec.parse_shape reads it).
_SHAPE_FORM = re.compile(r"^\d+L-\d+H(?:-\d+A)?(?:-\d+F)?(?:-\d+,\d+E)?$")

# Training in fp32 with AdamW holds weights, gradients and two moment estimates: 16 bytes a parameter
# (activations come on top).
TRAIN_BYTES_PER_PARAM = 16


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class DataSpec:
    """Where the examples come from.

    Args:
        task: a GLUE task (``sst2``, ``mnli`` ...), ``conll`` (CoNLL-2003 NER), ``synthetic`` (gapkit's
            built-in task), ``text`` (raw text, for task-agnostic distillation), or the name of a data set of
            your own described in ``custom``.
        data_dir: a local folder (``glue_data/``-style for GLUE, the CoNLL files for ``conll``, the folder
            that relative ``custom.files`` are read from); None loads GLUE and CoNLL from the Hugging Face Hub.
        text: for ``text``: local files/folders or a Hub dataset name (``wikitext``), one or several.
        text_config: Hub config for ``text`` (e.g. ``wikitext-103-raw-v1``).
        line_mode: ``sentence`` (one sentence a line, blank line between documents) or ``document``.
        tokenizer: a tokenizer folder or Hub name; None uses the teacher's (or the model's).
        max_len: maximum sequence length (the paper uses 128).
        max_train_examples, max_eval_examples: seeded subsets (None: all). ``max_eval_examples`` applies
            to the dev (and test) splits, never to the holdout, and draws the same examples for every run
            (a fixed seed), so that runs of different seeds score the same examples.
        synthetic: keyword arguments of ``SyntheticTask`` for ``synthetic``.
        custom: a labeled data set of your own, single sentences or pairs, classes or scores
            (``gapkit.data.custom.CustomSpec``, docs/data.md): ``files`` (CSV / TSV / JSON Lines, a file per
            split or one with a ``split_column``) or ``dataset`` (a Hub name, a folder of data files or a
            ``save_to_disk`` folder), ``text`` (one column or two), ``label``, ``splits``, ``labels`` (the
            classes in id order), ``kind`` and ``metric``; ``task`` is then its name.
        select_on: the split that selects the run's ``best/`` weights. ``dev`` (the default for a single
            run): the dev split selects and is also scored, which flatters the score. ``holdout`` (the
            default of every labeled stage of a sweep): a holdout carved from the training split
            selects, and the dev split(s) (and CoNLL's test) are only scored, with the selected weights.
            Labeled tasks only (raw text and task-agnostic runs have nothing to select on).
        holdout: the size of that holdout (``select_on: holdout``): a fraction in (0, 1) of the
            training examples the run uses (the training split, or ``max_train_examples`` of it), or a
            count >= 1 of examples. It is drawn from the whole training split with the run's data seed
            (the same seed, the same holdout), before ``max_train_examples`` subsamples the rest, so the
            training set keeps its size when the split is big enough (else it keeps every example left,
            recorded in result.json under ``selection.examples``).
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
    custom: dict = field(default_factory=dict)
    select_on: str = "dev"
    holdout: float | int = 0.1

    def __post_init__(self):
        check_fields(self, "DataSpec")
        if self.custom:  # every setting a file is not needed for is checked now, before any run
            self.custom = CustomSpec.from_dict(self.custom).to_dict()
        self.task = check_task_name(self.task, self.custom)
        _check(self.max_len >= 8, f"DataSpec.max_len must be at least 8, got {self.max_len}.")
        _check(self.line_mode in LINE_MODES,
               f"DataSpec.line_mode must be one of {', '.join(LINE_MODES)}, got {self.line_mode!r}.")
        _check(all(t.strip() for t in self.text), f"DataSpec.text holds an empty name: {self.text!r}.")
        _check(self.task != "text" or bool(self.text),
               "DataSpec.text is empty: task 'text' needs local text files or a Hub dataset name in data.text.")
        for f in ("max_train_examples", "max_eval_examples"):
            v = getattr(self, f)
            _check(v is None or v >= 1, f"DataSpec.{f} must be a positive integer or null, got {v!r}.")
        _check(self.select_on in SELECT_ON,
               f"DataSpec.select_on must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}.")
        h = self.holdout
        _check(not isinstance(h, bool) and h > 0,
               f"DataSpec.holdout must be a fraction in (0, 1) of the training split or a count >= 1 of examples, "
               f"got {h!r}.")
        _check(isinstance(h, int) or h < 1,
               f"DataSpec.holdout {h!r} is a fraction of the training split and must lie in (0, 1); write a whole "
               f"number (e.g. {max(1, int(h))}) for a count of examples.")
        _check(self.select_on == "dev" or self.task != "text",
               "DataSpec.select_on is 'holdout' but task 'text' is raw text, with no labels to select weights on: "
               "use select_on: dev.")


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
        tracking: ``off``, or ``mlflow``: log the run's settings, every metrics.jsonl row and its result to MLflow
            (needs the ``mlflow`` extra; the tracking URI is ``$MLFLOW_TRACKING_URI``, else a file store in the
            run folder). It watches the run without changing it, so it is not part of the run's id.
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        group_by_length: train on batches of examples of similar length (pools of 64 batches sorted by
            length, the batches shuffled): several times fewer padded tokens on short, varied sentences
            such as SST-2's, at the cost of batches less random than a plain shuffle.
        eval_batch_size: examples per batch when evaluating (and when caching teacher logits).
        compile: ``off`` (eager, the default and the reference), or compile the student's training
            forward and backward and the teacher's forward with ``torch.compile``: ``default``
            (inductor), ``reduce-overhead`` (inductor and CUDA graphs: for small students on a GPU),
            ``max-autotune``, ``cudagraphs`` (CUDA graphs of eager kernels: no kernel compilation, so
            it compiles in seconds) or ``aot_eager`` (graphs captured, run with eager kernels: a
            check, no speedup). Batches are padded up to ``compile_buckets`` lengths; results agree with eager
            to floating-point reassociation (see docs/gpu.md). gapkit students only.
        compile_buckets: the sequence lengths a compiled run pads batches up to (at most one graph per
            length and batch size); None: the powers of two from 16 below ``data.max_len``, and
            ``data.max_len``. Lengths above ``data.max_len`` are capped to it.
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
    tracking: str = "off"
    device: str = "auto"
    group_by_length: bool = False
    eval_batch_size: int = 64
    compile: str = "off"
    compile_buckets: list[int] | None = None

    def __post_init__(self):
        if self.compile is False:  # YAML 1.1 (PyYAML, --set) reads a bare `off` as false
            self.compile = "off"
        _check(self.compile is not True, f"TrainSpec.compile must be one of {', '.join(COMPILE_MODES)}, got true (YAML "
                                         f"reads a bare on/yes/true as true): write the mode, e.g. reduce-overhead.")
        if self.tracking is False:  # a bare `off` again
            self.tracking = "off"
        check_fields(self, "TrainSpec")  # types first: also refuses NaN and infinities
        _check(self.tracking in TRACKERS,
               f"TrainSpec.tracking must be one of {', '.join(TRACKERS)}, got {self.tracking!r}.")
        _check(self.lr > 0, f"TrainSpec.lr must be a positive number, got {self.lr!r}.")
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
        for f in ("log_every", "routing_every", "eval_batch_size"):
            v = getattr(self, f)
            _check(v >= 1, f"TrainSpec.{f} must be a positive integer, got {v!r}.")
        for f in ("seed", "init_seed", "data_seed"):
            v = getattr(self, f)
            _check(v is None or v >= 0, f"TrainSpec.{f} must be an integer >= 0, got {v!r}.")
        _check(self.device in ("auto", "cpu", "cuda"), f"TrainSpec.device must be auto, cpu or cuda, got {self.device!r}.")
        _check(self.compile in COMPILE_MODES,
               f"TrainSpec.compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}.")
        buckets = self.compile_buckets
        if buckets is not None:
            _check(len(buckets) > 0 and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in buckets)
                   and list(buckets) == sorted(set(buckets)),
                   f"TrainSpec.compile_buckets must be a non-empty increasing list of sequence lengths >= 1 (or null "
                   f"for powers of two), got {buckets!r}.")
            _check(self.compile != "off", "TrainSpec.compile_buckets applies to compiled runs only: set train.compile "
                                          "(e.g. reduce-overhead) or remove compile_buckets.")
        # One ``seed`` sets both streams; resolved here so config.json records what the run used.
        if self.init_seed is None:
            self.init_seed = self.seed
        if self.data_seed is None:
            self.data_seed = self.seed


@dataclass
class LossWeights:
    """Weights of the distillation objective's terms, and the KD temperature.

    Defaults are the MiniMoE task-agnostic stage: relation loss only, plus load balance at 0.01
    (docs/method.md). Round-trips through ``dataclasses.asdict`` / ``LossWeights(**d)``. Which terms a run
    trains on is :meth:`active`, and only that: the teacher side, the trainee, the run's checks and its
    evaluation all read it.

    Attributes:
        relation: weight of the Q/K/V relation loss.
        soft: weight of soft-label (or regression) KD.
        hard: weight of the ground-truth loss.
        hidden: weight of the hidden-state MSE.
        load_balance: weight of the MiniMoE load-balance loss (1.0 at perfect balance; computed by
            ``gapkit.routing.load_balance_of``). This is the one place the weight lives: students
            return the unweighted ``load_balance``.
        temperature: soft-label KD temperature, > 0.
        target_entropy: when set (nats, > 0), the temperature is not this setting but solved per run from
            the teacher's logits over the training set, so that its soft labels' mean entropy equals
            ``target_entropy`` (:func:`temperature_for_entropy`): teachers of different sizes then hand
            their students equally soft labels, and soft-label entropy cannot explain a difference
            between them. Classification tasks with task KD from logits alone (cached logits).
    """

    relation: float = 1.0
    soft: float = 0.0
    hard: float = 0.0
    hidden: float = 0.0
    load_balance: float = 0.01
    temperature: float = 1.0
    target_entropy: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, "LossWeights")  # numbers (numeric strings converted), finite, never bools
        for name in LOSS_TERMS:
            _check(getattr(self, name) >= 0, f"LossWeights.{name} must be a finite number >= 0 (0 turns the term "
                                             f"off), got {getattr(self, name)!r}.")
        _check(self.temperature > 0, f"LossWeights.temperature must be a finite number > 0, got {self.temperature!r}.")
        _check(self.target_entropy is None or self.target_entropy > 0,
               f"LossWeights.target_entropy must be a number of nats > 0 (or null: the fixed temperature), got "
               f"{self.target_entropy!r}.")

    def weight(self, term: str) -> float:
        """The weight of loss term ``term`` (one of ``LOSS_TERMS``)."""
        if term not in LOSS_TERMS:
            raise ValueError(f"Unknown loss term {term!r}; known terms are {', '.join(LOSS_TERMS)}.")
        return getattr(self, term)

    def active(self, stage: str, moe: bool = False) -> tuple[str, ...]:
        """The loss terms a run of ``stage`` trains on, in ``LOSS_TERMS`` order.

        A term is on when the stage can train it (``STAGE_TERMS``: e.g. soft labels need the task stage's
        fine-tuned teacher, hard labels need labels) and its weight is > 0; load balance is on for a MiniMoE
        student (``moe``) when its weight is > 0. The distillation terms of a task-agnostic run
        (``active("agnostic")``) are also what its evaluation scores.

        Args:
            stage: a ``DistillSpec.stage``.
            moe: whether the student is a MiniMoE (it has a load-balance loss).
        """
        if stage not in STAGE_TERMS:
            raise ValueError(f"Unknown stage {stage!r}; stages are {', '.join(STAGES)}.")
        on = {t for t in STAGE_TERMS[stage] if getattr(self, t) > 0}
        if moe and self.load_balance > 0:
            on.add("load_balance")
        return tuple(t for t in LOSS_TERMS if t in on)


@dataclass
class DistillSpec:
    """One run: fine-tune a model, or distil a teacher into a student.

    Args:
        stage: ``finetune`` (train ``student`` on task labels, no teacher; also how teachers are
            fine-tuned: ``student`` may then be any Hugging Face encoder), ``agnostic`` (MiniLM relation
            distillation on raw text) or ``task`` (task-specific distillation from a fine-tuned teacher).
        student: built with random weights: a StudentSpec (or a mapping of its fields), a shape
            (``3L-384H``, ``2L-192H-1,4E``, ``5L-256H-4A``) or a gapkit preset (``bert-base``); loaded with
            its pretrained weights: a model folder or Hub name (``bert-base-uncased``, anything with a
            ``/``; a gapkit or MiniMoE checkpoint, any HF BERT; for ``finetune``, any HF encoder).
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
        if isinstance(self.student, Mapping):
            try:
                self.student = StudentSpec.from_dict(dict(self.student))
            except ValueError as err:  # StudentSpec's own sentence, as a config error
                raise ConfigError(f"student: {err}") from None
        _check(isinstance(self.student, (StudentSpec, str)),
               f"DistillSpec.student must be a shape (3L-384H), a preset, a model folder or Hub name, or a mapping "
               f"of StudentSpec fields, got {self.student!r}.")
        check_fields(self, "DistillSpec")  # builds data/train/weights from mappings, checks every type
        _check(self.stage in STAGES, f"DistillSpec.stage must be one of {', '.join(STAGES)}, got {self.stage!r}.")
        if isinstance(self.student, str):
            _check(bool(self.student.strip()), "DistillSpec.student is empty: name a shape (3L-384H), a preset, "
                                               "a model folder or a Hub name.")
            self._fresh_spec()  # a mistyped shape fails here, with the shape's own sentence
        _check(self.student_qkv in STUDENT_QKV,
               f"DistillSpec.student_qkv must be one of {', '.join(STUDENT_QKV)}, got {self.student_qkv!r}.")
        _check(self.stage == "finetune" or bool(self.teacher),
               f"DistillSpec.teacher is empty: stage '{self.stage}' distils from a teacher; name one (Hub name or folder).")
        _check(self.stage != "agnostic" or self.data.task in ("text", "synthetic"),
               f"Stage 'agnostic' distils on raw text: set data.task to 'text' (or 'synthetic'), not {self.data.task!r}.")
        _check(self.stage != "agnostic" or self.data.select_on == "dev",
               "data.select_on is 'holdout' but stage 'agnostic' has no labels to select weights on: use "
               "data.select_on: dev for it.")
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
        terms = STAGE_TERMS[self.stage]
        names = " / ".join(f"weights.{t}" for t in terms)
        _check(bool(self.weights.active(self.stage)),
               f"Nothing to train: stage {self.stage!r} learns from {names}, "
               f"{'which is 0' if len(terms) == 1 else 'all 0'}; set {'it' if len(terms) == 1 else 'one'} > 0 "
               f"(e.g. weights.{terms[0]}: 1.0).")
        self._check_output_dir()
        self._check_model_references()
        if self.name is None:
            path = Path(str(self.student))
            student = self.student.name if isinstance(self.student, StudentSpec) else (
                path.parent.name if path.name in ("best", "checkpoint") else path.name)
            self.name = f"{self.stage}-{self.data.task}-{student}"

    # -- the student: built fresh, or loaded with its weights ------------------------------------
    def student_init(self) -> str:
        """``"random"`` when the student is built fresh, ``"pretrained"`` when weights are loaded.

        A name is built fresh (random initialisation) only when it is a shape string (``3L-384H``,
        ``2L-192H-1,4E``, ``5L-256H-4A``) or a gapkit preset that is not also a Hub model id: ``bert-base``
        is a randomly initialised BERT-base shape, while ``bert-base-uncased``, anything with a ``/`` and
        any other name are pretrained weights, loaded from that folder or Hub model.

        Raises:
            ConfigError: a shape or preset name that is also an existing local folder (it could mean
                either); a mistyped shape.
        """
        if isinstance(self.student, StudentSpec):
            return "random"
        if self._fresh_spec() is None:
            return "pretrained"
        _check(not Path(self.student).expanduser().is_dir(),
               f"Student {self.student!r} is both a gapkit shape and a local folder, so it could mean random or "
               f"pretrained weights: write ./{self.student} to load the folder, or rename it to build the shape.")
        return "random"

    def student_spec(self) -> StudentSpec | None:
        """The student's spec when it is built fresh (see :meth:`student_init`), else None.

        Called by the training loop right before it builds the student, so it also refuses a shape that
        this machine cannot hold for training (from the parameter count, before anything is allocated).

        Raises:
            ConfigError: see :meth:`student_init`; a student too large for this machine's memory.
        """
        if self.student_init() == "pretrained":
            return None
        spec = self.student if isinstance(self.student, StudentSpec) else self._fresh_spec()
        vocab = self.data.synthetic.get("vocab_size") if self.data.task == "synthetic" else None
        if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab != spec.vocab_size:
            # The synthetic task gives the student its own vocabulary (gapkit.distill.trainee.build_model):
            # size that one, or a huge data.synthetic.vocab_size passes here and fails inside nn.Embedding.
            check_trainable_size(dataclasses.replace(spec, vocab_size=vocab), self.train.device,
                                 f"its embedding has a row for each of the {vocab:,} ids of data.synthetic.vocab_size",
                                 "lower data.synthetic.vocab_size")
        else:
            check_trainable_size(spec, self.train.device)
        return spec

    def _fresh_spec(self) -> StudentSpec | None:
        """The spec a student *name* describes (shape or non-Hub preset), or None for a model name."""
        name = self.student.strip()
        experts = _EXPERTS_SUFFIX.match(name)
        base = experts["base"] if experts else name
        if base in HUB_MODEL_IDS:
            if experts:  # experts cannot be loaded from a dense checkpoint by name
                shape = f"{base.rsplit('-', 1)[0]}-{experts['x']},{experts['y']}E"
                raise ConfigError(f"Student {name!r} adds experts to the pretrained model {base!r}, which has none: "
                                  f"write {shape!r} for a randomly initialised MiniMoE of that shape.")
            return None
        shape_like = _SHAPE_LIKE.match(name) is not None
        if not (shape_like or base in PRESETS):
            return None
        if shape_like and _SHAPE_FORM.match(name) is None and not (experts and base in PRESETS):
            raise ConfigError(f"Student {name!r} looks like a shape but is not one: shapes read "
                              f"{{L}}L-{{H}}H[-{{A}}A][-{{x}},{{y}}E], e.g. 3L-384H, 5L-256H-4A, 3L-384H-1,4E.")
        try:
            return spec_from_name(name)
        except ValueError as err:  # the shape's own sentence (heads not dividing hidden, 0 experts ...)
            raise ConfigError(f"Student {name!r} is not a valid shape: {err}") from None

    def _check_output_dir(self) -> None:
        """An output_dir that is a file, or lies under one, can never be a run folder: say so now."""
        path = Path(self.output_dir).expanduser()
        _check(bool(self.output_dir.strip()), "DistillSpec.output_dir is empty: name the run folder.")
        for p in (path, *path.parents):
            if p.exists():
                _check(p.is_dir(), f"output_dir {self.output_dir} cannot be a run folder: {p} is a file; "
                                   f"choose another output_dir.")
                break

    def check_output_writable(self) -> None:
        """Refuse an output_dir this process cannot create or write into, before any data or model is built.

        Not part of construction: a config is also read where it is not run (a run folder inspected on
        another machine, a sweep planned on a login node). Whether a folder is writable is asked of the
        file system itself, by creating and removing an empty folder in the nearest one that exists:
        permission bits do not say it for root, read-only mounts or network file systems. (Named ``*.tmp``: one
        a kill leaves behind is what a run folder's start removes.)
        """
        import tempfile

        path = Path(self.output_dir).expanduser()
        existing = next(p for p in (path, *path.parents) if p.exists())  # "." and "/" always exist
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".gapkit-write-check-", suffix=".tmp", dir=existing))
        except OSError as err:
            raise ConfigError(f"output_dir {self.output_dir} cannot be written: creating a folder in {existing} "
                              f"fails ({err.strerror or type(err).__name__}); choose an output_dir you can write "
                              f"to.") from None

    def _check_model_references(self) -> None:
        """A teacher or pretrained student named by a local path that is not there, or is a file (or a
        teacher folder without config.json): one sentence now, not a Hub error once the data are built. A
        run's ``best/`` or ``checkpoint/`` that does not exist yet is left to the run (a pipeline's or sweep's
        later stage names it before the stage that writes it has run), and so is what a student's folder
        holds (its loader reads it, and falls back to transformers for a model gapkit cannot read)."""
        from ..errors import ModelError
        from ..models.references import missing_reference

        refs = [("student", self.student)] if self.student_init() == "pretrained" else []
        if self.stage != "finetune" and self.teacher:
            refs.append(("teacher", self.teacher))
        for role, ref in refs:
            path = Path(ref).expanduser()
            if (role == "student" and path.is_dir()) or (path.name in ("best", "checkpoint") and not path.exists()):
                continue
            problem = missing_reference(ref, role)
            if problem is not None:
                raise ModelError(f"{problem}.")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(self.student, StudentSpec):
            d["student"] = self.student.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "DistillSpec":
        _check(isinstance(data, Mapping), f"Run settings must be a mapping, not {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        _check(not unknown, f"Unknown run setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> "DistillSpec":
        """Load a YAML or JSON run config, with ``key.sub=value`` overrides (values parsed as YAML)."""
        data = read_config_file(path, "Config file")
        apply_overrides(data, overrides or [])
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def check_trainable_size(spec: StudentSpec, device: str = "auto", why: str | None = None,
                         fix: str = "choose a smaller shape") -> None:
    """Refuse a student whose training state cannot fit in this machine's memory, before allocating it.

    The parameter count is exact (the student is built on the meta device, which allocates nothing);
    training takes :data:`TRAIN_BYTES_PER_PARAM` bytes a parameter plus activations, so this only catches
    shapes that cannot possibly fit (``200L-16384H``), not every out-of-memory.

    Args:
        spec: the student's shape.
        device: ``train.device`` (``auto``: the GPU when one is visible).
        why: what makes the student this large when it is not its shape (a clause for the sentence).
        fix: what the sentence tells the user to do.
    Raises:
        ConfigError: naming the parameter count, the memory training would take and the memory there is.
    """
    import torch

    from ..models.student import Student

    with torch.device("meta"):
        params = Student(spec, moefy=False).num_parameters()
    need = params * TRAIN_BYTES_PER_PARAM
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        where, have = "the GPU", torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
    else:
        where, have = "this machine", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    _check(not have or need <= have,
           f"Student {spec.name!r} has {params / 1e9:.3g} billion parameters{f' ({why})' if why else ''}: training "
           f"it takes about {_size(need)} ({TRAIN_BYTES_PER_PARAM} bytes a parameter: fp32 weights, gradients and "
           f"AdamW state), more than the {_size(have)} of memory of {where}; {fix}.")


def _size(n_bytes: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} bytes"


def read_config_file(path: str | Path, what: str = "Config file") -> dict:
    """The mapping a YAML/JSON config file holds; ConfigError (one sentence) for a missing, unreadable,
    non-UTF-8 or non-YAML file, or one that holds something other than a mapping."""
    path = Path(path)
    _check(not path.is_dir(), f"{what} {path} is a folder; give the YAML/JSON file inside it.")
    _check(path.is_file(), f"{what} {path} does not exist: check the path.")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start}): save it as UTF-8.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML/JSON: {_yaml_problem(err)}.") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read ({err.strerror or type(err).__name__}).") from None
    _check(isinstance(data, dict), f"{what} {path} must hold a mapping of settings, not {type(data).__name__}.")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message in one line: the problem and where (``line 3, column 7``)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` overrides (value parsed as YAML) to a nested config dict in place.

    A value that YAML reads as a string is left to the setting's type: ``train.lr=1e-3`` (a string in
    YAML 1.1) becomes the float 0.001 because ``lr`` is a float.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        _check(bool(sep) and all(p.strip() for p in parts),
               f"Override {item!r} is not of the form key=value (e.g. train.lr=1e-4).")
        node = data
        *parents, leaf = parts
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            _check(isinstance(node, dict), f"Override {item!r}: {'.'.join(parts[:i + 1])} is not a group of "
                                           f"settings, so it has no {parts[i + 1]!r}.")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"Override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); "
                              f"put it in quotes if it is text.") from None
    return data
