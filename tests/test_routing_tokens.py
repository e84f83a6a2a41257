"""Routing statistics: the token ids each expert receives most (``top_tokens``)."""

import json
from collections import Counter

import pandas as pd
import pytest
import torch

from gapkit.models import Student, StudentSpec
from gapkit.routing import (TOP_TOKENS, BlockRouting, RoutingAccumulator, RoutingRecord, parse_top_tokens, routing_rows,
                            switch_load_balance, top_tokens_json)


def record_of(expert: torch.Tensor, num_experts: int = 2) -> RoutingRecord:
    probs = torch.nn.functional.one_hot(expert, num_experts).float()  # (B, T, E)
    block = BlockRouting(expert, torch.ones(expert.shape), probs,
                         switch_load_balance(probs.reshape(-1, num_experts), expert.reshape(-1)))
    return RoutingRecord(attn=[None], ffn=[block])


# Token ids and the expert each went to; the last two positions of row 1 are padding.
IDS = torch.tensor([[5, 5, 7, 9, 5, 7], [7, 7, 9, 5, 5, 5]])
EXPERT = torch.tensor([[0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 1, 1]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def test_top_tokens_count_real_tokens_per_expert():
    rows = routing_rows(record_of(EXPERT), MASK, input_ids=IDS, step=1, split="train")
    # expert 0: 5 (rows 0: three times, row 1: once), 7 once; expert 1: 7 three times, 9 twice
    assert [parse_top_tokens(r["top_tokens"]) for r in rows] == [[(5, 4), (7, 1)], [(7, 3), (9, 2)]]
    assert rows[0]["token_fraction"] == pytest.approx(5 / 10)
    # without input_ids the rows are the same, without the column
    plain = routing_rows(record_of(EXPERT), MASK, step=1, split="train")
    assert [dict(r, top_tokens=None) for r in plain] == [dict(r, top_tokens=None) for r in rows]
    assert "top_tokens" not in plain[0]


def test_top_tokens_order_ties_and_length():
    counts = {i: 3 for i in range(30)} | {99: 7}
    top = json.loads(top_tokens_json(Counter(counts)))
    assert len(top) == TOP_TOKENS and top[0] == [99, 7] and top[1:4] == [[0, 3], [1, 3], [2, 3]]
    assert parse_top_tokens(None) == [] and parse_top_tokens(float("nan")) == []


def test_accumulator_pools_token_counts_over_batches():
    acc = RoutingAccumulator()
    acc.add(record_of(EXPERT[:1]), MASK[:1], IDS[:1])
    acc.add(record_of(EXPERT[1:]), MASK[1:], IDS[1:])
    pooled = acc.rows(step=3, split="dev")
    whole = routing_rows(record_of(EXPERT), MASK, input_ids=IDS, step=3, split="dev")
    assert pooled == whole  # token fractions, balance, entropy and token counts alike
    with pytest.raises(ValueError, match="input_ids with every batch or with none"):
        acc.add(record_of(EXPERT), MASK)
    assert "top_tokens" not in RoutingAccumulator().rows()  # nothing added: no rows at all


def test_mismatched_input_ids_are_refused():
    with pytest.raises(ValueError, match="input_ids has 3 tokens but the routing record has 12"):
        routing_rows(record_of(EXPERT), None, input_ids=torch.tensor([1, 2, 3]))


def test_hash_routed_student_sends_each_token_to_its_hash_expert(tmp_path):
    """A real forward pass: hash routing sends token id t to expert t % E, so every id in an expert's
    top tokens is that expert's residue, and the rows survive a parquet round trip."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    model = Student(StudentSpec(layers=2, hidden=48, heads=4, vocab_size=100, max_positions=64, ffn_experts=3,
                                routing="hash")).eval()
    acc = RoutingAccumulator()
    acc.add(model(ids, mask).routing, mask, ids)
    rows = acc.rows(step=0, split="dev")
    assert len(rows) == 2 * 3
    for row in rows:
        top = parse_top_tokens(row["top_tokens"])
        assert top and all(t % 3 == row["expert"] for t, _ in top)
    pd.DataFrame(rows).to_parquet(tmp_path / "routing.parquet", index=False)
    back = pd.read_parquet(tmp_path / "routing.parquet")
    assert list(back.top_tokens) == [r["top_tokens"] for r in rows]
