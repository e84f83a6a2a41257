"""The student encoder: a BERT-style model, dense or MiniMoE, in one file.

Read top to bottom: embeddings -> layers (attention block, FFN block) -> pooler -> optional task
head. A block with more than one expert goes router -> dispatch -> experts -> combine:

* the router (``Router``) returns, per token, gate probabilities, the chosen expert and its weight;
* ``dispatch_sorted`` groups the tokens of each expert (one sort), runs each expert on its group and
  scatters the results back; ``dispatch_loop`` is the plain loop-over-experts reference kept beside it;
  on Hopper GPUs in bf16 the FFN experts run as two grouped GEMMs instead (``Layer.grouped_ffn``),
  which never reads token counts back to the host;
* the *static* dispatch (``dispatch="static"``, and always under ``torch.compile``) reads nothing back
  to the host and has no data-dependent shape, attention experts included, so that a whole forward
  and backward is one graph (CUDA graphs can replay it): grouped GEMMs over expert-sorted tokens where
  they apply (``grouped_linear``), else every expert on every token keeping each token's own
  (``gathered_linear``, E times the block's multiply-adds; the portable fallback);
* an expert (one slice of an ``ExpertLinear`` stack) never sees routing;
* the chosen expert's output is scaled by its gate probability before the dropout-residual-LayerNorm,
  ``LayerNorm(p * Dropout(expert(x)) + x)``, as the MiniMoE authors do.

Parameter names follow Hugging Face ``BertModel`` (``encoder.layer.N.attention.self.query`` ...), so a
dense student's state dict *is* a BertModel state dict, and a MiniMoE student's is the authors'
released layout without its ``bert.`` prefix (stacked ``[E, out, in]`` expert weights, ``attn_gate``,
``ffn_gate``).

Dimension names: B batch, T sequence, H hidden, A = heads * head_size, F FFN neurons of one expert,
E experts, N = B*T tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..routing import BlockRouting, RoutingRecord, switch_load_balance
from . import layout
from .spec import StudentSpec

ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # BERT's exact erf GELU
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


@dataclass
class StudentOutput:
    """What a student's forward pass returns; every auxiliary value is here, none on the modules.

    Attributes:
        last_hidden_state: (B, T, H).
        pooler_output: (B, H), tanh(dense(h[CLS])) as in BERT.
        hidden_states: L + 1 tensors (B, T, H), embeddings first, when asked for.
        routing: per layer and block, the routing of every token (empty lists for a dense student).
        load_balance: the aggregated load balance (1.0 for a dense student), as the authors define it.
            Its weight in the training loss is the run's (``LossWeights.load_balance``), not the model's.
        qkv: (Q, K, V), each (B, T, A), of layer ``qkv_layer`` when asked for (relation distillation).
        logits: task-head output when the student has a head: (B, C) or (B, T, C).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None
    routing: RoutingRecord
    load_balance: torch.Tensor
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    logits: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------
# Experts, router, dispatch
# ----------------------------------------------------------------------------------------------------
class ExpertLinear(nn.Module):
    """E independent linear maps stored stacked, ``weight`` (E, out, in) and ``bias`` (E, out).

    With one expert the weight is a plain (out, in) matrix, as in BERT and in the authors' checkpoints.
    """

    def __init__(self, in_features: int, out_features: int, num_experts: int = 1):
        super().__init__()
        self.in_features, self.out_features, self.num_experts = in_features, out_features, num_experts
        lead = (num_experts,) if num_experts > 1 else ()
        self.weight = nn.Parameter(torch.empty(*lead, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(*lead, out_features))

    def forward(self, x: torch.Tensor, expert: int = 0) -> torch.Tensor:
        if self.num_experts == 1:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.weight[expert], self.bias[expert])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, num_experts={self.num_experts}"


@dataclass
class RouterOutput:
    probs: torch.Tensor  # (N, E) gate distribution
    expert: torch.Tensor  # (N,) chosen expert
    weight: torch.Tensor  # (N,) factor the expert output is scaled by (its gate probability)


class Router(nn.Module):
    """Top-1 token router of one MoE block.

    ``learned``: logits = Linear(H -> E) of the block input; in training, uniform noise in
    [-eps, eps] is added to the logits (the authors add 1 + U(-eps, eps), the constant cancelling in
    the softmax); softmax; argmax. The chosen probability scales the expert output.
    ``random`` / ``hash`` (ablations): expert uniform at random / token id mod E, weight 1, and a
    one-hot distribution so that load statistics still describe the split.

    The gate's parameters sit directly on the router (``weight``, ``bias``) so that their names match
    the authors' checkpoints (``encoder.layer.N.ffn_gate.weight``).
    """

    def __init__(self, hidden: int, num_experts: int, mode: str = "learned", noise: float = 0.0):
        super().__init__()
        self.num_experts, self.mode, self.noise = num_experts, mode, noise
        if mode == "learned":
            self.weight = nn.Parameter(torch.empty(num_experts, hidden))
            self.bias = nn.Parameter(torch.empty(num_experts))
            self.reset_parameters()

    def reset_parameters(self):
        # nn.Linear's default initialisation: the authors re-create the gates after BERT's init.
        if self.mode == "learned":
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(self.weight.shape[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None) -> RouterOutput:
        if self.mode == "learned":
            logits = F.linear(x, self.weight, self.bias)  # (N, E)
            if self.training and self.noise > 0:
                logits = logits + (torch.rand_like(logits) * 2 - 1) * self.noise
            probs = logits.softmax(-1)
            expert = probs.argmax(-1)
            weight = probs.gather(-1, expert[:, None]).squeeze(-1)
            return RouterOutput(probs, expert, weight)
        if self.mode == "random":
            expert = torch.randint(self.num_experts, (x.shape[0],), device=x.device)
        else:  # hash
            if token_ids is None:
                raise ValueError("Hash routing needs input_ids: call the student with input_ids, not inputs_embeds.")
            expert = token_ids.reshape(-1) % self.num_experts
        probs = F.one_hot(expert, self.num_experts).to(x.dtype)
        return RouterOutput(probs, expert, torch.ones_like(expert, dtype=x.dtype))

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, mode={self.mode}, noise={self.noise}"


ExpertFn = Callable[[int, torch.Tensor], torch.Tensor]


def dispatch_sorted(x: torch.Tensor, expert: torch.Tensor, num_experts: int, fn: ExpertFn) -> torch.Tensor:
    """Run ``fn(e, tokens of expert e)`` for every expert and put the results back in token order.

    One stable sort groups the tokens; the Python loop is over experts only.

    Args:
        x: (N, D_in) tokens.
        expert: (N,) expert of each token.
        fn: maps (expert index, (n_e, D_in)) -> (n_e, D_out).
    Returns:
        (N, D_out).
    """
    order = expert.argsort(stable=True)  # (N,) token positions grouped by expert
    counts = torch.bincount(expert, minlength=num_experts).tolist()
    groups = x.index_select(0, order).split(counts)
    outputs = [fn(e, group) for e, group in enumerate(groups) if counts[e]]
    grouped = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # (N, D_out) in expert order
    return grouped.new_empty(grouped.shape).index_copy(0, order, grouped)


def dispatch_loop(x: torch.Tensor, expert: torch.Tensor, num_experts: int, fn: ExpertFn) -> torch.Tensor:
    """Reference for :func:`dispatch_sorted`: a boolean mask per expert, no sorting."""
    out = None
    for e in range(num_experts):
        mask = expert == e
        if not mask.any():
            continue
        y = fn(e, x[mask])
        if out is None:
            out = x.new_zeros(x.shape[0], y.shape[-1])
        out = out.masked_scatter(mask[:, None], y)
    return out


DISPATCH = {"sorted": dispatch_sorted, "loop": dispatch_loop}
# "auto": the grouped-GEMM FFN path where it applies (see Layer.grouped_ffn), else "sorted".
# "static": no host sync and static shapes (grouped_linear / gathered_linear), as under torch.compile.
DISPATCH_MODES = ("auto", "sorted", "loop", "static")


@torch.compiler.assume_constant_result
def _hopper(device_index: int) -> bool:
    # A fact of the machine: torch.compile folds it into the graph instead of tracing the CUDA query.
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def grouped_mm_applies(x: torch.Tensor, *sizes: int) -> bool:
    """Can experts run as grouped GEMMs (``torch._grouped_mm``)? Only on a CUDA device of compute
    capability 9.0+ (Hopper) computing in bf16, with sizes that are multiples of 8; that kernel then
    needs no host synchronisation, which the sorted dispatch's split does."""
    if not (x.is_cuda and hasattr(torch, "_grouped_mm")):
        return False
    bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cuda")
                                         and torch.get_autocast_dtype("cuda") == torch.bfloat16)
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    return bf16 and all(n % 8 == 0 for n in sizes) and _hopper(index)


@dataclass
class ExpertGroups:
    """Tokens grouped by expert on the device, without reading a count back to the host.

    Attributes:
        order: (N,) token positions sorted by expert (stable).
        expert: (N,) the expert of each sorted row.
        ends: (E,) int32, the end row of each expert's group in sorted order (``torch._grouped_mm``'s
            ``offs``); an expert without tokens has an empty group.
    """

    order: torch.Tensor
    expert: torch.Tensor
    ends: torch.Tensor

    @classmethod
    def of(cls, expert: torch.Tensor, num_experts: int) -> "ExpertGroups":
        order = expert.argsort(stable=True)  # (N,)
        # scatter_add, not bincount: on a GPU bincount reads the maximum back to the host.
        counts = torch.zeros(num_experts, dtype=torch.int32, device=expert.device).scatter_add_(
            0, expert, torch.ones_like(expert, dtype=torch.int32))  # (E,)
        return cls(order, expert.index_select(0, order), counts.cumsum(0, dtype=torch.int32))

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) in token order -> (N, D) grouped by expert."""
        return x.index_select(0, self.order)

    def unsort(self, y: torch.Tensor) -> torch.Tensor:
        """(N, D) grouped by expert -> (N, D) in token order."""
        return y.new_empty(y.shape).index_copy(0, self.order, y)


def grouped_linear(xs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
    """Every row of ``xs`` (grouped by expert) through its expert's linear map: one grouped GEMM, in bf16.

    Args:
        xs: (N, D_in) rows grouped by expert (``groups.sort``).
        weight, bias: (E, D_out, D_in), (E, D_out) expert stacks.
    Returns:
        (N, D_out) bf16, rows still grouped by expert.
    """
    y = torch._grouped_mm(xs.to(torch.bfloat16), weight.to(torch.bfloat16).transpose(1, 2), offs=groups.ends)
    return y + bias.to(torch.bfloat16).index_select(0, groups.expert)  # (N, D_out)


def gathered_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """Every token through its expert's linear map by running all E experts on all tokens (one GEMM of
    E * D_out columns) and keeping each token's own: static shapes on any device, at E times the
    multiply-adds of the block (the static dispatch's fallback where grouped GEMMs do not apply).

    Args:
        x: (N, D_in) tokens in token order.
        weight, bias: (E, D_out, D_in), (E, D_out) expert stacks.
        expert: (N,) expert of each token.
    Returns:
        (N, D_out).
    """
    E, D_out, D_in = weight.shape
    y = F.linear(x, weight.reshape(E * D_out, D_in), bias.reshape(E * D_out)).view(-1, E, D_out)  # (N, E, D_out)
    return y.gather(1, expert.view(-1, 1, 1).expand(-1, 1, D_out)).squeeze(1)  # (N, D_out)


def static_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """Each token through its own expert's linear map with the static dispatch: grouped GEMMs where
    they apply (:func:`grouped_mm_applies`), else :func:`gathered_linear`. x: (N, D_in) -> (N, D_out)."""
    E, D_out, D_in = weight.shape
    if grouped_mm_applies(x, D_in, D_out):
        groups = ExpertGroups.of(expert, E)
        return groups.unsort(grouped_linear(groups.sort(x), weight, bias, groups))
    return gathered_linear(x, weight, bias, expert)


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------
class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (BERT)."""

    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.word_embeddings = nn.Embedding(spec.vocab_size, spec.hidden, padding_idx=spec.pad_token_id)
        self.position_embeddings = nn.Embedding(spec.max_positions, spec.hidden)
        self.token_type_embeddings = nn.Embedding(spec.type_vocab_size, spec.hidden)
        self.LayerNorm = nn.LayerNorm(spec.hidden, eps=spec.layer_norm_eps)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds=None) -> torch.Tensor:
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        x = x + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))  # (B, T, H)


class _QKV(nn.Module):
    """Holds the Q/K/V projections under BERT's names (``attention.self.query`` ...)."""

    def __init__(self, spec: StudentSpec):
        super().__init__()
        E = spec.attn_experts
        self.query = ExpertLinear(spec.hidden, spec.attn_size, E)
        self.key = ExpertLinear(spec.hidden, spec.attn_size, E)
        self.value = ExpertLinear(spec.hidden, spec.attn_size, E)


class _Output(nn.Module):
    """Output projection + LayerNorm under BERT's names (``*.output.dense``, ``*.output.LayerNorm``)."""

    def __init__(self, in_features: int, spec: StudentSpec, num_experts: int):
        super().__init__()
        self.dense = ExpertLinear(in_features, spec.hidden, num_experts)
        self.LayerNorm = nn.LayerNorm(spec.hidden, eps=spec.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.self = _QKV(spec)
        self.output = _Output(spec.attn_size, spec, spec.attn_experts)


class _Intermediate(nn.Module):
    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.dense = ExpertLinear(spec.hidden, spec.ffn, spec.ffn_experts)


class Layer(nn.Module):
    """One transformer layer: attention block then FFN block, each dense or MiniMoE."""

    def __init__(self, spec: StudentSpec, dispatch: str = "sorted"):
        super().__init__()
        self.spec = spec
        self.attention = _Attention(spec)
        self.intermediate = _Intermediate(spec)
        self.output = _Output(spec.ffn, spec, spec.ffn_experts)
        # A block is MiniMoE when it has a router; the authors' dense blocks (1 expert) have none.
        def router(num_experts):
            return Router(spec.hidden, num_experts, spec.routing, spec.gate_noise) if num_experts > 1 else None

        self.attn_gate = router(spec.attn_experts)
        self.ffn_gate = router(spec.ffn_experts)
        self.act = ACT_FNS[spec.hidden_act]
        self.dropout = nn.Dropout(spec.dropout)
        self.grouped = dispatch == "auto"
        self.static = dispatch == "static"
        self.dispatch = DISPATCH["sorted" if dispatch in ("auto", "static") else dispatch]

    def uses_static(self) -> bool:
        """Whether MoE blocks take the static (sync-free) path: asked for, or traced by torch.compile,
        which cannot capture the sorted dispatch's split by token counts."""
        return self.static or torch.compiler.is_compiling()

    # -- attention -------------------------------------------------------------------------------
    def attend(self, q, k, v, mask) -> torch.Tensor:
        """Scaled dot-product attention over the whole sequence. q, k, v: (B, T, A); mask: additive (B, 1, 1, T)."""
        B, T, _ = q.shape
        heads, d = self.spec.heads, self.spec.head_size
        q, k, v = (t.view(B, T, heads, d).transpose(1, 2) for t in (q, k, v))  # (B, heads, T, d)
        p = self.spec.attention_dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, heads, T, d)
        return ctx.transpose(1, 2).reshape(B, T, heads * d)  # (B, T, A)

    def attention_block(self, h, mask, token_ids, counted=None):
        """Returns (output (B, T, H), routing or None, (q, k, v)). ``counted``: see :meth:`forward`."""
        qkv, out = self.attention.self, self.attention.output
        if self.attn_gate is None:
            q, k, v = qkv.query(h), qkv.key(h), qkv.value(h)  # (B, T, A)
            a = self.dropout(out.dense(self.attend(q, k, v, mask)))
            return out.LayerNorm(a + h), None, (q, k, v)

        B, T, H = h.shape
        x = h.reshape(B * T, H)  # (N, H)
        route = self.attn_gate(x, token_ids)
        # Each token's Q, K and V come from its own expert; attention then runs over the whole sequence.
        A = self.spec.attn_size
        E = self.attn_gate.num_experts
        if self.uses_static():
            w = torch.cat([qkv.query.weight, qkv.key.weight, qkv.value.weight], 1)  # (E, 3A, H)
            b = torch.cat([qkv.query.bias, qkv.key.bias, qkv.value.bias], 1)  # (E, 3A)
            q, k, v = static_linear(x, w, b, route.expert).view(B, T, 3 * A).split(A, -1)
            ctx = self.attend(q, k, v, mask).reshape(B * T, A)  # (N, A)
            a = static_linear(ctx, out.dense.weight, out.dense.bias, route.expert)  # (N, H)
        else:
            qkv_fn = lambda e, xe: torch.cat([qkv.query(xe, e), qkv.key(xe, e), qkv.value(xe, e)], -1)
            q, k, v = self.dispatch(x, route.expert, E, qkv_fn).view(B, T, 3 * A).split(A, -1)
            ctx = self.attend(q, k, v, mask).reshape(B * T, A)  # (N, A)
            a = self.dispatch(ctx, route.expert, E, lambda e, ce: out.dense(ce, e))  # (N, H)
        a = route.weight[:, None] * self.dropout(a)
        return out.LayerNorm(a + x).view(B, T, H), self._record(route, B, T, counted), (q, k, v)

    # -- feed-forward ----------------------------------------------------------------------------
    def expert_ffn(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s FFN, a plain two-layer MLP; it never sees routing."""
        return self.output.dense(self.act(self.intermediate.dense(x, e)), e)

    def ffn_block(self, h, token_ids, counted=None):
        """Returns (output (B, T, H), routing or None). ``counted``: see :meth:`forward`."""
        if self.ffn_gate is None:
            return self.output.LayerNorm(self.dropout(self.expert_ffn(0, h)) + h), None
        B, T, H = h.shape
        x = h.reshape(B * T, H)  # (N, H)
        route = self.ffn_gate(x, token_ids)
        E = self.ffn_gate.num_experts
        if (self.grouped or self.uses_static()) and grouped_mm_applies(x, H, self.spec.ffn):
            y = self.grouped_ffn(x, route.expert, E)
        elif self.uses_static():
            up, down = self.intermediate.dense, self.output.dense
            y = gathered_linear(self.act(gathered_linear(x, up.weight, up.bias, route.expert)),
                                down.weight, down.bias, route.expert)  # (N, H)
        else:
            y = self.dispatch(x, route.expert, E, self.expert_ffn)  # (N, H)
        y = route.weight[:, None] * self.dropout(y)
        return self.output.LayerNorm(y + x).view(B, T, H), self._record(route, B, T, counted)

    def grouped_ffn(self, x: torch.Tensor, expert: torch.Tensor, num_experts: int) -> torch.Tensor:
        """The FFN experts as two grouped GEMMs over expert-sorted tokens, in bf16 (GPU fast path).

        The same computation as ``dispatch_sorted(x, expert, E, self.expert_ffn)`` (tested against it
        on GPU), without moving the per-expert token counts to the host; tokens are sorted once for both.
        """
        groups = ExpertGroups.of(expert, num_experts)
        up, down = self.intermediate.dense, self.output.dense  # (E, F, H), (E, H, F) stacks
        h = self.act(grouped_linear(groups.sort(x), up.weight, up.bias, groups))  # (N, F) grouped by expert
        return groups.unsort(grouped_linear(h, down.weight, down.bias, groups))  # (N, H)

    @staticmethod
    def _record(route: RouterOutput, B: int, T: int, counted: torch.Tensor | None = None) -> BlockRouting:
        return BlockRouting(
            expert=route.expert.view(B, T),
            prob=route.weight.view(B, T),
            probs=route.probs.view(B, T, -1),
            load_balance=switch_load_balance(route.probs, route.expert,
                                             counted.reshape(-1) if counted is not None else None),
        )

    def forward(self, h, mask, token_ids=None, counted=None):
        h, attn_routing, qkv = self.attention_block(h, mask, token_ids, counted)
        h, ffn_routing = self.ffn_block(h, token_ids, counted)
        return h, attn_routing, ffn_routing, qkv


class _Encoder(nn.Module):
    def __init__(self, spec: StudentSpec, dispatch: str):
        super().__init__()
        self.layer = nn.ModuleList(Layer(spec, dispatch) for _ in range(spec.layers))


class _Pooler(nn.Module):
    def __init__(self, spec: StudentSpec):
        super().__init__()
        self.dense = nn.Linear(spec.hidden, spec.hidden)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))  # (B, H) from the [CLS] token


TASK_KINDS = ("sequence", "token")


class Student(nn.Module):
    """A dense or MiniMoE BERT-style student built from a :class:`StudentSpec`.

    Args:
        spec: the architecture.
        num_labels: size of an optional task head (1 for regression); 0 for no head.
        task: ``sequence`` (head on the pooled [CLS], like BertForSequenceClassification) or
            ``token`` (head on every token, like BertForTokenClassification).
        dispatch: for MoE blocks, ``auto`` (grouped GEMMs for the FFN experts on Hopper GPUs in bf16,
            else ``sorted``), ``sorted`` (one sort, a loop over experts), ``loop`` (the reference) or
            ``static`` (no host sync, static shapes; see the module docstring). Under ``torch.compile``
            every MoE block takes the static path whatever this says.
        moefy: initialise MoE experts by splitting a wide dense init (the authors' "moefication");
            False gives each expert an independent BERT init.
    """

    def __init__(self, spec: StudentSpec, num_labels: int = 0, task: str = "sequence",
                 dispatch: str = "auto", moefy: bool = True):
        super().__init__()
        if task not in TASK_KINDS:
            raise ValueError(f"Student task must be one of {', '.join(TASK_KINDS)}, got {task!r}.")
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"Student dispatch must be one of {', '.join(DISPATCH_MODES)}, got {dispatch!r}.")
        if num_labels < 0:
            raise ValueError(f"Student num_labels must be >= 0 (0: no head), got {num_labels}.")
        self.spec, self.num_labels, self.task = spec, num_labels, task
        self.embeddings = Embeddings(spec)
        self.encoder = _Encoder(spec, dispatch)
        self.pooler = _Pooler(spec)
        if num_labels:
            self.head_dropout = nn.Dropout(spec.dropout)
            self.classifier = nn.Linear(spec.hidden, num_labels)
        # The MiniMoE relation projection (see add_relation_projection): absent until distillation asks.
        self.relation: nn.ModuleDict | None = None
        self.reset_parameters(moefy=moefy)

    # -- read-only facts (the trainer's model protocol) ---------------------------------------------
    @property
    def hidden_size(self) -> int:
        """H, the width of the hidden states."""
        return self.spec.hidden

    @property
    def max_positions(self) -> int:
        """The longest sequence the position embeddings allow."""
        return self.spec.max_positions

    @property
    def is_moe(self) -> bool:
        """Whether any block has more than one expert."""
        return self.spec.is_moe

    # -- initialisation --------------------------------------------------------------------------
    def reset_parameters(self, moefy: bool = True, generator: torch.Generator | None = None):
        """BERT initialisation (normal(0, initializer_range), zero biases, unit LayerNorms); MoE experts
        by moefication of a wide dense init (see :func:`gapkit.models.moefy.moefy_init`); gates as nn.Linear."""
        std = self.spec.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, ExpertLinear)):
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, Router):
                module.reset_parameters()
        if moefy and self.spec.is_moe:
            from .moefy import moefy_init

            moefy_init(self, generator=generator)

    # -- the MiniMoE relation projection ----------------------------------------------------------
    def add_relation_projection(self) -> nn.ModuleDict:
        """The extra Q/K/V projection of the final hidden states that MiniMoE distils relations from.

        The authors' MiniMoE student does not take its relations from its last attention layer (with
        attention experts, that layer's Q/K/V mix experts); it projects the encoder's output with three
        H -> H linear maps (``MoEBertMiniLM.self`` in their code) used only by the distillation loss.
        Created once, with BERT's initialisation (normal(0, initializer_range) weights, zero biases), on
        the student's device and dtype; later calls return the same modules. It is saved and loaded
        with the student (tensor names ``self.query.weight`` ..., the authors' layout).

        Returns:
            ``nn.ModuleDict`` with ``query``, ``key``, ``value``, each ``nn.Linear(H, H)``.
        """
        if self.relation is None:
            H, std = self.spec.hidden, self.spec.initializer_range
            param = self.embeddings.word_embeddings.weight
            relation = nn.ModuleDict({k: nn.Linear(H, H) for k in ("query", "key", "value")})
            for lin in relation.values():
                nn.init.normal_(lin.weight, 0.0, std)
                nn.init.zeros_(lin.bias)
            self.relation = relation.to(device=param.device, dtype=param.dtype)
        return self.relation

    def relation_qkv(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V of the relation projection: ``hidden`` (B, T, H) -> three (B, T, H).

        Raises:
            ModelError: the student has no relation projection (call :meth:`add_relation_projection`).
        """
        if self.relation is None:
            from ..errors import ModelError

            raise ModelError(
                "This student has no relation projection: call student.add_relation_projection() before "
                "asking for relation_qkv, or take Q/K/V from the last layer (forward(output_qkv=True))."
            )
        r = self.relation
        return r["query"](hidden), r["key"](hidden), r["value"](hidden)  # (B, T, H) each

    # -- Hugging Face-style persistence --------------------------------------------------------------
    def save_pretrained(self, folder, label_names=None):
        """Write this student as a Hugging Face folder: :func:`gapkit.models.checkpoint.save_pretrained`."""
        return layout.save_pretrained(self, folder, label_names=label_names)

    @classmethod
    def from_pretrained(cls, folder, **kwargs):
        """Load a student: :func:`gapkit.models.checkpoint.load_student` (same arguments and return)."""
        return layout.load_pretrained(cls, folder, **kwargs)

    # -- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_qkv: bool = False,
        qkv_layer: int = -1,
        load_balance_mask: torch.Tensor | None = None,
    ) -> StudentOutput:
        """Encode a batch.

        Args:
            input_ids: (B, T) token ids (or ``inputs_embeds`` (B, T, H)).
            attention_mask: (B, T), 1 for real tokens, 0 for padding; all ones when None.
            token_type_ids, position_ids: (B, T); zeros and 0..T-1 when None.
            output_hidden_states: also return every layer's output.
            output_qkv: also return Q, K, V of layer ``qkv_layer`` (default the last).
            load_balance_mask: (B, T), 1 for the positions the load balance counts; None counts every
                position, padding included, as the authors do. A caller that pads a batch further (the
                compiled, length-bucketed training forward) passes 1 up to the batch's own length, so
                that the extra padding leaves the value unchanged.
        Returns:
            A :class:`StudentOutput`.
        """
        self.spec.check_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        B, T = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        if token_type_ids is None:
            token_type_ids = torch.zeros(B, T, dtype=torch.long, device=device)
        if position_ids is None:
            position_ids = torch.arange(T, device=device).expand(B, T)
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long, device=device)

        h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, H)
        # Additive key mask, BERT's convention: 0 for real tokens, the dtype's minimum for padding.
        mask = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min  # (B, 1, 1, T)
        token_ids = input_ids.reshape(-1) if input_ids is not None else None

        layers = self.encoder.layer
        qkv_index = qkv_layer % len(layers)
        hidden_states = [h] if output_hidden_states else None
        record, qkv = RoutingRecord(), None
        for i, layer in enumerate(layers):
            h, attn_routing, ffn_routing, layer_qkv = layer(h, mask, token_ids, load_balance_mask)
            record.attn.append(attn_routing)
            record.ffn.append(ffn_routing)
            if output_qkv and i == qkv_index:
                qkv = layer_qkv
            if output_hidden_states:
                hidden_states.append(h)

        pooled = self.pooler(h)
        logits = None
        if self.num_labels:
            features = pooled if self.task == "sequence" else h
            logits = self.classifier(self.head_dropout(features))  # (B, C) or (B, T, C)
        # A dense student's 1.0 is made on the device: a host tensor copied over would be a host sync.
        load_balance = record.load_balance() if record.is_moe else torch.ones((), device=h.device)
        return StudentOutput(
            last_hidden_state=h,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            routing=record,
            load_balance=load_balance,
            qkv=qkv,
            logits=logits,
        )

    # -- accounting ------------------------------------------------------------------------------
    def num_parameters(self, active: bool = False, embeddings: bool = True) -> int:
        """Parameter count; ``active`` counts one expert per block plus the gates (what one token uses).

        The relation projection (:meth:`add_relation_projection`) is left out of both counts: it serves
        only the distillation loss and never runs at inference.
        """
        total = 0
        for name, p in self.named_parameters():
            if name.startswith("relation."):
                continue
            if not embeddings and name.startswith("embeddings."):
                continue
            n = p.numel()
            if active and self._is_stacked(name, p):
                n //= p.shape[0]
            total += n
        return total

    def _is_stacked(self, name: str, p: torch.Tensor) -> bool:
        """Is ``p`` an expert stack (leading dim = experts)?"""
        module_name, _, leaf = name.rpartition(".")
        module = self.get_submodule(module_name)
        if not isinstance(module, ExpertLinear) or module.num_experts == 1:
            return False
        return p.dim() == (3 if leaf == "weight" else 2)
