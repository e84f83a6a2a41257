"""gapkit's built-in synthetic task: download-free, seeded, learnable only from context.

The rule (exact, a function of the sequence alone):

    Token ids 0, 1, 2 are [PAD], [CLS], [SEP]. Every other id t (3 <= t < vocab_size) belongs to
    group (t - 3) mod (num_labels + 1); groups 0..num_labels-1 are "topics", the last group is
    neutral. The label is the topic whose tokens occur most often in the sequence. Sequences where
    two topics tie for the most are never generated.

No single token decides the label (most sequences hold tokens of several topics), so a model has
to aggregate counts over the whole sequence: attention or pooling over all tokens can, a classifier
that looks at one token cannot. (It is linear in the token counts, so a bag-of-words model can too:
the task checks that training works, not that a model reasons.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from gapkit.configtools import check_fields
from gapkit.data.features import pad_batch
from gapkit.errors import DataError

PAD_ID, CLS_ID, SEP_ID = 0, 1, 2
N_SPECIAL = 3
_STREAMS = {"train": 0, "dev": 1, "unlabeled": 2}  # independent random streams per split
MIN_ACCEPTANCE = 0.02  # settings whose shortest sequences tie in more than 98% of draws are refused
MAX_REDRAWS = 10_000


@dataclass
class SyntheticTask:
    """Seeded generator of the synthetic classification task (rule in the module docstring).

    Generation: each sequence draws a hidden target topic uniformly; each content token is neutral
    with probability ``noise``, else a topic token: the target's with probability ``bias``, another
    topic's otherwise. The label is then computed by the rule (it is usually, not always, the
    target); a tie is redrawn. Labels are balanced in expectation by symmetry.

    Args:
        vocab_size: total ids, specials included.
        num_labels: number of topics = classes, 2 to 4.
        min_len, max_len: sequence length range, [CLS] and [SEP] included.
        n_train, n_dev: split sizes.
        seed: everything is a function of it; splits use independent streams, so changing n_train
            leaves dev unchanged.
        noise: probability of a neutral token.
        bias: probability that a topic token is the target topic's.
    """

    vocab_size: int = 128
    num_labels: int = 2
    min_len: int = 8
    max_len: int = 32
    n_train: int = 2048
    n_dev: int = 512
    seed: int = 0
    noise: float = 0.3
    bias: float = 0.6
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    pad_token_id = PAD_ID
    cls_token_id = CLS_ID
    sep_token_id = SEP_ID

    def __post_init__(self):
        check_fields(self, "SyntheticTask", DataError)
        groups = self.num_labels + 1
        if not 2 <= self.num_labels <= 4:
            raise DataError(f"SyntheticTask num_labels must be 2, 3 or 4, got {self.num_labels}.")
        if self.vocab_size < N_SPECIAL + 2 * groups:
            raise DataError(f"SyntheticTask vocab_size {self.vocab_size} is too small for {groups} token "
                            f"groups; use at least {N_SPECIAL + 2 * groups}.")
        if not 3 <= self.min_len <= self.max_len:
            raise DataError(f"SyntheticTask needs 3 <= min_len <= max_len ([CLS] token [SEP]), "
                            f"got min_len={self.min_len}, max_len={self.max_len}.")
        if not (0 <= self.noise < 1 and 0 < self.bias <= 1):
            raise DataError(f"SyntheticTask needs 0 <= noise < 1 and 0 < bias <= 1, "
                            f"got noise={self.noise}, bias={self.bias}.")
        if self.n_train < 1 or self.n_dev < 1:
            raise DataError(f"SyntheticTask needs n_train >= 1 and n_dev >= 1 (a split cannot be empty), "
                            f"got n_train={self.n_train}, n_dev={self.n_dev}.")
        # Ties are redrawn: settings that almost always tie (noise near 1, one or two content tokens)
        # would make generation run for ever.
        n, accept = min(self._acceptance().items(), key=lambda item: item[1])
        if accept < MIN_ACCEPTANCE:
            raise DataError(f"SyntheticTask settings noise={self.noise}, bias={self.bias}, min_len={self.min_len} "
                            f"almost never give a sequence with one most frequent topic (about {accept:.1%} of "
                            f"draws with {n} content token(s)), so generating it would take practically for ever: "
                            f"lower noise or raise min_len.")

    def _acceptance(self) -> dict[int, float]:
        """Fraction of draws without a tie, per number of content tokens, for the shortest lengths
        (where ties are likeliest), estimated from a fixed-seed sample of the generation process."""
        rng = np.random.default_rng(0)
        k, draws = self.num_labels, 4000
        out = {}
        for n in range(self.min_len - 2, min(self.min_len + 2, self.max_len - 1)):
            topic = np.where(rng.random((draws, n)) < self.bias, 0, rng.integers(1, k, (draws, n)))
            group = np.where(rng.random((draws, n)) < self.noise, k, topic)  # target topic 0, by symmetry
            counts = (group[..., None] == np.arange(k)).sum(1)  # (draws, k)
            out[n] = float(((counts == counts.max(1, keepdims=True)).sum(1) == 1).mean())
        return out

    def group_of(self, token_ids: np.ndarray) -> np.ndarray:
        """Group of each content id: 0..num_labels-1 a topic, num_labels neutral."""
        return (np.asarray(token_ids) - N_SPECIAL) % (self.num_labels + 1)

    def label_of(self, input_ids: list[int] | np.ndarray) -> int:
        """The rule: the most frequent topic among the content ids (specials and padding ignored)."""
        ids = np.asarray(input_ids)
        counts = np.bincount(self.group_of(ids[ids >= N_SPECIAL]), minlength=self.num_labels + 1)
        return int(counts[: self.num_labels].argmax())

    def examples(self, split: str) -> list[dict[str, list[int] | int]]:
        """Unpadded per-example features ``{input_ids, token_type_ids, attention_mask, labels}`` of
        ``"train"`` or ``"dev"``, for a DataLoader with ``collate_fn=pad_batch`` (dynamic padding)."""
        if split not in ("train", "dev"):
            raise DataError(f"SyntheticTask has splits 'train' and 'dev', not {split!r}.")
        if split not in self._cache:
            n = self.n_train if split == "train" else self.n_dev
            self._cache[split] = list(self._generate(split, n, with_labels=True))
        return self._cache[split]

    def features(self, split: str) -> dict[str, torch.Tensor]:
        """A whole split as tensors padded to its longest sequence: input_ids, token_type_ids,
        attention_mask (N, T) long, labels (N,) long."""
        return pad_batch(self.examples(split))

    def unlabeled(self, n: int | None = None) -> Iterator[dict[str, list[int]]]:
        """Unlabeled features for task-agnostic distillation, from a stream disjoint from train/dev.

        Args:
            n: number of sequences (default n_train).

        Returns:
            An iterator of ``{input_ids, token_type_ids, attention_mask}`` python lists.
        """
        return self._generate("unlabeled", self.n_train if n is None else n, with_labels=False)

    def _generate(self, stream: str, n: int, with_labels: bool) -> Iterator[dict]:
        rng = np.random.default_rng([self.seed, _STREAMS[stream]])
        k, groups = self.num_labels, self.num_labels + 1
        # ids of group g are N_SPECIAL + g + groups * j, for j < per_group[g]
        per_group = (self.vocab_size - N_SPECIAL - np.arange(groups) + groups - 1) // groups
        for _ in range(n):
            n_content = int(rng.integers(self.min_len, self.max_len + 1)) - 2
            for _attempt in range(MAX_REDRAWS):  # redraw ties (including "no topic token at all")
                target = rng.integers(k)
                other = (target + rng.integers(1, k, n_content)) % k
                topic = np.where(rng.random(n_content) < self.bias, target, other)
                group = np.where(rng.random(n_content) < self.noise, k, topic)
                counts = np.bincount(group, minlength=groups)[:k]
                if (counts == counts.max()).sum() == 1:
                    break
            else:  # unreachable with settings __post_init__ accepted (P < 1e-40)
                raise DataError(f"SyntheticTask drew {MAX_REDRAWS} tied sequences in a row; lower noise or "
                                f"raise min_len.")
            ids = N_SPECIAL + group + groups * (rng.random(n_content) * per_group[group]).astype(int)
            input_ids = [CLS_ID, *ids.tolist(), SEP_ID]
            feature = {"input_ids": input_ids, "token_type_ids": [0] * len(input_ids),
                       "attention_mask": [1] * len(input_ids)}
            if with_labels:
                feature["labels"] = int(counts.argmax())
            yield feature
