"""Checkpoint import and export: Hugging Face BERT folders and the MiniMoE authors' released layout.

Two on-disk layouts, both a Hugging Face folder (``config.json`` + ``model.safetensors``):

* **Dense students** are written as plain ``BertModel`` folders (``BertForSequenceClassification`` /
  ``BertForTokenClassification`` when the student has a head), so ``transformers.AutoModel`` loads
  them without gapkit. This works because the student's parameter names *are* BertModel's.
* **MiniMoE students** are written in the layout of the authors' released checkpoints
  (GeneZC/MiniMoE, ``MoEBertModel``): ``config.json`` is a BertConfig plus ``moe`` ("x,y") and
  ``attention_head_size``, with ``num_attention_heads = heads * x`` and ``intermediate_size = ffn * y``
  (the sizes of the wide model *before* moefication, which is how the authors' code reads them back);
  every encoder weight sits under the prefix ``bert.``; expert weights are stacked ``[E, out, in]``;
  every layer has an ``attn_gate`` and an ``ffn_gate`` Linear(H -> E), with E = 1 for a dense block
  (the authors' model always builds both gates and leaves a 1-output gate unused).

``gapkit_spec.json`` (``StudentSpec.to_json()``) is written beside them to carry what the Hugging Face
config cannot say (routing mode, gate noise, name); ``load_student`` uses it when its shapes agree with
``config.json``. A student's relation projection (``Student.relation``), when it has one, is written
at the top level as ``self.query.weight`` ..., as in the authors' checkpoints. The layout is
described in docs/checkpoints.md.

Loading is strict: a missing, unexpected or wrongly shaped tensor, a NaN/inf value, or a classifier
whose rows disagree with config.json's labels is a ModelError naming the tensors. What is allowed (a
new task head, a pooler a token-classification checkpoint lacks, pre-training heads dropped) is listed
in a :class:`~gapkit.models.hf_loading.LoadReport` (``load_student(..., return_report=True)``).

Public API: :func:`save_pretrained`, :func:`load_student`, :func:`student_from_hf`,
:func:`resolve_folder`; errors are :class:`gapkit.errors.ModelError`. The reading and writing live in
:mod:`gapkit.models.layout`, for a student class given, so that ``Student.save_pretrained`` and
``Student.from_pretrained`` use them without an import cycle; this module binds them to
:class:`~gapkit.models.Student`.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from pathlib import Path

from ..errors import ModelError
from . import layout
from .hf_loading import LoadReport
from .layout import from_hf, load_pretrained, resolve_folder
from .student import Student

__all__ = ["load_student", "resolve_folder", "save_pretrained", "student_from_hf"]


def save_pretrained(student: Student, folder: str | os.PathLike, label_names: Sequence[str] | None = None) -> Path:
    """Write ``student`` as a Hugging Face folder: :func:`gapkit.models.layout.save_pretrained` (which refuses a
    folder that is a file or cannot be made), after refusing what is not a Student.

    Raises:
        ModelError: ``student`` is not a gapkit Student; ``folder`` is a file or cannot be created.
    """
    if not isinstance(student, Student):
        raise ModelError(f"save_pretrained writes a gapkit Student (dense or MiniMoE), got {type(student).__name__}: "
                         f"a Hugging Face model saves itself with model.save_pretrained(folder).")
    return layout.save_pretrained(student, folder, label_names=label_names)


def load_student(path: str | os.PathLike, num_labels: int | None = None, task: str | None = None,
                 dispatch: str = "auto", return_report: bool = False) -> Student | tuple[Student, LoadReport]:
    """Load a student from a BERT checkpoint: dense Hugging Face BERT, or the MiniMoE authors' layout.

    The folder may hold ``model.safetensors`` or ``pytorch_model.bin`` (read with ``weights_only=True``
    only), whole or sharded under an index; the encoder's keys may be plain (``BertModel``) or under
    ``bert.`` (task models, the authors' checkpoints). Pre-training heads (``cls.``) are dropped; ``classifier.*``
    loads into the task head and ``self.*`` (the relation projection) into ``Student.relation``.
    Loading is strict (see the module docstring).

    Args:
        path: a folder, or a Hub name (fetched with ``huggingface_hub.snapshot_download``).
        num_labels: task-head size; None takes it from the checkpoint's classifier (0 when it has
            none), 0 drops a head, and a size for a checkpoint without a classifier adds a fresh head
            (reported in ``LoadReport.new_head``).
        task: ``sequence`` or ``token``; None reads it from config.json ``architectures`` (default sequence).
        dispatch: the student's MoE dispatch, ``auto``, ``sorted`` or ``loop``.
        return_report: also return the :class:`~gapkit.models.hf_loading.LoadReport`.
    Returns:
        A :class:`Student` in eval mode, or ``(student, report)`` with ``return_report``.
    Raises:
        ModelError: not a folder or Hub model, no config.json or weights, an unreadable weight file or
            sharded index (named), not a BERT model, a missing /
            unexpected / wrongly shaped / non-finite tensor, or a classifier that disagrees with the
            config's label count or with ``num_labels``.
    """
    return load_pretrained(Student, path, num_labels, task, dispatch, return_report)


def student_from_hf(model_or_path, spec_overrides: Mapping | None = None,
                    layers: int | Sequence[int] | None = None) -> Student:
    """Initialise a student from a Hugging Face BERT checkpoint, optionally from a subset of its layers.

    Copies the embeddings, the chosen layers (renumbered 0..k-1) and the pooler; drops any task head
    and relation projection. The source is checked as strictly as by :func:`load_student`. Typical use:
    a 6-layer teacher's layers ``[1, 3, 5]`` as a 3-layer student's initialisation.

    Args:
        model_or_path: a ``transformers`` BERT model (``BertModel`` or a ``BertFor*`` task model), a
            folder, or a Hub name.
        spec_overrides: StudentSpec fields that do not change weight shapes (``dropout``, ``name``,
            ``routing`` ...).
        layers: None for all layers; a list of layer indices; or an int k for k evenly spaced layers
            ending with the last (k=3 of 12 gives [3, 7, 11]).
    Returns:
        A :class:`Student` in eval mode.
    """
    return from_hf(Student, model_or_path, spec_overrides, layers)
