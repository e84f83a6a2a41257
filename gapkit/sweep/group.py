"""Training a group of runs on one teacher pass, and the prepare step of truncated teachers.

Runs of the same teacher, stage, data, batch geometry and data seed see the same batches in the same
order; a group trains them together: each step's batches go through the teacher once (task KD from
logits alone shares one cached pass over the training set), and every student steps on them. Task KD from
logits alone also keeps that pass on disk (:mod:`gapkit.distill.teacher_cache`): the groups of other data
seeds, the units a memory budget cut a group into and later sweeps on the same teacher and examples read
it and never load the teacher. Each
student ends bitwise identical (CPU, fp32) to the same run trained alone. A student whose loss turns
NaN is recorded as failed and leaves the group; the others go on. Runs resumed at different steps
(after a kill) are stepped lagging-first until they align.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..distill.config import DistillSpec
from ..distill.losses import NonFiniteLossError
from ..distill.teacher_side import TeacherNeeds, to_device
from ..distill.trainer import Run
from ..errors import GapkitError
from ..io import atomic_dir

__all__ = ["Outcome", "run_group", "prepare_truncated", "group_key", "memory_estimate"]


@dataclass
class Outcome:
    """How one run of a group ended: ``completed``/``early_stopped``/``failed``, and why."""

    run_dir: str
    status: str
    reason: str | None = None


def group_key(spec: DistillSpec) -> str:
    """Runs with equal keys can share one teacher pass: same teacher, stage, data, batches and steps."""
    train = {k: v for k, v in spec.train.__dict__.items() if k not in ("seed", "init_seed", "tensorboard")}
    return json.dumps(dict(teacher=spec.teacher, layer=spec.teacher_layer, stage=spec.stage,
                           data=spec.data.__dict__, train=train, needs=TeacherNeeds.of(spec).__dict__),
                      sort_keys=True, default=str)


def memory_estimate(spec: DistillSpec, params: int, hidden: int, layers: int) -> int:
    """Bytes a student needs to train: fp32 weights, gradients and AdamW's two moments (16 per
    parameter), plus activations (about 12 (B, T, H) tensors per layer kept for the backward pass)."""
    return 16 * params + 4 * 12 * spec.train.batch_size * spec.data.max_len * hidden * max(layers, 1)


def _started(folder: Path) -> bool:
    return folder.is_dir() and any(not p.name.endswith(".tmp") for p in folder.iterdir())


def run_group(specs: list[DistillSpec], progress: bool = False, teacher_cache=None) -> list[Outcome]:
    """Train ``specs`` (a group: equal :func:`group_key`) on one teacher pass per batch.

    Finished runs of the same config are read back; interrupted ones resume from their checkpoints.

    Args:
        teacher_cache: where task KD from logits alone keeps its teacher's logits
            (:class:`~gapkit.distill.trainer.Run`'s argument; default ``$GAPKIT_TEACHER_CACHE`` or
            ``<gapkit cache>/teacher_outputs``).

    Returns:
        One :class:`Outcome` per spec, in order.
    """
    outcomes: dict[str, Outcome] = {}
    runs: list[Run] = []
    shared = None
    for spec in specs:
        try:
            r = Run(spec, resume=_started(Path(spec.output_dir)), teacher=shared, progress=progress,
                    teacher_cache=teacher_cache)
        except GapkitError as err:  # bad input for this run: recorded, the others go on
            outcomes[spec.output_dir] = Outcome(spec.output_dir, "failed", " ".join(str(err).split()))
            continue
        if r.finished:
            outcomes[spec.output_dir] = Outcome(spec.output_dir, r.result.status, r.result.reason)
            continue
        shared = shared if shared is not None else r.teacher
        runs.append(r)
    if shared is not None and len(runs) > 1:  # the teacher's relation rows too: computed once, read by every run
        shared.share_relation_rows = True
    try:
        _train_together(runs, shared, outcomes)
    except BaseException:
        for r in runs:
            r.close()
        raise
    for r in runs:
        result = r.finish()
        outcomes[r.spec.output_dir] = Outcome(r.spec.output_dir, result.status, result.reason)
    return [outcomes[s.output_dir] for s in specs]


def _train_together(runs: list[Run], shared, outcomes: dict) -> None:
    """Step ``runs`` to their ends on one teacher pass per step (lagging runs first)."""
    while True:
        active = [r for r in runs if not r.done]
        if not active:
            break
        step = min(r.step_count for r in active)
        stepping = [r for r in active if r.step_count == step]
        micro = stepping[0].next_batches()
        outputs = None
        if shared is not None and not TeacherNeeds.of(stepping[0].spec).logits_only:
            outputs = [shared(to_device({k: v for k, v in b.items() if k != "teacher_logits"}, shared.device))
                       for b in micro]
        for r in stepping:
            try:
                r.step(micro, outputs)
            except NonFiniteLossError as err:
                failed = r.fail(err)
                outcomes[r.spec.output_dir] = Outcome(r.spec.output_dir, "failed", str(failed))
                runs.remove(r)
        stepping = [r for r in stepping if r in runs]
        due = [r for r in stepping if r.eval_due]
        pairs = due[0].shared_eval_pairs() if due else None  # one teacher pass for every run that evaluates
        for r in stepping:
            r.after_step(pairs)


def prepare_truncated(ref: str, layers: int, folder: str | Path) -> Path:
    """Write the first ``layers`` layers of the BERT-family model ``ref`` (embeddings, those layers,
    pooler; no task head) as a Hugging Face folder ``folder/best`` with its tokenizer: a truncated
    teacher of a family. Done once; a folder already written is kept.
    """
    from transformers import AutoTokenizer

    from ..distill.runfiles import RunDir
    from ..models.checkpoint import save_pretrained, student_from_hf

    run = RunDir(folder)
    best = run.best_dir
    if run.has_best():
        return best
    Path(folder).mkdir(parents=True, exist_ok=True)
    student = student_from_hf(ref, layers=list(range(layers)))
    with atomic_dir(best) as tmp:
        save_pretrained(student, tmp)
        try:
            AutoTokenizer.from_pretrained(ref).save_pretrained(tmp)
        except (OSError, ValueError):
            pass  # a model without a tokenizer: runs then name data.tokenizer themselves
    return best
