"""Student architecture specs and the named size presets.

A ``StudentSpec`` describes a BERT-style encoder, dense or MiniMoE. It is plain data: validated in
``__post_init__``, round-trips to a dict / JSON, and is built by ``gapkit.models.Student``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from ..configtools import check_fields

ROUTING_MODES = ("learned", "random", "hash")
# Fields older gapkit versions had, and where their setting lives now. A spec dict that still sets one
# is refused rather than silently dropped: the user meant to set something.
MOVED_FIELDS = {"load_balance_weight": "the run's weights.load_balance (LossWeights)"}
ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu")


@dataclass
class StudentSpec:
    """Shape and MiniMoE settings of a BERT-style student.

    Args:
        layers: number of transformer layers (L).
        hidden: hidden size (H).
        heads: attention heads of one attention expert (the dense student's heads).
        head_size: size of one head; defaults to hidden // heads.
        ffn: neurons of one FFN expert (the dense student's FFN size); defaults to 4 * hidden.
        vocab_size, max_positions, type_vocab_size, pad_token_id: embedding tables (BERT defaults).
        dropout: hidden dropout; also the MiniMoE gate-noise scale unless ``gate_noise`` is set.
        attention_dropout: dropout on attention probabilities.
        attn_experts: attention experts per layer (x in "x,yE"); 1 is dense attention.
        ffn_experts: FFN experts per layer (y in "x,yE"); 1 is a dense FFN.
        gate_noise: half-width eps of the uniform noise added to gate logits in training; None means
            ``dropout``, as the MiniMoE authors do.
        routing: ``learned`` (top-1 softmax gate, the paper's), ``random`` (uniform random expert per
            token) or ``hash`` (expert = token id mod E), the latter two for ablations.
        hidden_act, layer_norm_eps, initializer_range: as in BertConfig.
        name: display name; derived from the shape when not given.
    """

    layers: int = 3
    hidden: int = 384
    heads: int = 12
    head_size: int | None = None
    ffn: int | None = None
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    dropout: float = 0.1
    attention_dropout: float = 0.1
    attn_experts: int = 1
    ffn_experts: int = 1
    gate_noise: float | None = None
    routing: str = "learned"
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        check_fields(self, "StudentSpec")  # types by annotation: 2.5 layers, a bool, a list as name ...
        for f in ("layers", "hidden", "heads", "vocab_size", "max_positions", "type_vocab_size"):
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StudentSpec.{f} must be a positive integer, got {value!r}.")
        for f in ("attn_experts", "ffn_experts"):
            value = getattr(self, f)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"StudentSpec.{f} must be an integer >= 1 (1 means a dense block), got {value!r}."
                )
        if self.head_size is None:
            if self.hidden % self.heads:
                raise ValueError(
                    f"StudentSpec.hidden ({self.hidden}) is not divisible by heads ({self.heads}): "
                    f"choose heads that divide hidden, or set head_size explicitly."
                )
            self.head_size = self.hidden // self.heads
        elif self.head_size < 1:
            raise ValueError(f"StudentSpec.head_size must be a positive integer, got {self.head_size!r}.")
        if self.ffn is None:
            self.ffn = 4 * self.hidden
        elif self.ffn < 1:
            raise ValueError(f"StudentSpec.ffn must be a positive integer, got {self.ffn!r}.")
        for f in ("dropout", "attention_dropout"):
            value = getattr(self, f)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"StudentSpec.{f} must lie in [0, 1), got {value!r}.")
        if self.gate_noise is None:
            self.gate_noise = self.dropout
        elif self.gate_noise < 0:
            raise ValueError(f"StudentSpec.gate_noise must be >= 0, got {self.gate_noise!r}.")
        if self.routing not in ROUTING_MODES:
            raise ValueError(
                f"StudentSpec.routing must be one of {', '.join(ROUTING_MODES)}, got {self.routing!r}."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"StudentSpec.hidden_act must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}."
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"StudentSpec.pad_token_id ({self.pad_token_id}) must be a valid id below vocab_size ({self.vocab_size})."
            )
        if self.name is None:
            self.name = self.shape_name

    # -- derived -----------------------------------------------------------------------------------
    @property
    def attn_size(self) -> int:
        """Width of one attention expert's Q/K/V projections (heads * head_size)."""
        return self.heads * self.head_size

    @property
    def is_moe(self) -> bool:
        return self.attn_experts > 1 or self.ffn_experts > 1

    @property
    def experts(self) -> str:
        """The paper's "x,yE" notation, e.g. "1,4E"; "dense" for 1,1."""
        return f"{self.attn_experts},{self.ffn_experts}E" if self.is_moe else "dense"

    @property
    def shape_name(self) -> str:
        """``{L}L-{H}H``, plus ``-{F}F`` for an FFN other than 4 * H and ``-{x},{y}E`` for MiniMoE: the naming
        used in the paper and presets."""
        base = f"{self.layers}L-{self.hidden}H" + (f"-{self.ffn}F" if self.ffn != 4 * self.hidden else "")
        return f"{base}-{self.attn_experts},{self.ffn_experts}E" if self.is_moe else base

    def dense_twin(self) -> "StudentSpec":
        """The dense student with the same per-expert shape (what a MiniMoE is compared against)."""
        return dataclasses.replace(self, attn_experts=1, ffn_experts=1, name=None)

    # -- inputs ------------------------------------------------------------------------------------
    def check_inputs(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                     inputs_embeds=None) -> None:
        """Refuse a batch a student of this shape cannot encode, with one sentence instead of an
        ``IndexError`` from deep inside an embedding or a broadcast error from the attention mask.

        Shapes are always checked. Token ids are checked against ``vocab_size`` (and token types
        against ``type_vocab_size``) only where that costs no host synchronisation: on CPU tensors,
        outside ``torch.compile``. (On a GPU an id out of range stops the kernel with CUDA's own
        device-side assert; the training loop's data never hold one, since a run checks its tokenizer
        against the student's vocabulary before it starts.)

        Raises:
            ValueError: naming the argument, what it holds and what it must hold.
        """
        import torch

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds to the student.")
        name, x = ("input_ids", input_ids) if input_ids is not None else ("inputs_embeds", inputs_embeds)
        dims, layout = (2, "(batch, tokens)") if input_ids is not None else (3, f"(batch, tokens, {self.hidden})")
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"The student's {name} must be a {layout} tensor, got {type(x).__name__}: "
                             f"e.g. torch.tensor([[101, 2023, 102]]).")
        if x.dim() != dims or (inputs_embeds is not None and x.shape[-1] != self.hidden):
            raise ValueError(f"The student's {name} must have shape {layout}, got {tuple(x.shape)}"
                             f"{f': add the batch dimension with {name}[None]' if x.dim() == dims - 1 else ''}.")
        B, T = x.shape[:2]
        if B == 0 or T == 0:
            raise ValueError(f"The student's {name} has shape {tuple(x.shape)}: a batch needs at least one "
                             f"sequence of at least one token.")
        if T > self.max_positions:
            raise ValueError(f"Sequence length {T} exceeds the student's max_positions ({self.max_positions}): "
                             f"truncate the inputs or build the student with a larger max_positions.")
        named = [("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                 ("position_ids", position_ids)]
        for other, t in named:  # (B, T), or (1, T) for all sequences alike
            if t is not None and not (isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[0] in (1, B)
                                      and t.shape[1] == T):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"The student's {other} must be a tensor of the {name}' (batch, tokens) shape "
                                 f"{(B, T)}, got {got}.")
        checks = [("Token id", input_ids, self.vocab_size, "vocabulary", "vocab_size"),
                  ("Token type id", token_type_ids, self.type_vocab_size, "token types", "type_vocab_size"),
                  ("Position id", position_ids, self.max_positions, "positions", "max_positions")]
        for what, ids, size, table, field_name in checks:
            if ids is None:
                continue
            if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
                raise ValueError(f"{what}s must be integers (torch.long), got a {ids.dtype} tensor.")
            if ids.device.type != "cpu" or torch.compiler.is_compiling():
                continue  # a value check here would wait for the device (see the docstring)
            bad = (ids < 0) | (ids >= size)
            if bool(bad.any()):
                b, t = (int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{what} {int(ids[b, t])} (sequence {b}, position {t}) is outside the student's "
                                 f"{table} of {size} ids (0..{size - 1}): encode with the tokenizer the student "
                                 f"was built for, or build it with a larger {field_name}.")

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StudentSpec":
        _refuse_moved_fields(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown StudentSpec field(s) {', '.join(unknown)}; known fields are {', '.join(sorted(known))}."
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StudentSpec":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_name(cls, name: str, **overrides) -> "StudentSpec":
        """A preset or a shape string, with field overrides.

        ``from_name("3L-384H", ffn_experts=4)``, ``from_name("3L-384H-1,4E")``, ``from_name("bert-base")``.
        """
        return spec_from_name(name, **overrides)


# Presets are data. Sources: BERT (Devlin et al., 2019) for the teachers; the MiniMoE paper
# (Zhang et al., ACL 2023) for the MiniLM-style students and the 12L-384H teacher assistant, all with
# 12 heads and FFN = 4H as in the authors' scripts.
PRESETS: dict[str, dict] = {
    "bert-base": dict(layers=12, hidden=768, heads=12, ffn=3072),
    "bert-large": dict(layers=24, hidden=1024, heads=16, ffn=4096),
    "12L-384H": dict(layers=12, hidden=384, heads=12, ffn=1536),  # teacher assistant (TA)
    "6L-384H": dict(layers=6, hidden=384, heads=12, ffn=1536),
    "4L-384H": dict(layers=4, hidden=384, heads=12, ffn=1536),
    "3L-384H": dict(layers=3, hidden=384, heads=12, ffn=1536),
    "2L-384H": dict(layers=2, hidden=384, heads=12, ffn=1536),
    "2L-192H": dict(layers=2, hidden=192, heads=12, ffn=768),
}
# Preset names that are also pretrained checkpoints on the Hugging Face Hub: their shapes are known here so
# that planning and FLOP counts need no download, but as a run's student or teacher they mean the pretrained
# weights, never a random model behind the name (gapkit.distill.config reads this set).
HUB_CHECKPOINTS: dict[str, dict] = {
    "bert-base-uncased": PRESETS["bert-base"], "bert-large-uncased": PRESETS["bert-large"],
    # The cased models' WordPiece vocabulary has 28,996 ids.
    "bert-base-cased": dict(PRESETS["bert-base"], vocab_size=28996),
    "bert-large-cased": dict(PRESETS["bert-large"], vocab_size=28996),
}
# The 24 BERT miniatures (Turc et al., 2019, "Well-Read Students Learn Better"; google-research/bert):
# L in {2, 4, 6, 8, 10, 12} layers, H in {128, 256, 512, 768}, H/64 heads, FFN 4H, BERT's uncased vocabulary.
# L-12_H-768 is BERT-base itself (Turc et al.'s table lists it as the original BERT-Base).
for _L in (2, 4, 6, 8, 10, 12):
    for _H in (128, 256, 512, 768):
        HUB_CHECKPOINTS[f"google/bert_uncased_L-{_L}_H-{_H}_A-{_H // 64}"] = dict(
            layers=_L, hidden=_H, heads=_H // 64, ffn=4 * _H)
del _L, _H
PRESETS.update(HUB_CHECKPOINTS)

_SHAPE = re.compile(r"^(?P<L>\d+)L-(?P<H>\d+)H(?:-(?P<A>\d+)A)?(?:-(?P<F>\d+)F)?(?:-(?P<x>\d+),(?P<y>\d+)E)?$")


def parse_shape(text: str) -> dict | None:
    """Parse ``{L}L-{H}H[-{A}A][-{F}F][-{x},{y}E]`` into spec fields; None if ``text`` is not of that form.

    ``F`` is the FFN width (of one expert), 4 * H when not given: ``2L-192H-3072F`` is a dense student with
    the FFN parameters of ``2L-192H-1,4E``. Heads default to 12 (the MiniLM/MiniMoE students) when 12 divides H, else H // 64 (BERT's head size).
    """
    m = _SHAPE.match(text.strip())
    if m is None:
        return None
    hidden = int(m["H"])
    fields: dict = dict(layers=int(m["L"]), hidden=hidden)
    if m["A"]:
        fields["heads"] = int(m["A"])
    elif hidden % 12 == 0:
        fields["heads"] = 12
    elif hidden % 64 == 0:
        fields["heads"] = hidden // 64
    else:
        raise ValueError(
            f"Cannot choose a head count for {text!r}: 12 and 64 do not divide {hidden}; "
            f"name the heads, e.g. '{m['L']}L-{hidden}H-4A'."
        )
    if m["F"]:
        fields["ffn"] = int(m["F"])
    if m["x"]:
        fields["attn_experts"], fields["ffn_experts"] = int(m["x"]), int(m["y"])
    return fields


def _refuse_moved_fields(fields) -> None:
    moved = sorted(set(fields) & set(MOVED_FIELDS))
    if moved:
        raise ValueError(
            f"StudentSpec.{moved[0]} is no longer a student setting: it moved to {MOVED_FIELDS[moved[0]]}; "
            f"remove it from the student spec and set it there."
        )


def spec_from_name(name: str, **overrides) -> StudentSpec:
    """Build a spec from a preset name or a shape string, then apply ``overrides``.

    Raises:
        ValueError: the name is neither a preset nor a shape string.
    """
    fields: dict | None = None
    m = re.match(r"^(?P<base>.+?)-(?P<x>\d+),(?P<y>\d+)E$", name)
    if name in PRESETS:
        fields = dict(PRESETS[name])
    elif m and m["base"] in PRESETS:
        fields = dict(PRESETS[m["base"]], attn_experts=int(m["x"]), ffn_experts=int(m["y"]))
    else:
        fields = parse_shape(name)
    _refuse_moved_fields(overrides)
    if fields is None:
        raise ValueError(
            f"Unknown student {name!r}: use a preset ({', '.join(sorted(set(PRESETS) - set(HUB_CHECKPOINTS)))}), a "
            f"BERT checkpoint whose shape gapkit knows (bert-base-uncased, google/bert_uncased_L-4_H-256_A-4, ...) "
            f"or a shape like '3L-384H' or '3L-384H-1,4E'."
        )
    if name in PRESETS and not overrides:
        fields["name"] = name
    fields.update(overrides)
    return StudentSpec(**fields)
