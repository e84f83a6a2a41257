"""Distillation objectives, at the tensor level (no model code here).

Dimension names used in shape comments:
    B  batch size            T  sequence length
    H  hidden size           R  relation heads      d_r = H / R  relation head size
    C  classes               N  selected rows (real query rows, valid examples or tokens)

What lives here:
- ``relation_loss``: MiniLM(v2-style) self-attention relation distillation (Q-Q, K-K, V-V), written to
  reproduce the MiniMoE authors' code (GeneZC/MiniMoE, ``models/bert_minilm.py`` and the ``relation``
  method of ``modules/modeling_bert.py``) number for number: R relation heads, the additive ``-10000``
  key mask, ``+1e-7`` on both distributions and ``batchmean`` over the real query rows of all heads.
  See docs/method.md, "The relation objective".
- task KD: ``soft_label_kd`` (Hinton), ``regression_kd``, ``hidden_mse`` (TinyBERT-style hidden states),
  ``hard_label_loss``;
- ``combine`` to form the training objective from the terms and their ``LossWeights`` (a config, in
  :mod:`gapkit.distill.config`, which also decides which terms a run trains on: ``LossWeights.active``), and
  ``check_finite`` to stop a run on a NaN/inf loss with one sentence that names the step and the term.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .config import LOSS_TERMS, LossWeights  # re-exported: the objective's weights, beside its terms

__all__ = [
    "mean_entropy",
    "temperature_for_entropy",
    "RelationLoss",
    "relations",
    "relation_loss",
    "soft_label_kd",
    "regression_kd",
    "hidden_mse",
    "HiddenProjection",
    "hard_label_loss",
    "LossWeights",
    "LOSS_TERMS",
    "combine",
    "NonFiniteLossError",
    "check_finite",
]

# Additive mask value of the authors' (and original BERT's) extended attention mask:
# (1 - mask) * -10000.0. Not -inf: a fully padded row then stays a finite (uniform) distribution
# instead of NaN, and the numbers match the released training code.
MASK_VALUE = -10000.0
# The authors add 1e-7 to student and teacher relations before the KL (log(0) guard).
KL_EPS = 1e-7

# --------------------------------------------------------------------------------------------------
# Self-attention relation distillation (MiniLM v2, as in MiniMoE)
# --------------------------------------------------------------------------------------------------


class RelationLoss(NamedTuple):
    """Relation distillation loss and its three parts (scalar tensors).

    ``total = (qq + kk + vv) / 3``; ``qq``/``kk``/``vv`` are kept for logging.
    """

    total: Tensor
    qq: Tensor
    kk: Tensor
    vv: Tensor


def _fp32_no_autocast(device: torch.device):
    """Context that turns autocast off on ``device``, so relations are computed in full precision.

    Why: the ``+1e-7`` floor and the ``-10000`` mask assume fp32 arithmetic; a bf16 matmul (8-bit
    mantissa) perturbs relation probabilities by ~1e-2, the same order as the loss being minimised.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _check_mask(attention_mask: Tensor | None, batch: int, seq: int, device: torch.device) -> Tensor:
    """Return a (B, T) mask on ``device``; ``None`` means every token is real (as in BertModel)."""
    if attention_mask is None:
        return torch.ones(batch, seq, device=device)
    if attention_mask.shape != (batch, seq):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the Q/K/V inputs need "
            f"(batch, seq_len) = ({batch}, {seq})."
        )
    return attention_mask.to(device)


def _check_heads(x: Tensor, num_heads: int, name: str) -> None:
    """Raise a ValueError naming ``name`` and its size unless x is (B, T, H) with R dividing H."""
    if x.dim() != 3:
        raise ValueError(f"{name} Q/K/V must have shape (batch, seq_len, hidden), got {tuple(x.shape)}.")
    if num_heads < 1:
        raise ValueError(f"num_relation_heads must be a positive integer, got {num_heads}.")
    if x.shape[-1] % num_heads != 0:
        raise ValueError(
            f"The {name} hidden size {x.shape[-1]} is not divisible by num_relation_heads={num_heads}; "
            f"choose a number of relation heads that divides both teacher and student hidden sizes."
        )


def _split_heads(x: Tensor, num_heads: int, name: str) -> Tensor:
    """(B, T, H) -> (B, R, T, d_r), the authors' ``transpose`` with relation heads."""
    _check_heads(x, num_heads, name)
    batch, seq, hidden = x.shape
    # reshape, not view: Q/K/V captured by hooks may be non-contiguous slices of a fused projection.
    return x.reshape(batch, seq, num_heads, hidden // num_heads).permute(0, 2, 1, 3)  # (B, R, T, d_r)


def relations(
    x: Tensor, attention_mask: Tensor | None, num_heads: int, *, name: str = "input"
) -> Tensor:
    """Self-attention relation probabilities of one of Q, K or V.

    relation_h = softmax(X_h X_h^T / sqrt(d_r) + (1 - mask) * -10000) for each relation head h,
    with d_r = H / num_heads (so teacher and student may have different head sizes but the same
    number of relation heads, which is what makes their relations comparable).

    Computed in fp32 with autocast off (half-precision inputs are upcast).

    Args:
        x: (B, T, H) queries, keys or values of one layer.
        attention_mask: (B, T), 1 for real tokens and 0 for padding; ``None`` means no padding.
        num_heads: number of relation heads R; must divide H.
        name: how error messages call this input (e.g. "teacher", "student").

    Returns:
        (B, R, T, T) relation probabilities; each row sums to 1 over the key dimension.
        Rows of padded query tokens are returned too (callers drop them).

    Raises:
        ValueError: if R does not divide H, or shapes do not fit.
    """
    with _fp32_no_autocast(x.device):
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        heads = _split_heads(x, num_heads, name)  # (B, R, T, d_r)
        scores = torch.matmul(heads, heads.transpose(-1, -2))  # (B, R, T, T)
        scores = scores / math.sqrt(heads.shape[-1])
        if attention_mask is not None:  # no mask: the bias would be 0 everywhere
            mask = _check_mask(attention_mask, x.shape[0], x.shape[1], x.device).to(heads.dtype)
            # Additive key mask, broadcast over heads and query rows, exactly as BertModel's
            # extended attention mask in the authors' code.
            scores = scores + (1.0 - mask)[:, None, None, :] * MASK_VALUE  # (B, R, T, T)
        return F.softmax(scores, dim=-1)  # (B, R, T, T)


def _dropout(x: Tensor, p: float) -> Tensor:
    """Inverted dropout, as ``F.dropout(x, p, training=True)`` does, with its keep mask drawn from the
    global generator as uniforms (``U >= p``) rather than Bernoulli draws: the same distribution, half
    the time on CPU, where the (B, R, T, T) relation tensors make the draw the loss's largest cost."""
    scale = torch.where(torch.empty_like(x).uniform_() >= p, 1.0 / (1.0 - p), 0.0)
    return x * scale


def relation_loss(
    teacher_qkv: Sequence[Tensor],
    student_qkv: Sequence[Tensor],
    attention_mask: Tensor | None,
    num_relation_heads: int = 32,
    relation_dropout: float = 0.0,
    training: bool = False,
    teacher_cache: dict | None = None,
) -> RelationLoss:
    """MiniLM self-attention relation distillation loss, as in the MiniMoE authors' code.

    For each of Q, K, V: relations of teacher and student (see ``relations``), rows of padded query
    tokens dropped, then ``F.kl_div(log(s + 1e-7), t + 1e-7, reduction="batchmean")``, i.e. the sum
    of KL(teacher row || student row) over the real query rows of every head divided by their
    number. The teacher side is detached (computed under ``no_grad``). Q, K and V are processed one
    after the other, so at most one teacher and one student (B, R, T, T) tensor are alive at once
    (plus the student's autograd buffers).

    Args:
        teacher_qkv: (Q, K, V) of the teacher layer, each (B, T, H_t).
        student_qkv: (Q, K, V) of the student layer, each (B, T, H_s); H_s may differ from H_t.
        attention_mask: (B, T), 1 for real tokens, 0 for padding (``None``: no padding).
        num_relation_heads: R (the authors use 32); must divide H_t and H_s.
        relation_dropout: dropout probability on the student's relation probabilities. The authors'
            relations pass through the attention-probability dropout (0.1) of the student in
            training; the teacher is in eval mode, so only the student is affected. Default 0: the
            distillation driver decides.
        training: dropout is applied only when ``training`` and ``relation_dropout > 0``.
        teacher_cache: a dict that belongs to this batch's teacher outputs, shared by the students of a
            group: the teacher's relation rows are computed by the first student and reused by the
            others (the same numbers, so each student's loss is bitwise what it would be alone; the
            three (B * R * T, T) tensors stay alive while the dict does).

    Returns:
        ``RelationLoss(total, qq, kk, vv)`` of scalar tensors, ``total = (qq + kk + vv) / 3``.

    Raises:
        ValueError: wrong number or shapes of tensors, R not dividing a hidden size, a dropout
            probability outside [0, 1), or a mask with no real token.
    """
    if len(teacher_qkv) != 3 or len(student_qkv) != 3:
        raise ValueError(
            f"relation_loss needs (Q, K, V) for teacher and student, got {len(teacher_qkv)} teacher "
            f"and {len(student_qkv)} student tensors."
        )
    if not 0.0 <= relation_dropout < 1.0:
        raise ValueError(f"relation_dropout must be in [0, 1), got {relation_dropout}.")
    for name, qkv in (("teacher", teacher_qkv), ("student", student_qkv)):
        for part, x in zip("QKV", qkv):
            if x.dim() != 3 or x.shape[:2] != student_qkv[0].shape[:2]:
                raise ValueError(
                    f"{name} {part} has shape {tuple(x.shape)}; every Q/K/V must be (batch, seq_len, "
                    f"hidden) with the same batch and seq_len as student Q {tuple(student_qkv[0].shape[:2])}."
                )
            # Fail on divisibility before any compute, naming the side and the size.
            _check_heads(x, num_relation_heads, name)
    batch, seq = student_qkv[0].shape[:2]
    device = student_qkv[0].device
    mask = _check_mask(attention_mask, batch, seq, device)
    query_mask = mask != 0  # (B, T) bool
    compiling = torch.compiler.is_compiling()
    if not compiling and not bool(query_mask.any()):
        raise ValueError("attention_mask marks no real token in the batch; the relation loss would be 0/0.")

    # Every (batch, head, query) row is scored and the rows of padded queries are weighted 0, which needs
    # no host sync (the loss can be captured whole on a GPU). Without padding (checked on CPU, where it
    # costs nothing) the key mask and the weights are skipped: adding 0 or multiplying by 1 changes no bit.
    full = attention_mask is None or (device.type == "cpu" and not compiling and bool(query_mask.all()))
    rel_mask = None if full else mask
    if full:
        row_weight, n_rows = None, batch * num_relation_heads * seq
    else:  # (B * R * T,) in the authors' masked_select order: batch, then head, then query position
        row_weight = query_mask[:, None, :].expand(batch, num_relation_heads, seq).reshape(-1).float()
        n_rows = row_weight.sum()
    key = num_relation_heads  # the cache belongs to one batch's teacher outputs: its mask is this one
    shared = teacher_cache.get(key) if teacher_cache is not None else None
    computed = []
    parts = []
    for i, (t_x, s_x) in enumerate(zip(teacher_qkv, student_qkv)):
        if shared is not None:
            t_eps, t_entropy = shared[i]
        else:
            with torch.no_grad():
                t_rel = relations(t_x.detach().to(device), rel_mask, num_relation_heads, name="teacher")
                t_eps = t_rel.reshape(-1, seq) + KL_EPS  # (B * R * T, T)
                del t_rel
                t_entropy = torch.xlogy(t_eps, t_eps).sum(-1)  # (B * R * T,): the teacher's half of the KL
            if teacher_cache is not None:
                computed.append((t_eps, t_entropy))
        s_rel = relations(s_x, rel_mask, num_relation_heads, name="student")  # (B, R, T, T)
        if training and relation_dropout > 0.0:
            # Authors' detail: relation probabilities go through the attention dropout; it zeroes
            # whole keys and rescales the rest, and the +1e-7 below keeps log() finite.
            s_rel = _dropout(s_rel, relation_dropout)
        with _fp32_no_autocast(device):
            # F.kl_div(log(s + eps), t + eps, reduction="batchmean") over the real query rows, as the
            # authors compute it, written per row as sum t log t - sum t log s, so that the teacher's half
            # is computed once per batch for a whole group; the row KLs are summed in float64.
            cross = (t_eps * torch.log(s_rel.reshape(-1, seq) + KL_EPS)).sum(-1)  # (B * R * T,)
            rows = t_entropy - cross if row_weight is None else (t_entropy - cross) * row_weight
            parts.append((rows.sum(dtype=torch.float64) / n_rows).to(s_rel.dtype))
        del s_rel, t_eps
    if teacher_cache is not None and shared is None:
        teacher_cache[key] = computed
    qq, kk, vv = parts
    return RelationLoss(total=(qq + kk + vv) / 3.0, qq=qq, kk=kk, vv=vv)


# --------------------------------------------------------------------------------------------------
# Task-specific knowledge distillation
# --------------------------------------------------------------------------------------------------


def _select_rows(x: Tensor, valid: Tensor | None, name: str) -> Tensor:
    """(..., C) -> (N, C), keeping the rows where ``valid`` is true (all rows when ``None``)."""
    rows = x.reshape(-1, x.shape[-1])  # (N_all, C)
    if valid is None:
        return rows
    if valid.shape != x.shape[:-1]:
        raise ValueError(
            f"valid mask has shape {tuple(valid.shape)} but {name} needs {tuple(x.shape[:-1])} "
            f"(one entry per row of logits)."
        )
    return rows[valid.reshape(-1).to(device=x.device, dtype=torch.bool)]  # (N, C)


def _zero_like_graph(x: Tensor) -> Tensor:
    """A 0 that stays connected to ``x``'s graph (a batch with nothing to score, e.g. all -100)."""
    return x.sum() * 0.0


def soft_label_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    valid: Tensor | None = None,
) -> Tensor:
    """Hinton soft-label KD: KL(softmax(t / T) || softmax(s / T)) * T^2, averaged over rows.

    The T^2 factor keeps the gradient scale independent of T (Hinton et al., 2015, section 2).

    Args:
        student_logits: (N, C), or (B, T, C) for token classification; any (..., C).
        teacher_logits: same shape as ``student_logits``; detached here.
        temperature: T > 0.
        valid: optional boolean mask of shape ``logits.shape[:-1]`` selecting the rows to score
            (e.g. ``labels != -100`` for token classification); other rows are never read.

    Returns:
        Scalar tensor: KL summed over selected rows and classes, divided by the number of selected
        rows (``batchmean``), times T^2. 0 (with a graph) if no row is selected.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape for soft-label KD."
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    s = _select_rows(student_logits, valid, "soft_label_kd")  # (N, C)
    t = _select_rows(teacher_logits.detach(), valid, "soft_label_kd")  # (N, C)
    if s.shape[0] == 0:
        return _zero_like_graph(student_logits)
    s_logp = F.log_softmax(s.float() / temperature, dim=-1)  # (N, C)
    t_logp = F.log_softmax(t.float() / temperature, dim=-1)  # (N, C)
    kl = F.kl_div(s_logp, t_logp, reduction="batchmean", log_target=True)
    return kl * temperature**2


def regression_kd(student_pred: Tensor, teacher_pred: Tensor) -> Tensor:
    """KD for regression tasks (e.g. STS-B): MSE between student and (detached) teacher predictions.

    Args:
        student_pred: (N,) or (N, 1) predictions.
        teacher_pred: the teacher's, same number of elements.

    Returns:
        Scalar mean squared error.
    """
    if student_pred.numel() != teacher_pred.numel():
        raise ValueError(
            f"student predictions {tuple(student_pred.shape)} and teacher predictions "
            f"{tuple(teacher_pred.shape)} must have the same number of elements."
        )
    return F.mse_loss(student_pred.float().reshape(-1), teacher_pred.detach().float().reshape(-1))


class HiddenProjection(nn.Linear):
    """Linear map from the student's hidden size to the teacher's (TinyBERT's ``fit_dense``).

    Initialised like BERT's linear layers (weights N(0, 0.02), bias 0), as TinyBERT does through
    ``init_bert_weights``. The caller owns it (optimiser, checkpoint).
    """

    def __init__(self, student_hidden: int, teacher_hidden: int, bias: bool = True, init_std: float = 0.02):
        """Args:
        student_hidden: student hidden size H_s (input features).
        teacher_hidden: teacher hidden size H_t (output features).
        bias: whether the map has a bias.
        init_std: standard deviation of the normal weight initialisation (BERT's initializer_range).
        """
        if student_hidden < 1 or teacher_hidden < 1:
            raise ValueError(
                f"HiddenProjection needs positive sizes, got student {student_hidden} and teacher {teacher_hidden}."
            )
        self.init_std = init_std
        super().__init__(student_hidden, teacher_hidden, bias=bias)

    def reset_parameters(self) -> None:
        """BERT initialisation (called by ``nn.Linear.__init__``)."""
        nn.init.normal_(self.weight, mean=0.0, std=self.init_std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def hidden_mse(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    projection: nn.Module | None,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """TinyBERT-style hidden-state loss: MSE(projection(student), teacher) over real tokens only.

    TinyBERT averages over padding too; here padded positions are dropped so that the loss does not
    depend on how much a batch is padded.

    Args:
        student_hidden: (B, T, H_s) student hidden states.
        teacher_hidden: (B, T, H_t) teacher hidden states; detached here.
        projection: module mapping H_s -> H_t (e.g. ``HiddenProjection``), or ``None`` when H_s == H_t.
        attention_mask: (B, T), 1 for real tokens; ``None`` scores every position.

    Returns:
        Scalar: mean over real tokens and the H_t features of the squared error.
    """
    projected = student_hidden if projection is None else projection(student_hidden)  # (B, T, H_t)
    if projected.shape != teacher_hidden.shape:
        raise ValueError(
            f"projected student hidden states {tuple(projected.shape)} do not match teacher hidden "
            f"states {tuple(teacher_hidden.shape)}; give a projection from the student to the teacher size."
        )
    teacher = teacher_hidden.detach()
    if attention_mask is not None:
        if attention_mask.shape != projected.shape[:-1]:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but hidden states need "
                f"{tuple(projected.shape[:-1])}."
            )
        real = attention_mask.to(projected.device) != 0  # (B, T)
        if not bool(real.any()):
            return _zero_like_graph(projected)
        projected, teacher = projected[real], teacher[real]  # (N, H_t)
    return F.mse_loss(projected.float(), teacher.float())


def hard_label_loss(logits: Tensor, labels: Tensor, regression: bool = False) -> Tensor:
    """Ground-truth loss: cross-entropy (labels -100 ignored) or MSE for regression.

    Args:
        logits: (N, C) or (B, T, C) for classification; (N,) or (N, 1) for regression.
        labels: (N,) / (B, T) integer class ids, -100 for positions to ignore (the Hugging Face
            convention); float targets when ``regression``.
        regression: use MSE against float labels instead of cross-entropy.

    Returns:
        Scalar loss, averaged over non-ignored labels. 0 (with a graph) if every label is -100,
        where ``F.cross_entropy`` would return NaN.
    """
    if regression:
        if logits.numel() != labels.numel():
            raise ValueError(
                f"regression logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must have "
                f"the same number of elements."
            )
        return F.mse_loss(logits.float().reshape(-1), labels.to(logits.device).float().reshape(-1))
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} need labels of shape {tuple(logits.shape[:-1])}, "
            f"got {tuple(labels.shape)}."
        )
    flat_labels = labels.reshape(-1).to(logits.device).long()  # (N,)
    if not bool((flat_labels != -100).any()):
        return _zero_like_graph(logits)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), flat_labels, ignore_index=-100)


def mean_entropy(logits: Tensor, temperature: float = 1.0) -> float:
    """Mean entropy (nats) of ``softmax(logits / temperature)`` over the rows of ``logits`` (N, C)."""
    logp = F.log_softmax(logits.double() / temperature, dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def temperature_for_entropy(logits: Tensor, target: float, tol: float = 1e-6) -> float:
    """The temperature T at which ``softmax(logits / T)`` has mean entropy ``target`` nats (bisection on log T;
    the mean entropy rises with T from that of the arg-max towards log C).

    Raises:
        ConfigError: ``target`` outside what some T in [1e-3, 1e4] reaches (at most log C, the uniform
            distribution's entropy).
    """
    low, high = math.log(1e-3), math.log(1e4)
    reach = (mean_entropy(logits, math.exp(low)), mean_entropy(logits, math.exp(high)))
    if not reach[0] <= target <= reach[1]:
        raise ConfigError(f"weights.target_entropy {target:g} nats is out of reach of this teacher's soft labels: "
                          f"their mean entropy over the training set runs from {reach[0]:.4g} to {reach[1]:.4g} "
                          f"nats (log C = {math.log(logits.shape[-1]):.4g}) as the temperature grows; choose a "
                          f"target in that range.")
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (mid, high) if mean_entropy(logits, math.exp(mid)) < target else (low, mid)
    return math.exp((low + high) / 2)


# --------------------------------------------------------------------------------------------------
# Combining terms, and stopping on NaN
# --------------------------------------------------------------------------------------------------


def combine(terms: Mapping[str, Tensor], weights: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the loss terms that are present.

    Terms with weight 0 are left out of the sum (so a NaN in an unused term cannot poison the
    total), but are still logged.

    Args:
        terms: scalar tensors keyed by term name (``LOSS_TERMS``: relation, soft, hard, hidden,
            load_balance); absent terms count as not used.
        weights: the ``LossWeights``.

    Returns:
        ``(total, logs)``: ``total`` is the scalar tensor to back-propagate; ``logs`` maps every
        present term to its unweighted detached value as a Python float, plus ``"total"``.

    Raises:
        ValueError: an unknown term name, a non-scalar term, or no present term with weight > 0.
    """
    total: Tensor | None = None
    for name, value in terms.items():
        w = weights.weight(name)  # raises on unknown names
        if value.numel() != 1:
            raise ValueError(f"loss term {name!r} must be a scalar tensor, got shape {tuple(value.shape)}.")
        if w == 0.0:
            continue
        contribution = w * value.reshape(())
        total = contribution if total is None else total + contribution
    if total is None:
        raise ValueError(
            f"no loss term to optimise: present terms {sorted(terms)} all have weight 0 in {weights}."
        )
    # One device->host copy for all logged values rather than one sync per term.
    names = [*terms, "total"]
    values = torch.stack(
        [v.detach().reshape(()).float().to(total.device) for v in terms.values()] + [total.detach().float()]
    ).tolist()
    return total, dict(zip(names, values))


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite.

    Attributes:
        step: the training step.
        term: the name of the offending loss term.
        value: its value (nan, inf or -inf).
    """

    def __init__(self, step: int, term: str, value: float):
        self.step = step
        self.term = term
        self.value = value
        super().__init__(f"Loss term {term!r} is {value} (not finite) at step {step}.")

    def __reduce__(self):
        # Rebuild from the fields so the error survives pickling (process pools, submitit).
        return (type(self), (self.step, self.term, self.value))


def check_finite(terms: Mapping[str, Tensor], step: int) -> None:
    """Raise ``NonFiniteLossError`` if any loss term is NaN or infinite.

    One device sync for all terms in the common (finite) case.

    Args:
        terms: loss tensors keyed by name (a term with several elements is checked elementwise).
        step: the current training step, for the message.

    Raises:
        NonFiniteLossError: naming the step and the first non-finite term, in one sentence.
    """
    if not terms:
        return
    device = next(iter(terms.values())).device
    finite = torch.stack([torch.isfinite(v.detach()).all().to(device) for v in terms.values()])
    if bool(finite.all()):
        return
    for (name, value), ok in zip(terms.items(), finite.tolist()):
        if not ok:
            flat = value.detach().float().reshape(-1)
            bad = flat[~torch.isfinite(flat)][0]
            raise NonFiniteLossError(step=step, term=name, value=float(bad))
