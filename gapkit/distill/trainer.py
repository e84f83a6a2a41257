"""The training loop: one loop for fine-tuning, task-agnostic and task-specific distillation.

``run(spec) -> RunResult`` writes only into ``spec.output_dir``:

    config.json          the resolved DistillSpec
    metrics.jsonl        one JSON row per log/eval event (step, split, metric, value ...)
    routing.parquet      routing statistics (MiniMoE students): step, split, layer, block, expert, ...
    checkpoint/          the latest resumable state (model, optimizer, scheduler, RNG, data position)
    best/                the best model so far as a Hugging Face folder (+ tokenizer)
    result.json          status, steps, best and final metrics, wall time
    failure.json         only when a run stops on a NaN/inf loss: step, loss term, value

Data parallelism: launched under ``torchrun``, every rank runs this same function; the student is
wrapped in DistributedDataParallel (gloo on CPU, NCCL on GPU), the frozen teacher is not; each rank takes
its share of every global batch; rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.features import IGNORE_INDEX, pad_batch
from ..data.tasks import TaskData, build_task, synthetic_unlabeled
from ..errors import ConfigError, DataError, ModelError, TrainingFailed
from ..models.spec import StudentSpec
from ..models.student import Student
from ..routing import RoutingAccumulator, routing_rows
from .checkpointing import has_training_state, load_training_state, save_training_state
from .config import DistillSpec
from .losses import (
    HiddenProjection,
    NonFiniteLossError,
    check_finite,
    combine,
    hard_label_loss,
    hidden_mse,
    regression_kd,
    relation_loss,
    soft_label_kd,
)


@dataclass
class RunResult:
    """What a finished run reports (also written to ``result.json``)."""

    run_dir: str
    status: str  # completed | early_stopped | failed
    steps: int
    best: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    params_total: int = 0
    params_active: int = 0


# ----------------------------------------------------------------------------------------------------
# The trained module: student (or any HF model being fine-tuned) plus the distillation heads
# ----------------------------------------------------------------------------------------------------
class HFModel(nn.Module):
    """A Hugging Face model being fine-tuned (a teacher), behind the student's output interface."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None and self._uses_types else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return _Out(logits=out.logits)

    @property
    def _uses_types(self) -> bool:
        return getattr(self.model.config, "type_vocab_size", 0) > 1


@dataclass
class _Out:
    logits: torch.Tensor
    last_hidden_state: torch.Tensor | None = None
    qkv: tuple | None = None
    load_balance: torch.Tensor | None = None
    routing: object | None = None


class Trainee(nn.Module):
    """Student + the modules only distillation needs, so that DDP and checkpoints see one module.

    ``relation`` is the authors' extra Q/K/V projection of the student's final hidden states (MiniMoE),
    ``hidden`` the TinyBERT projection of student to teacher hidden size.
    """

    def __init__(self, model: nn.Module, spec: DistillSpec, task: TaskData, teacher=None):
        super().__init__()
        self.model, self.spec, self.task = model, spec, task
        self.is_student = isinstance(model, Student)
        use_projection = spec.student_qkv == "projection" or (
            spec.student_qkv == "auto" and self.is_student and model.spec.is_moe)
        self.relation = None
        if teacher is not None and spec.weights.relation > 0 and use_projection:
            H = model.spec.hidden
            self.relation = nn.ModuleDict({k: nn.Linear(H, H) for k in ("query", "key", "value")})
            for lin in self.relation.values():
                nn.init.normal_(lin.weight, 0.0, model.spec.initializer_range)
                nn.init.zeros_(lin.bias)
        self.hidden = None
        if teacher is not None and spec.weights.hidden > 0:
            self.hidden = HiddenProjection(model.spec.hidden, teacher.hidden_size)

    def forward(self, batch: dict, teacher_out=None):
        """Loss terms of one micro-batch: returns (terms dict of scalar tensors, student output)."""
        spec, w = self.spec, self.spec.weights
        need_qkv = teacher_out is not None and w.relation > 0
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch.get("token_type_ids"))
        if self.is_student:
            out = self.model(**kwargs, output_qkv=need_qkv and self.relation is None)
        else:
            out = self.model(**kwargs)
        terms = {}
        mask = batch["attention_mask"]
        if need_qkv:
            if self.relation is not None:
                h = out.last_hidden_state
                student_qkv = tuple(self.relation[k](h) for k in ("query", "key", "value"))
            else:
                student_qkv = out.qkv
            terms["relation"] = relation_loss(
                teacher_out.qkv, student_qkv, mask, spec.relation_heads,
                relation_dropout=spec.relation_dropout, training=self.training).total
        labels = batch.get("labels")
        logits = out.logits
        regression = self.task.kind == "regression"
        if logits is not None and teacher_out is not None and w.soft > 0:
            if regression:
                terms["soft"] = regression_kd(logits.squeeze(-1), teacher_out.logits.squeeze(-1))
            else:
                valid = (labels != IGNORE_INDEX) if (self.task.kind == "token" and labels is not None) else None
                terms["soft"] = soft_label_kd(logits, teacher_out.logits, w.temperature, valid=valid)
        if logits is not None and labels is not None and w.hard > 0:
            terms["hard"] = hard_label_loss(logits.squeeze(-1) if regression else logits, labels, regression)
        if self.hidden is not None:
            terms["hidden"] = hidden_mse(out.last_hidden_state, teacher_out.last_hidden_state, self.hidden, mask)
        if self.is_student and self.model.spec.is_moe and w.load_balance > 0:
            terms["load_balance"] = out.load_balance
        return terms, out


# ----------------------------------------------------------------------------------------------------
# Building the pieces (everything checked before training starts)
# ----------------------------------------------------------------------------------------------------
def _device(spec: DistillSpec) -> torch.device:
    if spec.train.device == "cuda" or (spec.train.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is visible; use 'cpu' or 'auto'.")
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device("cuda", local)
    return torch.device("cpu")


def _load_tokenizer(spec: DistillSpec):
    from transformers import AutoTokenizer

    if spec.data.task == "synthetic":
        return None
    candidates = [spec.data.tokenizer, spec.teacher]
    if not isinstance(spec.student, StudentSpec) and spec.student_spec() is None:
        candidates.append(spec.student)
    for source in candidates:
        if not source:
            continue
        try:
            return AutoTokenizer.from_pretrained(str(source))
        except (OSError, ValueError):
            if source == spec.data.tokenizer:
                raise DataError(f"Cannot load the tokenizer data.tokenizer={source!r}: not a tokenizer folder and "
                                f"not reachable on the Hub.") from None
    raise DataError(f"Task {spec.data.task!r} needs a tokenizer and none was found in the teacher or the model; "
                    f"set data.tokenizer to a tokenizer folder or Hub name.")


def _load_teacher(spec: DistillSpec, task: TaskData):
    from ..models.teacher import Teacher

    if spec.stage == "finetune":
        return None
    needs_head = spec.stage == "task" and spec.weights.soft > 0
    head = task.head if needs_head else None
    num_labels = task.num_labels if needs_head else 0
    if needs_head:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(spec.teacher)
        except (OSError, ValueError) as e:
            raise ModelError(f"Teacher {spec.teacher!r} is neither a local model folder nor reachable on the Hub "
                             f"({type(e).__name__}).") from None
        archs = " ".join(getattr(config, "architectures", None) or [])
        if "For" not in archs or "ForMaskedLM" in archs or "ForPreTraining" in archs:
            raise ConfigError(f"Teacher {spec.teacher!r} has no fine-tuned task head, but weights.soft > 0 needs its "
                              f"logits: fine-tune it first (stage 'finetune') or set weights.soft to 0.")
        if config.num_labels != task.num_labels:
            raise ConfigError(f"Teacher {spec.teacher!r} predicts {config.num_labels} labels but task "
                              f"{task.task!r} has {task.num_labels}: use a teacher fine-tuned on {task.task}.")
    return Teacher.from_pretrained(spec.teacher, num_labels=num_labels, task=head, qkv_layer=spec.teacher_layer)


def _build_model(spec: DistillSpec, task: TaskData, tokenizer) -> nn.Module:
    """The model to train: a fresh student, a saved student, or (fine-tuning) any HF encoder."""
    from ..models.checkpoint import load_student

    num_labels = task.num_labels if task.head else 0
    head = task.head or "sequence"
    fresh = spec.student_spec()
    if fresh is not None:
        fields = dict(vocab_size=task.vocab_size, pad_token_id=task.pad_token_id,
                      load_balance_weight=spec.weights.load_balance)
        fresh = StudentSpec.from_dict(dict(fresh.to_dict(), **fields, name=None))
        return Student(fresh, num_labels=num_labels, task=head)
    path = str(spec.student)
    try:
        return load_student(path, num_labels=num_labels or None, task=task.head)
    except Exception as student_error:  # not a BERT-family / gapkit folder
        if spec.stage != "finetune":
            raise ModelError(f"Student {path!r} could not be loaded: {student_error}") from None
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if task.kind == "token" else AutoModelForSequenceClassification
    try:
        model = auto.from_pretrained(path, num_labels=num_labels)
    except (OSError, ValueError) as e:
        raise ModelError(f"Model {path!r} is neither a gapkit/BERT folder, a local HF model nor reachable on the "
                         f"Hub ({type(e).__name__}).") from None
    return HFModel(model)


def _max_positions(model: nn.Module) -> int:
    if isinstance(model, Student):
        return model.spec.max_positions
    return getattr(model.model.config, "max_position_embeddings", 10**9)


def _check_compatible(spec: DistillSpec, task: TaskData, model: nn.Module, teacher) -> None:
    """The checks that need the built pieces, still before any training."""
    from ..data.features import check_max_len

    where = f"data.max_len of run {spec.name!r}"
    check_max_len(spec.data.max_len, _max_positions(model), where)
    if teacher is not None:
        # Teachers with learned absolute positions (BERT) cannot go past them; RoBERTa keeps 2 for padding.
        check_max_len(spec.data.max_len, teacher.max_positions, f"{where} (teacher {spec.teacher})")
        if task.vocab_size > teacher.config.vocab_size:
            raise ConfigError(f"The tokenizer has {task.vocab_size} ids but teacher {spec.teacher!r} only "
                              f"{teacher.config.vocab_size}: use the teacher's tokenizer (data.tokenizer).")
    if isinstance(model, Student) and model.spec.vocab_size < task.vocab_size:
        raise ConfigError(f"The student's vocabulary ({model.spec.vocab_size}) is smaller than the tokenizer's "
                          f"({task.vocab_size}): distil into a student built for this tokenizer.")
    if teacher is not None and spec.weights.relation > 0:
        R = spec.relation_heads
        student_size = model.spec.hidden if spec.student_qkv == "projection" or (
            spec.student_qkv == "auto" and model.spec.is_moe) else model.spec.attn_size
        for who, size in (("teacher", teacher.attention_size), ("student", student_size)):
            if size % R:
                raise ConfigError(f"relation_heads={R} does not divide the {who}'s attention size {size}: choose "
                                  f"relation_heads dividing both {teacher.attention_size} and {student_size}.")
    if spec.stage == "finetune" and task.kind == "unlabeled":
        raise ConfigError("Stage 'finetune' needs labels; raw text is for stage 'agnostic'.")


def _optimizer(module: nn.Module, train) -> torch.optim.Optimizer:
    """AdamW, no weight decay on biases and LayerNorm weights (BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() == 1 or name.endswith(".bias") or "LayerNorm" in name else decay).append(p)
        # Stacked expert biases are 2-D: keep them out of weight decay too.
        if name.endswith(".bias") and p.dim() > 1 and decay and decay[-1] is p:
            decay.pop()
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr)


def _scheduler(optimizer, total_steps: int, warmup: float):
    warm = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------
# Data order: a seeded permutation per epoch, so a data position is just (epoch, batch index)
# ----------------------------------------------------------------------------------------------------
class Batches:
    """Global batches of ``batch_size`` examples; each rank takes its share, split into micro-batches."""

    def __init__(self, features: list[dict], batch_size: int, grad_accum: int, seed: int, pad_token_id: int,
                 rank: int = 0, world: int = 1, teacher_logits: list[torch.Tensor] | None = None):
        self.features, self.batch_size, self.grad_accum = features, batch_size, grad_accum
        self.teacher_logits = teacher_logits
        self.seed, self.pad, self.rank, self.world = seed, pad_token_id, rank, world
        per_rank = batch_size // world
        if per_rank < grad_accum or batch_size % world:
            raise ConfigError(f"train.batch_size {batch_size} must be divisible by the {world} rank(s) and leave "
                              f"at least grad_accum ({grad_accum}) examples per rank.")
        self.per_epoch = max(1, len(features) // batch_size)

    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        return torch.randperm(len(self.features), generator=g).tolist()

    def micro_batches(self, index: int, order: list[int]) -> list[dict]:
        ids = order[index * self.batch_size:(index + 1) * self.batch_size]
        mine = ids[self.rank::self.world]
        chunks = np.array_split(np.asarray(mine), self.grad_accum)
        return [self.collate(chunk) for chunk in chunks if len(chunk)]

    def collate(self, indices) -> dict:
        batch = pad_batch([self.features[i] for i in indices], self.pad)
        if self.teacher_logits is not None:
            logits = [self.teacher_logits[i] for i in indices]
            if logits[0].dim() == 2:  # token task: (T_i, C) -> (B, T, C), padded to the batch's T
                T = batch["input_ids"].shape[1]
                logits = [F.pad(x, (0, 0, 0, T - x.shape[0])) for x in logits]
            batch["teacher_logits"] = torch.stack(logits)
        return batch


@torch.no_grad()
def cache_teacher_logits(teacher, features: list[dict], pad: int, batch_size: int, device, amp) -> list[torch.Tensor]:
    """Teacher logits of every training example, computed once (the teacher is frozen and in eval mode,
    so they never change): task KD then costs one teacher pass instead of one per epoch.
    Returns one (C,) or, for token tasks, (T_i, C) float tensor per example."""
    cached = []
    for start in range(0, len(features), batch_size):
        chunk = features[start:start + batch_size]
        batch = _to(pad_batch(chunk, pad), device)
        with amp:
            logits = teacher(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).logits
        logits = logits.float().cpu()
        for i, f in enumerate(chunk):
            cached.append(logits[i, :len(f["input_ids"])].clone() if logits.dim() == 3 else logits[i].clone())
    return cached


def _eval_batches(features: list[dict], batch_size: int, pad: int):
    for i in range(0, len(features), batch_size):
        yield pad_batch(features[i:i + batch_size], pad)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ----------------------------------------------------------------------------------------------------
# Files (rank 0 only): metrics, routing, results; written so that earlier results are never lost
# ----------------------------------------------------------------------------------------------------
def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunFiles:
    def __init__(self, run_dir: Path, enabled: bool):
        self.dir, self.enabled = run_dir, enabled
        self.routing: list[dict] = []
        self.writer = None

    def log(self, rows: list[dict]) -> None:
        if self.enabled and rows:
            with open(self.dir / "metrics.jsonl", "a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
            if self.writer is not None:
                for row in rows:
                    self.writer.add_scalar(f"{row['split']}/{row['metric']}", row["value"], row["step"])

    def add_routing(self, rows: list[dict]) -> None:
        self.routing.extend(rows)

    def flush_routing(self) -> None:
        if self.enabled and self.routing:
            import pandas as pd

            tmp = self.dir / "routing.parquet.tmp"
            pd.DataFrame(self.routing).to_parquet(tmp, index=False)
            os.replace(tmp, self.dir / "routing.parquet")

    def truncate_after(self, step: int) -> None:
        """On resume: drop log rows written after the checkpoint (they will be written again)."""
        if not self.enabled:
            return
        path = self.dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            _atomic_text(path, "".join(line + "\n" for line in kept))
        routing = self.dir / "routing.parquet"
        if routing.exists():
            import pandas as pd

            df = pd.read_parquet(routing)
            self.routing = df[df["step"] <= step].to_dict("records")


def _check_run_dir(spec: DistillSpec, resume: bool) -> Path:
    """Refuse to overwrite a run (every rank checks, nothing is written here)."""
    run_dir = Path(spec.output_dir)
    finished = (run_dir / "result.json").exists()
    started = has_training_state(run_dir / "checkpoint")
    if finished and not resume:
        raise ConfigError(f"Run folder {run_dir} already holds a finished run: choose another output_dir "
                          f"(results are never overwritten).")
    if started and not resume:
        raise ConfigError(f"Run folder {run_dir} holds an unfinished run: pass --resume to continue it, or "
                          f"choose another output_dir.")
    config = run_dir / "config.json"
    if resume and started and config.exists():
        saved = json.loads(config.read_text())
        saved.pop("output_dir", None)
        mine = {k: v for k, v in spec.to_dict().items() if k != "output_dir"}
        if saved != json.loads(json.dumps(mine)):
            raise ConfigError(f"--resume with a different config than {config}: resume with the saved "
                              f"config (gapkit distill {config} --resume).")
    return run_dir


def _save_model(model: nn.Module, tokenizer, folder: Path, label_names=None) -> None:
    from ..models.checkpoint import save_pretrained

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if isinstance(model, Student):
        save_pretrained(model, tmp, label_names)
    else:
        config = model.model.config
        if label_names and len(label_names) == config.num_labels:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {name: i for i, name in enumerate(label_names)}
        model.model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _check_finite_all_ranks(terms: dict, step: int, distributed: bool) -> None:
    """``check_finite`` on every rank together: a NaN on one rank stops them all (instead of leaving the
    others waiting in the gradient all-reduce)."""
    try:
        check_finite(terms, step)
        error = None
    except NonFiniteLossError as err:
        error = err
    if distributed:
        flag = torch.tensor([0.0 if error is None else 1.0], device=next(iter(terms.values())).device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if error is None and flag.item() > 0:
            error = NonFiniteLossError(step, "(on another rank)", float("nan"))
    if error is not None:
        raise error


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(trainee: Trainee, teacher, task: TaskData, split: str, batch_size: int, device, amp) -> tuple[dict, list]:
    """Metrics of one evaluation split (relation loss for raw text) and its routing statistics."""
    was_training = trainee.training
    trainee.eval()
    logits, labels, loss_sum, rows = [], [], 0.0, 0
    routing = RoutingAccumulator()
    for batch in _eval_batches(task.evals[split], batch_size, task.pad_token_id):
        batch = _to(batch, device)
        with amp:
            teacher_out = teacher(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")) \
                if teacher is not None and task.kind == "unlabeled" else None
            terms, out = trainee(batch, teacher_out)
        if out.routing is not None:
            routing.add(out.routing, batch["attention_mask"])
        if task.kind == "unlabeled":
            n = batch["input_ids"].shape[0]
            loss_sum += float(terms["relation"]) * n
            rows += n
        else:
            logits.append(out.logits.float().cpu())
            labels.append(batch["labels"].cpu())
    trainee.train(was_training)
    if task.kind == "unlabeled":
        return {"relation": loss_sum / max(rows, 1)}, routing.rows()
    if task.kind == "token":  # pad every batch to the longest sequence of the split
        T = max(x.shape[1] for x in logits)
        logits = [F.pad(x, (0, 0, 0, T - x.shape[1])) for x in logits]
        labels = [F.pad(y, (0, T - y.shape[1]), value=IGNORE_INDEX) for y in labels]
    return task.metrics(split, torch.cat(logits), torch.cat(labels)), routing.rows()


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------
def run(spec: DistillSpec, resume: bool = False, callback=None, progress: bool = True) -> RunResult:
    """Train one run into ``spec.output_dir``.

    Args:
        spec: the run.
        resume: continue from ``output_dir/checkpoint`` (the same config).
        callback: optional ``callback(step, logs, model)`` after every optimizer step (tests, notebooks).
        progress: show a progress bar (rank 0).
    Returns:
        The run's :class:`RunResult`.
    Raises:
        ConfigError / DataError / ModelError: bad input, before any training.
        TrainingFailed: a NaN/inf loss; ``failure.json`` says at which step and in which term.
    """
    t_start = time.time()
    done = Path(spec.output_dir) / "result.json"
    if resume and done.exists():
        saved = json.loads(done.read_text())
        if saved["status"] != "failed":
            return RunResult(**saved)  # nothing left to do
        raise ConfigError(f"Run {spec.output_dir} failed (see failure.json) and cannot be resumed; start a new run.")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _device(spec)
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    train = spec.train
    seed_everything(train.seed)

    # Everything that can be wrong is found here, before a single step.
    run_dir = _check_run_dir(spec, resume)
    tokenizer = _load_tokenizer(spec)
    task = build_task(spec.data, tokenizer, seed=train.seed)
    if spec.stage == "agnostic" and spec.data.task == "synthetic":
        task.train = synthetic_unlabeled(spec.data, spec.data.max_train_examples or len(task.train))
        task.kind, task.num_labels, task.primary = "unlabeled", 0, "relation"
    teacher = _load_teacher(spec, task)
    seed_everything(train.seed)  # the same initial weights whatever loading consumed
    model = _build_model(spec, task, tokenizer)
    _check_compatible(spec, task, model, teacher)

    if rank == 0:  # the run folder appears only once its config is known to be good
        run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_text(run_dir / "config.json", spec.to_json())

    trainee = Trainee(model, spec, task, teacher).to(device)
    if teacher is not None:
        teacher.to(device)
    optimizer = _optimizer(trainee, train)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and train.bf16
           else contextlib.nullcontext())
    # Task KD from logits alone: one teacher pass over the training set instead of one per step.
    logits_only = (teacher is not None and spec.stage == "task" and spec.weights.relation == 0
                   and spec.weights.hidden == 0)
    teacher_logits = (cache_teacher_logits(teacher, task.train, task.pad_token_id, train.eval_batch_size, device, amp)
                      if logits_only else None)
    batches = Batches(task.train, train.batch_size, train.grad_accum, train.seed, task.pad_token_id, rank, world,
                      teacher_logits)
    total_steps = train.max_steps or max(1, math.ceil(train.epochs * batches.per_epoch))
    scheduler = _scheduler(optimizer, total_steps, train.warmup)
    eval_every = train.eval_every or batches.per_epoch
    checkpoint_every = train.checkpoint_every or eval_every
    higher_is_better = task.kind != "unlabeled"
    primary = task.primary

    files = RunFiles(run_dir, rank == 0)
    state = dict(step=0, best=None, best_step=None, bad_evals=0, best_metrics={})
    if resume and has_training_state(run_dir / "checkpoint"):
        state = load_training_state(run_dir / "checkpoint", trainee, optimizer, scheduler)
        files.truncate_after(state["step"])
    if train.tensorboard and rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard needs the tensorboard package: pip install 'gapkit[tensorboard]'.") from None
        files.writer = SummaryWriter(str(run_dir / "tensorboard"))

    student = trainee.model
    ddp = trainee
    if distributed:
        ddp = nn.parallel.DistributedDataParallel(
            trainee, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=isinstance(student, Student) and student.spec.is_moe)
    trainee.train()

    def evaluate_all(step: int) -> dict:
        metrics = {}
        for split in task.evals:
            values, routing = evaluate(trainee, teacher, task, split, train.eval_batch_size, device, amp)
            metrics.update({(f"{k}" if len(task.evals) == 1 else f"{split}/{k}"): v for k, v in values.items()})
            files.log([dict(step=step, split=split, metric=k, value=v) for k, v in values.items()])
            files.add_routing([dict(r, step=step, split=split) for r in routing])
        return metrics

    def primary_of(metrics: dict) -> float:
        keys = [k for k in metrics if k.split("/")[-1] == primary]
        return float(np.mean([metrics[k] for k in keys]))

    status, last_eval_step, final = "completed", -1, {}
    bar = tqdm(total=total_steps, initial=state["step"], disable=not (progress and rank == 0),
               desc=spec.name, dynamic_ncols=True)
    step = state["step"]
    window_tokens, window_t0 = 0, time.time()
    try:
        while step < total_steps:
            epoch, index = divmod(step, batches.per_epoch)
            if index == 0 or step == state["step"]:
                order = batches.order(epoch)
            micro = batches.micro_batches(index, order)
            logs_sum: dict[str, float] = {}
            for i, batch in enumerate(micro):
                batch = _to(batch, device)
                sync = contextlib.nullcontext() if (not distributed or i == len(micro) - 1) else ddp.no_sync()
                with sync:
                    with amp:
                        if "teacher_logits" in batch:
                            teacher_out = _Out(logits=batch.pop("teacher_logits"))
                        elif teacher is not None:
                            teacher_out = teacher(batch["input_ids"], batch["attention_mask"],
                                                  batch.get("token_type_ids"))
                        else:
                            teacher_out = None
                        terms, out = ddp(batch, teacher_out)
                    _check_finite_all_ranks(terms, step + 1, distributed)
                    loss, logs = combine(terms, spec.weights)
                    (loss / len(micro)).backward()
                for k, v in logs.items():
                    logs_sum[k] = logs_sum.get(k, 0.0) + v / len(micro)
                window_tokens += int(batch["attention_mask"].sum())
            if train.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainee.parameters(), train.grad_clip))
                logs_sum["grad_norm"] = grad_norm
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)

            if step % train.log_every == 0 or step == total_steps:
                elapsed = max(time.time() - window_t0, 1e-9)
                logs_sum["lr"] = scheduler.get_last_lr()[0]
                logs_sum["tokens_per_s"] = window_tokens * world / elapsed
                window_tokens, window_t0 = 0, time.time()
                files.log([dict(step=step, split="train", metric=k, value=v) for k, v in logs_sum.items()])
                bar.set_postfix(loss=f"{logs_sum['total']:.4f}", tok_s=f"{logs_sum['tokens_per_s']:.0f}")
            if isinstance(student, Student) and student.spec.is_moe and (
                    step % train.routing_every == 0 or step == 1):
                files.add_routing(routing_rows(out.routing, batch["attention_mask"], step=step, split="train"))
            if callback is not None:
                callback(step, logs_sum, student)

            if step % eval_every == 0 or step == total_steps:
                metrics = evaluate_all(step)
                last_eval_step, final = step, metrics
                value = primary_of(metrics)
                improved = state["best"] is None or (value > state["best"] if higher_is_better else value < state["best"])
                if improved:
                    state.update(best=value, best_step=step, bad_evals=0, best_metrics=metrics)
                    if rank == 0:
                        _save_model(student, tokenizer, run_dir / "best", task.label_names)
                else:
                    state["bad_evals"] += 1
                if rank == 0:
                    bar.write(f"[{spec.name}] step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
                files.flush_routing()
                if train.early_stopping and state["bad_evals"] >= train.early_stopping:
                    status = "early_stopped"
            if rank == 0 and (step % checkpoint_every == 0 or step == total_steps or status == "early_stopped"):
                state["step"] = step
                save_training_state(run_dir / "checkpoint", trainee, optimizer, scheduler, state)
            if status == "early_stopped":
                break
    except NonFiniteLossError as err:
        bar.close()
        failure = dict(status="failed", step=err.step, term=err.term, value=str(err.value), message=str(err))
        if rank == 0:
            _atomic_text(run_dir / "failure.json", json.dumps(failure, indent=2))
            result = RunResult(str(run_dir), "failed", err.step - 1, state.get("best_metrics", {}), {},
                               time.time() - t_start)
            _atomic_text(run_dir / "result.json", json.dumps(result.__dict__, indent=2))
            files.flush_routing()
        raise TrainingFailed(f"Run {spec.name!r} stopped: {err} See {run_dir / 'failure.json'}.") from None
    bar.close()
    files.flush_routing()
    result = RunResult(
        run_dir=str(run_dir), status=status, steps=step,
        best=dict(state["best_metrics"], step=state["best_step"]), final=dict(final, step=last_eval_step),
        wall_time_s=round(time.time() - t_start, 2),
        params_total=student.num_parameters() if isinstance(student, Student) else sum(p.numel() for p in student.parameters()),
        params_active=student.num_parameters(active=True) if isinstance(student, Student) else sum(p.numel() for p in student.parameters()),
    )
    if rank == 0:
        _atomic_text(run_dir / "result.json", json.dumps(result.__dict__, indent=2))
    if files.writer is not None:
        files.writer.close()
    return result
