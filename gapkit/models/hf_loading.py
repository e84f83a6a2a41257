"""Strict loading of Hugging Face models: never a silently random weight.

``transformers``' ``from_pretrained`` loads a checkpoint that lacks a weight, has extra ones or has one
of another shape, initialises what is missing at random, and says so in a log report that is easy to
miss (and that gapkit's CLI silences). :func:`load_hf_model` asks for that report
(``output_loading_info=True``, ``ignore_mismatched_sizes=True`` so that every mismatch is listed
rather than the first one raised) and turns it into a decision:

* a **missing** weight is an error, except a fresh task head when ``allow_new_head`` is set and the
  checkpoint has no classifier at all (a pre-trained encoder about to be fine-tuned), and the pooler
  of a bare encoder (gapkit never reads a bare encoder's ``pooler_output``);
* an **unexpected** weight is an error, except the heads listed in :data:`PRETRAINING_HEADS` (dropped
  by design when an encoder is loaded), a pooler the loaded architecture does not have, and (bare
  encoder only) a task head the caller did not ask for;
* a **mis-shaped** weight is always an error; a classifier whose label count disagrees with the
  config or with ``num_labels`` gets its own sentence;
* a weight holding NaN or inf is an error.

What was allowed is listed in the returned :class:`LoadReport`, for the run to record.

A weight file that cannot be read is one sentence naming it (:func:`weight_files`,
:func:`read_weight_file`, shared with ``checkpoint.load_student``): a ``pytorch_model.bin`` is a pickle
and is only ever read with ``weights_only=True`` (transformers does the same), so one holding anything
but tensors is refused, never unpickled; a truncated ``.safetensors`` or a malformed sharded index is
named with the fix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn

from ..errors import ModelError
from .references import missing_reference  # noqa: F401 (re-exported: loaders and tests import it from here)

__all__ = ["HEADS", "LoadReport", "PRETRAINING_HEADS", "load_hf_model", "missing_reference", "name_list",
           "nonfinite_tensors", "read_weight_file", "weight_files"]

HEADS = ("sequence", "token")
_ARCH_SUFFIX = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification"}

# Checkpoint tensors outside the encoder that are dropped by design when an encoder (bare, or under a
# new task head) is loaded: pre-training objectives whose heads play no part in encoding, and the
# MiniMoE relation projection. Keyed by the prefix transformers reports them under.
PRETRAINING_HEADS = {
    "cls.": "BERT / DeBERTa pre-training heads (masked-LM, next-sentence prediction)",
    "lm_head.": "RoBERTa / XLM-R / CamemBERT masked-LM head",
    "lm_predictions.": "DeBERTa-v2/v3 released masked-LM head",
    "mask_predictions.": "DeBERTa-v3 replaced-token-detection head",
    "vocab_transform.": "DistilBERT masked-LM head",
    "vocab_layer_norm.": "DistilBERT masked-LM head",
    "vocab_projector.": "DistilBERT masked-LM head",
    "discriminator_predictions.": "ELECTRA discriminator head",
    "generator_predictions.": "ELECTRA generator head",
    "generator_lm_head.": "ELECTRA generator head",
    "head.": "ModernBERT masked-LM transform (a bare encoder has none)",
    "decoder.": "ModernBERT masked-LM decoder",
    "self.": "MiniMoE relation projection, used only for distillation",
}
# Task heads of fine-tuned checkpoints: dropped only when a bare encoder (head=None) is asked for.
TASK_HEADS = ("classifier.", "pre_classifier.", "score.", "qa_outputs.", "pooler.")
# The final projection to labels; anything else of a task head (a pooler, DistilBERT's pre_classifier,
# ModernBERT's head transform) may come pre-trained without it.
CLASSIFIER_PREFIXES = ("classifier.", "score.")
# The weight files of a checkpoint folder, in the order transformers prefers them; an index lists shards.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class LoadReport:
    """What a strict load allowed that is not "every weight came from the checkpoint".

    Attributes:
        source: the folder or Hub name loaded.
        model: the class that was built (e.g. ``BertForSequenceClassification``, ``Student``).
        new_head: tensors of a task head initialised fresh because the checkpoint has none.
        random_unused: tensors initialised fresh that gapkit never reads (a bare encoder's pooler).
        dropped: checkpoint tensors deliberately not loaded (pre-training heads, a pooler the
            architecture lacks, a task head nobody asked for, the authors' unused gates).
        notes: sentences about anything else the load decided (e.g. an obsolete setting ignored).
    """

    source: str
    model: str
    new_head: tuple[str, ...] = ()
    random_unused: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """True when every weight of the model came from the checkpoint and nothing was noted."""
        return not (self.new_head or self.random_unused or self.notes)

    def to_dict(self) -> dict:
        """JSON-ready (lists instead of tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def name_list(names: Iterable[str], limit: int = 6) -> str:
    """``'a', 'b' and 3 more`` — tensor names for an error sentence."""
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def nonfinite_tensors(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    bad = []
    for name, t in tensors:
        if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


# ----------------------------------------------------------------------------------------------------
# Weight files (model references, a local folder or a Hub name, are checked in gapkit.models.references)
# ----------------------------------------------------------------------------------------------------
def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files a checkpoint folder's weights are read from, chosen as transformers chooses.

    The first of :data:`WEIGHT_FILES` that exists wins: ``model.safetensors``, else the shards that
    ``model.safetensors.index.json`` lists, else ``pytorch_model.bin``, else the shards of
    ``pytorch_model.bin.index.json``.

    Args:
        folder: a checkpoint folder.
    Returns:
        The files, shards in name order; ``[]`` when the folder has none of these.
    Raises:
        ModelError: an index that is not JSON, has no ``weight_map`` of tensor name -> file name, or
            lists a shard the folder lacks.
    """
    path = _first_weight_file(Path(folder))
    if path is None:
        return []
    return _shard_files(path) if path.name.endswith(".index.json") else [path]


def _first_weight_file(folder: Path) -> Path | None:
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def _shard_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{index} is not valid JSON ({err}): save or download the checkpoint again.") from None
    except AttributeError:  # valid JSON, but not an object
        weight_map = None
    if not (isinstance(weight_map, dict) and weight_map and all(isinstance(v, str) for v in weight_map.values())):
        raise ModelError(f"{index} has no 'weight_map' (tensor name -> shard file), so its shards are unknown: "
                         f"save or download the checkpoint again.")
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise ModelError(f"{index} lists shard(s) {name_list(missing)} that {index.parent} lacks: the download or "
                         f"copy is incomplete.")
    return shards


def read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of one weight file: ``.safetensors``, or a pickle read with ``weights_only=True``.

    A ``.bin`` is a pickle, and unpickling arbitrary objects can run arbitrary code: with
    ``weights_only=True`` torch refuses anything but tensors and plain containers, and this is the only
    way gapkit reads one.

    Raises:
        ModelError: a truncated or corrupt safetensors file, a pickle that holds more than tensors (or
            is no pickle), or one that is not a dict of tensors; the sentence names the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # SafetensorError, UnpicklingError, a zip or EOF error ...
        raise _weight_file_error(path, err) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a dict of tensors (a state dict): save the model's state_dict() "
                         f"as model.safetensors.")
    return state


def _weight_file_error(path: Path, err: BaseException) -> ModelError:
    """The one sentence for a weight file that cannot be read: which file, why, and the fix."""
    if path.suffix == ".safetensors":
        reason = (str(err).strip().splitlines() or [""])[0].rstrip(".")
        return ModelError(f"{path} is not a readable safetensors file ({type(err).__name__}: {reason}): it is "
                          f"truncated or corrupt, so save or download it again.")
    return ModelError(f"{path} could not be read as a plain dict of tensors with weights_only=True "
                      f"({type(err).__name__}), so it cannot be loaded safely: convert it to model.safetensors "
                      f"where its source is trusted.")


def _check_weight_files(folder: Path) -> None:
    """Raise the sentence naming the weight file at fault when transformers could not load ``folder``.

    Called only after transformers failed on a folder with a readable config.json (its exceptions do not
    name the file): each file is checked the way gapkit reads it, a safetensors file by its header
    (cheap, and it covers truncation).
    """
    for path in weight_files(folder):  # a malformed index raises here
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except Exception as err:  # SafetensorError
                raise _weight_file_error(path, err) from None
        else:
            read_weight_file(path)
    index = _first_weight_file(folder)
    if index is not None and index.name.endswith(".index.json"):
        if "metadata" not in json.loads(index.read_text(encoding="utf-8")):
            raise ModelError(f"{index} has no 'metadata' entry, which transformers needs to load a sharded "
                             f"checkpoint: save it again with save_pretrained.")


@contextlib.contextmanager
def _quiet_load_report():
    """Drop transformers' own LOAD REPORT log record while we decide on its content ourselves."""
    hf_logger = logging.getLogger("transformers.modeling_utils")

    class _Filter(logging.Filter):
        def filter(self, record):
            return "LOAD REPORT" not in str(record.msg)

    f = _Filter()
    hf_logger.addFilter(f)
    try:
        yield
    finally:
        hf_logger.removeFilter(f)


def _checkpoint_config(name_or_path) -> dict | None:
    path = os.path.join(str(name_or_path), "config.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None
    return None


def _config_label_count(config: dict | None) -> int | None:
    if not config:
        return None
    if isinstance(config.get("num_labels"), int):
        return config["num_labels"]
    if isinstance(config.get("id2label"), dict):
        return len(config["id2label"])
    return None


def load_hf_model(name_or_path: str | os.PathLike, head: str | None = None, num_labels: int = 0,
                  allow_new_head: bool = False, attn_implementation: str | None = None
                  ) -> tuple[nn.Module, LoadReport]:
    """Load a Hugging Face encoder strictly (see the module docstring for what is allowed).

    Args:
        name_or_path: a local folder or a Hub name.
        head: None for the bare encoder (``AutoModel``); ``sequence`` / ``token`` for
            ``AutoModelFor{Sequence,Token}Classification``.
        num_labels: size of the task head; 0 keeps the checkpoint's (its config's label count).
        allow_new_head: permit a freshly initialised task head when the checkpoint has no classifier;
            its tensors are listed in ``LoadReport.new_head``.
        attn_implementation: passed to transformers (``eager``, ``sdpa`` ...); None keeps its default.
    Returns:
        ``(model in eval mode, LoadReport)``.
    Raises:
        ModelError: not loadable; a missing, unexpected or mis-shaped weight; a classifier whose label
            count disagrees with the config or ``num_labels``; a NaN/inf weight; a checkpoint whose
            task head is of the other kind.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    source = str(name_or_path)
    if head is not None and head not in HEADS:
        raise ModelError(f"load_hf_model head must be one of {', '.join(HEADS)} or None, got {head!r}.")
    if head is None and num_labels:
        raise ModelError(f"load_hf_model got num_labels={num_labels} without a head: pass head='sequence' or 'token'.")
    problem = missing_reference(source)
    if problem is not None:
        raise ModelError(f"{problem}.")
    config = _checkpoint_config(name_or_path)
    archs = " ".join((config or {}).get("architectures") or [])
    if head is not None:
        other = _ARCH_SUFFIX["token" if head == "sequence" else "sequence"]
        if other in archs and _ARCH_SUFFIX[head] not in archs:
            raise ModelError(
                f"{source} holds a {other} model ({archs}) but a {head}-classification head was asked for: "
                f"its classifier was trained for the other kind of task."
            )

    auto = {None: AutoModel, "sequence": AutoModelForSequenceClassification,
            "token": AutoModelForTokenClassification}[head]
    kwargs = dict(output_loading_info=True, ignore_mismatched_sizes=True)
    if num_labels:
        kwargs["num_labels"] = num_labels
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    is_local = os.path.isdir(source)
    try:
        with _quiet_load_report():
            # A .bin is unpickled by transformers with weights_only=True (every version gapkit supports).
            model, info = auto.from_pretrained(source, **kwargs)
    except Exception as err:  # OSError, ValueError, SafetensorError, UnpicklingError, KeyError (a bad index) ...
        if is_local and config is not None:  # past config.json: name the weight file at fault, if one is
            _check_weight_files(Path(source))
        # transformers' messages run to several lines; the first names the cause.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        if type(err).__name__ == "UnpicklingError":  # its message goes on to explain how to unpickle unsafely
            reason = "UnpicklingError: a pickle that holds more than tensors, refused with weights_only=True"
        elif not isinstance(err, (OSError, ValueError, RuntimeError)):  # a bare KeyError says only 'metadata'
            reason = f"{type(err).__name__}: {reason}"
        if not is_local and type(err).__name__ in ("SafetensorError", "UnpicklingError"):
            raise ModelError(f"Model {source!r} is a Hugging Face Hub model whose downloaded weights could not be "
                             f"read safely ({reason}): delete them from the Hugging Face cache and try again, or "
                             f"use a version saved as safetensors.") from None
        where = ("is a local folder but not a loadable transformers model" if is_local else
                 "is not a local folder and could not be loaded from the Hugging Face Hub (offline or no such model)")
        raise ModelError(f"Model {source!r} {where} ({reason}).") from None

    report = _judge(model, info, source, head, num_labels, allow_new_head, config)
    bad = nonfinite_tensors(list(model.named_parameters()) + list(model.named_buffers()))
    if bad:
        raise ModelError(f"{source} holds NaN or infinite values in {name_list(bad)}: the checkpoint is corrupt "
                         f"(saved after a diverged step, say), so use an earlier one.")
    return model.eval(), report


def _judge(model: nn.Module, info: dict, source: str, head: str | None, num_labels: int, allow_new_head: bool,
           config: dict | None) -> LoadReport:
    """Turn transformers' loading info into a LoadReport, or raise ModelError."""
    missing = set(info.get("missing_keys") or ())
    unexpected = set(info.get("unexpected_keys") or ())
    mismatched = list(info.get("mismatched_keys") or ())
    errors = [e for e in (info.get("error_msgs") or ()) if e]
    if errors:
        raise ModelError(f"{source} could not be loaded into {type(model).__name__}: {errors[0].splitlines()[0]}")

    # Mis-shaped: a classifier whose label count disagrees gets its own sentence.
    if mismatched:
        if any(k.startswith(CLASSIFIER_PREFIXES) for k, *_ in mismatched) and head is not None:
            cls_key = next(k for k, *_ in mismatched if k.startswith(CLASSIFIER_PREFIXES))
            found = next(f for k, f, _ in mismatched if k == cls_key)
            labels = _config_label_count(config)
            if num_labels and labels != num_labels:
                raise ModelError(
                    f"{source} has a task head for {labels if labels is not None else list(found)[0]} labels but "
                    f"num_labels={num_labels} was asked for: use a checkpoint fine-tuned on this task, or its "
                    f"encoder without the head."
                )
            raise ModelError(
                f"{source}: its classifier {cls_key!r} has shape {list(found)}, which does not match the "
                f"{labels} labels its config.json declares (id2label / num_labels); the checkpoint is inconsistent."
            )
        names = ", ".join(f"{k!r} (checkpoint {list(f)}, model {list(e)})" for k, f, e in mismatched[:4])
        more = f" and {len(mismatched) - 4} more" if len(mismatched) > 4 else ""
        raise ModelError(f"{source} has weights of the wrong shape for {type(model).__name__}: {names}{more}.")

    prefix = getattr(model, "base_model_prefix", "") or ""
    has_head = head is not None and prefix and getattr(model, prefix, None) is not None
    state_keys = set(model.state_dict())
    if has_head:
        head_keys = {k for k in state_keys if not k.startswith(prefix + ".") or k.startswith(f"{prefix}.pooler.")}
    else:
        head_keys = set()

    # Unexpected.
    dropped, unknown = [], []
    for key in sorted(unexpected):
        bare = key[len(prefix) + 1:] if prefix and key.startswith(prefix + ".") else key
        if key.startswith(tuple(PRETRAINING_HEADS)):
            dropped.append(key)
        elif bare.startswith("pooler.") and not any(".pooler." in k or k.startswith("pooler.") for k in state_keys):
            dropped.append(key)  # a pooler the architecture lacks (token classification, RoBERTa heads)
        elif head is None and key.startswith(TASK_HEADS):
            dropped.append(key)  # a fine-tuned head; the bare encoder was asked for
        else:
            unknown.append(key)
    if unknown:
        raise ModelError(
            f"{source} has weights that {type(model).__name__} does not use: {name_list(unknown)}; the checkpoint "
            f"is of another architecture or was edited, so its encoder cannot be trusted to load completely."
        )

    # Missing.
    new_head: list[str] = []
    random_unused: list[str] = []
    encoder_missing = sorted(missing - head_keys)
    if head is None:
        random_unused = [k for k in encoder_missing if k.startswith("pooler.")]
        encoder_missing = [k for k in encoder_missing if not k.startswith("pooler.")]
    if encoder_missing:
        raise ModelError(
            f"{source} lacks the weight(s) {name_list(encoder_missing)} of {type(model).__name__}, which loading "
            f"would leave random: use a complete checkpoint of this architecture."
        )
    head_missing = sorted(missing & head_keys)
    if head_missing:
        classifier_loaded = any(k.startswith(CLASSIFIER_PREFIXES) and k not in missing for k in head_keys)
        if classifier_loaded:
            raise ModelError(
                f"{source} has a partial task head: {name_list(head_missing)} missing; the checkpoint is incomplete."
            )
        if not allow_new_head:
            raise ModelError(
                f"{source} has no trained {head}-classification head ({name_list(head_missing)} would be random): "
                f"use a checkpoint fine-tuned on the task, or fine-tune this one first."
            )
        new_head = head_missing
    return LoadReport(source=source, model=type(model).__name__, new_head=tuple(new_head),
                      random_unused=tuple(random_unused), dropped=tuple(dropped))
