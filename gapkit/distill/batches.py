"""Data order: a seeded permutation per epoch, so that a data position is just (epoch, batch index).

Every data-parallel rank computes the same permutation and takes its share of each global batch, so
a global batch is the same whatever the number of ranks; the features are only indexed (a list, or a
memory-mapped token file), never copied.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.features import pad_batch
from ..errors import ConfigError

__all__ = ["Batches", "eval_batches"]


class Batches:
    """Global batches of ``batch_size`` examples; each rank takes its share, split into micro-batches.

    Args:
        features: indexable examples (``features[i]`` -> feature dict).
        batch_size: examples per optimizer step across all ranks.
        grad_accum: micro-batches per step on each rank.
        seed: the run's data seed.
        pad_token_id: padding id for ``pad_batch``.
        rank, world: this rank and the number of ranks.
        teacher_logits: cached teacher logits per example (task KD from logits only), attached to
            every batch as ``teacher_logits``.
    """

    def __init__(self, features, batch_size: int, grad_accum: int, seed: int, pad_token_id: int,
                 rank: int = 0, world: int = 1, teacher_logits: list[torch.Tensor] | None = None):
        self.features, self.batch_size, self.grad_accum = features, batch_size, grad_accum
        self.teacher_logits = teacher_logits
        self.seed, self.pad, self.rank, self.world = seed, pad_token_id, rank, world
        per_rank = batch_size // world
        if per_rank < grad_accum or batch_size % world:
            raise ConfigError(f"train.batch_size {batch_size} must be divisible by the {world} rank(s) and leave "
                              f"at least grad_accum ({grad_accum}) examples per rank.")
        if len(features) < batch_size:
            raise ConfigError(f"train.batch_size {batch_size} is larger than the {len(features)} training examples: "
                              f"lower train.batch_size or use more data.")
        self.per_epoch = len(features) // batch_size  # a last partial batch is dropped
        self._epoch, self._order = None, None

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch`` (int64 tensor; cached for the current epoch)."""
        if self._epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.features), generator=g)
        return self._order

    def for_step(self, step: int) -> list[dict]:
        """This rank's micro-batches of optimizer step ``step`` (0-based)."""
        epoch, index = divmod(step, self.per_epoch)
        ids = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        mine = ids[self.rank::self.world].numpy()
        return [self.collate(chunk) for chunk in np.array_split(mine, self.grad_accum) if len(chunk)]

    def collate(self, indices) -> dict:
        batch = pad_batch([self.features[int(i)] for i in indices], self.pad)
        if self.teacher_logits is not None:
            logits = [self.teacher_logits[int(i)] for i in indices]
            if logits[0].dim() == 2:  # token task: (T_i, C) -> (B, T, C), padded to the batch's T
                T = batch["input_ids"].shape[1]
                logits = [F.pad(x, (0, 0, 0, T - x.shape[0])) for x in logits]
            batch["teacher_logits"] = torch.stack(logits)
        return batch


def eval_batches(features, batch_size: int, pad: int):
    """Evaluation batches in file order."""
    for i in range(0, len(features), batch_size):
        yield pad_batch([features[j] for j in range(i, min(i + batch_size, len(features)))], pad)
