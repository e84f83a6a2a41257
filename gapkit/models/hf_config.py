"""Read a student shape (:class:`StudentSpec`) from a Hugging Face config dict.

Two kinds of config.json are understood:

* a plain encoder config: BertConfig and the families that share its field names (RoBERTa, ELECTRA,
  XLM-R, MiniLM, ...), plus DistilBERT's (``n_layers``, ``dim``, ``n_heads``, ``hidden_dim``);
* the MiniMoE authors' config: a BertConfig plus ``moe`` ("x,y") and ``attention_head_size``, whose
  ``num_attention_heads`` and ``intermediate_size`` are the *wide* sizes (12 * x heads, 4H * y neurons,
  docs/checkpoints.md), so one expert has ``num_attention_heads // x`` heads and
  ``intermediate_size // y`` neurons.

The result is a shape: what FLOP accounting, presets and tables need. For a BERT config it also
builds an equivalent gapkit student; for other families it describes a BERT-shaped encoder with the
same matmul shapes, not the same network (position schemes, fused layers ... are not represented).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ModelError
from .spec import ACTIVATIONS, StudentSpec

__all__ = ["spec_from_hf_config"]

# First name found wins: BERT-style names, then DistilBERT's, then GPT-style ones.
_ALIASES = {
    "layers": ("num_hidden_layers", "n_layers", "num_layers", "n_layer"),
    "hidden": ("hidden_size", "dim", "d_model", "n_embd"),
    "heads": ("num_attention_heads", "n_heads", "n_head"),
    "ffn": ("intermediate_size", "hidden_dim", "ffn_dim", "n_inner"),
    "max_positions": ("max_position_embeddings", "n_positions"),
}
# Activation names of transformers that compute exactly what one of the student's does.
_ACT_ALIASES = {"gelu_python": "gelu", "gelu_pytorch_tanh": "gelu_new", "swish": "silu"}


def _first(config: Mapping, field: str, where: str, default=None):
    for key in _ALIASES[field]:
        if config.get(key) is not None:
            return config[key]
    if default is not None:
        return default
    raise ModelError(
        f"{where} has no {field} field ({' / '.join(_ALIASES[field])}): it does not look like a "
        f"Hugging Face encoder config."
    )


def spec_from_hf_config(config: Mapping, name: str | None = None, where: str = "The config") -> StudentSpec:
    """A :class:`StudentSpec` with the shape of a Hugging Face encoder config (dense or MiniMoE).

    Args:
        config: a config dict (``json.load`` of config.json, or ``PretrainedConfig.to_dict()``).
        name: display name of the spec; the shape name (``12L-768H``) when None.
        where: how error messages name the config (e.g. the folder it came from).
    Returns:
        The spec: per-expert heads and FFN size, ``attn_experts`` / ``ffn_experts`` from ``moe``.
    Raises:
        ModelError: a field is missing or inconsistent (heads or FFN size not divisible by the expert
            counts, an activation the student does not have, ...).
    """
    moe = config.get("moe")
    if moe is None:
        x, y = 1, 1
    else:
        try:
            x, y = (int(n) for n in str(moe).split(","))
        except ValueError:
            raise ModelError(
                f"{where}: 'moe' must read 'x,y' (attention experts, FFN experts), got {moe!r}."
            ) from None
    hidden = _first(config, "hidden", where)
    total_heads = _first(config, "heads", where)
    total_ffn = _first(config, "ffn", where, default=4 * hidden)  # GPT-2's n_inner=None means 4H
    if x < 1 or y < 1 or total_heads % x or total_ffn % y:
        raise ModelError(
            f"{where}: the head count ({total_heads}) and FFN size ({total_ffn}) must divide by the "
            f"expert counts moe={x},{y}."
        )
    # As the MiniMoE authors' attention: head size from attention_head_size, else hidden / heads.
    head_size = config.get("attention_head_size") or hidden // total_heads
    act = config.get("hidden_act") or config.get("activation") or "gelu"
    act = _ACT_ALIASES.get(act, act)
    if act not in ACTIVATIONS:
        raise ModelError(f"{where} uses activation {act!r}; gapkit students support {', '.join(ACTIVATIONS)}.")
    fields = dict(
        layers=_first(config, "layers", where),
        hidden=hidden,
        heads=total_heads // x,
        head_size=head_size,
        ffn=total_ffn // y,
        vocab_size=config.get("vocab_size") or 30522,
        max_positions=_first(config, "max_positions", where, default=512),
        type_vocab_size=config.get("type_vocab_size") or 2,
        pad_token_id=config.get("pad_token_id") or 0,
        dropout=config.get("hidden_dropout_prob", config.get("dropout", 0.1)) or 0.0,
        attention_dropout=config.get("attention_probs_dropout_prob", config.get("attention_dropout", 0.1)) or 0.0,
        attn_experts=x,
        ffn_experts=y,
        hidden_act=act,
        layer_norm_eps=config.get("layer_norm_eps", 1e-12),
        initializer_range=config.get("initializer_range", 0.02),
        name=name,
    )
    try:
        return StudentSpec(**fields)
    except ValueError as err:
        raise ModelError(f"{where} does not describe a valid encoder shape: {err}") from None
