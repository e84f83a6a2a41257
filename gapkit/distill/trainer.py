"""The training loop as an object with steps: ``Run(spec)`` builds, ``step`` trains one optimizer step,
``evaluate`` scores a split, ``checkpoint`` saves a resumable state, ``finish`` writes the result.

``run(spec) -> RunResult`` is "build, loop, finish", and writes only into ``spec.output_dir`` (the
files are listed in :mod:`gapkit.distill.runfiles`). A sweep drives several ``Run``s itself: it
takes the micro-batches of the next step from one run (:meth:`Run.next_batches`; runs with the same
data seed and batch geometry see the same batches), computes the teacher's outputs once with a
shared :class:`~gapkit.distill.teacher_side.TeacherSide`, hands them to every run's
:meth:`Run.step`, then calls every run's :meth:`Run.after_step` (evaluation pairs shared the same way).
The loop's own state is a :class:`LoopState`, saved with every checkpoint.

Randomness belongs to the run (:class:`~gapkit.distill.rng.RunRNG`): weight init from
``train.init_seed``, dropout/gate noise/relation dropout from a per-rank stream derived from it,
data order from ``train.data_seed``. A CPU run is bitwise reproducible at a fixed thread count.

Data parallelism: launched under ``torchrun``, every rank builds the same run; the student is
wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU), the frozen teacher is not; each rank
takes its share of every global batch; rank 0 alone writes files, with every rank's generator state
in the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.features import IGNORE_INDEX
from ..data.tasks import TaskData, build_task, predictions_of, synthetic_unlabeled
from ..errors import ConfigError, DataError, TrainingFailed
from ..io import kill_point, save_safetensors
from ..models.references import reads_as_path
from ..models.student import Student
from ..routing import RoutingAccumulator, routing_rows
from ..version import __version__
from .batches import Batches, eval_batches
from .checkpointing import load_training_state, save_training_state
from .compiling import CompiledStudent, bucket_lengths
from .config import DistillSpec
from .losses import NonFiniteLossError, check_finite, combine, mean_entropy, temperature_for_entropy
from .result import RunResult, git_revision, run_id
from .rng import RunRNG, derive_seed
from .runfiles import PREDICTIONS, RunDir, RunFolder
from .teacher_cache import LogitStore, cache_folder
from .teacher_side import TeacherNeeds, TeacherSide, TeacherSideOutput, autocast, to_device
from .tracking import check_tracker, open_tracker
from .trainee import Trainee, build_model

__all__ = ["Run", "LoopState", "run", "RunResult", "init_distributed"]

logger = logging.getLogger(__name__)

PAPER_SEQ_LEN = 128  # GFLOPs in result.json are per sequence of the paper's length, in every convention


# ----------------------------------------------------------------------------------------------------
# Building the pieces (everything checked before training starts)
# ----------------------------------------------------------------------------------------------------
def run_device(spec: DistillSpec) -> torch.device:
    if spec.train.device == "cuda" or (spec.train.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is visible; use 'cpu' or 'auto'.")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); starts the process group under torchrun (gloo on CPU, NCCL on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _looks_local(ref: str) -> bool:
    """A folder reference rather than a Hub id ("org/name"): one that reads as a path (the rule configs are
    checked with, gapkit.models.references), exists, or lies in a folder that exists here."""
    path = Path(ref)
    return reads_as_path(ref) or path.exists() or (path.parent != Path(".") and path.parent.is_dir())


def missing_model_reason(ref: str) -> str | None:
    """Why ``ref`` (a teacher or student named by folder or Hub id) cannot be loaded at all, in words a
    user can act on; None when it exists (a local folder, or a Hub id that may be fetched)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return None
    if _looks_local(ref):
        run = RunDir.owning(path)
        if run is not None and run.dir.is_dir():
            why = (f"its run failed (see {run.failure_file.name})" if run.failure_file.exists()
                   else "its run has not finished")
            return f"folder {ref} does not exist: {run.dir} holds no {path.name}/ ({why})"
        return f"folder {ref} does not exist"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return f"{ref!r} is not a local folder and the Hugging Face Hub is off (HF_HUB_OFFLINE is set)"
    return None


def load_tokenizer(spec: DistillSpec):
    """The tokenizer of the run: ``data.tokenizer``, else the teacher's, else the model's."""
    from transformers import AutoTokenizer

    if spec.data.task == "synthetic":
        return None
    roles = [("data.tokenizer", spec.data.tokenizer), ("teacher", spec.teacher)]
    if spec.student_spec() is None:
        roles.append(("student", spec.student))
    tried = []
    for role, source in roles:
        if not source:
            continue
        source = str(source)
        reason = missing_model_reason(source)
        if reason is not None:  # a missing teacher or model is what is wrong, not its tokenizer
            if role == "data.tokenizer":
                raise DataError(f"Cannot load the tokenizer data.tokenizer={source!r}: {reason}.")
            raise ConfigError(f"The {role} cannot be loaded: {reason}.")
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            if role == "data.tokenizer":
                raise DataError(f"Cannot load the tokenizer data.tokenizer={source!r}: not a tokenizer folder and "
                                f"not reachable on the Hub ({type(err).__name__}).") from None
            tried.append(f"{role} {source}")
    raise DataError(f"Task {spec.data.task!r} needs a tokenizer and none was found "
                    f"({'; '.join(tried) or 'no teacher or model folder to take it from'} holds none): set "
                    f"data.tokenizer to a tokenizer folder or Hub name.")


def load_task(spec: DistillSpec, tokenizer) -> TaskData:
    task = build_task(spec.data, tokenizer, seed=spec.train.data_seed)
    if spec.stage == "agnostic" and spec.data.task == "synthetic":
        task.train = synthetic_unlabeled(spec.data, spec.data.max_train_examples or len(task.train))
        task.kind, task.num_labels, task.primary, task.tests = "unlabeled", 0, "relation", {}
    if spec.stage == "finetune" and task.kind == "unlabeled":
        raise ConfigError("Stage 'finetune' needs labels; raw text is for stage 'agnostic'.")
    if task.kind == "unlabeled":
        # A task-agnostic run scores its distillation terms (Run.evaluate) and selects best/ on the first that
        # is on, in LOSS_TERMS order: the relation loss when it is on (MiniLM's objective, as always), the
        # hidden-state loss for a run that distils hidden states alone (docs/runs.md).
        task.primary = spec.weights.active(spec.stage)[0]
    for split, features in [("train", task.train), *task.evals.items(), *task.tests.items()]:
        if len(features) == 0:
            raise DataError(f"The {split} split of task {spec.data.task!r} is empty: check data.data_dir and "
                            f"data.max_*_examples.")
    return task


def check_compatible(spec: DistillSpec, task: TaskData, model: nn.Module, teacher: TeacherSide | None) -> None:
    """The checks that need the built pieces, still before any training."""
    from ..data.features import check_max_len

    where = f"data.max_len of run {spec.name!r}"
    check_max_len(spec.data.max_len, model.max_positions, where)
    if teacher is not None:
        # Teachers with learned absolute positions (BERT) cannot go past them; RoBERTa keeps 2 for padding.
        check_max_len(spec.data.max_len, teacher.max_positions, f"{where} (teacher {spec.teacher})")
        if task.vocab_size > teacher.vocab_size:
            raise ConfigError(f"The tokenizer has {task.vocab_size} ids but teacher {spec.teacher!r} only "
                              f"{teacher.vocab_size}: use the teacher's tokenizer (data.tokenizer).")
    model_vocab = model.spec.vocab_size if hasattr(model, "spec") else getattr(model.model.config, "vocab_size", None)
    if model_vocab is not None and model_vocab < task.vocab_size:
        raise ConfigError(f"The model's vocabulary ({model_vocab} ids) is smaller than the tokenizer's "
                          f"({task.vocab_size}): train a model built for this tokenizer (or set data.tokenizer to "
                          f"the model's own).")
    if teacher is not None and "relation" in spec.weights.active(spec.stage):
        R = spec.relation_heads
        student_size = model.hidden_size if spec.student_qkv == "projection" or (
            spec.student_qkv == "auto" and model.is_moe) else model.spec.attn_size
        for who, size in (("teacher", teacher.attention_size), ("student", student_size)):
            if size % R:
                raise ConfigError(f"relation_heads={R} does not divide the {who}'s attention size {size}: choose "
                                  f"relation_heads dividing both {teacher.attention_size} and {student_size}.")


def make_optimizer(module: nn.Module, train) -> torch.optim.Optimizer:
    """AdamW as the authors use it (eps 1e-6), no weight decay on biases and LayerNorm weights; torch's fused
    kernel where every parameter is a float tensor on CPU or CUDA (on CPU about 10 times faster than the
    per-parameter loop, which dominated a small student's step; the same update to float rounding)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        # Stacked expert biases are 2-D: the name, not the rank, says what a bias is.
        (no_decay if p.dim() == 1 or name.endswith(".bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16,
                                                                                   torch.bfloat16) for p in params)
    return torch.optim.AdamW(groups, lr=train.lr, eps=1e-6, fused=fused or None)


def make_scheduler(optimizer, total_steps: int, warmup: float):
    """Linear warmup from 0 over ``warmup * total_steps`` steps, then linear decay to 0 (the
    schedule of the authors' scripts: the first step runs at lr 0 when there is warmup)."""
    warm = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return step / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _gflops(model: nn.Module) -> dict | None:
    """GFLOPs per sequence of the paper's length in every convention (closed form), or None when the
    model's shape cannot be read (a non-BERT encoder being fine-tuned)."""
    from ..flops import CONVENTIONS, analytic_count, model_spec

    try:
        spec = model.spec if hasattr(model, "spec") else model_spec(model.model)
    except Exception:  # noqa: BLE001 - the shape of an arbitrary HF encoder may simply be unknown
        return None
    return {c: analytic_count(spec, seq_len=PAPER_SEQ_LEN, convention=c) / 1e9 for c in CONVENTIONS}


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------
class _LossTerms(nn.Module):
    """The trainee as a training step sees it: its loss terms and its routing, detached.

    Under DistributedDataParallel this is the wrapped module. DDP finds the parameters a step used by
    walking back from the tensors its module returns, so it must return only what the loss is made of:
    the student's other outputs (last hidden states, pooler) would mark parameters as used that no loss
    term reaches, and the gradient reduction would wait for them forever.
    """

    def __init__(self, trainee: Trainee):
        super().__init__()
        self.trainee = trainee

    def forward(self, batch: dict, teacher_out=None):
        terms, out = self.trainee(batch, teacher_out)
        return terms, out.routing.detach()


class Run:
    """One run, built and ready to step.

    Args:
        spec: the run.
        resume: continue from ``output_dir/checkpoint`` (the same config).
        teacher: a teacher side shared with other runs (a sweep's group); by default the run loads its
            own from ``spec.teacher``.
        progress: show a progress bar (rank 0).
        teacher_cache: where task KD from logits alone keeps its teacher's logits
            (:func:`gapkit.distill.teacher_cache.cache_folder`: a folder, False for off, None for
            ``$GAPKIT_TEACHER_CACHE`` or ``<gapkit cache>/teacher_outputs``). The students are bitwise the same
            either way; a run reading the file never loads its teacher.
    Attributes:
        finished: True when the folder already holds this run's result (``result`` is then set).
        step_count: optimizer steps taken; ``total_steps``: where the run ends.
    Raises:
        ConfigError / DataError / ModelError: bad input, before any training and before the run folder
            is written.
    """

    def __init__(self, spec: DistillSpec, resume: bool = False, teacher: TeacherSide | None = None,
                 progress: bool = True, teacher_cache: str | Path | bool | None = None):
        try:
            self._build(spec, resume, teacher, progress, teacher_cache)
        except BaseException:
            folder = getattr(self, "folder", None)
            if folder is not None:  # the folder's lock goes with a run that could not start
                folder.close()
            raise

    def _build(self, spec: DistillSpec, resume: bool, teacher: TeacherSide | None, progress: bool,
               teacher_cache: str | Path | bool | None) -> None:
        self.t_start = time.time()
        self.spec, self.train_spec = spec, spec.train
        train = spec.train
        self.device = run_device(spec)
        self.rank, self.world = init_distributed(self.device)
        self.distributed = self.world > 1
        config = spec.to_dict()
        self.run_id = run_id(config)
        self.folder = RunFolder(spec.output_dir, writer=self.rank == 0)
        mode = self.folder.inspect(_jsonable(config), resume)
        if self.distributed:  # every rank has looked before rank 0 changes anything
            dist.barrier()
        self.finished = mode == "finished"
        self.result: RunResult | None = None
        if self.finished:
            self.result = RunResult.read(self.folder.result_file)
            self.folder.close()
            return

        # Everything that can be wrong is found here, before a single step.
        if self.rank == 0:
            spec.check_output_writable()
            check_tracker(train.tracking)
        self.rng = RunRNG(train.init_seed, self.device)
        self.tokenizer = load_tokenizer(spec)
        self.task = task = load_task(spec, self.tokenizer)
        self._predictions: dict[str, tuple] = {}  # split -> (predictions, labels) of its last evaluation
        self.teacher = teacher if teacher is not None else TeacherSide.load(spec, task, self.device)
        needs = TeacherNeeds.of(spec)
        # Task KD from logits alone reads its teacher's logits from disk when an earlier run wrote them; the
        # teacher's facts recorded there answer the checks below without loading it.
        self.logit_store = (LogitStore.for_run(spec, task, self.device, cache_folder(teacher_cache))
                            if self.teacher is not None and needs.logits_only else None)
        facts = self.logit_store.facts() if self.logit_store is not None else None
        if facts and not self.teacher.loaded:
            self.teacher.known_facts = facts
        with self.rng.active():
            self.model, self.new_weights = build_model(spec, task)
        if self.new_weights and self.rank == 0:  # intended (a task head on an encoder), but never silent
            logger.warning("Run %s: %s initialised fresh on top of %s (recorded in result.json under "
                           "student.new_weights).", spec.name, ", ".join(self.new_weights), spec.student)
        check_compatible(spec, task, self.model, self.teacher)
        if train.compile != "off" and not isinstance(self.model, Student):
            raise ConfigError(f"train.compile applies to gapkit students, and run {spec.name!r} fine-tunes the Hugging "
                              f"Face model {spec.student}: set train.compile to off for it.")
        self.amp = autocast(self.device, train.bf16)
        teacher_logits = None
        if self.teacher is not None and needs.logits_only:
            # Task KD from logits alone: one teacher pass over the training set instead of one per step (and one
            # for all the runs that share this teacher side and these examples, and, through the file, for
            # every later run of this teacher on these examples).
            key = json.dumps([spec.data.__dict__, train.data_seed, train.eval_batch_size], sort_keys=True, default=str)
            teacher_logits = self.teacher.cache_logits(task.train, train.eval_batch_size, task.pad_token_id, key,
                                                       store=self.logit_store)
        self.soft_labels = self._soft_labels(spec, task, teacher_logits)
        self.batches = Batches(task.train, train.batch_size, train.grad_accum, train.data_seed, task.pad_token_id,
                               self.rank, self.world, teacher_logits, train.group_by_length)
        self.total_steps = train.max_steps or max(1, math.ceil(train.epochs * self.batches.per_epoch))
        self.eval_every = train.eval_every or self.batches.per_epoch
        self.checkpoint_every = train.checkpoint_every or self.eval_every

        # The folder appears only once the run is known to be good.
        self.folder.start(spec.to_json(), wipe=mode == "restart")
        with self.rng.active():
            self.trainee = Trainee(self.model, spec, task, self.teacher).to(self.device)
            if self.soft_labels:
                self.trainee.temperature = self.soft_labels["temperature"]
        if train.compile != "off":  # the training forward, compiled and length-bucketed (docs/gpu.md)
            self.trainee.model_call = CompiledStudent(self.model, train.compile,
                                                      bucket_lengths(spec.data.max_len, train.compile_buckets))
        # Training draws (dropout, gate noise) from a stream of this rank's own.
        self.rng.reseed(derive_seed(train.init_seed, 1 + self.rank))
        self.optimizer = make_optimizer(self.trainee, train)
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, train.warmup)
        # The split that selects best/ (data.select_on): dev (MNLI: its two dev splits, averaged) or the
        # holdout carved from the training split, the dev splits then scored only (``task.tests``).
        self.selection = dict(split="+".join(task.evals), metric=task.primary,
                              higher_is_better=task.kind != "unlabeled")
        self.state = LoopState()
        if mode == "resume":
            saved, rng_state = load_training_state(self.folder.checkpoint_dir, self.trainee, self.optimizer,
                                                   self.scheduler, self.rank, self.world)
            self.state = LoopState.from_checkpoint(saved, self.folder.checkpoint_dir)
            self.rng.load_state(rng_state)
            self.folder.rewind(self.state.step)
        if train.tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("train.tensorboard needs the tensorboard package: pip install "
                                  "'gapkit[tensorboard]'.") from None
            self.folder.tensorboard = SummaryWriter(str(self.folder.dir / "tensorboard"))
        if self.rank == 0:
            self.folder.tracker = open_tracker(train.tracking, self.folder, config, spec.name, self.run_id,
                                               resume=mode == "resume")
        self.ddp = _LossTerms(self.trainee)
        if self.distributed:
            # Parameters a step leaves without a gradient must be found each step (DDP would otherwise wait
            # for them forever): a MiniMoE expert that got no token, the last layer's attention output and
            # FFN when only its Q/K/V are distilled, the pooler when no sentence-level head is trained.
            partial = (self.model.is_moe or task.kind not in ("sequence", "regression")
                       or not {"soft", "hard"} & set(self.trainee.terms))
            self.ddp = nn.parallel.DistributedDataParallel(
                self.ddp, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=partial)
        self.trainee.train()
        self.bar = tqdm(total=self.total_steps, initial=self.state.step, desc=spec.name, dynamic_ncols=True,
                        disable=not (progress and self.rank == 0))
        self._window_tokens, self._window_t0 = 0, time.time()
        self.folder.start_progress(self.state.step, self.total_steps, launched_at=self.t_start)

    # -- where the run stands ------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self.state.step

    @property
    def done(self) -> bool:
        return self.finished or self.state.step >= self.total_steps or self.state.status != "running"

    # -- training ------------------------------------------------------------------------------------
    def next_batches(self) -> list[dict]:
        """This rank's micro-batches of the next optimizer step (on the CPU)."""
        return self.batches.for_step(self.state.step)

    def teacher_output(self, batch: dict) -> TeacherSideOutput | None:
        """What the teacher gives for one micro-batch already on the device (cached logits when there)."""
        if "teacher_logits" in batch:
            return TeacherSideOutput(last_hidden_state=None, qkv=None, logits=batch.pop("teacher_logits"))
        return self.teacher(batch) if self.teacher is not None else None

    def step(self, micro_batches: list[dict] | None = None, teacher_outputs: list | None = None) -> dict:
        """One optimizer step.

        Args:
            micro_batches: this rank's micro-batches (default: :meth:`next_batches`).
            teacher_outputs: the teacher's outputs for each micro-batch, computed once for several runs
                (default: this run's teacher computes them).
        Returns:
            The step's logs (loss terms, total, grad_norm, ...).
        Raises:
            NonFiniteLossError: a NaN/inf loss term (on any rank).
        """
        micro = micro_batches if micro_batches is not None else self.next_batches()
        step = self.state.step + 1
        logs: dict[str, float] = {}
        with self.rng.active():
            for i, batch in enumerate(micro):
                tokens = batch["attention_mask"].sum()  # counted where the batch is (on the host: no sync)
                batch = to_device(batch, self.device)
                t_out = teacher_outputs[i] if teacher_outputs is not None else self.teacher_output(batch)
                batch.pop("teacher_logits", None)
                last = i == len(micro) - 1
                sync = contextlib.nullcontext() if (not self.distributed or last) else self.ddp.no_sync()
                with sync:
                    with self.amp:
                        terms, routing = self.ddp(batch, t_out)
                    self._check_finite(terms, step)
                    loss, term_logs = combine(terms, self.spec.weights)
                    (loss / len(micro)).backward()
                for k, v in term_logs.items():
                    logs[k] = logs.get(k, 0.0) + v / len(micro)
                self._window_tokens += int(tokens)
            if self.train_spec.grad_clip > 0:
                logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.trainee.parameters(),
                                                                         self.train_spec.grad_clip))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.state.step = step
        kill_point("step")
        self.bar.update(1)
        train = self.train_spec
        if step % train.log_every == 0 or step == self.total_steps:
            elapsed = max(time.time() - self._window_t0, 1e-9)
            logs["lr"] = self.scheduler.get_last_lr()[0]
            logs["tokens_per_s"] = self._window_tokens * self.world / elapsed
            if self.device.type == "cuda":  # the process's peak so far (runs of a group share it)
                logs["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            self._window_tokens, self._window_t0 = 0, time.time()
            self.folder.log([dict(step=step, split="train", metric=k, value=v) for k, v in logs.items()])
            self.folder.log_progress(step, logs["tokens_per_s"])
            self.bar.set_postfix(loss=f"{logs['total']:.4f}", tok_s=f"{logs['tokens_per_s']:.0f}")
        if self.model.is_moe and (step % train.routing_every == 0 or step == 1):
            self.folder.add_routing(routing_rows(routing, batch["attention_mask"], input_ids=batch["input_ids"],
                                                 step=step, split="train"))
        return logs

    @staticmethod
    def _soft_labels(spec: DistillSpec, task, teacher_logits) -> dict | None:
        """The temperature of soft-label KD, and the teacher's mean soft-label entropy over the training set
        at it and at T = 1 (written to result.json), where the teacher's logits are cached; the temperature
        solved for ``weights.target_entropy`` when that is set."""
        w = spec.weights
        classes = teacher_logits is not None and task.kind == "sequence" and "soft" in w.active(spec.stage)
        if w.target_entropy is not None and not classes:
            raise ConfigError(f"weights.target_entropy needs soft labels from cached teacher logits on a "
                              f"classification task (weights.soft > 0; relation and hidden 0), and run {spec.name!r} "
                              f"has none: set weights.target_entropy to null and use weights.temperature.")
        if not classes:
            return None
        logits = torch.stack(teacher_logits)
        temperature = (w.temperature if w.target_entropy is None
                       else temperature_for_entropy(logits, w.target_entropy))
        return dict(temperature=temperature, entropy=mean_entropy(logits, temperature),
                    entropy_at_1=mean_entropy(logits, 1.0), target_entropy=w.target_entropy)

    def _check_finite(self, terms: dict, step: int) -> None:
        """``check_finite`` on every rank together: a NaN on one rank stops them all (instead of leaving
        the others waiting in the gradient all-reduce)."""
        try:
            check_finite(terms, step)
            error = None
        except NonFiniteLossError as err:
            error = err
        if self.distributed:
            flag = torch.tensor([0.0 if error is None else 1.0], device=next(iter(terms.values())).device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if error is None and flag.item() > 0:
                error = NonFiniteLossError(step, "(on another rank)", float("nan"))
        if error is not None:
            raise error

    # -- evaluation ----------------------------------------------------------------------------------
    @property
    def eval_uses_teacher(self) -> bool:
        """Whether evaluation runs the teacher: raw text is scored by the distillation terms."""
        return self.teacher is not None and self.task.kind == "unlabeled"

    def eval_pairs(self, split: str):
        """(batch on the device, teacher output or None) of an evaluation or test split. The teacher
        runs only where the metric needs it (:attr:`eval_uses_teacher`)."""
        task = self.task
        features = task.evals.get(split, task.tests.get(split))
        for batch in eval_batches(features, self.train_spec.eval_batch_size, task.pad_token_id):
            batch = to_device(batch, self.device)
            yield batch, (self.teacher(batch) if self.eval_uses_teacher else None)

    def shared_eval_pairs(self) -> dict | None:
        """Split -> (batch, teacher output) pairs of every split a run may score (selection splits, then
        scored ones), computed once for the runs of a group that evaluate at this step; None when
        evaluation needs no teacher."""
        if not self.eval_uses_teacher:
            return None
        task = self.task
        return {split: list(self.eval_pairs(split)) for split in (*task.evals, *task.tests)}

    @torch.no_grad()
    def evaluate(self, split: str, pairs=None, log: bool = True) -> dict[str, float]:
        """Metrics of one split (for raw text: the distillation terms that are on), logged with its routing
        statistics.

        Args:
            split: a name in ``task.evals`` or ``task.tests``.
            pairs: (batch, teacher output) pairs computed once for several runs (default
                :meth:`eval_pairs`).
        """
        task, trainee = self.task, self.trainee
        was_training = trainee.training
        trainee.eval()
        logits, labels, rows = [], [], 0
        # Raw text is scored by the run's distillation terms, each averaged over the examples (load balance,
        # an auxiliary term, is not a score); the first of them selects best/ (load_task).
        loss_sums = dict.fromkeys(self.spec.weights.active(self.spec.stage), 0.0)
        routing = RoutingAccumulator()
        with self.rng.active():  # random routing draws even in evaluation
            for batch, t_out in (pairs if pairs is not None else self.eval_pairs(split)):
                with self.amp:
                    if task.kind == "unlabeled":
                        terms, out = trainee(batch, t_out)
                    else:
                        out = trainee.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
                if out.routing is not None and self.model.is_moe:
                    routing.add(out.routing, batch["attention_mask"], batch["input_ids"])
                if task.kind == "unlabeled":
                    n = batch["input_ids"].shape[0]
                    for term in loss_sums:
                        loss_sums[term] += float(terms[term]) * n
                    rows += n
                else:
                    logits.append(out.logits.float().cpu())
                    labels.append(batch["labels"].cpu())
        trainee.train(was_training)
        if task.kind == "unlabeled":
            metrics = {term: total / max(rows, 1) for term, total in loss_sums.items()}
        else:
            if task.kind == "token":  # pad every batch to the longest sequence of the split
                T = max(x.shape[1] for x in logits)
                logits = [F.pad(x, (0, 0, 0, T - x.shape[1])) for x in logits]
                labels = [F.pad(y, (0, T - y.shape[1]), value=IGNORE_INDEX) for y in labels]
            logits, labels = torch.cat(logits), torch.cat(labels)
            metrics = task.metrics(split, logits, labels)
            self._predictions[split] = (predictions_of(task.kind, logits), labels.to(torch.int32)
                                        if labels.dtype != torch.float32 else labels)
        if log:
            step = self.state.step
            self.folder.log([dict(step=step, split=split, metric=k, value=v) for k, v in metrics.items()])
            self.folder.add_routing([dict(r, step=step, split=split) for r in routing.rows()])
        return metrics

    @property
    def eval_due(self) -> bool:
        step = self.state.step
        return step > 0 and (step % self.eval_every == 0 or step == self.total_steps)

    def evaluate_all(self, pairs: dict | None = None) -> dict[str, dict[str, float]]:
        """Score every evaluation split (and, with the same weights, every labeled test split); keep
        ``best/`` when the selection metric improved; count evaluations for early stopping.

        Args:
            pairs: split -> (batch, teacher output) pairs shared by several runs (optional).
        Returns:
            split -> metrics.
        """
        pairs = pairs or {}
        step, task = self.state.step, self.task
        metrics = {split: self.evaluate(split, pairs.get(split)) for split in task.evals}
        value = float(np.mean([m[task.primary] for m in metrics.values()]))
        best = self.state.best
        higher = self.selection["higher_is_better"]
        improved = best is None or (value > best if higher else value < best)
        if improved and task.tests:
            # The scored splits (test; dev too when a holdout selects) are scored with exactly the weights
            # that the selection split chose, never used to select.
            metrics.update({split: self.evaluate(split, pairs.get(split)) for split in task.tests})
        self.state.last_eval = dict(step=step, metrics=metrics)
        if improved:
            state = self.state
            state.best, state.best_step, state.bad_evals, state.best_metrics = value, step, 0, metrics
            self.folder.save_best(lambda folder: self._save_model(folder, splits=list(metrics)))
        else:
            self.state.bad_evals += 1
        if self.rank == 0:
            shown = {f"{s}/{k}" if len(metrics) > 1 else k: v for s, m in metrics.items() for k, v in m.items()}
            self.bar.write(f"[{self.spec.name}] step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        patience = self.train_spec.early_stopping
        if patience and self.state.bad_evals >= patience and step < self.total_steps:
            self.state.status = "early_stopped"
            self.state.reason = f"no improvement of {task.primary} in {patience} evaluations"
        return metrics

    def _save_model(self, folder: Path, splits: list[str] = ()) -> None:
        self.model.save_pretrained(folder, self.task.label_names)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        kept = {f"{split}.{part}": tensor for split in splits if split in self._predictions
                for part, tensor in zip(("prediction", "label"), self._predictions[split])}
        if kept:  # what these weights predict on each scored split: example-level intervals (gapkit.analysis)
            save_safetensors(kept, folder / PREDICTIONS)

    # -- checkpoints ---------------------------------------------------------------------------------
    @property
    def checkpoint_due(self) -> bool:
        step = self.state.step
        return step % self.checkpoint_every == 0 or step == self.total_steps or self.state.status != "running"

    def checkpoint(self) -> None:
        """Save a resumable state. Every rank takes part (each one's generator state is saved); rank 0
        writes, after flushing the routing rows up to this step (see :mod:`gapkit.distill.runfiles`)."""
        rng = [self.rng.state()]
        if self.distributed:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, {k: v.cpu() for k, v in rng[0].items()})
            rng = gathered
        if self.rank == 0:
            self.folder.flush_routing()
            save_training_state(self.folder.checkpoint_dir, self.trainee, self.optimizer, self.scheduler,
                                self.state.to_dict(), rng)

    def after_step(self, eval_pairs: dict | None = None) -> None:
        """Evaluate and checkpoint when due: the bookkeeping after :meth:`step`, of a run alone and of
        each run of a group (:func:`gapkit.sweep.group.run_group`).

        Args:
            eval_pairs: split -> (batch, teacher output) pairs shared by the runs of a group
                (:meth:`shared_eval_pairs`); by default the run computes its own.
        """
        if self.eval_due:
            self.evaluate_all(eval_pairs)
        if self.checkpoint_due:
            self.checkpoint()

    # -- the end -------------------------------------------------------------------------------------
    def finish(self) -> RunResult:
        """Write ``result.json`` (rank 0) and return the result."""
        if self.finished:
            return self.result
        self.bar.close()
        if self.state.status == "running":
            self.state.status = "completed"
        self.folder.flush_routing()
        self.result = self._result()
        if self.rank == 0:  # the best weights against chance, from the predictions they stored (a teacher's gate)
            from ..analysis.teacher_check import check_run

            self.result.chance_check = check_run(self.folder.dir, num_labels=self.task.num_labels or None,
                                                 result=self.result)
        kill_point("finish")
        self.folder.write_result(self.result)
        self.folder.close()
        return self.result

    def close(self) -> None:
        """Let go of the run folder without finishing (an interrupted run; resumable)."""
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.close()
        self.folder.close()

    def fail(self, err: NonFiniteLossError) -> TrainingFailed:
        """Record a NaN/inf stop (``failure.json``, ``result.json``); returns the error to raise."""
        self.bar.close()
        self.state.status = "failed"
        self.state.reason = f"non-finite loss term {err.term!r} ({err.value}) at step {err.step}"
        failure = dict(status="failed", step=err.step, term=err.term, value=str(err.value), message=str(err))
        self.folder.write_failure(failure)
        self.folder.flush_routing()
        self.result = self._result()
        self.folder.write_result(self.result)
        self.folder.close()
        return TrainingFailed(f"Run {self.spec.name!r} stopped: {err} See {self.folder.failure_file}.")

    def _result(self) -> RunResult:
        state, spec = self.state, self.spec
        rows = []
        for split, values in (state.best_metrics or {}).items():
            rows += [dict(split=split, metric=k, value=v, step=state.best_step, model="best")
                     for k, v in values.items()]
        last = state.last_eval
        if last is not None:
            rows += [dict(split=split, metric=k, value=v, step=last["step"], model="final")
                     for split, values in last["metrics"].items() if split in self.task.evals for k, v in values.items()]
        student_spec = getattr(self.model, "spec", None)
        return RunResult(
            run_dir=str(self.folder.dir), name=spec.name, run_id=self.run_id, status=state.status,
            reason=state.reason, stage=spec.stage, task=spec.data.task, steps=state.step,
            best_step=state.best_step,
            selection=dict(self.selection, scored=sorted(self.task.tests), examples=self.task.sizes),
            metrics=rows,
            student=dict(ref=str(spec.student) if not hasattr(spec.student, "to_dict") else spec.student.name,
                         init=spec.student_init() if hasattr(spec, "student_init") else (
                             "random" if spec.student_spec() is not None else "pretrained"),
                         spec=student_spec.to_dict() if student_spec is not None else None,
                         params_total=self.model.num_parameters(), params_active=self.model.num_parameters(active=True),
                         gflops=_gflops(self.model), seq_len=PAPER_SEQ_LEN, new_weights=list(self.new_weights)),
            teacher=(dict(ref=self.teacher.ref, params=self.teacher.num_parameters(),
                          **({"soft_labels": self.soft_labels} if self.soft_labels else {}),
                          **({"logits": self.logit_store.record()} if self.logit_store is not None else {}))
                     if self.teacher is not None else None),
            seeds=dict(init=self.train_spec.init_seed, data=self.train_spec.data_seed),
            gapkit_version=__version__, git_revision=git_revision(),
            wall_time_s=round(time.time() - self.t_start, 2),
        )


@dataclass
class LoopState:
    """Where a run's loop stands: saved with every checkpoint (``state.json``, beside the optimizer's and the
    scheduler's states) and read back on resume, as Hugging Face's ``TrainerState``.

    Attributes:
        step: optimizer steps taken.
        best: the selection metric of ``best/`` (None before the first evaluation).
        best_step: the step ``best/`` was saved at.
        bad_evals: evaluations since the selection metric last improved (early stopping).
        best_metrics: split -> metric -> value of ``best/``.
        last_eval: the last evaluation, ``{"step": ..., "metrics": {split: {metric: value}}}``.
        status: ``running``, then ``completed``, ``early_stopped`` or ``failed``.
        reason: why the run stopped early or failed.
    """

    step: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    best_metrics: dict = field(default_factory=dict)
    last_eval: dict | None = None
    status: str = "running"
    reason: str | None = None

    def to_dict(self) -> dict:
        """JSON-able, one key per field (the keys ``state.json`` has always had)."""
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, saved: dict, folder) -> "LoopState":
        """The loop state among what ``load_training_state`` read from ``folder`` (other keys ignored).

        Raises:
            ConfigError: a key is missing (a checkpoint gapkit did not write).
        """
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in saved]
        if missing:
            raise ConfigError(f"The checkpoint in {folder} cannot be resumed: its state.json has no "
                              f"{', '.join(missing)} (the loop state): move the run folder away and start the run "
                              f"again.")
        return cls(**{n: saved[n] for n in names})


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config))


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------
def run(spec: DistillSpec, resume: bool = False, callback=None, progress: bool = True,
        teacher_cache: str | Path | bool | None = None) -> RunResult:
    """Train one run into ``spec.output_dir``: build, loop, finish.

    Args:
        spec: the run.
        resume: continue from ``output_dir/checkpoint`` (the same config); on a finished run of the same
            config, read its result back.
        callback: optional ``callback(step, logs, model)`` after every optimizer step (tests, notebooks).
        progress: show a progress bar (rank 0).
        teacher_cache: where task KD from logits alone keeps its teacher's logits (see :class:`Run`).
    Returns:
        The run's :class:`RunResult`.
    Raises:
        ConfigError / DataError / ModelError: bad input, before any training.
        TrainingFailed: a NaN/inf loss; ``failure.json`` says at which step and in which term.
    """
    r = Run(spec, resume=resume, progress=progress, teacher_cache=teacher_cache)
    try:
        while not r.done:
            logs = r.step()
            if callback is not None:
                callback(r.step_count, logs, r.model)
            r.after_step()
    except NonFiniteLossError as err:
        raise r.fail(err) from None
    except BaseException:
        r.close()  # interrupted: the folder is left as its last checkpoint says, and free to resume
        raise
    return r.finish()
