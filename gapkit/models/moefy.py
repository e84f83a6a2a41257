"""MiniMoE "moefication": experts made by splitting a wide dense layer (the authors' initialisation).

The student is first built wide (x * heads attention heads, y * F FFN neurons) with BERT's random
initialisation. Each expert then takes the first 2/3 of one expert's units from the front of the
wide layer (shared by all experts) and the rest from a strided share of the remaining units
(expert i takes units i, i + E, i + 2E, ...). The copies become independent parameters; gates keep
their fresh nn.Linear initialisation. A "unit" is one neuron for the FFN and one head (head_size
rows) for attention.

The authors' code asserts that two thirds of one expert's units is a whole number (their
``MoEBertModel.moefy``). gapkit refuses to moefy attention experts whose head count is not a multiple
of 3 (flooring would change what is shared: 2 of 4 heads instead of 2 2/3), and logs a warning for
FFN experts whose neuron count is not (the shared part is then floor(2F/3) neurons, less than one
neuron away from the authors' 2F/3).
"""

from __future__ import annotations

import logging

import torch

from ..errors import ConfigError
from .spec import StudentSpec

logger = logging.getLogger(__name__)


def check_moefiable(spec: StudentSpec) -> None:
    """Refuse a spec whose attention experts cannot be moefied as the authors do.

    Raises:
        ConfigError: attention experts (x > 1) with a head count not divisible by 3.
    """
    if spec.attn_experts > 1 and spec.heads % 3:
        raise ConfigError(
            f"Student {spec.name}: moefication shares 2/3 of each attention expert's heads, so heads must be "
            f"a multiple of 3 (got {spec.heads}); choose heads like 3, 6 or 12, or build it with moefy=False."
        )
    if spec.ffn_experts > 1 and spec.ffn % 3:
        logger.warning(
            "Student %s: ffn=%d is not a multiple of 3, so moefication shares floor(2/3 * %d) = %d neurons per "
            "FFN expert (the authors' code requires a multiple of 3).",
            spec.name, spec.ffn, spec.ffn, (2 * spec.ffn) // 3,
        )


def moefy_linear(weight: torch.Tensor, bias: torch.Tensor | None, num_experts: int, expert_units: int,
                 unit_size: int = 1, split_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split one wide linear layer into ``num_experts`` stacked experts.

    Args:
        weight: (out, in) wide weight.
        bias: (out,) wide bias or None.
        num_experts: E.
        expert_units: units per expert (heads of one expert, or FFN neurons of one expert).
        unit_size: rows/columns per unit (head_size for attention, 1 for the FFN).
        split_dim: 0 to split output rows (Q/K/V, FFN intermediate), 1 to split input columns
            (attention output, FFN output; the bias is then copied whole to every expert).
    Returns:
        weight (E, out_e, in_e) and bias (E, out_e) or None.
    """
    shared = (2 * expert_units) // 3 * unit_size  # first 2/3 of an expert, shared by all
    size = expert_units * unit_size
    weights, biases = [], []
    if split_dim == 0:
        specific = weight[shared:].reshape(-1, unit_size, weight.shape[1])  # (units, unit_size, in)
        for e in range(num_experts):
            own = specific[e::num_experts].reshape(-1, weight.shape[1])
            weights.append(torch.cat([weight[:shared], own])[:size])
            if bias is not None:
                own_b = bias[shared:].reshape(-1, unit_size)[e::num_experts].reshape(-1)
                biases.append(torch.cat([bias[:shared], own_b])[:size])
    else:
        out = weight.shape[0]
        specific = weight[:, shared:].reshape(out, -1, unit_size)  # (out, units, unit_size)
        for e in range(num_experts):
            own = specific[:, e::num_experts].reshape(out, -1)
            weights.append(torch.cat([weight[:, :shared], own], dim=1)[:, :size])
            if bias is not None:
                biases.append(bias.clone())
    return torch.stack(weights).contiguous(), (torch.stack(biases).contiguous() if bias is not None else None)


@torch.no_grad()
def moefy_init(model, generator: torch.Generator | None = None) -> None:
    """Initialise every MoE block of ``model`` (a :class:`gapkit.models.Student`) by moefication."""
    spec: StudentSpec = model.spec
    check_moefiable(spec)
    std = spec.initializer_range

    def wide(out_features, in_features):
        return torch.empty(out_features, in_features).normal_(0.0, std, generator=generator)

    for layer in model.encoder.layer:
        if spec.attn_experts > 1:
            E, A, H = spec.attn_experts, spec.attn_size, spec.hidden
            for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                w, b = moefy_linear(wide(E * A, H), torch.zeros(E * A), E, spec.heads, spec.head_size, 0)
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            w, b = moefy_linear(wide(H, E * A), torch.zeros(H), E, spec.heads, spec.head_size, 1)
            layer.attention.output.dense.weight.copy_(w)
            layer.attention.output.dense.bias.copy_(b)
        if spec.ffn_experts > 1:
            E, Fe, H = spec.ffn_experts, spec.ffn, spec.hidden
            w, b = moefy_linear(wide(E * Fe, H), torch.zeros(E * Fe), E, Fe, 1, 0)
            layer.intermediate.dense.weight.copy_(w)
            layer.intermediate.dense.bias.copy_(b)
            w, b = moefy_linear(wide(H, E * Fe), torch.zeros(H), E, Fe, 1, 1)
            layer.output.dense.weight.copy_(w)
            layer.output.dense.bias.copy_(b)
