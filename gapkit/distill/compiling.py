"""Compiled, length-bucketed forward passes for training (``train.compile``).

On a GPU a small student runs a forward in a few milliseconds, so kernel launches and host syncs
take most of a step. ``train.compile`` compiles the student's training forward (and with it, through
AOTAutograd, its backward) and the teacher's forward with ``torch.compile``; ``reduce-overhead``
replays them as CUDA graphs. Two things make that possible:

* **No host sync in the student.** Under ``torch.compile`` every MiniMoE block, attention experts
  included, takes the static dispatch (:mod:`gapkit.models.student`): grouped GEMMs over
  expert-sorted tokens where they apply, else every expert on every token. The student is compiled
  with ``fullgraph=True``: a graph break is an error, never a silent slow path.
* **A few static shapes.** Every batch is padded up to a *bucket* length (by default the powers of
  two from 16 below ``data.max_len``, and ``data.max_len``), so a run compiles at most one graph per
  bucket and batch size, not one per sequence length. The extra positions are padding under the
  attention mask, so real tokens see exactly what they would see unpadded; the outputs are cut back
  to the batch's own length before any loss sees them, and the MiniMoE load balance counts the
  positions of the batch's own length only (``Student.forward(load_balance_mask=...)``). What
  remains is floating-point reassociation (longer softmax rows, another GEMM order): compiled and
  eager results agree to ~1e-5 relative in fp32 (tested), not bitwise.

Evaluation stays eager for the student (its batches have other sizes and it runs rarely); the teacher
is compiled for every call, training and evaluation batches alike, each padded to a bucket.

Modes: ``default`` (inductor), ``reduce-overhead`` (inductor + CUDA graphs), ``max-autotune``
(inductor, autotuned kernels, CUDA graphs), ``cudagraphs`` (CUDA graphs of the captured graphs' eager
kernels: no kernel compilation, so seconds instead of minutes, and no launch overhead, but no fusion),
``aot_eager`` (graphs captured, run with eager kernels: checks capture without a compiler, no speedup). Under CUDA graphs, outputs live in memory that the
next replay overwrites, so they are copied out (a few small copies per step).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..routing import BlockRouting, RoutingRecord
from .config import COMPILE_MODES

__all__ = ["COMPILE_MODES", "GRAPHED_MODES", "MIN_BUCKET", "bucket_lengths", "bucket_of", "compile_options", "CompiledStudent",
           "cut_student_output", "pad_length", "raise_recompile_limit"]

MIN_BUCKET = 16  # the shortest default bucket: shorter batches pad up to it
GRAPHED_MODES = ("reduce-overhead", "max-autotune", "cudagraphs")  # outputs live in CUDA-graph memory
# Graphs one compiled forward may need per bucket: one per batch size (training micro-batches; for the
# teacher also evaluation batches and the last, shorter batch of each split), with room to spare.
SHAPES_PER_BUCKET = 8


def bucket_lengths(max_len: int, buckets: Sequence[int] | None = None) -> tuple[int, ...]:
    """The lengths batches are padded up to, increasing, the last one ``max_len``.

    Args:
        max_len: the longest sequence of the run (``data.max_len``).
        buckets: chosen lengths (``train.compile_buckets``); those above ``max_len`` are capped to it.
            None: the powers of two from :data:`MIN_BUCKET` below ``max_len``, then ``max_len``.
    Returns:
        e.g. (16, 32, 64, 128) for max_len 128.
    """
    if buckets:
        lengths = {min(int(b), max_len) for b in buckets}
    else:
        lengths, b = set(), MIN_BUCKET
        while b < max_len:
            lengths.add(b)
            b *= 2
    return tuple(sorted(lengths | {max_len}))


def bucket_of(length: int, buckets: Sequence[int]) -> int:
    """The shortest bucket that holds ``length`` tokens.

    Raises:
        ValueError: ``length`` is longer than the longest bucket.
    """
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"A batch of length {length} is longer than the longest compile bucket ({buckets[-1]}): "
                     f"batches are cut to data.max_len, so raise data.max_len or train.compile_buckets.")


def compile_options(mode: str) -> dict:
    """``torch.compile`` keyword arguments of a ``train.compile`` mode (not ``off``)."""
    if mode not in COMPILE_MODES or mode == "off":
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES[1:])}, got {mode!r}.")
    if mode in ("aot_eager", "cudagraphs"):
        return dict(backend=mode)
    return dict(backend="inductor", mode=None if mode == "default" else mode)


_planned_graphs = 0  # graphs the compiled forwards of this process may need, all together


def raise_recompile_limit(graphs: int) -> None:
    """Make room for ``graphs`` more graphs in torch.compile's recompile limit.

    Every student's compiled forward shares one function (and every teacher's, ``nn.Module``'s call),
    and dynamo counts the graphs of a function together (its default limit is 8): past the limit a
    ``fullgraph`` function fails and others fall back to eager. So each compiled forward adds what it
    may need (:data:`SHAPES_PER_BUCKET` per bucket) to a process-wide count that the limit follows;
    a limit set higher is never lowered.
    """
    global _planned_graphs
    _planned_graphs += graphs
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), _planned_graphs))
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 2 * _planned_graphs)


def pad_length(x: torch.Tensor | None, length: int, value: int = 0) -> torch.Tensor | None:
    """(B, T) -> (B, length), padding the sequence dimension on the right with ``value``."""
    if x is None or x.shape[1] == length:
        return x
    return F.pad(x, (0, length - x.shape[1]), value=value)


def cut(x: torch.Tensor | None, length: int, copy: bool) -> torch.Tensor | None:
    """(B, L, ...) -> (B, length, ...): a view, or a copy where the source is CUDA-graph memory."""
    if x is None:
        return None
    x = x[:, :length]
    return x.clone() if copy else x


class CompiledStudent:
    """A gapkit student's training forward, compiled for a few static shapes.

    Called like the student (the trainer's model protocol); pads the batch to its bucket, runs the
    compiled forward, and cuts every per-token output back to the batch's length. ``pooler_output`` is
    None unless a sequence head reads it (see :func:`_training_forward`).

    Args:
        model: a :class:`gapkit.models.Student` (dense or MiniMoE).
        mode: a ``train.compile`` mode other than ``off``.
        buckets: increasing bucket lengths (:func:`bucket_lengths`).
    """

    def __init__(self, model, mode: str, buckets: Sequence[int]):
        self.model, self.mode, self.buckets = model, mode, tuple(buckets)
        self.pad_token_id = model.spec.pad_token_id
        self.compiled = torch.compile(_training_forward, dynamic=False, fullgraph=True, **compile_options(mode))
        self.copy_outputs = mode in GRAPHED_MODES  # CUDA-graph outputs are overwritten by the next replay
        raise_recompile_limit(SHAPES_PER_BUCKET * len(self.buckets))

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                 output_qkv: bool = False, output_hidden_states: bool = False):
        B, T = input_ids.shape
        L = bucket_of(T, self.buckets)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        counted = (torch.arange(L, device=input_ids.device) < T).expand(B, L)  # (B, L): the batch's own positions
        out = self.compiled(self.model, pad_length(input_ids, L, self.pad_token_id), pad_length(attention_mask, L),
                            pad_length(token_type_ids, L), counted, output_qkv, output_hidden_states)
        return cut_student_output(out, T, self.copy_outputs)


def _training_forward(model, input_ids, attention_mask, token_type_ids, counted, output_qkv, output_hidden_states):
    """The student's forward without the pooled output unless a sequence head reads it.

    In eager mode an unused output leaves its parameters without a gradient (None: AdamW then skips
    them, weight decay included); a compiled graph would give them a gradient of zeros for every output
    it returns, and the unused pooler would decay. Not returned, the pooler is not computed at all.
    """
    out = model(input_ids, attention_mask, token_type_ids, output_qkv=output_qkv,
                output_hidden_states=output_hidden_states, load_balance_mask=counted)
    if not (model.num_labels and model.task == "sequence"):
        out.pooler_output = None
    return out


def cut_student_output(out, T: int, copy: bool = False):
    """A :class:`~gapkit.models.student.StudentOutput` of a padded batch, cut back to length ``T``."""
    from ..models.student import StudentOutput

    def block(b: BlockRouting | None) -> BlockRouting | None:
        if b is None:
            return None
        lb = b.load_balance.clone() if copy else b.load_balance
        return BlockRouting(cut(b.expert, T, copy), cut(b.prob, T, copy), cut(b.probs, T, copy), lb)

    def whole(x):  # a per-sequence tensor: nothing to cut
        return x.clone() if (copy and x is not None) else x

    logits = out.logits
    return StudentOutput(
        last_hidden_state=cut(out.last_hidden_state, T, copy),
        pooler_output=whole(out.pooler_output),
        hidden_states=tuple(cut(h, T, copy) for h in out.hidden_states) if out.hidden_states is not None else None,
        routing=RoutingRecord([block(b) for b in out.routing.attn], [block(b) for b in out.routing.ffn]),
        load_balance=whole(out.load_balance),
        qkv=tuple(cut(x, T, copy) for x in out.qkv) if out.qkv is not None else None,
        logits=cut(logits, T, copy) if logits is not None and logits.dim() == 3 else whole(logits),
    )
