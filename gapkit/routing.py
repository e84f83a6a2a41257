"""Routing records and load statistics of MiniMoE students.

A forward pass returns a :class:`RoutingRecord`: for every layer and block (``attn``, ``ffn``) the
expert chosen for each token, its gate probability, the full gate distribution and the block's load
balance. Nothing is kept on the modules. This module also turns records into tidy statistics tables:
one row per layer, block and expert (``routing.parquet`` of a run), optionally with ``top_tokens``, the
token ids that expert received most (a short JSON list, :data:`TOP_TOKENS` of them).

Dimension names: B batch, T sequence, N = B*T tokens, E experts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import torch

BLOCKS = ("attn", "ffn")
TOP_TOKENS = 20  # token ids kept per expert row in ``top_tokens``


def load_balance_of(mean_prob: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """The Switch-Transformer load balance, E * sum_i(mean gate prob of expert i * token fraction of i).

    The one place gapkit writes this formula: the differentiable training term
    (:func:`switch_load_balance`), the per-batch statistics and the pooled statistics all call it.
    It equals 1.0 at perfect balance and E when one expert takes every token with probability 1.

    Args:
        mean_prob: (E,) mean gate probability of each expert over the tokens considered.
        fraction: (E,) fraction of those tokens routed to each expert (sums to 1).
    Returns:
        A scalar tensor (differentiable in ``mean_prob``).
    """
    return mean_prob.shape[-1] * (mean_prob * fraction).sum()


def switch_load_balance(probs: torch.Tensor, expert: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
    """Load balance of one MoE block from its gate distribution and routing (:func:`load_balance_of`).

    As in the MiniMoE authors' code it runs over every token position, padding included, and the
    gradient flows through the mean probabilities only.

    Args:
        probs: (N, E) gate probabilities.
        expert: (N,) chosen expert per token.
        counted: (N,) 1 for the tokens to count, 0 for the others (positions a compiled forward added
            beyond the batch's own padding); None counts every token.
    Returns:
        A scalar tensor.
    """
    num_experts = probs.shape[-1]
    weight = torch.ones_like(expert, dtype=probs.dtype) if counted is None else counted.to(probs.dtype)  # (N,)
    # scatter_add, not bincount: on a GPU bincount reads the maximum back to the host.
    counts = torch.zeros(num_experts, dtype=probs.dtype, device=probs.device).scatter_add_(0, expert, weight)  # (E,)
    mean_prob = probs.mean(0) if counted is None else (probs * weight[:, None]).sum(0) / weight.sum()  # (E,)
    return load_balance_of(mean_prob, counts / counts.sum())


@dataclass
class BlockRouting:
    """Routing of one MoE block for one forward pass.

    Attributes:
        expert: (B, T) chosen expert per token.
        prob: (B, T) probability of the chosen expert (the factor its output is scaled by;
            1 for the random and hash ablations, which have no gate).
        probs: (B, T, E) the whole gate distribution (one-hot for random and hash routing).
        load_balance: scalar Switch load balance of this block (differentiable for learned gates).
    """

    expert: torch.Tensor
    prob: torch.Tensor
    probs: torch.Tensor
    load_balance: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.probs.shape[-1]

    def detach(self) -> "BlockRouting":
        return BlockRouting(self.expert, self.prob.detach(), self.probs.detach(), self.load_balance.detach())


@dataclass
class RoutingRecord:
    """Per-layer routing of a forward pass. ``attn[l]`` / ``ffn[l]`` is None for a dense block."""

    attn: list[BlockRouting | None] = field(default_factory=list)
    ffn: list[BlockRouting | None] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.ffn)

    @property
    def is_moe(self) -> bool:
        return any(b is not None for b in self.attn + self.ffn)

    def blocks(self):
        """Yield (layer, block name, BlockRouting) for every MoE block."""
        for layer in range(self.num_layers):
            for name, per_layer in (("attn", self.attn), ("ffn", self.ffn)):
                if per_layer[layer] is not None:
                    yield layer, name, per_layer[layer]

    def load_balance(self) -> torch.Tensor:
        """The aggregated load balance, exactly as the MiniMoE authors aggregate it.

        A dense block counts as 1. The FFN blocks are averaged over layers; when the student also has
        attention experts, the result is (mean attention balance + mean FFN balance) / 2.
        """
        def mean_over_layers(per_layer):
            values = [b.load_balance for b in per_layer if b is not None]
            if not values:
                return None
            # Dense layers contribute exactly 1, as the authors' ones(1) placeholder does.
            return (torch.stack(values).sum() + (len(per_layer) - len(values))) / len(per_layer)

        ffn = mean_over_layers(self.ffn)
        attn = mean_over_layers(self.attn)
        if attn is None and ffn is None:
            return torch.tensor(1.0)
        if attn is None:
            return ffn
        if ffn is None:
            ffn = torch.ones_like(attn)
        return (attn + ffn) / 2

    def detach(self) -> "RoutingRecord":
        return RoutingRecord(
            [b.detach() if b is not None else None for b in self.attn],
            [b.detach() if b is not None else None for b in self.ffn],
        )


def expert_token_counts(expert: torch.Tensor, input_ids: torch.Tensor, num_experts: int) -> list[Counter]:
    """How often each token id went to each expert.

    Args:
        expert: (N,) chosen expert per token.
        input_ids: (N,) the token ids, aligned with ``expert``.
        num_experts: E.
    Returns:
        E Counters, token id -> number of tokens routed to that expert.
    """
    # One key per (token id, expert) pair, counted on the tensors' device; only the distinct pairs
    # come back to the host.
    keys, counts = torch.unique(input_ids.long() * num_experts + expert.long(), return_counts=True)  # (U,), (U,)
    per_expert = [Counter() for _ in range(num_experts)]
    for key, count in zip(keys.tolist(), counts.tolist()):
        per_expert[key % num_experts][key // num_experts] += count
    return per_expert


def top_tokens_json(counts: Counter, k: int = TOP_TOKENS) -> str:
    """The ``k`` most frequent token ids of one expert as a JSON list ``[[token_id, count], ...]``,
    most frequent first (ties: smaller id first, so the text is the same on every run)."""
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
    return json.dumps([[int(t), int(c)] for t, c in top], separators=(",", ":"))


def _real_tokens(routing: BlockRouting, attention_mask, input_ids):
    """(N, E) gate probabilities, (N,) experts and (N,) token ids (or None) of the real tokens."""
    probs = routing.probs.detach().reshape(-1, routing.num_experts).float()  # (N, E)
    expert = routing.expert.reshape(-1)  # (N,)
    ids = input_ids.reshape(-1) if input_ids is not None else None  # (N,)
    if ids is not None and ids.shape != expert.shape:
        raise ValueError(f"input_ids has {ids.numel()} tokens but the routing record has {expert.numel()}: pass the "
                         f"batch's input_ids.")
    if attention_mask is not None:
        keep = attention_mask.reshape(-1).bool()
        probs, expert = probs[keep], expert[keep]
        ids = ids[keep] if ids is not None else None
    return probs, expert, ids


def block_statistics(routing: BlockRouting, attention_mask: torch.Tensor | None = None,
                     input_ids: torch.Tensor | None = None, top_k: int = TOP_TOKENS) -> list[dict]:
    """Per-expert statistics of one block, over real tokens only when a mask is given.

    Returns one dict per expert with ``expert``, ``token_fraction``, ``mean_gate_prob`` (mean
    probability the gate gives that expert), ``load_balance`` (the block's, over the same tokens)
    and ``gate_entropy`` (mean entropy of the gate distribution in nats, the same for every row);
    with ``input_ids`` (B, T) also ``top_tokens``, the ``top_k`` token ids routed to that expert most
    (:func:`top_tokens_json`).
    """
    probs, expert, ids = _real_tokens(routing, attention_mask, input_ids)
    if expert.numel() == 0:
        return []
    num_experts = probs.shape[-1]
    counts = torch.bincount(expert, minlength=num_experts).float()
    fraction = counts / counts.sum()
    mean_prob = probs.mean(0)
    balance = float(load_balance_of(mean_prob, fraction))
    entropy = float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean())
    tokens = expert_token_counts(expert, ids, num_experts) if ids is not None else None
    return [
        dict(
            expert=i,
            token_fraction=float(fraction[i]),
            mean_gate_prob=float(mean_prob[i]),
            load_balance=balance,
            gate_entropy=entropy,
            **({"top_tokens": top_tokens_json(tokens[i], top_k)} if tokens is not None else {}),
        )
        for i in range(num_experts)
    ]


def routing_rows(record: RoutingRecord, attention_mask: torch.Tensor | None = None,
                 input_ids: torch.Tensor | None = None, **extra) -> list[dict]:
    """Tidy rows (one per layer, block and expert) of a record's statistics.

    Args:
        record: a forward pass's routing record.
        attention_mask: (B, T), to leave padding out of the statistics.
        input_ids: (B, T) the batch's token ids: adds the ``top_tokens`` column.
        **extra: constant columns added to every row (e.g. ``step=100, split="train"``).
    """
    rows = []
    for layer, block, routing in record.blocks():
        for row in block_statistics(routing, attention_mask, input_ids):
            rows.append(dict(extra, layer=layer, block=block, **row))
    return rows


class RoutingAccumulator:
    """Statistics of many forward passes (e.g. a whole dev set), per layer and block.

    ``add`` each batch's record; ``rows`` gives the same columns as :func:`routing_rows`, computed over
    all the real tokens seen: token fractions and mean gate probabilities pooled over batches, the load
    balance from the pooled values, and the mean gate entropy; ``top_tokens`` when every batch was added
    with its ``input_ids``.
    """

    def __init__(self, top_k: int = TOP_TOKENS):
        self.top_k = top_k
        self._sums: dict[tuple[int, str], dict] = {}
        self._with_ids: bool | None = None  # did the batches come with their token ids?

    def add(self, record: RoutingRecord, attention_mask: torch.Tensor | None = None,
            input_ids: torch.Tensor | None = None) -> None:
        with_ids = input_ids is not None
        if self._with_ids is not None and with_ids != self._with_ids:
            # Token counts over only some of the batches would be silently wrong.
            raise ValueError("RoutingAccumulator.add: pass input_ids with every batch or with none.")
        self._with_ids = with_ids
        for layer, block, routing in record.blocks():
            probs, expert, ids = _real_tokens(routing, attention_mask, input_ids)
            s = self._sums.setdefault((layer, block), dict(
                counts=torch.zeros(routing.num_experts), prob_sum=torch.zeros(routing.num_experts),
                entropy_sum=0.0, tokens=0, token_counts=[Counter() for _ in range(routing.num_experts)]))
            s["counts"] += torch.bincount(expert, minlength=routing.num_experts).float().cpu()
            s["prob_sum"] += probs.sum(0).cpu()
            s["entropy_sum"] += float(-(probs * probs.clamp_min(1e-12).log()).sum())
            s["tokens"] += expert.numel()
            if ids is not None:
                for total, batch in zip(s["token_counts"], expert_token_counts(expert, ids, routing.num_experts)):
                    total.update(batch)

    def rows(self, **extra) -> list[dict]:
        rows = []
        for (layer, block), s in sorted(self._sums.items()):
            if not s["tokens"]:
                continue
            fraction = s["counts"] / s["tokens"]
            mean_prob = s["prob_sum"] / s["tokens"]
            balance = float(load_balance_of(mean_prob, fraction))
            entropy = s["entropy_sum"] / s["tokens"]
            for i in range(len(fraction)):
                row = dict(extra, layer=layer, block=block, expert=i, token_fraction=float(fraction[i]),
                           mean_gate_prob=float(mean_prob[i]), load_balance=balance, gate_entropy=entropy)
                if self._with_ids:
                    row["top_tokens"] = top_tokens_json(s["token_counts"][i], self.top_k)
                rows.append(row)
        return rows


def parse_top_tokens(value: str | None) -> list[tuple[int, int]]:
    """A ``top_tokens`` cell back as ``[(token_id, count), ...]`` (empty for a missing cell)."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [(int(t), int(c)) for t, c in json.loads(value)]
