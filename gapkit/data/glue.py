"""GLUE: the nine tasks as data, and a loader for classic TSV folders and the Hugging Face Hub.

Two sources give the same ``Example`` lists:
- a classic ``glue_data/`` folder (what ``download_glue_data.py`` wrote): ``<data_dir>/<Folder>/<file>.tsv``;
- the Hub dataset ``nyu-mll/glue`` through ``datasets.load_dataset`` (needs network or a warm cache).

Only labelled splits are exposed (``train``, ``dev``; MNLI ``dev_matched``/``dev_mismatched``):
GLUE's test labels are hidden, so a test split could not be scored here anyway.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TypeVar

from gapkit.errors import DataError

HUB_PATH = "nyu-mll/glue"
_PLAIN_SPLITS = {"train": "train.tsv", "dev": "dev.tsv"}
_PLAIN_HUB_SPLITS = {"train": "train", "dev": "validation"}


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its data lives, locally and on the Hub, and how it is scored.

    Attributes:
        name: gapkit's task name (the Hub config name), e.g. ``"sst2"``.
        folder: the classic ``glue_data/`` sub-folder, e.g. ``"SST-2"``.
        label_names: class names in label-id order (the Hub's ClassLabel order); empty for regression.
        metrics: the official metric(s), keys of ``glue_metrics``' result.
        tsv_columns: header names of (text_a, text_b, label) in the classic TSV; text_b is None for
            single-sentence tasks.
        tsv_header: column names for a file that has no header row (CoLA); None when the file has one.
        hub_fields: Hub field names of (text_a, text_b); the Hub's label field is always ``label``.
        split_files: gapkit split name -> classic TSV file name.
        hub_splits: gapkit split name -> Hub split name.
    """

    name: str
    folder: str
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    tsv_columns: tuple[str, str | None, str]
    hub_fields: tuple[str, str | None]
    tsv_header: tuple[str, ...] | None = None
    # Every task but MNLI (two dev sets) has plain train/dev files.
    split_files: dict[str, str] = field(default_factory=lambda: dict(_PLAIN_SPLITS))
    hub_splits: dict[str, str] = field(default_factory=lambda: dict(_PLAIN_HUB_SPLITS))

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Output size of the classifier head: 1 for regression (STS-B)."""
        return len(self.label_names) or 1

    @property
    def is_pair(self) -> bool:
        return self.hub_fields[1] is not None

    @property
    def dev_splits(self) -> tuple[str, ...]:
        """The dev splits a run scores, each one entry of the GLUE average (:func:`glue_entry`): ``dev``, or
        MNLI's matched and mismatched sets (its ``dev`` is another name of matched, never scored twice)."""
        return tuple(s for s in self.split_files if s.startswith("dev_")) or ("dev",)


_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")
_MNLI_SPLITS = {"train": "train.tsv", "dev": "dev_matched.tsv",
                "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"}
_MNLI_HUB_SPLITS = {"train": "train", "dev": "validation_matched",
                    "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}

# Source: GLUE's data files (Wang et al. 2019, download_glue_data.py) for folders, file names and TSV
# headers; the Hub dataset card of nyu-mll/glue for configs, field names and label order.
GLUE_TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", "CoLA", ("unacceptable", "acceptable"), ("mcc",),
             tsv_columns=("sentence", None, "label"), hub_fields=("sentence", None),
             tsv_header=("source", "label", "star", "sentence")),
    GlueTask("sst2", "SST-2", ("negative", "positive"), ("accuracy",),
             tsv_columns=("sentence", None, "label"), hub_fields=("sentence", None)),
    GlueTask("mrpc", "MRPC", ("not_equivalent", "equivalent"), ("f1", "accuracy"),
             tsv_columns=("#1 String", "#2 String", "Quality"), hub_fields=("sentence1", "sentence2")),
    GlueTask("stsb", "STS-B", (), ("pearson", "spearmanr"),
             tsv_columns=("sentence1", "sentence2", "score"), hub_fields=("sentence1", "sentence2")),
    GlueTask("qqp", "QQP", ("not_duplicate", "duplicate"), ("f1", "accuracy"),
             tsv_columns=("question1", "question2", "is_duplicate"), hub_fields=("question1", "question2")),
    GlueTask("mnli", "MNLI", _NLI3, ("accuracy",),
             tsv_columns=("sentence1", "sentence2", "gold_label"), hub_fields=("premise", "hypothesis"),
             split_files=_MNLI_SPLITS, hub_splits=_MNLI_HUB_SPLITS),
    GlueTask("qnli", "QNLI", _NLI2, ("accuracy",),
             tsv_columns=("question", "sentence", "label"), hub_fields=("question", "sentence")),
    GlueTask("rte", "RTE", _NLI2, ("accuracy",),
             tsv_columns=("sentence1", "sentence2", "label"), hub_fields=("sentence1", "sentence2")),
    # WNLI's TSV labels are 0/1 with 1 = entailment, hence the Hub's reversed order here.
    GlueTask("wnli", "WNLI", ("not_entailment", "entailment"), ("accuracy",),
             tsv_columns=("sentence1", "sentence2", "label"), hub_fields=("sentence1", "sentence2")),
]}


@dataclass
class Example:
    """One GLUE example. ``label`` is a class id, or a float score for STS-B."""

    text_a: str
    text_b: str | None
    label: int | float
    guid: str


def glue_entry(task: str, split: str) -> str:
    """The name of a task's dev split as an entry of the GLUE average: ``mnli_m`` and ``mnli_mm`` for MNLI's
    matched and mismatched sets (the paper's tables report both, and its average counts both), else the
    task's own name.

    Raises:
        DataError: an unknown task, or a split that is not one of the task's dev splits.
    """
    spec = get_glue_task(task)
    if split == "dev" and spec.name == "mnli":
        split = "dev_matched"
    if split not in spec.dev_splits:
        raise DataError(f"{split!r} is not a dev split of GLUE task {spec.name!r} (its dev splits: "
                        f"{', '.join(spec.dev_splits)}).")
    if spec.name == "mnli":
        return "mnli_mm" if split == "dev_mismatched" else "mnli_m"
    return spec.name


def get_glue_task(task: str) -> GlueTask:
    """Look up a task by name (case-insensitive); raise DataError listing the known names otherwise."""
    key = task.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise DataError(f"Unknown GLUE task {task!r}; known tasks are {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[key]


def load_glue(task: str, split: str, data_dir: str | Path | None = None,
              max_examples: int | None = None, seed: int = 0) -> list[Example]:
    """Load one split of a GLUE task as a list of ``Example``.

    Args:
        task: task name, e.g. ``"sst2"`` (see ``GLUE_TASKS``).
        split: ``"train"`` or ``"dev"``; MNLI also ``"dev_matched"``/``"dev_mismatched"``
            (``"dev"`` is matched).
        data_dir: a classic ``glue_data/`` folder holding ``<Folder>/<split file>.tsv``; None loads
            ``nyu-mll/glue`` from the Hugging Face Hub.
        max_examples: keep a random subset of this size (file order preserved); None keeps all.
        seed: seed of that subset, so the same arguments always give the same examples.

    Returns:
        The examples, in file order.

    Raises:
        DataError: unknown task or split, missing folder or file, or a malformed row.
    """
    spec = get_glue_task(task)
    if split not in spec.split_files:
        raise DataError(f"Unknown split {split!r} for GLUE task {spec.name!r}; "
                        f"use one of {', '.join(spec.split_files)}.")
    if data_dir is not None:
        examples = _read_tsv(spec, split, Path(data_dir))
    else:
        examples = _load_hub(spec, split)
    return subsample(examples, max_examples, seed)


T = TypeVar("T")


def subsample(items: Sequence[T], max_examples: int | None, seed: int) -> list[T]:
    """A seeded random subset of ``items`` of size ``max_examples``, in the original order."""
    if max_examples is None or max_examples >= len(items):
        return list(items)
    if max_examples < 0:
        raise DataError(f"max_examples must be >= 0, got {max_examples}; pass None to keep every example.")
    keep = sorted(random.Random(seed).sample(range(len(items)), max_examples))
    return [items[i] for i in keep]


def utf8_error(path: Path, what: str) -> DataError:
    """The one sentence for a data file that is not UTF-8: where its first bad byte is, and the fix."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
        where = ""
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        where = f" at byte {err.start} (line {line})"
    return DataError(f"{what} {path} is not UTF-8 text{where}: convert it to UTF-8 "
                     f"(e.g. iconv -f latin1 -t utf-8).")


def _parse_label(spec: GlueTask, raw: str) -> int | float:
    """A TSV label cell -> class id (by name or by numeric id) or finite float score; ValueError if not valid."""
    if spec.is_regression:
        try:
            score = float(raw)
        except ValueError:
            raise ValueError("score is not a number") from None
        if not math.isfinite(score):  # NaN or inf would poison the loss and every metric
            raise ValueError("score is not a finite number")
        return score
    if raw in spec.label_names:
        return spec.label_names.index(raw)
    if raw.isdigit() and int(raw) < spec.num_labels:
        return int(raw)
    raise ValueError(f"label {raw!r} is not in the label set {list(spec.label_names)} "
                     f"(or ids 0-{spec.num_labels - 1})")


def _read_tsv(spec: GlueTask, split: str, data_dir: Path) -> list[Example]:
    folder = data_dir / spec.folder
    path = folder / spec.split_files[split]
    if not folder.is_dir():
        raise DataError(f"GLUE folder {folder} does not exist; data_dir must be a glue_data/-style "
                        f"folder containing {spec.folder}/{spec.split_files[split]}.")
    if not path.is_file():
        raise DataError(f"GLUE {spec.name} split {split!r} expects the file {path}, which does not exist.")

    try:
        examples = _read_rows(spec, split, path)
    except UnicodeDecodeError:
        raise utf8_error(path, "GLUE file") from None
    if not examples:
        raise DataError(f"GLUE file {path} has no examples (only a header, or blank lines): the {split} split "
                        f"of {spec.name} cannot be empty.")
    return examples


def _read_rows(spec: GlueTask, split: str, path: Path) -> list[Example]:
    # QUOTE_NONE: GLUE sentences contain bare quotes ("the witness") that must stay text.
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = spec.tsv_header or next(rows, None)
        if header is None:
            raise DataError(f"GLUE file {path} is empty; expected a header row.")
        missing = [c for c in spec.tsv_columns if c is not None and c not in header]
        if missing:
            raise DataError(f"GLUE file {path} has no column(s) {missing} in its header {header}; "
                            f"is it the {spec.folder} file of the classic GLUE download?")
        i_a, i_b, i_label = (None if c is None else header.index(c) for c in spec.tsv_columns)

        examples = []
        for row in rows:
            line = rows.line_num  # 1-based; QUOTE_NONE makes one record = one line
            if not row:
                continue  # a trailing blank line is harmless
            if len(row) != len(header):
                raise DataError(f"{path}, line {line}: expected {len(header)} tab-separated columns, "
                                f"found {len(row)}; fix or remove that row.")
            try:
                label = _parse_label(spec, row[i_label])
            except ValueError as err:
                raise DataError(f"{path}, line {line}: {err} ({row[i_label]!r}); "
                                f"fix or remove that row.") from None
            examples.append(Example(row[i_a], None if i_b is None else row[i_b], label,
                                    guid=f"{spec.name}-{split}-{line}"))
    return examples


def _load_hub(spec: GlueTask, split: str) -> list[Example]:
    import datasets  # deferred: importing datasets costs about a second

    hub_split = spec.hub_splits[split]
    try:
        ds = datasets.load_dataset(HUB_PATH, spec.name, split=hub_split)
    except Exception as err:  # network, cache and Hub errors come in many types
        raise DataError(f"Could not load {HUB_PATH} config {spec.name!r} split {hub_split!r} from the "
                        f"Hugging Face Hub ({type(err).__name__}: {err}); check the network or pass "
                        f"data_dir= a local glue_data/ folder.") from err
    field_a, field_b = spec.hub_fields
    cast = float if spec.is_regression else int
    examples = []
    for i, row in enumerate(ds):
        label = cast(row["label"])
        # -1 marks a hidden label (GLUE's test splits); NaN or inf would poison every metric.
        if not math.isfinite(label) or (not spec.is_regression and not 0 <= label < spec.num_labels):
            raise DataError(f"{HUB_PATH} config {spec.name!r} split {hub_split!r}, row {i}: label {row['label']!r} "
                            f"is not a valid {'score' if spec.is_regression else 'class id'}; this split cannot be "
                            f"trained or scored.")
        examples.append(Example(row[field_a], None if field_b is None else row[field_b], label,
                                guid=f"{spec.name}-{split}-{row.get('idx', i)}"))
    if not examples:
        raise DataError(f"{HUB_PATH} config {spec.name!r} split {hub_split!r} has no examples.")
    return examples
