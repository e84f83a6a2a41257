"""The two on-disk layouts of a student (see :mod:`gapkit.models.checkpoint`, the public API), read and
written for a student class given, so that :class:`~gapkit.models.Student` can save and load itself
through this module without this module importing it back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import ModelError
from .hf_config import spec_from_hf_config
from .hf_loading import (WEIGHT_FILES, LoadReport, missing_reference, name_list, nonfinite_tensors, read_weight_file,
                         weight_files)
from .spec import StudentSpec

if TYPE_CHECKING:  # annotations only: student.py imports this module, never the other way round
    from .student import Student

__all__ = ["resolve_folder", "save_pretrained", "load_pretrained", "from_hf"]

# Under the public module's name: that is the logger a user filters on.
logger = logging.getLogger("gapkit.models.checkpoint")

CONFIG_FILE = "config.json"
SPEC_FILE = "gapkit_spec.json"
SAFETENSORS_FILE = "model.safetensors"

# The Hugging Face prefix of the encoder inside task models (BertForSequenceClassification ...) and of
# the authors' MoEBertMiniLM wrapper (``self.bert = MoEBertModel(config)``).
BASE_PREFIX = "bert."
# Keys outside the encoder that we know and deliberately drop: the MLM/NSP heads of pre-training
# checkpoints (BertForPreTraining / BertForMaskedLM), which play no part in encoding.
IGNORED_PREFIXES = {"cls.": "pre-training (MLM/NSP) head"}
# The MiniMoE relation projection (``Student.relation``): the authors' ``MoEBertMiniLM.self`` holds it,
# so their checkpoints name it ``self.query.weight`` ... at the top level, outside ``bert.``.
RELATION_PREFIX = "self."
HEAD_PREFIX = "classifier."
TASK_ARCHITECTURES = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}
# Spec fields a checkpoint's weights fix; the rest (dropout, routing, gate noise ...) may be overridden.
SHAPE_FIELDS = ("layers", "hidden", "heads", "head_size", "ffn", "vocab_size", "max_positions",
                "type_vocab_size", "attn_experts", "ffn_experts")


# ----------------------------------------------------------------------------------------------------
# Config conversion (StudentSpec <-> Hugging Face BertConfig dict, dense or the authors' MiniMoE)
# ----------------------------------------------------------------------------------------------------
def _hf_config(student: Student, label_names: Sequence[str] | None = None) -> dict:
    """The config.json dict of ``student``: a plain BertConfig, or the authors' MiniMoE BertConfig."""
    from transformers import BertConfig

    spec = student.spec
    moe_layout = _writes_moe_layout(spec)
    x, y = spec.attn_experts, spec.ffn_experts
    kwargs = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        # The authors' config stores the wide (pre-moefication) sizes: heads * x and ffn * y.
        num_attention_heads=spec.heads * x,
        intermediate_size=spec.ffn * y,
        hidden_act=spec.hidden_act,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.attention_dropout,
        max_position_embeddings=spec.max_positions,
        type_vocab_size=spec.type_vocab_size,
        initializer_range=spec.initializer_range,
        layer_norm_eps=spec.layer_norm_eps,
        pad_token_id=spec.pad_token_id,
    )
    base = "MoEBert" if moe_layout else "Bert"
    architecture = base + (TASK_ARCHITECTURES[student.task] if student.num_labels else "Model")
    if student.num_labels:
        kwargs["num_labels"] = student.num_labels
        if label_names and len(label_names) == student.num_labels:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    if moe_layout:
        kwargs.update(moe=f"{x},{y}", attention_head_size=spec.head_size)
    config = BertConfig(architectures=[architecture], **kwargs)
    return config.to_dict()


def _writes_moe_layout(spec: StudentSpec) -> bool:
    # A dense student whose heads * head_size differs from hidden cannot be a BertModel (BERT derives
    # head_size = hidden / heads); the authors' layout states attention_head_size, so it can.
    return spec.is_moe or spec.heads * spec.head_size != spec.hidden


def _spec_from_config(config: Mapping, where: str) -> StudentSpec:
    """A StudentSpec from a config.json dict: dense BERT, or the authors' MiniMoE (``moe``, ``attention_head_size``).

    ``spec_from_hf_config`` reads the shape of any encoder family; a checkpoint's *weights* only fit a
    student when the network is BERT itself, which is checked here first.

    Raises:
        ModelError: not a BERT config, or one a student cannot represent.
    """
    model_type = config.get("model_type")
    # The authors' configs are BertConfigs (model_type "bert"); accept a hand-written one without it.
    if model_type != "bert" and not (model_type is None and "moe" in config):
        raise ModelError(
            f"{where} holds a model of type {model_type!r} (config.json model_type), but a gapkit student "
            f"loads only BERT checkpoints (model_type 'bert': dense, or the MiniMoE authors' layout)."
        )
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ModelError(
            f"{where} uses position_embedding_type {position!r}; gapkit students have absolute positions only."
        )
    return spec_from_hf_config(config, where=where)


def _merge_saved_spec(spec: StudentSpec, folder: Path) -> tuple[StudentSpec, list[str]]:
    """Take gapkit-only settings (routing, gate noise, ...) from gapkit_spec.json when its shapes agree.

    Returns:
        (the spec, notes for the LoadReport). A ``load_balance_weight`` written by older gapkit versions
        is dropped with a note: the weights do not depend on it, and the weight now belongs to the run
        (``weights.load_balance``).
    """
    path = folder / SPEC_FILE
    if not path.is_file():
        return spec, []
    notes = []
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "load_balance_weight" in data:
            old = data.pop("load_balance_weight")
            notes.append(f"{path.name} sets load_balance_weight={old!r}, which was ignored: the load-balance "
                         f"weight is the run's weights.load_balance now.")
            logger.warning("%s: %s", folder, notes[-1])
        saved = StudentSpec.from_dict(data)
    except (ValueError, TypeError) as err:
        logger.warning("Ignoring %s: it is not a valid StudentSpec (%s).", path, err)
        return spec, notes + [f"{path.name} was ignored: it is not a valid StudentSpec ({err})."]
    # config.json describes the network the weights belong to: it wins on everything it states.
    if any(getattr(saved, f) != getattr(spec, f) for f in SHAPE_FIELDS + ("hidden_act", "layer_norm_eps")):
        logger.warning("Ignoring %s: it disagrees with config.json, which describes the weights.", path)
        return spec, notes + [f"{path.name} was ignored: it disagrees with config.json, which describes the weights."]
    return saved, notes


# ----------------------------------------------------------------------------------------------------
# Folders and weight files
# ----------------------------------------------------------------------------------------------------
def resolve_folder(name_or_path: str | os.PathLike) -> Path:
    """A local folder, or a Hub repository fetched with ``huggingface_hub.snapshot_download``.

    Args:
        name_or_path: a folder, or a Hub id such as ``GeneZC/bert-base-minimoe-1,4E``.
    Returns:
        The folder's path.
    Raises:
        ModelError: neither a local folder nor fetchable from the Hub (e.g. offline).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"{str(name_or_path)!r} is a file; expected a checkpoint folder or a Hub model name.")
    problem = missing_reference(name_or_path)  # a path that does not exist: never asked of the Hub
    if problem is not None:
        raise ModelError(f"{problem}.")
    from huggingface_hub import snapshot_download

    try:
        # Only what a checkpoint needs: configs and weights, not TF/Flax/ONNX copies.
        return Path(snapshot_download(str(name_or_path), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"]))
    except Exception as err:  # HFValidationError, offline LocalEntryNotFoundError, RepositoryNotFoundError ...
        raise ModelError(
            f"{str(name_or_path)!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(err).__name__}: offline, misspelt, or no such repository)."
        ) from err


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        raise ModelError(
            f"{folder} has no config.json (found: {found}); expected a Hugging Face BERT or MiniMoE checkpoint folder."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{path} is not valid JSON ({err}).") from None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder, from the files transformers would read (``hf_loading.weight_files``):
    model.safetensors, else its sharded index's shards, else pytorch_model.bin (``weights_only=True``
    only), else its sharded index's shards. Each unreadable file is one ModelError naming it."""
    files = weight_files(folder)
    if not files:
        raise ModelError(f"{folder} has a config.json but no weights; expected {', '.join(WEIGHT_FILES[:-1])} "
                         f"or {WEIGHT_FILES[-1]}.")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weight_file(path))
    return state


@dataclass
class _Parts:
    """A raw checkpoint sorted by role (keys without their prefix), and what was dropped by design."""

    encoder: dict
    head: dict
    relation: dict
    dropped: list  # checkpoint keys, as written


def _split_state(state: Mapping[str, torch.Tensor], where: str) -> _Parts:
    """Sort a raw checkpoint into encoder, task head and relation projection.

    Dropped by design: pre-training heads (:data:`IGNORED_PREFIXES`) and the ``position_ids`` buffer
    older transformers saved. Any other tensor is an error: a checkpoint gapkit cannot fully account
    for is not loaded.

    Raises:
        ModelError: tensors that belong to none of these roles.
    """
    prefixed = any(k.startswith(BASE_PREFIX) for k in state)
    parts = _Parts({}, {}, {}, [])
    unknown = []
    for raw_key, value in state.items():
        # TF-era checkpoints name LayerNorm parameters gamma/beta (transformers renames them the same way).
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", raw_key))
        if prefixed and key.startswith(BASE_PREFIX):
            parts.encoder[key[len(BASE_PREFIX):]] = value
        elif not prefixed and key.split(".")[0] in ("embeddings", "encoder", "pooler"):
            parts.encoder[key] = value
        elif key.startswith(HEAD_PREFIX):
            parts.head[key[len(HEAD_PREFIX):]] = value
        elif key.startswith(RELATION_PREFIX):
            parts.relation[key[len(RELATION_PREFIX):]] = value
        elif key.startswith(tuple(IGNORED_PREFIXES)):
            parts.dropped.append(raw_key)
        else:
            unknown.append(raw_key)
    if parts.encoder.pop("embeddings.position_ids", None) is not None:  # a buffer, not a weight
        parts.dropped.append((BASE_PREFIX if prefixed else "") + "embeddings.position_ids")
    if unknown:
        raise ModelError(
            f"{where} holds tensors a BERT / MiniMoE student does not have: {name_list(unknown)} (expected the "
            f"encoder, optionally under 'bert.', a 'classifier.' head, the relation projection 'self.' and "
            f"pre-training heads 'cls.')."
        )
    if parts.dropped:
        logger.info("%s: ignoring %d pre-training-head tensor(s), e.g. %s.", where, len(parts.dropped), parts.dropped[0])
    return parts


def _select_encoder(student: Student, encoder: dict, where: str) -> tuple[dict, list[str], list[str]]:
    """The checkpoint's encoder weights, checked key by key against ``student``'s parameters.

    Returns:
        (selected weights, missing pooler keys, dropped gate keys). Gates the student does not have
        are dropped by design: the authors' layout always stores both gates of a layer and leaves a
        1-output gate unused, and gapkit writes zero gates for random/hash routing, which has none.
        A missing pooler is returned for the caller to judge (a token-classification checkpoint has none).
    Raises:
        ModelError: a missing (other than the pooler), unexpected or wrongly shaped encoder weight.
    """
    expected = {k: v for k, v in student.state_dict().items() if not k.startswith((HEAD_PREFIX, "relation."))}
    missing = [k for k in expected if k not in encoder]
    missing_pooler = [k for k in missing if k.startswith("pooler.")]
    missing = [k for k in missing if not k.startswith("pooler.")]
    unused_gate = re.compile(r"^encoder\.layer\.\d+\.(attn_gate|ffn_gate)\.(weight|bias)$")
    extra = [k for k in encoder if k not in expected and not unused_gate.match(k)]
    if missing:
        shapes = ", ".join(f"{k!r} {list(expected[k].shape)}" for k in sorted(missing)[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        instead = f", and has {name_list(extra)} instead" if extra else ""
        raise ModelError(f"{where} lacks the encoder weight(s) {shapes}{more} expected from config.json{instead}.")
    wrong = [k for k in expected if k in encoder and tuple(encoder[k].shape) != tuple(expected[k].shape)]
    if wrong:
        shapes = ", ".join(f"{k!r} has shape {list(encoder[k].shape)}, expected {list(expected[k].shape)}"
                           for k in wrong[:4])
        more = f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""
        raise ModelError(f"{where}: encoder weight {shapes}{more} from the config.")
    if extra:
        raise ModelError(
            f"{where} has encoder weight(s) a student of its config does not have: {name_list(extra)}; the "
            f"checkpoint and its config.json disagree."
        )
    dropped_gates = sorted(k for k in encoder if k not in expected)
    return {k: encoder[k] for k in expected if k in encoder}, missing_pooler, dropped_gates


def _check_head_labels(config: Mapping, head: dict, where: str) -> None:
    """A classifier must have as many rows as the labels its config.json declares."""
    if "weight" not in head:
        return
    rows = head["weight"].shape[0]
    labels = config.get("num_labels") if isinstance(config.get("num_labels"), int) else (
        len(config["id2label"]) if isinstance(config.get("id2label"), dict) else None)
    if labels is not None and labels != rows:
        raise ModelError(
            f"{where}: classifier.weight has {rows} rows but config.json declares {labels} labels (id2label / "
            f"num_labels); the checkpoint is inconsistent."
        )


def _task_from_config(config: Mapping) -> str | None:
    for arch in config.get("architectures") or []:
        for task, suffix in TASK_ARCHITECTURES.items():
            if arch.endswith(suffix):
                return task
    return None


def _build_student(cls: type, spec: StudentSpec, parts: _Parts, where: str, num_labels: int | None,
                   task: str | None, dispatch: str, notes: Sequence[str] = ()) -> tuple[Student, LoadReport]:
    """Build a student of ``spec``, load checked weights into it (eval mode) and report what was allowed."""
    head = parts.head
    head_labels = head["weight"].shape[0] if "weight" in head else 0
    if num_labels is None:
        num_labels = head_labels
    elif head_labels and num_labels and num_labels != head_labels:
        raise ModelError(
            f"{where} has a classifier with {head_labels} labels but num_labels={num_labels} was asked for; "
            f"pass num_labels={head_labels}, or 0 to drop the head."
        )
    task = task or "sequence"
    student = cls(spec, num_labels=num_labels, task=task, dispatch=dispatch, moefy=False)
    state, missing_pooler, dropped = _select_encoder(student, parts.encoder, where)
    dropped = list(parts.dropped) + [BASE_PREFIX + k for k in dropped]
    new_head, random_unused = [], []

    if num_labels and head_labels:
        expected = student.classifier.state_dict()
        wrong = sorted(set(head) ^ set(expected)) + [
            k for k in expected if k in head and tuple(head[k].shape) != tuple(expected[k].shape)]
        if wrong:
            shapes = ", ".join(f"classifier.{k} {list(head[k].shape) if k in head else 'missing'}" for k in wrong)
            raise ModelError(f"{where} has a malformed classifier ({shapes}; expected weight "
                             f"{list(expected['weight'].shape)} and bias {list(expected['bias'].shape)}).")
        state.update({HEAD_PREFIX + k: v for k, v in head.items()})
        if missing_pooler and task == "sequence":
            raise ModelError(
                f"{where} has a sequence classifier but no pooler ({name_list(missing_pooler)}), which that "
                f"classifier reads: the checkpoint is incomplete."
            )
    elif num_labels:
        new_head = [HEAD_PREFIX + k for k in ("weight", "bias")]
        logger.info("%s has no classifier; the %d-label head is newly initialised.", where, num_labels)
    elif head_labels:
        dropped += [HEAD_PREFIX + k for k in head]
        logger.info("%s: ignoring its %d-label classifier (num_labels=0).", where, head_labels)
    elif head:
        raise ModelError(f"{where} has classifier tensors without a classifier.weight ({name_list(head)}).")
    if missing_pooler:
        # A fresh sequence head reads the pooler, so it is part of that head; otherwise nothing in
        # gapkit reads pooler_output, but it is random and the report says so.
        (new_head if new_head and task == "sequence" else random_unused).extend(missing_pooler)
        logger.info("%s has no pooler weights; the student's pooler keeps its random initialisation.", where)

    if parts.relation:
        relation = student.add_relation_projection()
        expected = {k: v for k, v in relation.state_dict().items()}
        wrong = sorted(set(parts.relation) ^ set(expected)) + [
            k for k in expected if k in parts.relation and tuple(parts.relation[k].shape) != tuple(expected[k].shape)]
        if wrong:
            shapes = ", ".join(
                f"{RELATION_PREFIX}{k} {list(parts.relation[k].shape) if k in parts.relation else 'missing'}"
                for k in wrong[:4])
            raise ModelError(f"{where} has a malformed relation projection ({shapes}; expected query/key/value "
                             f"weights [{spec.hidden}, {spec.hidden}] and biases [{spec.hidden}]).")
        state.update({"relation." + k: v for k, v in parts.relation.items()})

    bad = nonfinite_tensors(state.items())
    if bad:
        raise ModelError(f"{where} holds NaN or infinite values in {name_list(bad)}: the checkpoint is corrupt "
                         f"(saved after a diverged step, say), so use an earlier one.")
    missing, unexpected = student.load_state_dict(state, strict=False)
    # Internal invariant: only what the report lists stays at its initialisation.
    assert not unexpected and set(missing) == set(new_head) | set(random_unused), (missing, unexpected)
    report = LoadReport(source=where, model=type(student).__name__, new_head=tuple(new_head),
                        random_unused=tuple(random_unused), dropped=tuple(sorted(dropped)), notes=tuple(notes))
    return student.eval(), report


# ----------------------------------------------------------------------------------------------------
# Writing and reading (the public API, :mod:`gapkit.models.checkpoint`, binds them to Student)
# ----------------------------------------------------------------------------------------------------
def save_pretrained(student: Student, folder: str | os.PathLike, label_names: Sequence[str] | None = None) -> Path:
    """Write ``student`` as a Hugging Face folder.

    A dense student becomes a plain BERT folder (``BertModel``, or ``BertForSequenceClassification`` /
    ``BertForTokenClassification`` with a head) that ``transformers`` loads without gapkit. A MiniMoE
    student is written in the authors' released layout (see the module docstring). Both also get
    ``gapkit_spec.json``; a relation projection is written as ``self.query.weight`` ... (transformers
    reports those as unused when it loads the folder, and ignores them). Files are written under temporary names and moved into place, so an
    interrupted save never leaves a half-written checkpoint under the final name.

    Args:
        student: a :class:`Student`.
        folder: target folder; created if needed, files of the same names replaced.
        label_names: class names of the head, written as the config's ``id2label``/``label2id``.
    Returns:
        The folder.
    Raises:
        ModelError: ``folder`` is a file or cannot be created (nothing is written).
    """
    from ..io import atomic_write, save_safetensors

    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ModelError(f"save_pretrained's folder {str(folder)!r} is a file: give a folder (it is created if "
                         f"needed; files of the same names in it are replaced).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"save_pretrained cannot create the folder {str(folder)!r} "
                         f"({err.strerror or type(err).__name__}): choose a folder you can write to.") from None
    folder = path
    spec = student.spec
    moe_layout = _writes_moe_layout(spec)
    if moe_layout and not spec.is_moe:
        logger.warning(
            "%s: heads * head_size (%d) differs from hidden (%d), which transformers' BertModel cannot express; "
            "writing the MiniMoE layout, which only gapkit.load_student reads.",
            folder, spec.heads * spec.head_size, spec.hidden,
        )
    encoder = {k: v for k, v in student.state_dict().items() if not k.startswith((HEAD_PREFIX, "relation."))}
    if moe_layout:
        # The authors' MoEBertLayer always has both gates; a block without a learned gate (dense, or
        # random/hash routing) gets a zero Linear(H -> E) that is never used.
        for i, layer in enumerate(student.encoder.layer):
            for gate_name, experts in (("attn_gate", spec.attn_experts), ("ffn_gate", spec.ffn_experts)):
                gate = getattr(layer, gate_name, None)
                if getattr(gate, "mode", None) != "learned":  # no gate, or random/hash routing
                    encoder[f"encoder.layer.{i}.{gate_name}.weight"] = torch.zeros(experts, spec.hidden)
                    encoder[f"encoder.layer.{i}.{gate_name}.bias"] = torch.zeros(experts)
    # transformers puts the encoder under "bert." inside task models; the authors always do.
    prefix = BASE_PREFIX if (moe_layout or student.num_labels) else ""
    tensors = {prefix + k: v for k, v in encoder.items()}
    if student.num_labels:
        tensors.update({HEAD_PREFIX + k: v for k, v in student.classifier.state_dict().items()})
    if student.relation is not None:
        tensors.update({RELATION_PREFIX + k: v for k, v in student.relation.state_dict().items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    atomic_write(folder / SAFETENSORS_FILE, lambda p: save_safetensors(tensors, p, metadata={"format": "pt"}))
    atomic_write(folder / CONFIG_FILE, json.dumps(_hf_config(student, label_names), indent=2, sort_keys=True) + "\n")
    atomic_write(folder / SPEC_FILE, spec.to_json() + "\n")
    return folder


def load_pretrained(cls: type, path: str | os.PathLike, num_labels: int | None = None, task: str | None = None,
                    dispatch: str = "auto", return_report: bool = False):
    """:func:`gapkit.models.checkpoint.load_student`, building an instance of ``cls``."""
    folder = resolve_folder(path)
    where = str(path)
    config = _read_config(folder)
    spec, notes = _merge_saved_spec(_spec_from_config(config, where), folder)
    parts = _split_state(_read_weights(folder), where)
    _check_head_labels(config, parts.head, where)
    saved_task = _task_from_config(config)
    if task and saved_task and task != saved_task and parts.head and num_labels != 0:
        raise ModelError(
            f"{where} holds a {saved_task}-classification head but task={task!r} was asked for: its classifier "
            f"was trained for the other kind of task (pass num_labels=0 to load the encoder alone)."
        )
    student, report = _build_student(cls, spec, parts, where, num_labels, task or saved_task, dispatch, notes=notes)
    return (student, report) if return_report else student


def from_hf(cls: type, model_or_path, spec_overrides: Mapping | None = None,
            layers: int | Sequence[int] | None = None):
    """:func:`gapkit.models.checkpoint.student_from_hf`, building an instance of ``cls``."""
    if isinstance(model_or_path, nn.Module):
        if not hasattr(model_or_path, "config"):
            raise ModelError(
                f"student_from_hf needs a transformers model (with .config), got a {type(model_or_path).__name__}."
            )
        where = f"the given {type(model_or_path).__name__}"
        config = model_or_path.config.to_dict()
        raw = model_or_path.state_dict()
        saved_spec_folder = None
    else:
        folder = resolve_folder(model_or_path)
        where = str(model_or_path)
        config = _read_config(folder)
        raw = _read_weights(folder)
        saved_spec_folder = folder
    spec = _spec_from_config(config, where)
    if saved_spec_folder is not None:
        spec, _ = _merge_saved_spec(spec, saved_spec_folder)
    parts = _split_state(raw, where)
    _check_head_labels(config, parts.head, where)
    encoder = parts.encoder

    chosen = _choose_layers(layers, spec.layers)
    if chosen != list(range(spec.layers)):
        renamed = {}
        for key, value in encoder.items():
            m = re.match(r"^encoder\.layer\.(\d+)\.(.*)$", key)
            if m is None:
                renamed[key] = value
            elif int(m[1]) in chosen:
                renamed[f"encoder.layer.{chosen.index(int(m[1]))}.{m[2]}"] = value
        encoder = renamed
    overrides = dict(spec_overrides or {})
    fixed = sorted(set(overrides) & set(SHAPE_FIELDS))
    if fixed:
        raise ModelError(
            f"student_from_hf: {', '.join(fixed)} are fixed by the checkpoint's weights and cannot be overridden"
            + (" (choose layers with the layers= argument)." if "layers" in fixed else ".")
        )
    if "dropout" in overrides and "gate_noise" not in overrides and spec.gate_noise == spec.dropout:
        overrides["gate_noise"] = None  # still tied to dropout, as the authors do: re-derive it
    try:
        spec = dataclasses.replace(spec, layers=len(chosen), name=None, **overrides)
    except (TypeError, ValueError) as err:
        raise ModelError(f"student_from_hf: bad spec_overrides ({err}).") from None
    # The source's task head and relation projection are not part of an initialisation: dropped.
    parts = _Parts(encoder, {}, {}, parts.dropped)
    return _build_student(cls, spec, parts, where, 0, None, "sorted")[0]


def _choose_layers(layers: int | Sequence[int] | None, total: int) -> list[int]:
    if layers is None:
        return list(range(total))
    if isinstance(layers, int) and not isinstance(layers, bool):
        if not 1 <= layers <= total:
            raise ModelError(f"Cannot choose {layers} layers from a checkpoint with {total}; use 1..{total}.")
        # Evenly spaced, ending with the last layer (the one relation distillation targets).
        return [round((i + 1) * total / layers) - 1 for i in range(layers)]
    chosen = list(layers)
    if not chosen or len(set(chosen)) != len(chosen) or not all(
        isinstance(i, int) and 0 <= i < total for i in chosen
    ):
        raise ModelError(
            f"layers must be distinct indices in 0..{total - 1} (the checkpoint has {total} layers), got {layers!r}."
        )
    return chosen
