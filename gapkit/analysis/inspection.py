"""Which expert each token goes to: a MiniMoE student's routing, token by token.

    load_for_inspection(path, tokenizer=None)      a run folder, a saved student or a released checkpoint,
                                                   with the tokenizer that belongs to it -> Inspection
    inspect_tokens(student, tokenizer, sentences)  one row per sentence, token, layer and MoE block
    token_expert_table(frame)                      tokens as rows, ``L0.ffn`` columns, cells ``e2 0.91``
    sentence_routing(student, tokenizer, sentences)  routing.parquet-style statistics of the sentences

The routing shown is the student's inference routing: the student runs in eval mode, so the gate adds
no noise and dropout is off; each token's expert is the gate's argmax and its probability the factor
the expert's output is scaled by, exactly what ``StudentOutput.routing`` returns for that input. The
``random`` and ``hash`` ablations have no gate: their probability is 1 (``random`` draws the expert on
every forward pass, so what is shown is one draw, seeded).

Each sentence is encoded and run on its own (a batch of one, no padding). A sentence longer than the
student's position table is truncated to it, with a warning; an empty sentence, a token id beyond the
student's vocabulary (a tokenizer that is not the student's) or a dense student is an error.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..distill.runfiles import RunDir, holds_tokenizer
from ..errors import ConfigError, DataError, ModelError

__all__ = ["INSPECT_COLUMNS", "IdTokenizer", "Inspection", "load_for_inspection", "inspect_tokens",
           "token_expert_table", "sentence_routing", "synthetic_tokenizer"]

INSPECT_COLUMNS = ("sentence", "position", "token", "token_id", "layer", "block", "expert", "gate_prob", "mode")
BLOCK_ORDER = {"attn": 0, "ffn": 1}
IDS = "ids"  # tokenizer name: sentences written as token ids
TOKENIZER_HINT = ("pass --tokenizer NAME_OR_FOLDER (tokenizer= in Python) with the tokenizer the student was "
                  "trained with, or --tokenizer ids to type token ids")
MODE_NOTES = {
    "learned": "learned gate, eval mode (no gate noise): the argmax expert and its gate probability",
    "random": "random routing (an ablation): each token's expert is drawn uniformly on every forward pass, so "
              "this is one draw (seeded); no gate, so probability 1",
    "hash": "hash routing (an ablation): expert = token id mod the number of experts; no gate, so probability 1",
}


# ----------------------------------------------------------------------------------------------------
# Token ids as sentences (the synthetic task has no tokenizer)
# ----------------------------------------------------------------------------------------------------
class IdTokenizer:
    """Sentences written as token ids separated by spaces (``"5 9 12"``), for students without a text
    tokenizer: gapkit's synthetic task, or any student with ``--tokenizer ids``.

    It offers the two calls gapkit uses of a Hugging Face tokenizer: ``tokenizer(text)["input_ids"]``
    and ``convert_ids_to_tokens(ids)``, so :func:`inspect_tokens` and
    :func:`~gapkit.analysis.plot_top_tokens` take it as they take any other.

    Args:
        vocab_size: ids must lie below it.
        specials: names of special ids (``{"[CLS]": 1}``): typed names are read as their ids, and those
            ids are shown by name; every other id shows as ``#7``.
        cls_token_id, sep_token_id: when given, each sentence is wrapped in them as the task's sequences
            are (unless it already starts / ends with them); when None the ids are taken literally.
    """

    def __init__(self, vocab_size: int, specials: dict[str, int] | None = None, cls_token_id: int | None = None,
                 sep_token_id: int | None = None):
        self.vocab_size = vocab_size
        self.specials = dict(specials or {})
        self.names = {i: name for name, i in self.specials.items()}
        self.cls_token_id, self.sep_token_id = cls_token_id, sep_token_id

    def __len__(self) -> int:
        return self.vocab_size

    def __call__(self, text: str, truncation: bool = False, max_length: int | None = None) -> dict:
        ids = []
        for word in text.split():
            if word in self.specials:
                ids.append(self.specials[word])
                continue
            try:
                token_id = int(word.lstrip("#"))
            except ValueError:
                names = f" or the names {', '.join(self.specials)}" if self.specials else ""
                raise DataError(f"Sentence {text!r} holds {word!r}, which is not a token id: this student's sentences "
                                f"are token ids separated by spaces, e.g. '5 9 12'{names}.") from None
            if not 0 <= token_id < self.vocab_size:
                raise DataError(f"Sentence {text!r} holds token id {token_id}, outside the student's vocabulary "
                                f"(ids 0 to {self.vocab_size - 1}).")
            ids.append(token_id)
        wrap_cls = self.cls_token_id is not None and (not ids or ids[0] != self.cls_token_id)
        wrap_sep = self.sep_token_id is not None and (not ids or ids[-1] != self.sep_token_id)
        if truncation and max_length is not None:
            ids = ids[: max(0, max_length - wrap_cls - wrap_sep)]
        ids = [self.cls_token_id] * wrap_cls + ids + [self.sep_token_id] * wrap_sep
        return {"input_ids": ids}

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.names.get(ids, f"#{ids}")
        return [self.names.get(int(i), f"#{int(i)}") for i in ids]

    def __repr__(self) -> str:
        return f"IdTokenizer(vocab_size={self.vocab_size}, specials={self.specials})"


def synthetic_tokenizer(vocab_size: int, rule: str = "counts") -> IdTokenizer:
    """The :class:`IdTokenizer` of gapkit's synthetic task: [PAD] 0, [CLS] 1, [SEP] 2 (and [OPEN] 3,
    [CLOSE] 4 for the ``span`` rule), content tokens as ``#id``; sentences are wrapped in [CLS] ... [SEP]."""
    from ..data.synthetic import CLOSE_ID, CLS_ID, OPEN_ID, PAD_ID, SEP_ID

    specials = {"[PAD]": PAD_ID, "[CLS]": CLS_ID, "[SEP]": SEP_ID}
    if rule == "span":
        specials.update({"[OPEN]": OPEN_ID, "[CLOSE]": CLOSE_ID})
    return IdTokenizer(vocab_size, specials, cls_token_id=CLS_ID, sep_token_id=SEP_ID)


# ----------------------------------------------------------------------------------------------------
# What to inspect: a run folder, a saved student, a released checkpoint
# ----------------------------------------------------------------------------------------------------
@dataclass
class Inspection:
    """A student ready for inspection, and where its pieces came from.

    Attributes:
        student: the :class:`~gapkit.models.Student`, in eval mode.
        tokenizer: its tokenizer (a Hugging Face tokenizer or an :class:`IdTokenizer`).
        source: what was asked for (the path as given).
        weights: the folder (or file) the weights were read from.
        tokenizer_source: where the tokenizer came from, in words.
        run_dir: the run folder when ``source`` is a run (or a folder inside one), else None.
        notes: what a reader must know about the choice (final weights instead of best/, an
            unfinished run, a tokenizer given in place of the saved one ...).
    """

    student: object
    tokenizer: object
    source: str
    weights: Path
    tokenizer_source: str
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def routing_file(self) -> Path | None:
        """The run's ``routing.parquet``, when there is one."""
        return RunDir(self.run_dir).routing() if self.run_dir is not None else None

    def describe(self) -> str:
        """A few lines: the student, its experts and routing mode, the weights and the tokenizer."""
        spec = self.student.spec
        blocks = [f"{n} {what}" for n, what in ((spec.attn_experts, "attention experts"),
                                                   (spec.ffn_experts, "FFN experts")) if n > 1]
        lines = [f"student: {self.source} ({spec.name}; {spec.layers} layers, {' and '.join(blocks)} per layer)",
                 f"weights: {self.weights}",
                 f"routing: {MODE_NOTES[spec.routing]}",
                 f"tokenizer: {self.tokenizer_source}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _run_status(run: RunDir) -> str | None:
    """The finished run's status from its result, or None while it has not finished."""
    try:
        result = run.result()
    except ConfigError as err:
        raise ModelError(str(err)) from None
    return None if result is None else result.status


def _student_from_checkpoint(run: RunDir):
    """The final weights of a finished run (:attr:`RunDir.final_weights`, the trained module's state) in a
    student built from the run's result (``student.spec``). Loaded strictly: every encoder tensor must be
    there with its shape; the task head and relation projection are left out."""
    import torch
    from safetensors.torch import load_file

    from ..models import Student, StudentSpec
    from ..models.hf_loading import name_list, nonfinite_tensors

    run_dir, result = run.dir, run.result()
    spec = result.student.get("spec")
    if spec is None:
        raise ModelError(f"Run {run_dir} trained a Hugging Face model ({result.student.get('ref')}), not a gapkit "
                         f"student: it has no experts to inspect.")
    weights = run.final_weights
    if not weights.is_file():
        raise ModelError(f"Run {run_dir} has neither best/ weights nor final weights ({weights}): no weights to "
                         f"inspect.")
    student = Student(StudentSpec.from_dict(spec), num_labels=0, dispatch="sorted", moefy=False)
    state = {k[len("model."):]: v for k, v in load_file(str(weights)).items()
             if k.startswith("model.") and not k.startswith(("model.classifier.", "model.relation."))}
    expected = student.state_dict()
    wrong = sorted(set(state) ^ set(expected)) + [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if wrong:
        raise ModelError(f"{weights} does not match the student of {run.result_file} ({name_list(wrong)}): "
                         f"the run folder is inconsistent.")
    bad = nonfinite_tensors(state.items())
    if bad:
        raise ModelError(f"{weights} holds NaN or infinite values in {name_list(bad)}.")
    with torch.no_grad():
        student.load_state_dict(state)
    return student.eval()


def _load_student(path: str) -> tuple[object, Path, Path | None, list[str]]:
    """(student, weights folder or file, run folder or None, notes) for a run folder, a folder inside a
    run (``best/``, ``checkpoint/``), a saved student or released checkpoint folder, or a Hub name."""
    from ..distill.trainer import missing_model_reason
    from ..models.checkpoint import load_student, resolve_folder

    where = Path(path).expanduser()
    if not where.exists():
        reason = missing_model_reason(path)
        if reason is not None:
            raise ModelError(f"Cannot inspect {path}: {reason}; give a run folder, a saved student folder or a "
                             f"released MiniMoE checkpoint folder.")
        folder = resolve_folder(path)  # a Hub name (fetched, or one sentence saying why not)
    elif not where.is_dir():
        raise ModelError(f"Cannot inspect {path}: it is a file; give a run folder, a saved student folder or a "
                         f"released MiniMoE checkpoint folder.")
    else:
        folder = where
    notes = []
    run = RunDir.of(folder)
    run_dir = run.dir if run is not None else None
    if run is not None and folder == run.dir:
        status = _run_status(run)
        if run.has_best():
            if status is None:
                notes.append("the run has not finished: best/ holds its best weights so far")
            elif status == "failed":
                notes.append(f"the run failed (see {run.failure_file}): best/ holds its best weights before "
                             f"the failure")
            folder = run.best_dir
        elif status in ("completed", "early_stopped"):
            notes.append("the run finished without best/ (it never evaluated): these are its final weights, "
                         "from checkpoint/")
            return _student_from_checkpoint(run), run.checkpoint_dir, run_dir, notes
        else:
            why = "it failed" if status == "failed" else "it has not finished"
            raise ModelError(f"Run {run_dir} has no best/ weights yet and {why}: inspect it once it has evaluated "
                             f"(best/) or finished.")
    elif run is not None and folder == run.checkpoint_dir:
        if _run_status(run) is None:
            raise ModelError(f"{folder} is the resumable state of a run that has not finished: inspect {run_dir} "
                             f"(its best/ weights) instead.")
        return _student_from_checkpoint(run), folder, run_dir, ["final weights, from checkpoint/"]
    return load_student(folder, num_labels=0, dispatch="sorted"), folder, run_dir, notes


def _auto_tokenizer(source: str | os.PathLike, what: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot load the tokenizer {what}: not a tokenizer folder and not reachable on the Hugging "
                        f"Face Hub ({type(err).__name__}).") from None


def _run_tokenizer(run_dir: Path, vocab_size: int) -> tuple[object | None, str]:
    """The tokenizer a run was configured with (data.tokenizer, else the teacher's), or (None, why not)."""
    from ..distill import DistillSpec
    from ..distill.trainer import load_tokenizer
    from ..errors import GapkitError

    try:
        spec = DistillSpec.from_dict(RunDir(run_dir).config())
    except (GapkitError, TypeError, ValueError) as err:
        return None, f"the run's config cannot be read ({err})"
    if spec.data.task == "synthetic":
        rule = spec.data.synthetic.get("rule", "counts")
        return synthetic_tokenizer(vocab_size, rule), (f"token ids of the run's synthetic task ({rule} rule): "
                                                       f"type sentences as ids, e.g. '5 9 12'")
    try:
        return load_tokenizer(spec), f"the run's configured tokenizer ({spec.data.tokenizer or spec.teacher})"
    except GapkitError as err:
        return None, f"the run's configured tokenizer cannot be loaded ({' '.join(str(err).split())})"


def _resolve_tokenizer(tokenizer, weights: Path, run_dir: Path | None, student, notes: list[str]):
    """(tokenizer, where it came from): the one given, else the one saved beside the weights, else the
    run's configured one; none of them is a :class:`DataError`."""
    vocab = student.spec.vocab_size
    saved = weights if holds_tokenizer(weights) else None
    if saved is None and run_dir is not None:
        saved = RunDir(run_dir).tokenizer_dir()
    if tokenizer is not None:
        if isinstance(tokenizer, (str, os.PathLike)):
            name = str(tokenizer)
            if name == IDS:
                tokenizer, source = IdTokenizer(vocab), "token ids (--tokenizer ids): type sentences as ids, e.g. '101 7592 102'"
            else:
                tokenizer, source = _auto_tokenizer(name, repr(name)), name
        else:
            source = f"the tokenizer given ({type(tokenizer).__name__})"
        if saved is not None:
            notes.append(f"using {source.split(':')[0]}, not the tokenizer saved in {saved}")
    elif saved is not None:
        tokenizer, source = _auto_tokenizer(saved, f"saved in {saved}"), f"saved beside the weights ({saved})"
    else:
        tokenizer, source = None, None
        reasons = [f"none is saved in {weights}"]
        if run_dir is not None:
            tokenizer, source = _run_tokenizer(run_dir, vocab)
            if tokenizer is None:
                reasons.append(source)
        if tokenizer is None:
            raise DataError(f"No tokenizer for {weights}: {'; '.join(reasons)}; {TOKENIZER_HINT}.")
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    if size is not None and size > vocab:
        raise DataError(f"The tokenizer ({source}) has {size} ids but the student only {vocab}: it is not this "
                        f"student's tokenizer; {TOKENIZER_HINT}.")
    return tokenizer, source


def load_for_inspection(path: str | os.PathLike, tokenizer=None) -> Inspection:
    """A MiniMoE student and its tokenizer, from whatever a user points at.

    Args:
        path: a run folder (its ``best/`` weights; a finished run without ``best/`` falls back to its
            final weights in ``checkpoint/``, and says so in ``notes``), a folder inside a run, a saved
            student folder (``save_pretrained``), a released MiniMoE checkpoint folder (the authors'
            layout), or a Hub name of one.
        tokenizer: None (the tokenizer saved beside the weights, else the run's configured one: token
            ids for the synthetic task), a tokenizer folder or Hub name, ``"ids"`` (type token ids), or a
            tokenizer object. An explicit tokenizer wins over a saved one (noted).
    Returns:
        An :class:`Inspection` (the student in eval mode).
    Raises:
        ModelError: a missing folder, a folder that holds no student, a run without weights yet, or a
            dense student (no experts: nothing to inspect).
        DataError: no tokenizer can be found, or the one found has more ids than the student.
    """
    student, weights, run_dir, notes = _load_student(str(path))
    if not student.is_moe:
        raise ModelError(f"{path} is a dense student ({student.spec.name}, one expert per block): it has no routing to "
                         f"inspect; give a MiniMoE student.")
    tokenizer, source = _resolve_tokenizer(tokenizer, weights, run_dir, student, notes)
    return Inspection(student=student, tokenizer=tokenizer, source=str(path), weights=weights,
                      tokenizer_source=source, run_dir=run_dir, notes=notes)


# ----------------------------------------------------------------------------------------------------
# Token by token
# ----------------------------------------------------------------------------------------------------
def _sentences(sentences: str | Iterable[str]) -> list[str]:
    items = [sentences] if isinstance(sentences, str) else list(sentences)
    if not items:
        raise DataError("No sentence to inspect: give at least one.")
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise DataError(f"Sentence {i + 1} is a {type(s).__name__}, not text.")
        if not s.strip():
            raise DataError(f"Sentence {i + 1} is empty: give some text to inspect.")
    return items


def _encode(tokenizer, text: str, index: int, max_positions: int, vocab_size: int) -> list[int]:
    ids = list(tokenizer(text)["input_ids"])
    if len(ids) > max_positions:
        warnings.warn(f"Sentence {index + 1} has {len(ids)} tokens, more than the student's {max_positions} "
                      f"positions: only its first {max_positions} are inspected.", stacklevel=3)
        ids = list(tokenizer(text, truncation=True, max_length=max_positions)["input_ids"])[:max_positions]
    if not ids:
        raise DataError(f"Sentence {index + 1} ({text!r}) gives no tokens.")
    beyond = [t for t in ids if not 0 <= t < vocab_size]
    if beyond:
        raise DataError(f"Sentence {index + 1} has token id {beyond[0]}, beyond the student's vocabulary of {vocab_size} "
                        f"ids: the tokenizer is not this student's; {TOKENIZER_HINT}.")
    return ids


def _forward_each(student, tokenizer, sentences, seed: int) -> Iterator[tuple[int, list[int], object]]:
    """(index, token ids, StudentOutput) for each sentence, in eval mode (the student's own mode is
    restored afterwards); random routing draws from a generator seeded with ``seed``."""
    import torch

    if not getattr(student, "is_moe", False):
        spec = getattr(student, "spec", None)
        raise ModelError(f"The student{f' {spec.name}' if spec else ''} is dense (one expert per block): it has no "
                         f"routing to inspect.")
    texts = _sentences(sentences)
    spec = student.spec
    encoded = [_encode(tokenizer, t, i, spec.max_positions, spec.vocab_size) for i, t in enumerate(texts)]
    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for i, ids in enumerate(encoded):
                input_ids = torch.tensor([ids], device=device)  # (1, T)
                yield i, ids, student(input_ids)
    finally:
        student.train(was_training)


def inspect_tokens(student, tokenizer, sentences: str | Sequence[str], seed: int = 0):
    """Each token's expert and gate probability in every MoE block, in eval mode.

    Args:
        student: a MiniMoE :class:`~gapkit.models.Student` (its training mode is restored afterwards).
        tokenizer: its tokenizer (Hugging Face, or an :class:`IdTokenizer`).
        sentences: one sentence or several; each is encoded with the tokenizer's special tokens and run
            alone. A sentence longer than the student's positions is truncated, with a warning.
        seed: seeds the draws of ``random`` routing (other modes draw nothing).
    Returns:
        A DataFrame with :data:`INSPECT_COLUMNS`, one row per sentence, token, layer and MoE block
        (ordered so), ``sentence`` the 0-based index of the sentence, ``mode`` the routing mode.
    Raises:
        ModelError: a dense student.
        DataError: no sentence, an empty one, or a token id beyond the student's vocabulary.
    """
    import pandas as pd

    rows = []
    mode = student.spec.routing if hasattr(student, "spec") else "learned"
    for i, ids, out in _forward_each(student, tokenizer, sentences, seed):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        blocks = list(out.routing.blocks())
        for pos, (token_id, token) in enumerate(zip(ids, tokens)):
            for layer, block, routing in blocks:
                rows.append(dict(sentence=i, position=pos, token=str(token), token_id=int(token_id), layer=layer,
                                 block=block, expert=int(routing.expert[0, pos]), gate_prob=float(routing.prob[0, pos]),
                                 mode=mode))
    return pd.DataFrame(rows, columns=list(INSPECT_COLUMNS))


def token_expert_table(frame, digits: int = 2):
    """Tokens as rows, one column per layer and block (``L0.attn``, ``L0.ffn`` ...), each cell the expert and
    its gate probability (``e2 0.91``).

    Args:
        frame: rows of :func:`inspect_tokens`.
        digits: decimals of the gate probability.
    Returns:
        A DataFrame with ``sentence``, ``position``, ``token``, ``token_id`` and the block columns.
    """
    import pandas as pd

    keys = ["sentence", "position", "token", "token_id"]
    if frame.empty:
        return pd.DataFrame(columns=keys)
    cells = frame.assign(column=[f"L{l}.{b}" for l, b in zip(frame.layer, frame.block)],
                         cell=[f"e{e} {p:.{digits}f}" for e, p in zip(frame.expert, frame.gate_prob)])
    order = sorted(set(zip(frame.layer, frame.block)), key=lambda lb: (lb[0], BLOCK_ORDER.get(lb[1], 9), lb[1]))
    grid = cells.pivot(index=keys, columns="column", values="cell")
    return grid[[f"L{l}.{b}" for l, b in order]].reset_index().rename_axis(columns=None)


def sentence_routing(student, tokenizer, sentences: str | Sequence[str], seed: int = 0):
    """Routing statistics of the given sentences in the schema of a run's ``routing.parquet`` (one row per
    layer, block and expert: token fraction, mean gate probability, load balance, gate entropy,
    top_tokens), pooled over all their tokens, with ``step`` 0 and ``split`` ``"sentences"``. The routing
    figures (:func:`~gapkit.analysis.plot_expert_share`, :func:`~gapkit.analysis.plot_top_tokens`) draw it
    as they draw a run's; this is how a released checkpoint, which has no training record, gets them."""
    import pandas as pd

    from ..routing import RoutingAccumulator

    import torch

    acc = RoutingAccumulator()
    for _, ids, out in _forward_each(student, tokenizer, sentences, seed):
        input_ids = torch.tensor([ids], device=out.last_hidden_state.device)  # (1, T)
        acc.add(out.routing, torch.ones_like(input_ids), input_ids)
    return pd.DataFrame(acc.rows(step=0, split="sentences"))
