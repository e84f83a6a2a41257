"""gapkit's built-in synthetic tasks: download-free, seeded, learnable only from context.

Two rules (``SyntheticTask.rule``), each exact: the label is a function of the sequence alone.
Token ids 0, 1, 2 are [PAD], [CLS], [SEP]; the other ids are content tokens, each in one of
``num_labels + 1`` groups: groups 0..num_labels-1 are "topics", the last group is neutral.

``counts`` (the default): every id t >= 3 is a content token of group (t - 3) mod (num_labels + 1).
    The label is the topic whose tokens occur most often in the sequence. Sequences where two topics
    tie for the most are never generated.

    No single token decides the label (most sequences hold tokens of several topics), so a model has
    to aggregate counts over the whole sequence: attention or pooling over all tokens can, a
    classifier that looks at one token cannot. (It is linear in the token counts, so a bag-of-words
    model can too, and so can a one-layer model: the rule checks that training works, not that a
    model reasons; teacher size barely matters on it.)

``span`` (the capacity ladder): id 3 is [OPEN], id 4 is [CLOSE], and every id t >= 5 is a content
    token of group (t - 5) mod (num_labels + 1). The *scope* is the tokens strictly between the first
    [OPEN] of the sequence and the first [CLOSE] after it; the label is the topic whose tokens occur
    most often in the scope. Every generated sequence has such a scope with exactly one most frequent
    topic.

    The tokens outside the scope lean towards another topic (``decoy``), so the counts over the
    whole sequence say little about the label (a bag-of-words model stays near chance): a model has
    to find the markers, place every token relative to them, and count only inside. With
    ``strays > 0`` each sequence also holds stray markers that leave the scope unchanged (a [CLOSE]
    before the scope's [OPEN] or after its [CLOSE], an [OPEN] inside the scope or after it), so that
    the markers' *order* matters too: which [CLOSE] ends the scope depends on where the first [OPEN]
    is, one more composition step. A one-layer model can only approximate this from the markers'
    absolute positions; deeper, wider models do measurably better within a CPU-sized budget, which
    is what a teacher-size sweep needs (docs/synthetic.md has the measured ladder).

The span rule's defaults are the settings a quickstart sweep uses, tuned for teachers of 1 to 4
layers trained from scratch for 400 steps of batch 128 at lr 1e-3 (configs/synthetic_ladder_teacher.yaml
spells them out); ``SyntheticTask(rule="span")`` is::

    SyntheticTask(rule="span", strays=1, decoy=0.8, min_len=14, max_len=18, n_train=16384, n_dev=1024)
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
RULES = ("counts", "span")
OPEN_ID, CLOSE_ID = 3, 4  # the span rule's markers (content ids start after them)
MIN_SCOPE = 3  # content tokens in the span rule's scope, at least
SCOPE_SHARE = 0.6  # the scope holds at most this share of a sequence's content tokens (or MIN_SCOPE)
# Settings left unset take their rule's default; span's are the tuned capacity-ladder settings.
RULE_DEFAULTS = {
    "counts": {"min_len": 8, "max_len": 32, "n_train": 2048, "n_dev": 512},
    "span": {"min_len": 14, "max_len": 18, "n_train": 16384, "n_dev": 1024, "strays": 1, "decoy": 0.8},
}
SPAN_ONLY = ("strays", "decoy")


@dataclass
class SyntheticTask:
    """Seeded generator of the synthetic classification tasks (rules in the module docstring).

    Generation, ``counts``: each sequence draws a hidden target topic uniformly; each content token
    is neutral with probability ``noise``, else a topic token: the target's with probability
    ``bias``, another topic's otherwise. The label is then computed by the rule (it is usually, not
    always, the target); a tie is redrawn. Labels are balanced in expectation by symmetry.

    Generation, ``span``: the targets cycle through the topics in a shuffled order (each block of
    ``num_labels`` sequences holds every label once, so the labels are balanced exactly), and each
    sequence also draws a decoy topic other than its target. Of its content tokens, a run of
    MIN_SCOPE (3) up to 60% of them is the scope, at a uniform place: each scope token is neutral
    with probability ``noise``, else the target's with probability ``bias``, else another topic's;
    the scope is redrawn until the target is its one most frequent topic. Each token outside is
    neutral with probability ``noise``, else the decoy's with probability ``decoy``, else another
    topic's. [OPEN] and [CLOSE] enclose the scope, then ``strays`` stray [OPEN]s and [CLOSE]s are
    inserted each at a uniform place among those that leave the scope unchanged.

    Args:
        vocab_size: total ids, specials included.
        num_labels: number of topics = classes, 2 to 4.
        min_len, max_len: sequence length range, [CLS] and [SEP] included (default 8 to 32; span:
            14 to 18).
        n_train, n_dev: split sizes (default 2048 and 512; span: 16384 and 1024).
        seed: everything is a function of it; splits use independent streams, so changing n_train
            leaves dev unchanged.
        noise: probability of a neutral token.
        bias: probability that a topic token (``span``: in the scope) is the target topic's.
        rule: ``counts`` (the most frequent topic) or ``span`` (the most frequent topic between the
            first [OPEN] and the next [CLOSE]).
        strays: ``span`` only (default 1): stray [OPEN]/[CLOSE] pairs per sequence; 0 makes the
            scope findable from the markers alone, each pair makes their order matter more.
        decoy: ``span`` only (default 0.8): probability that a topic token outside the scope is the
            sequence's decoy topic's (a topic other than the label).
    """

    vocab_size: int = 128
    num_labels: int = 2
    min_len: int | None = None
    max_len: int | None = None
    n_train: int | None = None
    n_dev: int | None = None
    seed: int = 0
    noise: float = 0.3
    bias: float = 0.6
    rule: str = "counts"
    strays: int | None = None
    decoy: float | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    pad_token_id = PAD_ID
    cls_token_id = CLS_ID
    sep_token_id = SEP_ID

    def __post_init__(self):
        check_fields(self, "SyntheticTask", DataError)
        if self.rule not in RULES:
            raise DataError(f"SyntheticTask rule must be one of {', '.join(RULES)}, got {self.rule!r}.")
        given = [f for f in SPAN_ONLY if getattr(self, f) is not None]
        if self.rule != "span" and given:
            names = " and ".join(given)
            raise DataError(f"SyntheticTask {names} {'apply' if len(given) > 1 else 'applies'} to rule 'span' "
                            f"only, not {self.rule!r}: drop {names} or set rule: span.")
        for f, default in RULE_DEFAULTS[self.rule].items():
            if getattr(self, f) is None:
                setattr(self, f, default)
        groups = self.num_labels + 1
        if not 2 <= self.num_labels <= 4:
            raise DataError(f"SyntheticTask num_labels must be 2, 3 or 4, got {self.num_labels}.")
        if self.vocab_size < self._first_content + 2 * groups:
            raise DataError(f"SyntheticTask vocab_size {self.vocab_size} is too small for {groups} token "
                            f"groups; use at least {self._first_content + 2 * groups}.")
        if not 3 <= self.min_len <= self.max_len:
            raise DataError(f"SyntheticTask needs 3 <= min_len <= max_len ([CLS] token [SEP]), "
                            f"got min_len={self.min_len}, max_len={self.max_len}.")
        if not (0 <= self.noise < 1 and 0 < self.bias <= 1):
            raise DataError(f"SyntheticTask needs 0 <= noise < 1 and 0 < bias <= 1, "
                            f"got noise={self.noise}, bias={self.bias}.")
        if self.n_train < 1 or self.n_dev < 1:
            raise DataError(f"SyntheticTask needs n_train >= 1 and n_dev >= 1 (a split cannot be empty), "
                            f"got n_train={self.n_train}, n_dev={self.n_dev}.")
        if self.rule == "span":
            self._check_span()
            return
        # Ties are redrawn: settings that almost always tie (noise near 1, one or two content tokens)
        # would make generation run for ever.
        n, accept = min(self._acceptance().items(), key=lambda item: item[1])
        if accept < MIN_ACCEPTANCE:
            raise DataError(f"SyntheticTask settings noise={self.noise}, bias={self.bias}, min_len={self.min_len} "
                            f"almost never give a sequence with one most frequent topic (about {accept:.1%} of "
                            f"draws with {n} content token(s)), so generating it would take practically for ever: "
                            f"lower noise or raise min_len.")

    @property
    def _first_content(self) -> int:
        """The first content id: after the specials, and after [OPEN] and [CLOSE] for ``span``."""
        return N_SPECIAL + (2 if self.rule == "span" else 0)

    def _check_span(self) -> None:
        """Settings of the span rule that no sequence can satisfy, or only after endless redraws."""
        if self.strays < 0:
            raise DataError(f"SyntheticTask strays must be an integer >= 0, got {self.strays}.")
        if not 0 <= self.decoy <= 1:
            raise DataError(f"SyntheticTask needs 0 <= decoy <= 1, got decoy={self.decoy}.")
        shortest = 2 + 2 + 2 * self.strays + MIN_SCOPE  # [CLS] [SEP], [OPEN] [CLOSE], strays, the scope
        if self.min_len < shortest:
            raise DataError(f"SyntheticTask rule 'span' with strays={self.strays} needs min_len >= {shortest} "
                            f"([CLS], [SEP], [OPEN], [CLOSE], {2 * self.strays} stray marker(s) and a scope of "
                            f"{MIN_SCOPE} tokens), got min_len={self.min_len}: raise min_len or lower strays.")
        size, accept = min(self._scope_acceptance().items(), key=lambda item: item[1])
        if accept < MIN_ACCEPTANCE:
            raise DataError(f"SyntheticTask settings noise={self.noise}, bias={self.bias} almost never make the "
                            f"target the one most frequent topic of a {size}-token scope (about {accept:.1%} of "
                            f"draws), so generating the span task would take practically for ever: lower noise "
                            f"or raise bias.")

    def _scope_sizes(self, n_content: int) -> tuple[int, int]:
        """Smallest and largest scope of a sequence with n_content topic/neutral tokens."""
        return MIN_SCOPE, max(MIN_SCOPE, int(SCOPE_SHARE * n_content))

    def _scope_acceptance(self) -> dict[int, float]:
        """Fraction of scope draws whose one most frequent topic is the target (the span rule's redraw
        condition), per scope size, for the shortest and the longest scopes (short ones tie most, long
        ones let a weak target lose most), from a fixed-seed sample of the generation process."""
        rng = np.random.default_rng(0)
        k, draws = self.num_labels, 4000
        largest = self._scope_sizes(self.max_len - 4 - 2 * self.strays)[1]
        out = {}
        for size in sorted({*range(MIN_SCOPE, min(MIN_SCOPE + 4, largest + 1)), max(MIN_SCOPE, largest - 1), largest}):
            topic = np.where(rng.random((draws, size)) < self.bias, 0, rng.integers(1, k, (draws, size)))
            group = np.where(rng.random((draws, size)) < self.noise, k, topic)  # target topic 0, by symmetry
            counts = (group[..., None] == np.arange(k)).sum(1)  # (draws, k)
            top = counts == counts.max(1, keepdims=True)
            out[size] = float((top[:, 0] & (top.sum(1) == 1)).mean())
        return out

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
        return (np.asarray(token_ids) - self._first_content) % (self.num_labels + 1)

    def scope_of(self, input_ids: list[int] | np.ndarray) -> np.ndarray:
        """The span rule's scope: the ids strictly between the first [OPEN] and the first [CLOSE] after
        it (all the ids for ``counts``). Raises DataError when the sequence has no scope."""
        ids = np.asarray(input_ids)
        if self.rule == "counts":
            return ids
        opens = np.flatnonzero(ids == OPEN_ID)
        closes = np.flatnonzero(ids == CLOSE_ID)
        closes = closes[closes > opens[0]] if len(opens) else closes[:0]
        if not len(closes):
            raise DataError("This sequence has no span scope (an [OPEN] followed by a [CLOSE]).")
        return ids[opens[0] + 1: closes[0]]

    def label_of(self, input_ids: list[int] | np.ndarray) -> int:
        """The rule: the most frequent topic among the content ids (``span``: of the scope; specials,
        markers and padding ignored)."""
        ids = self.scope_of(input_ids)
        counts = np.bincount(self.group_of(ids[ids >= self._first_content]), minlength=self.num_labels + 1)
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
        if self.rule == "span":
            yield from self._generate_span(stream, n, with_labels)
            return
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

    def _generate_span(self, stream: str, n: int, with_labels: bool) -> Iterator[dict]:
        """The span rule's sequences (generation in the class docstring)."""
        rng = np.random.default_rng([self.seed, _STREAMS[stream]])
        k, groups, first = self.num_labels, self.num_labels + 1, self._first_content
        per_group = (self.vocab_size - first - np.arange(groups) + groups - 1) // groups
        targets = np.empty(0, dtype=int)
        for i in range(n):
            if i % k == 0:  # each block of k sequences holds every label once
                targets = rng.permutation(k)
            target = int(targets[i % k])
            decoy = (target + int(rng.integers(1, k))) % k
            n_content = int(rng.integers(self.min_len, self.max_len + 1)) - 4 - 2 * self.strays
            smallest, largest = self._scope_sizes(n_content)
            size = int(rng.integers(smallest, largest + 1))
            start = int(rng.integers(0, n_content - size + 1))
            for _attempt in range(MAX_REDRAWS):  # redraw until the target is the scope's one top topic
                scope = self._topics(rng, size, target, self.bias)
                counts = np.bincount(scope, minlength=groups)[:k]
                if counts.argmax() == target and (counts == counts.max()).sum() == 1:
                    break
            else:  # unreachable with settings __post_init__ accepted (P < 1e-80)
                raise DataError(f"SyntheticTask drew {MAX_REDRAWS} scopes in a row without a single most "
                                f"frequent target topic; lower noise or raise bias.")
            outside = self._topics(rng, n_content - size, decoy, self.decoy)
            group = np.concatenate([outside[:start], scope, outside[start:]])  # (n_content,)
            # ids of group g are first + g + groups * j, for j < per_group[g]
            ids = first + group + groups * (rng.random(n_content) * per_group[group]).astype(int)
            seq = [*ids[:start].tolist(), OPEN_ID, *ids[start:start + size].tolist(), CLOSE_ID,
                   *ids[start + size:].tolist()]
            for _ in range(self.strays):
                self._insert_strays(rng, seq)
            input_ids = [CLS_ID, *seq, SEP_ID]
            feature = {"input_ids": input_ids, "token_type_ids": [0] * len(input_ids),
                       "attention_mask": [1] * len(input_ids)}
            if with_labels:
                feature["labels"] = target
            yield feature

    def _topics(self, rng: np.random.Generator, n: int, lean: int, p: float) -> np.ndarray:
        """Groups of n content tokens: neutral with probability noise, else topic ``lean`` with
        probability p, else one of the other topics uniformly."""
        k = self.num_labels
        topic = np.where(rng.random(n) < p, lean, (lean + rng.integers(1, k, n)) % k)
        return np.where(rng.random(n) < self.noise, k, topic)

    @staticmethod
    def _insert_strays(rng: np.random.Generator, seq: list[int]) -> None:
        """Insert one stray [OPEN] and one stray [CLOSE] where they leave the scope unchanged: the
        [OPEN] after the scope's [OPEN] (inside the scope or after its [CLOSE]), the [CLOSE] before
        the scope's [OPEN] or after its [CLOSE]; each side with probability 1/2, then a uniform place."""
        def bounds():
            i_open = seq.index(OPEN_ID)  # the scope's markers: the first [OPEN], the next [CLOSE]
            return i_open, seq.index(CLOSE_ID, i_open)

        i_open, i_close = bounds()
        where = (i_open + 1, i_close) if rng.random() < 0.5 else (i_close + 1, len(seq))
        seq.insert(int(rng.integers(where[0], where[1] + 1)), OPEN_ID)
        i_open, i_close = bounds()
        where = (0, i_open) if rng.random() < 0.5 else (i_close + 1, len(seq))
        seq.insert(int(rng.integers(where[0], where[1] + 1)), CLOSE_ID)
