"""The trained side of a run: one model protocol, and the module that turns a batch into loss terms.

Model protocol. Whatever a run trains — a gapkit :class:`~gapkit.models.Student` (dense or MiniMoE)
or a Hugging Face model being fine-tuned (a teacher-to-be, wrapped in :class:`HFModel`) — offers:

    forward(input_ids, attention_mask, token_type_ids=None, output_qkv=False,
            output_hidden_states=False) -> StudentOutput
    num_parameters(active=False) -> int          total, or what one token uses (one expert per block)
    save_pretrained(folder, label_names=None)    a Hugging Face-loadable folder
    hidden_size, max_positions, is_moe           read-only facts the run checks against its data

so that the run never asks which of the two it holds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn

from ..data.features import IGNORE_INDEX
from ..data.tasks import TaskData
from ..errors import ConfigError, ModelError
from ..models.spec import StudentSpec
from ..models.student import Student, StudentOutput
from ..routing import RoutingRecord
from .config import DistillSpec
from .losses import HiddenProjection, hard_label_loss, hidden_mse, regression_kd, relation_loss, soft_label_kd

__all__ = ["TrainModel", "HFModel", "Trainee", "build_model", "hidden_layer_pairs"]


@runtime_checkable
class TrainModel(Protocol):
    """What a run needs of the model it trains (see the module docstring)."""

    hidden_size: int
    max_positions: int
    is_moe: bool

    def __call__(self, input_ids, attention_mask, token_type_ids=None, output_qkv: bool = False,
                 output_hidden_states: bool = False) -> StudentOutput: ...

    def num_parameters(self, active: bool = False) -> int: ...

    def save_pretrained(self, folder, label_names=None): ...


def _output(**fields) -> StudentOutput:
    """A StudentOutput from the fields it has (a Hugging Face model has no routing or Q/K/V)."""
    known = {f.name for f in dataclasses.fields(StudentOutput)}
    return StudentOutput(**{k: v for k, v in fields.items() if k in known})


class HFModel(nn.Module):
    """A Hugging Face task model (``...ForSequenceClassification`` / ``...ForTokenClassification``)
    behind the model protocol; fine-tuning is the only stage that trains one."""

    is_moe = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_positions(self) -> int:
        return getattr(self.model.config, "max_position_embeddings", None) or 10**9

    def forward(self, input_ids, attention_mask, token_type_ids=None, output_qkv: bool = False,
                output_hidden_states: bool = False) -> StudentOutput:
        if output_qkv:
            raise ModelError(f"{type(self.model).__name__} does not return Q/K/V: relation distillation needs a "
                             f"gapkit student.")
        kwargs = {}
        if token_type_ids is not None and getattr(self.model.config, "type_vocab_size", 0) > 1:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
        hidden = tuple(out.hidden_states)
        return _output(last_hidden_state=hidden[-1], pooler_output=None,
                       hidden_states=hidden if output_hidden_states else None, routing=RoutingRecord(),
                       load_balance=torch.ones((), device=hidden[-1].device), qkv=None,
                       logits=out.logits)

    def num_parameters(self, active: bool = False) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save_pretrained(self, folder, label_names=None) -> Path:
        config = self.model.config
        if label_names and len(label_names) == config.num_labels:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {name: i for i, name in enumerate(label_names)}
        self.model.save_pretrained(folder)
        return Path(folder)


def build_model(spec: DistillSpec, task: TaskData) -> tuple[nn.Module, list[str]]:
    """The model a run trains: a fresh student, a saved student, or (fine-tuning) any HF encoder.

    Returns:
        (the model, the names of tensors initialised fresh on top of a checkpoint, e.g. a new task head).
    Raises:
        ModelError: the model cannot be loaded (missing folder, unknown Hub name, bad weights).
    """
    from ..models.checkpoint import load_student

    num_labels = task.num_labels if task.head else 0
    head = task.head or "sequence"
    fresh = spec.student_spec()
    if fresh is not None:
        fields = dict(vocab_size=task.vocab_size, pad_token_id=task.pad_token_id, name=None)
        return Student(StudentSpec.from_dict(dict(fresh.to_dict(), **fields)), num_labels=num_labels, task=head), []
    path = str(spec.student)
    try:
        model, report = load_student(path, num_labels=num_labels or None, task=task.head, return_report=True)
        return model, list(report.new_head)
    except ModelError as student_error:  # not a BERT-family / gapkit folder
        if spec.stage != "finetune":
            raise ModelError(f"Student {path!r} could not be loaded: {student_error}") from None
    return _load_hf_task_model(path, task, num_labels)


def _load_hf_task_model(path: str, task: TaskData, num_labels: int) -> tuple[nn.Module, list[str]]:
    """Any Hugging Face encoder with a task head, loaded strictly: a weight the checkpoint lacks is an
    error, except a new task head on a checkpoint that has none (recorded)."""
    from ..models.hf_loading import load_hf_model

    model, report = load_hf_model(path, head="token" if task.kind == "token" else "sequence",
                                  num_labels=num_labels, allow_new_head=True)
    return HFModel(model), list(report.new_head)


def hidden_layer_pairs(spec: DistillSpec, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """The (student layer, teacher layer) pairs of the hidden-state loss; 0 is the embeddings' output.

    Raises:
        ConfigError: a pair names a layer the model does not have.
    """
    M, N = student_layers, teacher_layers
    if spec.hidden_layers == "last":
        pairs = [(M, N)]
    elif spec.hidden_layers == "uniform":  # TinyBERT: g(m) = m * N / M
        if N % M:
            raise ConfigError(f"hidden_layers 'uniform' needs the teacher's {N} layers to be a multiple of the "
                              f"student's {M}: give explicit [student, teacher] pairs instead.")
        pairs = [(m, m * N // M) for m in range(M + 1)]
    else:
        pairs = [tuple(p) for p in spec.hidden_layers]
    for s, t in pairs:
        if s > M or t > N:
            raise ConfigError(f"hidden_layers pair [{s}, {t}] is out of range: the student has layers 0..{M} and "
                              f"the teacher 0..{N} (0 is the embeddings' output).")
    return pairs


class Trainee(nn.Module):
    """The model plus the modules only distillation needs, so that DDP and checkpoints see one module.

    ``terms`` are the loss terms it computes (``LossWeights.active`` of the run's stage and student);
    ``hidden`` is the TinyBERT projection from student to teacher hidden size (shared across the layer
    map); the MiniMoE relation projection lives on the student (``Student.relation``) so that it is
    saved and loaded with it.

    Args:
        teacher: the run's teacher side (its sizes); None for fine-tuning, whose terms need none.
    """

    def __init__(self, model: nn.Module, spec: DistillSpec, task: TaskData, teacher=None):
        super().__init__()
        self.model, self.spec, self.task = model, spec, task
        w = spec.weights
        self.terms = w.active(spec.stage, moe=model.is_moe)
        self.uses_projection = "relation" in self.terms and (
            spec.student_qkv == "projection" or (spec.student_qkv == "auto" and model.is_moe))
        if self.uses_projection:
            if not hasattr(model, "add_relation_projection"):
                raise ConfigError(f"student_qkv {spec.student_qkv!r} needs a gapkit student.")
            model.add_relation_projection()
        elif getattr(model, "relation", None) is not None:
            # Loaded with the student but unused by this run: kept as it is (and saved again), not
            # trained (DDP also refuses parameters that get no gradient).
            model.relation.requires_grad_(False)
        # What runs the model in training: None for the model itself, or its compiled, length-bucketed
        # forward (train.compile; gapkit.distill.compiling.CompiledStudent). Evaluation stays eager.
        self.model_call = None
        # The soft-label temperature: weights.temperature, or the one solved for weights.target_entropy.
        self.temperature = w.temperature
        self.hidden = None
        self.hidden_pairs: list[tuple[int, int]] = []
        if "hidden" in self.terms:
            self.hidden_pairs = hidden_layer_pairs(spec, model.spec.layers, teacher.num_layers)
            self.hidden = HiddenProjection(model.hidden_size, teacher.hidden_size)

    def forward(self, batch: dict, teacher_out=None) -> tuple[dict, StudentOutput]:
        """Loss terms of one micro-batch, those of ``terms`` in their order: (terms dict of scalar tensors,
        model output). ``teacher_out`` (a :class:`~gapkit.distill.teacher_side.TeacherSideOutput`) is needed
        when a teacher term is on."""
        spec, on = self.spec, self.terms
        call = self.model_call if (self.model_call is not None and self.training) else self.model
        out = call(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                   output_qkv="relation" in on and not self.uses_projection,
                   output_hidden_states="hidden" in on)
        terms = {}
        mask = batch["attention_mask"]
        if "relation" in on:
            student_qkv = self.model.relation_qkv(out.last_hidden_state) if self.uses_projection else out.qkv
            terms["relation"] = relation_loss(
                teacher_out.qkv, student_qkv, mask, spec.relation_heads,
                relation_dropout=spec.relation_dropout, training=self.training,
                teacher_cache=teacher_out.relation_rows).total
        labels = batch.get("labels")
        logits = out.logits
        regression = self.task.kind == "regression"
        if "soft" in on:
            if regression:
                terms["soft"] = regression_kd(logits.squeeze(-1), teacher_out.logits.squeeze(-1))
            else:
                valid = (labels != IGNORE_INDEX) if (self.task.kind == "token" and labels is not None) else None
                terms["soft"] = soft_label_kd(logits, teacher_out.logits, self.temperature, valid=valid)
        if "hard" in on:
            terms["hard"] = hard_label_loss(logits.squeeze(-1) if regression else logits, labels, regression)
        if "hidden" in on:
            losses = [hidden_mse(out.hidden_states[s], teacher_out.hidden_states[t], self.hidden, mask)
                      for s, t in self.hidden_pairs]
            terms["hidden"] = torch.stack(losses).mean()
        if "load_balance" in on:
            terms["load_balance"] = out.load_balance
        return terms, out
