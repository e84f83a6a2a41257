"""FLOP and parameter accounting of students and teachers, under a named convention.

A FLOP figure is meaningless without its convention, so every count here names one:

``macs``
    Multiply-accumulates of every matmul-type op the model runs: linear layers (Q/K/V/O, FFN, gates,
    pooler, heads), the attention scores Q K^T and the attention-times-values product. This is
    fvcore's unit (it counts one multiply-add as one "flop"). Only matmul-type ops are counted
    (linear, addmm, mm, bmm, baddbmm, matmul, einsum, convolution, scaled_dot_product_attention,
    _grouped_mm): embeddings lookups, LayerNorm, GELU, softmax, masking and MoE bookkeeping (argsort,
    bincount, index_select, index_copy, ...) are left out, quietly. A matmul-type op the trace meets
    and no handle counts (:func:`is_matmul_like`) is an error, never a silent zero.
``flops``
    2 x ``macs`` (one multiply plus one add), the unit of ``torch.utils.flop_counter``.
``paper``
    The x-axis of the MiniMoE paper (docs/flops.md): MACs of the encoder's linear layers
    only, Q/K/V/O and FFN, for one expert per block. No attention scores, embeddings, pooler, heads,
    and *no gate*, so a 1,4E MiniMoE has exactly the number of its dense twin on this axis. It is
    computed in closed form from the model's shape; nothing is traced.

MiniMoE: ``macs``/``flops`` count the active path (one expert per token, top-1 routing) plus the gates,
never all experts. fvcore traces the real computation, and the student's dispatch runs each expert
on its own tokens only, so the traced count is one expert per token by construction (the tests check
it against the closed form). Parameters are reported total and active (one expert per block + gates).

Closed form (:func:`analytic_macs`), per sequence of T tokens, for an encoder of L layers, hidden H,
attention width A = heads * head_size (of one expert), FFN width F (of one expert), and x attention /
y FFN experts::

    qkvo      = L * 4 * T * H * A        Q, K, V (H -> A) and the output projection (A -> H)
    attention = L * 2 * T * T * A        Q K^T and softmax(.) V over all heads
    ffn       = L * 2 * T * H * F        H -> F -> H
    gate      = L * T * H * (x + y)      learned routers Linear(H -> E), only for blocks with E > 1
    pooler    = H * H                    tanh(W h[CLS]), once per sequence

times the batch size. ``paper`` = qkvo + ffn = L * T * (4 H A + 2 H F), which is L * 128 * 12 * H^2
for A = H, F = 4H at T = 128 (BERT-base: 10.87 G, 3L-384H: 0.68 G).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .errors import ModelError
from .models.hf_config import spec_from_hf_config
from .models.spec import PRESETS, StudentSpec, parse_shape, spec_from_name
from .models.student import Student

__all__ = [
    "CONVENTIONS",
    "FlopCount",
    "ResolvedModel",
    "analytic_count",
    "analytic_macs",
    "count_flops",
    "count_params",
    "describe",
    "grouped_mm_macs_jit",
    "is_matmul_like",
    "model_spec",
    "resolve_model",
]

CONVENTIONS = ("macs", "flops", "paper")
PAPER_SEQ_LEN = 128  # the paper's FLOPs are at sequence length 128


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown FLOP convention {convention!r}: use one of {', '.join(CONVENTIONS)}.")


def _check_model(model) -> None:
    """count_flops counts a module it can call as an encoder; say what it takes for anything else."""
    if not isinstance(model, nn.Module):
        hint = (f": for a preset, shape, folder or Hub name use gapkit.describe({model!r}) or "
                f"count_flops(gapkit.flops.resolve_model({model!r}).build())" if isinstance(model, str) else "")
        raise ModelError(f"count_flops takes a model (a gapkit Student or a Hugging Face encoder module), got "
                         f"{type(model).__name__} {model!r}{hint}.")
    try:
        inspect.signature(model.forward).bind(input_ids=None, attention_mask=None)
    except TypeError:
        raise ModelError(f"count_flops takes an encoder whose forward accepts input_ids and attention_mask (a "
                         f"gapkit Student or a Hugging Face encoder), and {type(model).__name__}.forward does "
                         f"not.") from None


def _check_spec(spec) -> None:
    if not isinstance(spec, StudentSpec):
        raise ModelError(f"The closed-form FLOP count takes a StudentSpec, got {type(spec).__name__} {spec!r}: "
                         f"build one with gapkit.StudentSpec.from_name('3L-384H'), or count a model with "
                         f"count_flops.")


def _check_sizes(seq_len: int, batch: int) -> None:
    for label, value in (("seq_len", seq_len), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"FLOP counting needs a positive integer {label}, got {value!r}.")


# ----------------------------------------------------------------------------------------------------
# Closed form
# ----------------------------------------------------------------------------------------------------
def analytic_macs(spec: StudentSpec, seq_len: int = PAPER_SEQ_LEN, batch: int = 1, include_gate: bool = True,
                  include_pooler: bool = True) -> dict[str, int]:
    """Closed-form multiply-accumulates of a BERT-style encoder, per component (convention ``macs``).

    With T = seq_len, B = batch, A = heads * head_size and F = ffn of one expert (the formula of the
    module docstring)::

        qkvo = B L 4 T H A,  attention = B L 2 T^2 A,  ffn = B L 2 T H F,
        gate = B L T H (x [x > 1] + y [y > 1]),  pooler = B H^2

    The gate term is counted for learned routing only (random and hash routing have no gate matmul).

    Args:
        spec: the shape (a MiniMoE spec counts one expert per block: the active path).
        seq_len: tokens per sequence.
        batch: sequences.
        include_gate: count the MoE gates (``macs``: yes; the ``paper`` axis: no).
        include_pooler: count BERT's pooler (a gapkit Student and HF BertModel both run it).
    Returns:
        ``{"qkvo", "attention", "ffn", "gate", "pooler", "total"}``, in MACs.
    """
    _check_spec(spec)
    _check_sizes(seq_len, batch)
    T, H, A, F, L = seq_len, spec.hidden, spec.attn_size, spec.ffn, spec.layers
    experts = sum(e for e in (spec.attn_experts, spec.ffn_experts) if e > 1)
    gated = include_gate and spec.routing == "learned"
    parts = dict(
        qkvo=batch * L * 4 * T * H * A,
        attention=batch * L * 2 * T * T * A,
        ffn=batch * L * 2 * T * H * F,
        gate=batch * L * T * H * experts if gated else 0,
        pooler=batch * H * H if include_pooler else 0,
    )
    parts["total"] = sum(parts.values())
    return parts


def analytic_count(spec: StudentSpec, seq_len: int = PAPER_SEQ_LEN, batch: int = 1,
                   convention: str = "paper") -> int:
    """The closed-form count of ``spec`` in ``convention`` (no model, no tracing).

    ``paper`` = qkvo + ffn MACs (no attention scores, gate, embeddings or pooler); ``macs`` = every
    matmul including the gates and the pooler; ``flops`` = 2 x ``macs``.

    Args:
        spec: the shape.
        seq_len: tokens per sequence (the paper uses 128).
        batch: sequences.
        convention: one of :data:`CONVENTIONS`.
    Returns:
        The count, an int.
    """
    _check_convention(convention)
    parts = analytic_macs(spec, seq_len, batch)
    if convention == "paper":
        return parts["qkvo"] + parts["ffn"]
    return parts["total"] * (2 if convention == "flops" else 1)


# ----------------------------------------------------------------------------------------------------
# fvcore handles: small pure functions, MACs of one traced op from its input shapes
# ----------------------------------------------------------------------------------------------------
def _shape(value) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    assert shape is not None, "fvcore handle called on a value without a complete shape"
    return shape


def sdpa_macs_jit(inputs: list, outputs: list) -> int:
    """MACs of ``aten::scaled_dot_product_attention`` (fvcore has no handle: it would count 0).

    q (..., T, d), k (..., S, d), v (..., S, d_v): scores Q K^T are prod(...) T S d MACs and
    probabilities x V are prod(...) T S d_v; for one head group B * heads * T * T * d * 2 when
    d_v = d. Scaling, masking, softmax and dropout are not matmuls and are not counted. With
    grouped-query attention the leading dims of q (the query heads) set the count.
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    *lead, T, d = q
    S, d_v = k[-2], v[-1]
    return math.prod(lead) * T * S * (d + d_v)


def baddbmm_macs_jit(inputs: list, outputs: list) -> int:
    """MACs of ``aten::baddbmm(input, batch1 (n, t, c), batch2 (n, c, p))``: n t c p (the add is free)."""
    n, t, c = _shape(inputs[1])
    p = _shape(inputs[2])[-1]
    return n * t * c * p


def grouped_mm_macs(a: list[int], b: list[int]) -> int:
    """MACs of ``torch._grouped_mm(a, b, offs)`` from the operand shapes.

    The four layouts (G groups; ``offs`` splits the dimension the 2-D operand shares):

    * a (M, K) 2-D, b (G, K, N) 3-D: the rows of a are split among groups (MoE experts over
      expert-sorted tokens, the student's grouped FFN); every row meets one K x N matrix: M K N.
    * a (G, M, K) 3-D, b (K, N) 2-D: the columns of b are split: M K N.
    * a (M, K) 2-D, b (K, N) 2-D: K is split, out (G, M, N): M K N.
    * a (G, M, K), b (G, K, N), no offsets: a batched matmul, G M K N.

    With offsets the groups partition M (or N or K), so the sum over groups of rows x K x N is the
    total, whatever the split; rows past the last offset (padding) are counted as if computed.
    """
    if len(a) == 3 and len(b) == 3:
        return a[0] * a[1] * a[2] * b[2]
    M, K = (a[-2], a[-1])
    return M * K * b[-1]


def grouped_mm_macs_jit(inputs: list, outputs: list) -> int:
    """fvcore handle of ``aten::_grouped_mm`` (fvcore has none): :func:`grouped_mm_macs` of its operands."""
    return grouped_mm_macs(_shape(inputs[0]), _shape(inputs[1]))


# aten ops that multiply matrices. When a trace meets one of these without a handle, the count would
# silently drop it, so counting stops instead (see _trace_macs). Names as they appear in a TorchScript
# trace ("aten::" + op); the attention and convolution families also match by pattern below.
MATMUL_LIKE_OPS = frozenset({
    "mm", "bmm", "addmm", "addbmm", "baddbmm", "addmv", "mv", "addr", "matmul", "linear", "bilinear", "einsum",
    "dot", "vdot", "inner", "outer", "ger", "tensordot", "chain_matmul", "linalg_multi_dot", "linalg_matmul",
    "_grouped_mm", "_scaled_mm", "_scaled_grouped_mm", "_int_mm", "_weight_int8pack_mm", "_sparse_mm", "sspaddmm",
    "convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "cudnn_convolution", "mkldnn_convolution",
    "scaled_dot_product_attention", "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_flash_attention_forward", "_efficient_attention_forward", "_native_multi_head_attention",
    "_transformer_encoder_layer_fwd", "lstm", "gru", "rnn_tanh", "rnn_relu",
})


def is_matmul_like(op: str) -> bool:
    """Does ``op`` (``aten::mm``, ``aten::_scaled_dot_product_flash_attention`` ...) multiply matrices?

    Listed names (:data:`MATMUL_LIKE_OPS`), plus any op whose name says attention or convolution, or
    ends in ``mm`` (matrix-matrix). Interpolations (``upsample_bilinear2d``) and ``cummax`` are not.
    """
    name = op.split("::", 1)[-1].rstrip("_")
    convolution = name.startswith(("conv", "_conv", "cudnn_conv", "mkldnn_conv")) and "convert" not in name
    return name in MATMUL_LIKE_OPS or "attention" in name or convolution or name.endswith("mm")


def _matmul_handles() -> dict:
    """Op name -> handle for every matmul-type op; anything else is not counted."""
    from fvcore.nn.jit_handles import (addmm_flop_jit, bmm_flop_jit, conv_flop_jit, einsum_flop_jit,
                                       linear_flop_jit, matmul_flop_jit)

    return {
        "aten::linear": linear_flop_jit,
        "aten::addmm": addmm_flop_jit,
        "aten::mm": matmul_flop_jit,
        "aten::matmul": matmul_flop_jit,
        "aten::bmm": bmm_flop_jit,
        "aten::baddbmm": baddbmm_macs_jit,
        "aten::einsum": einsum_flop_jit,
        "aten::_convolution": conv_flop_jit,
        "aten::scaled_dot_product_attention": sdpa_macs_jit,
        "aten::_grouped_mm": grouped_mm_macs_jit,
    }


# ----------------------------------------------------------------------------------------------------
# Counting a model
# ----------------------------------------------------------------------------------------------------
@dataclass
class FlopCount:
    """A FLOP count of one model on a dummy batch, in one named convention.

    Attributes:
        total: the count, in ``convention`` units (MACs, FLOPs = 2 x MACs, or the paper's MACs).
        convention: ``macs``, ``flops`` or ``paper``.
        seq_len: tokens per sequence of the dummy batch.
        batch: sequences in the dummy batch.
        by_operator: traced counts per fvcore op kind (``linear``, ``matmul``,
            ``scaled_dot_product_attention`` ...), in ``convention`` units; empty for ``paper``.
        by_module: traced counts per submodule name ("" is the whole model); empty for ``paper``.
        by_component: closed-form parts (``qkvo``, ``ffn``) for ``paper``; empty for traced counts.
        uncounted_ops: ops seen in the trace and left out because they are not matmuls, with how many
            times each ran (e.g. ``aten::softmax``, ``aten::layer_norm``, ``aten::index_select``).
    """

    total: int
    convention: str
    seq_len: int
    batch: int
    by_operator: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)
    by_component: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    @property
    def giga(self) -> float:
        """``total`` / 1e9 (GMACs or GFLOPs, per ``convention``)."""
        return self.total / 1e9


_OUTPUT_FIELDS = ("last_hidden_state", "pooler_output", "logits")


class _Traced(nn.Module):
    """Calls ``model(input_ids=..., attention_mask=...)`` and returns its tensors as a tuple.

    A gapkit Student returns a dataclass and a Hugging Face model a ModelOutput; the JIT tracer needs
    tensors. The pooler and head outputs are returned too: the tracer drops ops whose results are
    never used, so returning only the last hidden state would silently leave the pooler out.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if isinstance(out, torch.Tensor):
            return out
        found = tuple(t for t in (getattr(out, f, None) for f in _OUTPUT_FIELDS) if isinstance(t, torch.Tensor))
        if not found and isinstance(out, (tuple, list)):
            found = tuple(t for t in out if isinstance(t, torch.Tensor))
        if not found:
            raise ModelError(
                f"Cannot count FLOPs of {type(self.model).__name__}: its output has no "
                f"{', '.join(_OUTPUT_FIELDS)} tensor and is not a tensor or a tuple of tensors."
            )
        return found


def _vocab_size(model: nn.Module) -> int:
    if isinstance(model, Student):
        return model.spec.vocab_size
    return int(getattr(getattr(model, "config", None), "vocab_size", None) or 2)


def dummy_batch(model: nn.Module, seq_len: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T), drawn from a fixed generator, and an all-ones attention mask (B, T).

    No padding, so every token goes through every layer and the counts are those of a full batch.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(_vocab_size(model), (batch, seq_len), generator=generator).to(device)  # (B, T)
    return ids, torch.ones_like(ids)


def _trace_macs(model: nn.Module, seq_len: int, batch: int):
    """fvcore's traced MACs of one forward pass on :func:`dummy_batch`, matmul-type ops only."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()  # no dropout, no gate noise: the inference path
    try:
        inputs = dummy_batch(model, seq_len, batch)
        analysis = FlopCountAnalysis(_Traced(model), inputs)
        # Replace fvcore's defaults (which also count LayerNorm, BatchNorm, upsampling) by matmuls only.
        analysis.clear_op_handles().set_op_handle(**_matmul_handles())
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad(), warnings.catch_warnings():
            # Data-dependent MoE dispatch (counts.tolist()) makes the tracer warn; the trace is still
            # exactly the computation of this batch, which is what is being counted.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            total = analysis.total()
            by_operator = dict(analysis.by_operator())
            modules = analysis.by_module()
            uncounted = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
    skipped = sorted(op for op in uncounted if is_matmul_like(op))
    if skipped:
        raise ModelError(
            f"Cannot count the FLOPs of {type(model).__name__}: its forward pass runs {', '.join(skipped)}, a "
            f"matrix multiply that no FLOP handle counts, so the total would silently leave it out; add a "
            f"handle for it in gapkit.flops._matmul_handles."
        )
    prefix = "model."
    by_module = {
        ("" if name == "model" else name[len(prefix):]): count
        for name, count in modules.items()
        if count and (name == "model" or name.startswith(prefix))
    }
    return int(total), {k: int(v) for k, v in by_operator.items()}, by_module, uncounted


def count_flops(model: nn.Module, seq_len: int = PAPER_SEQ_LEN, batch: int = 1,
                convention: str = "macs") -> FlopCount:
    """Count the FLOPs of one forward pass of ``model`` on a dummy batch, in ``convention``.

    ``macs`` and ``flops`` trace the model with ``fvcore.nn.FlopCountAnalysis`` (handles registered
    for scaled_dot_product_attention, baddbmm and _grouped_mm, which fvcore lacks; non-matmul ops not
    counted; a matmul-type op without a handle raises).
    ``paper`` is the closed form of the model's shape (:func:`analytic_count`); nothing runs.

    Args:
        model: a gapkit :class:`~gapkit.models.Student` (dense or MiniMoE) or a Hugging Face encoder
            (BertModel, RobertaModel, ... with SDPA or eager attention) whose forward takes
            ``input_ids`` and ``attention_mask``.
        seq_len: tokens per sequence.
        batch: sequences (the count is linear in it).
        convention: ``macs``, ``flops`` (2 x macs) or ``paper``.
    Returns:
        A :class:`FlopCount`.
    Raises:
        ModelError: ``model`` is not a module whose forward takes ``input_ids`` and ``attention_mask`` (a
            name goes to :func:`describe`); the trace runs a matmul-type op that no handle counts (see
            :func:`is_matmul_like`).
        ValueError: an unknown convention, or a ``seq_len`` / ``batch`` that is not a positive integer.
    """
    _check_model(model)
    _check_convention(convention)
    _check_sizes(seq_len, batch)
    if convention == "paper":
        parts = analytic_macs(model_spec(model), seq_len, batch)
        by_component = {k: parts[k] for k in ("qkvo", "ffn")}
        return FlopCount(sum(by_component.values()), convention, seq_len, batch, by_component=by_component)
    total, by_operator, by_module, uncounted = _trace_macs(model, seq_len, batch)
    scale = 2 if convention == "flops" else 1
    return FlopCount(
        total=total * scale,
        convention=convention,
        seq_len=seq_len,
        batch=batch,
        by_operator={k: v * scale for k, v in by_operator.items()},
        by_module={k: v * scale for k, v in by_module.items()},
        uncounted_ops=uncounted,
    )


def model_spec(model: nn.Module) -> StudentSpec:
    """The shape of ``model``: a Student's spec, or one read from a Hugging Face model's config.

    Raises:
        ModelError: the model has neither a spec nor a readable encoder config.
    """
    if isinstance(model, Student):
        return model.spec
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ModelError(
            f"Cannot read the shape of {type(model).__name__}: it is neither a gapkit Student nor a "
            f"Hugging Face model with a config."
        )
    return spec_from_hf_config(config.to_dict(), where=f"The config of {type(model).__name__}")


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameters of ``model``, total and active.

    Args:
        model: a gapkit Student (active = one expert per MoE block plus the gates, what one token
            uses) or any module (active = total).
    Returns:
        ``{"total": ..., "active": ...}``.
    """
    if isinstance(model, Student):
        return dict(total=model.num_parameters(), active=model.num_parameters(active=True))
    total = sum(p.numel() for p in model.parameters())
    return dict(total=total, active=total)


# ----------------------------------------------------------------------------------------------------
# Model references: preset, shape, local folder, Hub name
# ----------------------------------------------------------------------------------------------------
@dataclass
class ResolvedModel:
    """A model reference resolved to a shape and a way to build it, before any compute.

    Attributes:
        ref: the reference as the user wrote it.
        spec: the shape (per-expert heads and FFN for a MiniMoE).
        hf_config: the transformers config of a Hugging Face encoder; None for a gapkit Student.
    """

    ref: str
    spec: StudentSpec
    hf_config: Any = None

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model with random weights, in eval mode; ``device="meta"`` allocates nothing.

        Weights are never loaded: FLOPs and parameter counts depend on shapes only.
        """
        with torch.device(device):
            if self.hf_config is None:
                # moefy=False: moefication changes initial values only, never shapes or counts.
                return Student(self.spec, moefy=False).eval()
            from transformers import AutoModel

            return AutoModel.from_config(self.hf_config).eval()


def _is_spec_name(ref: str) -> bool:
    """A preset (optionally with ``-x,yE``) or a shape string; a bad shape raises its own ValueError."""
    m = re.match(r"^(?P<base>.+?)-\d+,\d+E$", ref)
    return ref in PRESETS or (m is not None and m["base"] in PRESETS) or parse_shape(ref) is not None


def resolve_model(ref: str) -> ResolvedModel:
    """Resolve a MODEL argument without building or downloading weights.

    In order: a preset (``bert-base``, ``3L-384H``; see ``PRESETS``) or shape spec (``3L-384H-1,4E``)
    gives a gapkit Student; a local folder with a config.json, or a Hugging Face Hub name (config only,
    via ``transformers.AutoConfig``), gives a Hugging Face encoder, or a gapkit Student when the config
    is the MiniMoE authors' (it has a ``moe`` field).

    Args:
        ref: the reference.
    Returns:
        A :class:`ResolvedModel`.
    Raises:
        ModelError: none of the above (one sentence naming ``ref``).
    """
    try:
        if _is_spec_name(ref):
            return ResolvedModel(ref, spec_from_name(ref))
    except ValueError as err:
        raise ModelError(str(err)) from None
    from transformers import AutoConfig

    if os.path.isdir(ref):
        path = os.path.join(ref, "config.json")
        if not os.path.isfile(path):
            raise ModelError(f"Model folder {ref!r} has no config.json, so its shape is unknown.")
        where = f"The config.json in {ref!r}"
        try:
            with open(path) as f:
                raw = json.load(f)
            # The MiniMoE authors' config (a `moe` field) is read as is: it describes a gapkit Student.
            if isinstance(raw, dict) and raw.get("moe"):
                return ResolvedModel(ref, spec_from_hf_config(raw, name=ref, where=where))
            config = AutoConfig.from_pretrained(ref)
        except (OSError, ValueError) as err:  # unreadable JSON, unknown model_type ...
            if isinstance(err, ModelError):
                raise
            raise ModelError(f"Cannot read {path} as a Hugging Face config: {_first_sentence(err)}") from err
    else:
        try:
            config = AutoConfig.from_pretrained(ref)
        except Exception as err:  # offline, misspelt, not a repo id, no such repository ...
            raise ModelError(
                f"Unknown model {ref!r}: it is neither a preset (the paper's sizes such as bert-base or 3L-384H, "
                f"or a public BERT checkpoint such as google/bert_uncased_L-4_H-256_A-4: gapkit.models.PRESETS), "
                f"a shape spec like '3L-384H-1,4E', a local folder, nor reachable on the Hugging Face Hub."
            ) from err
        where = f"The Hub config of {ref!r}"
    config_dict = config.to_dict()
    spec = spec_from_hf_config(config_dict, name=ref, where=where)
    # A MiniMoE checkpoint on the Hub (a BertConfig plus `moe`) is a gapkit Student too.
    return ResolvedModel(ref, spec, None if config_dict.get("moe") else config)


def _first_sentence(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text.split(". ")[0].rstrip(".") + "."


def describe(model_ref: str | ResolvedModel, seq_len: int = PAPER_SEQ_LEN,
             convention: str = "macs") -> dict:
    """One table row for ``gapkit flops``: shape, parameters and GFLOPs of a model at batch 1.

    The model is built from its shape, never from weights: on the meta device (no memory, no
    arithmetic; the trace needs shapes only), except a MiniMoE student under ``macs``/``flops``,
    which runs on CPU with random weights because its dispatch reads the routing decisions.

    Args:
        model_ref: a preset, shape spec, local folder or Hub name (see :func:`resolve_model`), or a
            model already resolved.
        seq_len: tokens in the one dummy sequence.
        convention: ``macs``, ``flops`` or ``paper``.
    Returns:
        ``{model, layers, hidden, heads, experts, params_total, params_active, gflops, convention,
        seq_len}``; ``experts`` is "dense" or "x,yE"; ``gflops`` is in ``convention`` units / 1e9.
    Raises:
        ModelError: an unknown model, or ``seq_len`` beyond its position embeddings.
    """
    _check_convention(convention)
    resolved = model_ref if isinstance(model_ref, ResolvedModel) else resolve_model(model_ref)
    spec = resolved.spec
    if seq_len > spec.max_positions:
        raise ModelError(
            f"Sequence length {seq_len} exceeds the {spec.max_positions} positions of model {resolved.ref!r}."
        )
    # Counts depend on shapes only, so the model lives on the meta device (no memory, no arithmetic:
    # bert-large takes about a second). A MiniMoE student runs for real: its dispatch reads the
    # routing decisions, which need values.
    runs_for_real = convention != "paper" and resolved.hf_config is None and spec.is_moe
    model = resolved.build("cpu" if runs_for_real else "meta")
    params = count_params(model)
    try:
        count = count_flops(model, seq_len=seq_len, batch=1, convention=convention)
    except (NotImplementedError, RuntimeError):
        if runs_for_real:
            raise
        # A forward pass with data-dependent Python (rare in encoders) cannot run on meta tensors.
        count = count_flops(resolved.build("cpu"), seq_len=seq_len, batch=1, convention=convention)
    return dict(
        model=resolved.ref,
        layers=spec.layers,
        hidden=spec.hidden,
        heads=spec.heads,
        experts=spec.experts,
        params_total=params["total"],
        params_active=params["active"],
        gflops=count.giga,
        convention=convention,
        seq_len=seq_len,
    )
