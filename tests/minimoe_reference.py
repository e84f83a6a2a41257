"""Test-only reference: the MiniMoE authors' forward pass in eval mode, written loop by loop.

Independent of gapkit on purpose (it imports only torch): it reads a raw state dict in the authors'
released layout (every encoder key under ``bert.``, expert weights stacked ``[E, out, in]``,
``attn_gate`` / ``ffn_gate`` Linear(H -> E)) and the config dict, and follows
docs/method.md and the authors' ``MoEBertLayer`` literally:

* gate logits = Linear(H -> E) of the block input; softmax; argmax (no noise in eval);
* the chosen expert's output is scaled by its probability after dropout (identity in eval) and
  before the residual add and LayerNorm: ``LayerNorm(p * Dropout(expert(x)) + x)``;
* attention experts: each token's Q/K/V and output dense come from its own expert; attention runs
  over the whole sequence with the additive padding mask and ``num_attention_heads / x`` heads;
* the FFN uses the exact (erf) GELU; a block with one expert is the plain BERT block.

Tokens are assigned to experts with one boolean mask per expert. Slow and simple by design.
"""

from __future__ import annotations

import math

import torch


def _linear(x, w, b):
    return x @ w.T + b


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _expert(w, b, e, num_experts):
    """Expert e's (weight, bias): stacked [E, out, in] when E > 1, plain [out, in] otherwise."""
    return (w[e], b[e]) if num_experts > 1 else (w, b)


def _route(x, gate_w, gate_b):
    """Top-1 routing of tokens x (N, H): returns (chosen expert (N,), its probability (N,))."""
    probs = torch.softmax(_linear(x, gate_w, gate_b), -1)
    expert = probs.argmax(-1)
    return expert, probs.gather(-1, expert[:, None])[:, 0]


def _attention(q, k, v, mask_add, heads, head_size):
    """Multi-head attention over the whole sequence. q, k, v: (B, T, heads*head_size)."""
    B, T, _ = q.shape
    split = lambda t: t.view(B, T, heads, head_size).permute(0, 2, 1, 3)  # (B, heads, T, d)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(head_size) + mask_add  # (B, heads, T, T)
    ctx = torch.softmax(scores, -1) @ split(v)  # (B, heads, T, d)
    return ctx.permute(0, 2, 1, 3).reshape(B, T, heads * head_size)


@torch.no_grad()
def reference_forward(state: dict, config: dict, input_ids, attention_mask, token_type_ids=None):
    """The authors' MoEBertModel forward in eval mode.

    Args:
        state: raw checkpoint tensors (``bert.``-prefixed keys; anything else is ignored).
        config: config.json dict with ``moe`` and ``attention_head_size``.
        input_ids, attention_mask, token_type_ids: (B, T).
    Returns:
        dict with ``last_hidden_state`` (B, T, H), ``pooler_output`` (B, H), ``attn_experts`` and
        ``ffn_experts`` (one (B, T) tensor per layer, None for a dense block).
    """
    s = {k[len("bert."):]: v.float() for k, v in state.items() if k.startswith("bert.")}
    x_e, y_e = (int(n) for n in config.get("moe", "1,1").split(","))
    H = config["hidden_size"]
    head_size = config.get("attention_head_size") or H // config["num_attention_heads"]
    heads = config["num_attention_heads"] // x_e  # heads of one attention expert (after moefication)
    eps = config.get("layer_norm_eps", 1e-12)
    B, T = input_ids.shape
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)

    h = (s["embeddings.word_embeddings.weight"][input_ids]
         + s["embeddings.position_embeddings.weight"][torch.arange(T)][None]
         + s["embeddings.token_type_embeddings.weight"][token_type_ids])
    h = _layer_norm(h, s["embeddings.LayerNorm.weight"], s["embeddings.LayerNorm.bias"], eps)
    mask_add = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0  # the authors' era of BERT

    attn_record, ffn_record = [], []
    for n in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        W = lambda name: (s[p + name + ".weight"], s[p + name + ".bias"])

        # -- attention block --
        flat = h.reshape(B * T, H)
        if x_e > 1:
            expert, prob = _route(flat, *W("attn_gate"))
        else:
            expert, prob = torch.zeros(B * T, dtype=torch.long), None
        A = heads * head_size
        q, k, v = (torch.zeros(B * T, A) for _ in range(3))
        for e in range(x_e):
            m = expert == e
            q[m] = _linear(flat[m], *_expert(*W("attention.self.query"), e, x_e))
            k[m] = _linear(flat[m], *_expert(*W("attention.self.key"), e, x_e))
            v[m] = _linear(flat[m], *_expert(*W("attention.self.value"), e, x_e))
        ctx = _attention(q.view(B, T, A), k.view(B, T, A), v.view(B, T, A), mask_add, heads, head_size)
        ctx = ctx.reshape(B * T, A)
        out = torch.zeros(B * T, H)
        for e in range(x_e):
            m = expert == e
            out[m] = _linear(ctx[m], *_expert(*W("attention.output.dense"), e, x_e))
        if prob is not None:
            out = prob[:, None] * out  # after dropout (identity in eval), before the residual
        flat = _layer_norm(out + flat, *W("attention.output.LayerNorm"), eps)
        attn_record.append(expert.view(B, T) if x_e > 1 else None)

        # -- FFN block --
        if y_e > 1:
            expert, prob = _route(flat, *W("ffn_gate"))
        else:
            expert, prob = torch.zeros(B * T, dtype=torch.long), None
        out = torch.zeros(B * T, H)
        for e in range(y_e):
            m = expert == e
            inner = _gelu(_linear(flat[m], *_expert(*W("intermediate.dense"), e, y_e)))
            out[m] = _linear(inner, *_expert(*W("output.dense"), e, y_e))
        if prob is not None:
            out = prob[:, None] * out
        flat = _layer_norm(out + flat, *W("output.LayerNorm"), eps)
        ffn_record.append(expert.view(B, T) if y_e > 1 else None)
        h = flat.view(B, T, H)

    pooled = torch.tanh(_linear(h[:, 0], s["pooler.dense.weight"], s["pooler.dense.bias"]))
    return dict(last_hidden_state=h, pooler_output=pooled, attn_experts=attn_record, ffn_experts=ffn_record)
