"""Teachers: any Hugging Face encoder, frozen, in eval mode, with the Q/K/V of one layer captured.

Relation distillation (MiniLM v2 style, docs/method.md) needs the teacher's query, key and value
projections of one layer (the last, by default). They are captured with forward hooks on that
layer's Q/K/V ``nn.Linear`` modules, registered for the duration of one forward call and writing into
a dict local to that call: the model is never edited, nothing is monkey-patched, and no tensor
outlives the call on any module.

Families: separate Q/K/V projections named as in BERT / RoBERTa / ELECTRA (``query``), DistilBERT
(``q_lin``), DeBERTa-v2/v3 (``query_proj``) or ``q_proj``; or one fused projection (ModernBERT's
``Wqkv``), whose output is split into Q, K, V along the last dimension, in that order, as ModernBERT
itself splits it. Only the *first* call of a projection in a forward pass is captured: DeBERTa with
``share_att_key`` runs ``query_proj`` / ``key_proj`` a second time on its relative-position embeddings,
which are not the tokens' Q/K. What is captured is the projection's output before any position
transform (ModernBERT applies rotary embeddings to Q and K afterwards).

Dimension names: B batch, T sequence, H hidden, A attention size (heads * head size), C labels.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ModelError
from .hf_loading import LoadReport, load_hf_model, missing_reference

__all__ = ["Teacher", "TeacherOutput"]

logger = logging.getLogger(__name__)

# Names of the Q/K/V projections per family: BERT / RoBERTa / ELECTRA (``attention.self.query``),
# DistilBERT (``attention.q_lin``), DeBERTa-v2/v3 (``attention.self.query_proj``), and the ``q_proj``
# naming of many newer encoders.
QKV_NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("query_proj", "key_proj", "value_proj"),
             ("q_proj", "k_proj", "v_proj"))
# Fused projections H -> 3A whose output is [Q | K | V] along the last dim: ModernBERT (``attn.Wqkv``).
FUSED_QKV_NAMES = ("Wqkv",)
TASKS = ("sequence", "token")


@dataclass
class TeacherOutput:
    """What a teacher's forward pass returns.

    Attributes:
        last_hidden_state: (B, T, H).
        qkv: (Q, K, V) of the chosen layer, each (B, T, A).
        hidden_states: embeddings then every layer's output, (B, T, H) each, when asked for.
        logits: (B, C) or (B, T, C) for a teacher with a task head.
    """

    last_hidden_state: torch.Tensor
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    hidden_states: tuple[torch.Tensor, ...] | None = None
    logits: torch.Tensor | None = None


def find_qkv_modules(model: nn.Module) -> list[tuple[nn.Linear, ...]]:
    """The Q/K/V projections of every self-attention layer of ``model``, in layer order.

    Returns:
        One tuple per layer: (query, key, value) Linear modules, or (fused,) for a fused projection
        whose output is [Q | K | V].
    Raises:
        ModelError: no family's Q/K/V names match.
    """
    base = getattr(model, "base_model", model)
    modules = dict(base.named_modules())
    for q_name, k_name, v_name in QKV_NAMES:
        found = []
        for name, module in modules.items():
            if not (name == q_name or name.endswith("." + q_name)) or "crossattention" in name:
                continue
            parent = name[: -len(q_name)]
            trio = (module, modules.get(parent + k_name), modules.get(parent + v_name))
            if all(isinstance(m, nn.Linear) for m in trio):
                found.append(trio)
        if found:
            return found
    for fused_name in FUSED_QKV_NAMES:
        found = [(m,) for name, m in modules.items()
                 if (name == fused_name or name.endswith("." + fused_name)) and isinstance(m, nn.Linear)
                 and m.out_features % 3 == 0]
        if found:
            return found
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    raise ModelError(
        f"Cannot find the Q/K/V projections of model type {model_type!r}: the teacher needs separate Linear "
        f"modules named {', '.join('/'.join(n) for n in QKV_NAMES)}, or a fused {'/'.join(FUSED_QKV_NAMES)}, "
        f"in each attention layer."
    )


class Teacher(nn.Module):
    """A frozen Hugging Face encoder that also returns the Q/K/V of one layer.

    Args:
        model: a ``transformers`` encoder (``AutoModel``), or a sequence/token classification model whose
            encoder is captured and whose logits are returned.
        qkv_layer: the layer whose Q/K/V are captured (negative counts from the end; default the last).
    """

    def __init__(self, model: nn.Module, qkv_layer: int = -1):
        super().__init__()
        self.model = model
        layers = find_qkv_modules(model)
        if not -len(layers) <= qkv_layer < len(layers):
            raise ModelError(
                f"Teacher qkv_layer {qkv_layer} is out of range for a {self.model_type!r} model with "
                f"{len(layers)} layers."
            )
        self.qkv_layer = qkv_layer % len(layers)
        self._num_layers = len(layers)
        self._qkv_modules = layers[self.qkv_layer]
        # Pass token_type_ids only to models that take them (DistilBERT, ModernBERT do not).
        self._takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
        # What a strict load allowed (set by from_pretrained; None for a model passed in directly).
        self.load_report: LoadReport | None = None
        self.requires_grad_(False)
        super().train(False)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, num_labels: int = 0, task: str | None = None,
                        qkv_layer: int = -1, attn_implementation: str | None = None,
                        allow_new_head: bool = False) -> "Teacher":
        """Load a teacher by Hub name or local folder, strictly (:func:`gapkit.models.hf_loading.load_hf_model`).

        Args:
            name_or_path: e.g. ``bert-base-uncased`` or a folder written by ``save_pretrained``.
            num_labels: labels of a task head; 0 keeps the checkpoint's own (or no head without ``task``).
            task: ``sequence`` or ``token`` to load AutoModelFor{Sequence,Token}Classification; None
                loads the bare encoder (AutoModel), unless ``num_labels`` > 0, which implies ``sequence``.
            qkv_layer: the layer whose Q/K/V are captured (default the last).
            attn_implementation: passed to transformers (``eager``, ``sdpa`` ...); None keeps its default.
            allow_new_head: accept a randomly initialised task head on a checkpoint without one (its
                logits then mean nothing; listed in ``teacher.load_report.new_head``).
        Returns:
            A frozen :class:`Teacher` in eval mode; ``load_report`` says what the load allowed.
        Raises:
            ModelError: not loadable, an unsupported model, or a missing / unexpected / mis-shaped /
                non-finite weight (including a task head the checkpoint lacks, unless allowed).
        """
        if task is None and num_labels:
            task = "sequence"
        if task is not None and task not in TASKS:
            raise ModelError(f"Teacher task must be one of {', '.join(TASKS)} or None, got {task!r}.")
        problem = missing_reference(name_or_path, "Teacher")
        if problem is not None:
            raise ModelError(f"{problem}.")
        model, report = load_hf_model(name_or_path, head=task, num_labels=num_labels,
                                      allow_new_head=allow_new_head, attn_implementation=attn_implementation)
        if report.new_head:
            logger.warning("Teacher %s has no trained %s-classification head; %s are random, so its logits mean "
                           "nothing.", name_or_path, task, ", ".join(report.new_head))
        teacher = cls(model, qkv_layer=qkv_layer)
        teacher.load_report = report
        return teacher

    # -- frozen, always eval ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Teacher":
        """A teacher stays in eval mode: ``train()`` on a parent module must not turn dropout on."""
        return super().train(False)

    # -- properties ------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def model_type(self) -> str:
        return getattr(getattr(self.model, "config", None), "model_type", type(self.model).__name__)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return getattr(config, "hidden_size", None) or config.dim  # DistilBERT calls it ``dim``

    @property
    def attention_size(self) -> int:
        """Width A of the captured Q/K/V (heads * head size), what relation heads split."""
        if len(self._qkv_modules) == 1:  # fused [Q | K | V]
            return self._qkv_modules[0].out_features // 3
        return self._qkv_modules[0].out_features

    @property
    def num_layers(self) -> int:
        return self._num_layers

    @property
    def max_positions(self) -> int:
        """Longest usable sequence. RoBERTa offsets positions by pad_token_id + 1, so its table is longer."""
        config = self.model.config
        n = config.max_position_embeddings
        if self.model_type in ("roberta", "xlm-roberta", "camembert"):
            n -= (config.pad_token_id or 0) + 1
        return n

    @property
    def num_labels(self) -> int:
        """Size of the task head; 0 for a bare encoder."""
        return self.model.config.num_labels if self._has_head else 0

    @property
    def _has_head(self) -> bool:
        return getattr(self.model, "base_model", self.model) is not self.model

    # -- forward ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _capture_qkv(self):
        """Hooks on the chosen layer's Q/K/V for the duration of one call, writing into a fresh dict."""
        captured: dict[str, torch.Tensor] = {}

        def hook(role):
            def fn(module, inputs, output):
                # The first call only: DeBERTa calls query_proj/key_proj again on position embeddings.
                if role not in captured:
                    captured[role] = output
            return fn

        roles = ("qkv",) if len(self._qkv_modules) == 1 else ("q", "k", "v")
        handles = [m.register_forward_hook(hook(role)) for role, m in zip(roles, self._qkv_modules)]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False) -> TeacherOutput:
        """Encode a batch without gradients.

        Args:
            input_ids: (B, T).
            attention_mask: (B, T), 1 for real tokens.
            token_type_ids: (B, T) or None (ignored by models without segments, e.g. DistilBERT).
            output_hidden_states: also return every layer's output.
        Returns:
            A :class:`TeacherOutput`.
        """
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        # Task models return no last_hidden_state; their last hidden state is hidden_states[-1].
        want_hidden = output_hidden_states or self._has_head
        with self._capture_qkv() as captured:
            out = self.model(**kwargs, output_hidden_states=want_hidden)
        if "qkv" in captured:  # fused (B, T, 3A) -> three (B, T, A)
            captured.update(zip("qkv", captured.pop("qkv").chunk(3, dim=-1)))
        if set(captured) != {"q", "k", "v"}:  # internal invariant: the hooked modules ran
            raise RuntimeError(f"Teacher Q/K/V hooks captured {sorted(captured)}; the model skipped its projections.")
        B, T = input_ids.shape
        if any(t.shape[:2] != (B, T) for t in captured.values()):  # e.g. an unpadded (flash) layout
            raise RuntimeError(f"Teacher Q/K/V have shapes {[tuple(t.shape) for t in captured.values()]}, "
                               f"expected (B, T, A) with B, T = {B}, {T}.")
        hidden = out.hidden_states if want_hidden else None
        last = out.last_hidden_state if not self._has_head else hidden[-1]
        return TeacherOutput(
            last_hidden_state=last,
            qkv=(captured["q"], captured["k"], captured["v"]),
            hidden_states=tuple(hidden) if output_hidden_states else None,
            logits=getattr(out, "logits", None) if self._has_head else None,
        )

    def extra_repr(self) -> str:
        return f"model_type={self.model_type}, layers={self.num_layers}, qkv_layer={self.qkv_layer}"
