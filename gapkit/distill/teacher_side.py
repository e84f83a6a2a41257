"""The teacher side of distillation: batches in, teacher outputs out.

A :class:`TeacherSide` owns the frozen teacher of one run, or of several runs that share a teacher,
data and batch geometry (a sweep's group): one teacher pass per batch then feeds every run, training
and evaluation alike. What it computes is the union of what its runs need: the Q/K/V of the chosen
layer (relation loss), every hidden state (hidden-state loss), the logits (soft labels).

With logits alone (task KD without relations or hidden states) the teacher's outputs never change
(it is frozen and in eval mode), so :meth:`TeacherSide.cache_logits` computes them once for the whole
training set instead of once per step, and keeps them on disk (:mod:`gapkit.distill.teacher_cache`) for
every later run of the same teacher and examples. Such a side loads its teacher only when something needs
it: a run that reads its logits from the disk never does (the checks it makes read the teacher's facts
recorded with the file).

A side that feeds several runs (``share_relation_rows``) also shares the teacher's half of the relation
loss: each output carries a ``relation_rows`` dict, filled by the first student's relation loss and read
by the others (:class:`TeacherSideOutput`).

With ``train.compile`` the teacher's encoder is compiled (``torch.compile``, see
:mod:`gapkit.distill.compiling`) and every batch is padded up to a bucket length, its outputs cut back
to the batch's own length: callers see the shapes they passed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data.features import pad_batch
from ..data.tasks import TaskData
from ..errors import ConfigError, ModelError
from ..models.teacher import Teacher, TeacherOutput
from .compiling import (GRAPHED_MODES, SHAPES_PER_BUCKET, bucket_lengths, bucket_of, compile_options, cut, pad_length,
                        raise_recompile_limit)
from .config import DistillSpec
from .teacher_cache import LogitStore

__all__ = ["TeacherSide", "TeacherSideOutput", "TeacherNeeds", "to_device", "autocast"]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; CPU runs stay fp32 (and bitwise reproducible)."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class TeacherNeeds:
    """What the runs of a teacher use: Q/K/V, all hidden states, logits."""

    qkv: bool = False
    hidden: bool = False
    logits: bool = False

    @classmethod
    def of(cls, spec: DistillSpec) -> "TeacherNeeds":
        on = spec.weights.active(spec.stage)
        return cls(qkv="relation" in on, hidden="hidden" in on, logits="soft" in on)

    def __or__(self, other: "TeacherNeeds") -> "TeacherNeeds":
        return TeacherNeeds(self.qkv or other.qkv, self.hidden or other.hidden, self.logits or other.logits)

    @property
    def logits_only(self) -> bool:
        return self.logits and not (self.qkv or self.hidden)


@dataclass
class TeacherSideOutput(TeacherOutput):
    """The teacher's outputs for one batch, as a :class:`TeacherSide` hands them to its runs.

    Attributes:
        relation_rows: the teacher's relation rows of this batch, keyed by the number of relation heads
            (``relation_loss``'s ``teacher_cache``): an empty dict from a side that feeds several runs,
            filled by the first student's relation loss and reused by the others (the same numbers, so
            each student's loss is bitwise what it would be alone); None for a run of its own, whose
            relation loss frees each row as it goes.
    """

    relation_rows: dict | None = field(default=None, repr=False, compare=False)


class TeacherSide:
    """A frozen teacher on a device, computing what its runs need.

    Args:
        teacher: the loaded :class:`~gapkit.models.teacher.Teacher`, or a function loading it, called when
            the side first needs it (:attr:`teacher`).
        ref: its name or folder, as the run config gives it.
        needs: what to compute.
        device, bf16: where, and whether under bf16 autocast (CUDA only).
        compile: a ``train.compile`` mode: ``off``, or compile the teacher's encoder (in place: the
            teacher is this side's own) and pad every batch up to a bucket length.
        buckets: the bucket lengths (:func:`gapkit.distill.compiling.bucket_lengths`); needed with
            ``compile``.
        share_relation_rows: the side feeds several runs (a sweep's group), each reading every output:
            outputs then carry a ``relation_rows`` dict (:class:`TeacherSideOutput`). Settable after
            construction (a group shares the side its first run loaded).
    """

    def __init__(self, teacher: Teacher | Callable[[], Teacher], ref: str, needs: TeacherNeeds, device: torch.device,
                 bf16: bool = True, compile: str = "off", buckets: tuple[int, ...] | None = None,
                 share_relation_rows: bool = False):
        self.ref, self.needs, self.device, self.bf16 = ref, needs, device, bf16
        self.compile, self.buckets = compile, tuple(buckets or ())
        self.share_relation_rows = share_relation_rows
        # cache_logits' passes over a training set, by the key of its features (runs of a group share them).
        self._logit_cache: dict[str, list[torch.Tensor]] = {}
        # The teacher's facts as a logit file recorded them (max_positions, vocab_size, params): answered
        # without loading the teacher (LogitStore.facts).
        self.known_facts: dict = {}
        if compile != "off" and not self.buckets:
            raise ValueError("A compiled TeacherSide needs its bucket lengths (compiling.bucket_lengths).")
        self._teacher: Teacher | None = None
        self._loader = None
        if isinstance(teacher, Teacher):
            self._install(teacher)
        else:
            self._loader = teacher

    @property
    def teacher(self) -> Teacher:
        """The teacher, on the device (loaded now if it was not yet)."""
        if self._teacher is None:
            self._install(self._loader())
        return self._teacher

    @property
    def loaded(self) -> bool:
        return self._teacher is not None

    def _install(self, teacher: Teacher) -> None:
        self._teacher = teacher.to(self.device)
        if self.compile != "off":
            self._compile_teacher()

    @classmethod
    def load(cls, spec: DistillSpec, task: TaskData, device: torch.device,
             needs: TeacherNeeds | None = None) -> "TeacherSide | None":
        """The teacher of ``spec`` (None for fine-tuning), checked against the task before any compute.

        Raises:
            ModelError: the teacher cannot be found or loaded.
            ConfigError: soft labels are asked of a teacher without a task head for this task.
        """
        if spec.stage == "finetune":
            return None
        needs = needs or TeacherNeeds.of(spec)
        head = task.head if needs.logits else None
        num_labels = task.num_labels if needs.logits else 0
        if needs.logits:
            _check_task_head(spec.teacher, task)

        def load() -> Teacher:
            return Teacher.from_pretrained(spec.teacher, num_labels=num_labels, task=head, qkv_layer=spec.teacher_layer)

        # Logits alone may come from the disk (cache_logits): the teacher is then loaded only if they do not.
        teacher = load if needs.logits_only else load()
        buckets = bucket_lengths(spec.data.max_len, spec.train.compile_buckets) if spec.train.compile != "off" else None
        return cls(teacher, str(spec.teacher), needs, device, spec.train.bf16, spec.train.compile, buckets)

    # -- facts ---------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.teacher.hidden_size

    @property
    def num_layers(self) -> int:
        return self.teacher.num_layers

    @property
    def attention_size(self) -> int:
        return self.teacher.attention_size

    @property
    def max_positions(self) -> int:
        return self.known_facts["max_positions"] if self._known("max_positions") else self.teacher.max_positions

    @property
    def vocab_size(self) -> int:
        return self.known_facts["vocab_size"] if self._known("vocab_size") else self.teacher.config.vocab_size

    @property
    def config(self):
        return self.teacher.config

    def num_parameters(self) -> int:
        if self._known("params"):
            return self.known_facts["params"]
        return sum(p.numel() for p in self.teacher.parameters())

    def _known(self, fact: str) -> bool:
        return not self.loaded and fact in self.known_facts

    def facts(self) -> dict:
        """What a run checks of the teacher (and records), kept with its logits on disk."""
        return dict(max_positions=self.max_positions, vocab_size=self.vocab_size, params=self.num_parameters())

    # -- compute -------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, batch: dict) -> TeacherSideOutput:
        """Teacher outputs of one batch (already on the device); Q/K/V and hidden states only when
        some run needs them."""
        if self.compile != "off":
            return self._compiled_call(batch)
        with autocast(self.device, self.bf16):
            out = self.teacher(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                               output_hidden_states=self.needs.hidden)
        return self._output(last_hidden_state=out.last_hidden_state, qkv=out.qkv if self.needs.qkv else None,
                            hidden_states=out.hidden_states, logits=out.logits if self.needs.logits else None)

    def _output(self, **outputs) -> TeacherSideOutput:
        return TeacherSideOutput(**outputs, relation_rows={} if self.share_relation_rows else None)

    def _compile_teacher(self) -> None:
        """Compile the teacher's encoder in place. One eager call first: some models finish setting up
        on their first call (transformers installs its output-capturing hooks then, under a lock that
        torch.compile cannot trace). The Q/K/V hooks stay outside the compiled code, registered per call
        as in eager mode; graph breaks are allowed (any Hugging Face family), unlike in the student."""
        ids = torch.zeros(1, self.buckets[0], dtype=torch.long, device=self.device)
        with torch.no_grad(), autocast(self.device, self.bf16):
            self.teacher(ids, torch.ones_like(ids), torch.zeros_like(ids), output_hidden_states=self.needs.hidden)
        self.teacher.model.compile(dynamic=False, **compile_options(self.compile))
        raise_recompile_limit(SHAPES_PER_BUCKET * len(self.buckets))

    def _compiled_call(self, batch: dict) -> TeacherSideOutput:
        """The compiled teacher on the batch padded to its bucket; outputs cut back to its length (and
        copied: CUDA-graph outputs are overwritten by the next replay, and a group's students read these
        one after another)."""
        ids = batch["input_ids"]
        T = ids.shape[1]
        L = bucket_of(T, self.buckets)
        copy = self.compile in GRAPHED_MODES
        types = batch.get("token_type_ids")
        with autocast(self.device, self.bf16):
            out = self.teacher(pad_length(ids, L, self.teacher.config.pad_token_id or 0),
                               pad_length(batch["attention_mask"], L), pad_length(types, L),
                               output_hidden_states=self.needs.hidden)
        logits = out.logits if self.needs.logits else None
        if logits is not None:
            logits = cut(logits, T, copy) if logits.dim() == 3 else (logits.clone() if copy else logits)
        return self._output(
            last_hidden_state=cut(out.last_hidden_state, T, copy),
            qkv=tuple(cut(x, T, copy) for x in out.qkv) if self.needs.qkv else None,
            hidden_states=tuple(cut(h, T, copy) for h in out.hidden_states) if out.hidden_states is not None else None,
            logits=logits)

    @torch.no_grad()
    def cache_logits(self, features, batch_size: int, pad_token_id: int, key: str | None = None,
                     store: LogitStore | None = None) -> list[torch.Tensor]:
        """Teacher logits of every example of ``features``, computed once: one pass in file order, in
        chunks of ``batch_size`` (never the training batches: whatever their order and size, an example's
        logits are the same bits).

        Args:
            key: names the features (e.g. the run's data settings and data seed), so that several runs
                sharing this teacher side share one pass; None computes afresh.
            store: the file of these logits (:class:`~gapkit.distill.teacher_cache.LogitStore`, whose key
                then names them in memory too): read when it is there, else computed and written; its
                ``source`` says which.
        Returns:
            One (C,) or, for token tasks, (T_i, C) float tensor per example.
        """
        memo = self._logit_cache
        key = store.digest if store is not None else key
        if key is not None and key in memo:
            if store is not None:
                store.source = "cache"
            return memo[key]
        if store is None:
            logits = self._logit_pass(features, batch_size, pad_token_id)
        else:
            with store.locked():  # a concurrent run of the same key computes it once; this one then reads
                logits = store.read(features)
                store.source = "cache"
                if logits is None:
                    logits = self._logit_pass(features, batch_size, pad_token_id)
                    store.write(logits, self.facts())
                    store.source = "teacher"
        if key is not None:
            memo[key] = logits
        return logits

    def _logit_pass(self, features, batch_size: int, pad_token_id: int) -> list[torch.Tensor]:
        cached = []
        for start in range(0, len(features), batch_size):
            chunk = [features[i] for i in range(start, min(start + batch_size, len(features)))]
            batch = to_device(pad_batch(chunk, pad_token_id), self.device)
            logits = self(batch).logits.float().cpu()
            for i, f in enumerate(chunk):
                cached.append(logits[i, :len(f["input_ids"])].clone() if logits.dim() == 3 else logits[i].clone())
        return cached


def _check_task_head(teacher: str, task: TaskData) -> None:
    """Soft labels need a teacher fine-tuned on this task: a task head with the task's label count."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(teacher)
    except (OSError, ValueError) as e:
        raise ModelError(f"Teacher {teacher!r} is neither a local model folder nor reachable on the Hub "
                         f"({type(e).__name__}).") from None
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "For" not in archs or "ForMaskedLM" in archs or "ForPreTraining" in archs:
        raise ConfigError(f"Teacher {teacher!r} has no fine-tuned task head, but weights.soft > 0 needs its "
                          f"logits: fine-tune it first (stage 'finetune') or set weights.soft to 0.")
    if config.num_labels != task.num_labels:
        raise ConfigError(f"Teacher {teacher!r} predicts {config.num_labels} labels but task {task.task!r} has "
                          f"{task.num_labels}: use a teacher fine-tuned on {task.task}.")
