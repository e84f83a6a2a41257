"""Tests of gapkit.distill.losses against slow, explicit references written here."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from gapkit.distill.losses import (
    HiddenProjection,
    LossWeights,
    NonFiniteLossError,
    RelationLoss,
    check_finite,
    combine,
    hard_label_loss,
    hidden_mse,
    regression_kd,
    relation_loss,
    relations,
    soft_label_kd,
)

B, T, H_T, H_S = 3, 7, 48, 32


def _mask() -> torch.Tensor:
    """(B, T) with padding of different lengths; the first example is unpadded."""
    lengths = [7, 4, 2]
    return torch.tensor([[1] * n + [0] * (T - n) for n in lengths])


def _qkv(hidden: int, seed: int, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, hidden, generator=g, requires_grad=requires_grad) for _ in range(3)]


def _reference_relation_kl(t: torch.Tensor, s: torch.Tensor, mask: torch.Tensor, r: int) -> float:
    """Loop reference of one relation (QQ, KK or VV), in float64.

    For every example, relation head and real query row i: teacher and student rows
    softmax_j(x_i . x_j / sqrt(d_r) - 10000 * (1 - m_j)), then
    KL = sum_j (t_j + 1e-7) * (log(t_j + 1e-7) - log(s_j + 1e-7)); summed and divided by the number of
    real rows counted across heads (the authors' batchmean).
    """
    t, s = t.double(), s.double()
    d_t, d_s = t.shape[-1] // r, s.shape[-1] // r
    total, rows = 0.0, 0
    for b in range(t.shape[0]):
        key_bias = (1.0 - mask[b].double()) * -10000.0  # (T,)
        for h in range(r):
            th = t[b, :, h * d_t:(h + 1) * d_t]  # (T, d_t)
            sh = s[b, :, h * d_s:(h + 1) * d_s]  # (T, d_s)
            for i in range(t.shape[1]):
                if mask[b, i] == 0:
                    continue
                tp = torch.softmax(th @ th[i] / math.sqrt(d_t) + key_bias, dim=0)  # (T,)
                sp = torch.softmax(sh @ sh[i] / math.sqrt(d_s) + key_bias, dim=0)  # (T,)
                total += float(((tp + 1e-7) * ((tp + 1e-7).log() - (sp + 1e-7).log())).sum())
                rows += 1
    return total / rows


# ------------------------------------------------------------------------------------------------
# Relation loss
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [4, 8])
def test_relation_loss_matches_loop_reference(r):
    mask = _mask()
    teacher, student = _qkv(H_T, 0), _qkv(H_S, 1)
    out = relation_loss(teacher, student, mask, num_relation_heads=r)
    assert isinstance(out, RelationLoss)
    expected = [_reference_relation_kl(t, s, mask, r) for t, s in zip(teacher, student)]
    for got, want in zip((out.qq, out.kk, out.vv), expected):
        assert got.dim() == 0
        assert abs(float(got) - want) < 1e-6, (float(got), want)
    assert abs(float(out.total) - sum(expected) / 3) < 1e-6
    assert float(out.total) > 0.01  # a non-trivial value, so the comparison above means something


def test_relations_shape_rows_and_mask_constant():
    mask = _mask()
    mask[2] = 0  # a fully padded example
    x = _qkv(H_T, 0)[0]
    rel = relations(x, mask, num_heads=4)
    assert rel.shape == (B, 4, T, T)
    torch.testing.assert_close(rel.sum(-1), torch.ones(B, 4, T))
    # Padded keys get no probability mass.
    assert float(rel[1, :, :, 4:].abs().max()) == 0.0
    # The authors' -10000 (not -inf, which gives NaN) shifts every key of a fully padded example
    # by the same constant, so its rows are the unmasked softmax: finite. (Only up to ~1e-3, the
    # float32 spacing near 10000; such rows are dropped from the loss anyway.)
    assert torch.isfinite(rel).all()
    unmasked = relations(x, None, num_heads=4)
    torch.testing.assert_close(rel[2], unmasked[2], rtol=0, atol=2e-3)


def test_identical_inputs_give_zero_loss():
    qkv = _qkv(H_S, 2)
    out = relation_loss(qkv, [x.clone() for x in qkv], _mask(), num_relation_heads=8)
    for part in out:
        assert abs(float(part)) < 1e-6


def test_padding_values_do_not_change_relation_loss():
    mask = _mask()
    teacher, student = _qkv(H_T, 0), _qkv(H_S, 1)
    base = relation_loss(teacher, student, mask, num_relation_heads=8)
    pad = (mask == 0)[:, :, None]  # (B, T, 1)
    g = torch.Generator().manual_seed(9)
    teacher2 = [torch.where(pad, 10 * torch.randn(x.shape, generator=g), x) for x in teacher]
    student2 = [torch.where(pad, 10 * torch.randn(x.shape, generator=g), x) for x in student]
    changed = relation_loss(teacher2, student2, mask, num_relation_heads=8)
    for a, b in zip(base, changed):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # ...while changing a real token does change it (the check above can fail).
    student3 = [x.clone() for x in student]
    student3[0][1, 0] += 1.0
    assert abs(float(relation_loss(teacher, student3, mask, num_relation_heads=8).qq) - float(base.qq)) > 1e-4


def test_gradient_reaches_student_not_teacher():
    teacher, student = _qkv(H_T, 0, requires_grad=True), _qkv(H_S, 1, requires_grad=True)
    relation_loss(teacher, student, _mask(), num_relation_heads=4).total.backward()
    for t in teacher:
        assert t.grad is None
    for s in student:
        assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
        # Padded positions of the student get no gradient.
        assert float(s.grad[2, 2:].abs().max()) == 0.0


def test_relation_dropout_only_in_training():
    mask = _mask()
    teacher, student = _qkv(H_T, 0), _qkv(H_S, 1)
    base = relation_loss(teacher, student, mask, num_relation_heads=8)
    off = relation_loss(teacher, student, mask, num_relation_heads=8, relation_dropout=0.1, training=False)
    torch.testing.assert_close(base.total, off.total, rtol=0, atol=0)
    torch.manual_seed(0)
    on = relation_loss(teacher, student, mask, num_relation_heads=8, relation_dropout=0.1, training=True)
    assert abs(float(on.total) - float(base.total)) > 1e-3


@pytest.mark.parametrize("r, side, size", [(5, "teacher", 48), (3, "student", 32)])
def test_relation_heads_must_divide_hidden(r, side, size):
    with pytest.raises(ValueError, match=rf"{side} hidden size {size} .*num_relation_heads={r}"):
        relation_loss(_qkv(H_T, 0), _qkv(H_S, 1), _mask(), num_relation_heads=r)


def test_relation_loss_rejects_empty_mask():
    with pytest.raises(ValueError, match="no real token"):
        relation_loss(_qkv(H_T, 0), _qkv(H_S, 1), torch.zeros(B, T), num_relation_heads=4)


# ------------------------------------------------------------------------------------------------
# Task KD
# ------------------------------------------------------------------------------------------------


def _hinton_by_hand(s_rows, t_rows, temp):
    """sum_rows KL(softmax(t/T) || softmax(s/T)) / rows * T^2, in plain Python."""
    total = 0.0
    for s, t in zip(s_rows, t_rows):
        zs = sum(math.exp(v / temp) for v in s)
        zt = sum(math.exp(v / temp) for v in t)
        ps = [math.exp(v / temp) / zs for v in s]
        pt = [math.exp(v / temp) / zt for v in t]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    return total / len(s_rows) * temp**2


def test_soft_label_kd_matches_hand_value_with_t_squared():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [1.5, 1.5, -0.5]]
    got = soft_label_kd(torch.tensor(s), torch.tensor(t), temperature=2.0)
    want = _hinton_by_hand(s, t, 2.0)
    assert abs(float(got) - want) < 1e-6
    # Without the T^2 factor the value would be 4x smaller: make sure it is there.
    assert abs(float(got) - want / 4) > 1e-3
    assert float(soft_label_kd(torch.tensor(s), torch.tensor(s), temperature=2.0)) == pytest.approx(0.0, abs=1e-7)


def test_soft_label_kd_valid_mask_selects_rows():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    labels = torch.tensor([[0, 1, -100, 2, -100], [3, -100, -100, 1, 0]])
    valid = labels != -100
    s_bad = s.clone()
    s_bad[~valid] = float("nan")  # rows left out must never be read
    got = soft_label_kd(s_bad, t, temperature=1.5, valid=valid)
    want = _hinton_by_hand(s[valid].tolist(), t[valid].tolist(), 1.5)
    assert abs(float(got) - want) < 1e-6
    with pytest.raises(ValueError, match="valid mask"):
        soft_label_kd(s, t, valid=valid[:, :3])


def test_regression_kd_is_mse_and_detaches_teacher():
    s = torch.tensor([[0.5], [2.0], [-1.0]], requires_grad=True)
    t = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    loss = regression_kd(s, t)
    assert loss.item() == pytest.approx((0.25 + 1.0 + 4.0) / 3)
    loss.backward()
    assert t.grad is None and s.grad is not None


def test_hidden_mse_over_real_tokens_only():
    torch.manual_seed(0)
    proj = HiddenProjection(H_S, H_T)
    assert proj.weight.shape == (H_T, H_S) and proj.bias.abs().max().item() == 0.0
    assert 0.01 < proj.weight.std().item() < 0.03  # BERT's initializer_range 0.02
    mask = _mask()
    g = torch.Generator().manual_seed(4)
    s_h, t_h = torch.randn(B, T, H_S, generator=g), torch.randn(B, T, H_T, generator=g)
    got = hidden_mse(s_h, t_h, proj, mask)
    with torch.no_grad():
        p = proj(s_h)
    sq, n = 0.0, 0
    for b in range(B):
        for i in range(T):
            if mask[b, i]:
                sq += float(((p[b, i] - t_h[b, i]) ** 2).sum())
                n += H_T
    assert abs(got.item() - sq / n) < 1e-6
    # Padded positions do not matter.
    t_h2 = torch.where((mask == 0)[:, :, None], 100.0, t_h)
    assert abs(hidden_mse(s_h, t_h2, proj, mask).item() - got.item()) < 1e-6
    with pytest.raises(ValueError, match="projection"):
        hidden_mse(s_h, t_h, None, mask)


def test_hard_label_loss_ignores_minus_100_and_regression():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 3, generator=g)
    labels = torch.tensor([[0, -100, 2, 1], [-100, -100, 1, 0]])
    keep = labels != -100
    want = F.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(hard_label_loss(logits, labels), want)
    all_ignored = hard_label_loss(logits, torch.full((2, 4), -100))
    assert float(all_ignored) == 0.0
    pred = torch.tensor([[1.0], [3.0]])
    assert float(hard_label_loss(pred, torch.tensor([0.0, 1.0]), regression=True)) == pytest.approx(2.5)


# ------------------------------------------------------------------------------------------------
# Combination and NaN check
# ------------------------------------------------------------------------------------------------


def test_loss_weights_validation_names_the_field():
    assert dataclasses.asdict(LossWeights()) == {
        "relation": 1.0, "soft": 0.0, "hard": 0.0, "hidden": 0.0, "load_balance": 0.01, "temperature": 1.0,
        "target_entropy": None,
    }
    with pytest.raises(ValueError, match="soft"):
        LossWeights(soft=-0.5)
    with pytest.raises(ValueError, match="temperature"):
        LossWeights(temperature=0.0)
    with pytest.raises(ValueError, match="load_balance"):
        LossWeights(load_balance=float("nan"))


def test_combine_skips_zero_weights_and_returns_floats():
    rel = torch.tensor(2.0, requires_grad=True)
    lb = torch.tensor(1.5, requires_grad=True)
    terms = {"relation": rel, "load_balance": lb, "soft": torch.tensor(float("nan"))}
    total, logs = combine(terms, LossWeights(relation=0.5, load_balance=0.01, soft=0.0))
    assert total.item() == pytest.approx(0.5 * 2.0 + 0.01 * 1.5)  # the NaN soft term is skipped
    assert set(logs) == {"relation", "load_balance", "soft", "total"}
    assert all(type(v) is float for v in logs.values())
    assert logs["relation"] == 2.0 and logs["total"] == pytest.approx(1.015)
    total.backward()
    assert float(rel.grad) == pytest.approx(0.5) and float(lb.grad) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown"):
        combine({"unknown": rel}, LossWeights())
    with pytest.raises(ValueError, match="weight 0"):
        combine({"soft": rel}, LossWeights())


def test_check_finite_names_term_and_step():
    check_finite({"relation": torch.tensor(1.0), "hard": torch.tensor(0.3)}, step=3)
    with pytest.raises(NonFiniteLossError, match=r"'hard'.*step 17") as info:
        check_finite({"relation": torch.tensor(1.0), "hard": torch.tensor(float("inf"))}, step=17)
    err = info.value
    assert isinstance(err, FloatingPointError)
    assert (err.step, err.term, err.value) == (17, "hard", math.inf)
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.step, clone.term, str(clone)) == (17, "hard", str(err))
    with pytest.raises(NonFiniteLossError, match="'relation'.*nan"):
        check_finite({"relation": torch.tensor(float("nan"))}, step=0)


def test_relation_loss_compiles_whole_with_padding():
    """No host sync and no data-dependent shape (padded query rows are weighted 0, not selected): the loss is
    captured as one graph, so it can run inside a compiled training step on a GPU."""
    mask = _mask()
    teacher, student = _qkv(H_T, 0), _qkv(H_S, 1, requires_grad=True)
    compiled = torch.compile(lambda t, s, m: relation_loss(t, s, m, num_relation_heads=4).total,
                             backend="aot_eager", fullgraph=True)
    got = compiled(teacher, student, mask)
    torch.testing.assert_close(got, relation_loss(teacher, student, mask, num_relation_heads=4).total,
                               rtol=1e-6, atol=1e-7)
    got.backward()
    assert all(float(s.grad[2, 2:].abs().max()) == 0.0 for s in student)  # padded queries and keys
