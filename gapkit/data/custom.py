"""Any labeled data set as a task: single sentences or sentence pairs, classes or scores, from local
CSV / TSV / JSON Lines files or from a Hugging Face ``datasets`` name or folder.

A run names its data set in ``data.custom`` (a :class:`CustomSpec`) and gives it a name of its own in
``data.task`` (``reviews``: what tables and run folders call it)::

    data:
      task: reviews
      custom:
        files: {train: reviews/train.csv, dev: reviews/dev.csv}
        text: review                 # or [premise, hypothesis] for sentence pairs
        label: label

Every source goes through ``datasets`` (local files with its ``csv`` and ``json`` builders, Hub names and
folders with ``load_dataset``, ``save_to_disk`` folders with ``load_from_disk``): the rows are converted
once to Arrow, memory-mapped and cached (local files under ``<gapkit cache>/datasets``, Hub data sets in
the Hugging Face cache), as the Hub paths of GLUE and CoNLL are.

The label type decides the task unless ``kind`` says it: integer, string or boolean labels (or a
``ClassLabel`` column) make a classification task, floats a regression task. Classes get ids in a
stable order: the ``labels`` the config declares, else a ``ClassLabel``'s own names, else the label
values of every split, sorted (numbers numerically). Metrics (:mod:`gapkit.data.metrics`): ``accuracy``
for classification, ``pearson`` and ``spearmanr`` for regression, or those named in ``metric``; the
run's ``score`` is their mean, as GLUE's.

Everything that can be checked without reading a file is checked when the config is built
(:class:`CustomSpec`, ``ConfigError``); a file's problems (missing, not UTF-8, a JSON Lines line that is
not JSON, a missing column, an empty split, a label outside the declared set, mixed label types) get one
``DataError`` sentence naming the file (and line or row) before any training starts.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..configtools import check_fields, unknown_keys_message
from ..errors import ConfigError, DataError
from .glue import Example, utf8_error
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

SPLITS = ("train", "dev", "test")  # gapkit's splits: train, dev (selects or is scored), test (scored)
FORMATS = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
CUSTOM_KINDS = ("auto", "classification", "regression")
# Where a data set's splits are found when ``splits`` does not say (a dataset's dev split is usually
# called validation; a split column's values usually train/dev/test).
_DATASET_SPLITS = {"train": "train", "dev": "validation"}
_COLUMN_SPLITS = {"train": "train", "dev": "dev", "test": "test"}

__all__ = ["CustomSpec", "CustomData", "load_custom", "custom_metrics", "SPLITS", "FORMATS", "CUSTOM_KINDS"]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


@dataclass
class CustomSpec:
    """A labeled data set of the user's own (``data.custom``).

    Args:
        files: local files: ``{train: PATH, dev: PATH[, test: PATH]}``, or one PATH holding every split
            with ``split_column``. Relative paths are read from ``data.data_dir`` when it is set, else from
            the working directory.
        dataset: instead of files, a ``datasets`` source: a Hub name (``stanfordnlp/imdb``), a folder of
            data files, or a folder written by ``save_to_disk``.
        config: the Hub config of ``dataset`` (``load_dataset(dataset, config)``).
        format: ``csv``, ``tsv`` (tab-separated, quotes are text as in GLUE's files) or ``jsonl`` (one JSON
            object a line); by default from each file's extension.
        text: the text column, or two columns ``[first, second]`` of a sentence-pair task.
        label: the label column.
        splits: gapkit split -> the dataset's split name (default ``train: train, dev: validation``), or,
            with ``split_column``, -> the column's value (default ``train``, ``dev`` and, when present,
            ``test``). ``test`` is optional: a split scored with the weights ``dev`` (or the holdout)
            selected.
        split_column: the column of ``files`` (one file) that names each row's split.
        labels: the classes in id order, as the label column writes them; a label outside them is an
            error. Default: a ``ClassLabel``'s names, else every split's labels sorted.
        kind: ``classification``, ``regression`` or ``auto`` (from the label type: floats are scores,
            integers, strings and booleans classes).
        metric: one or several of accuracy, f1 (binary: the positive class is id 1), mcc (classification),
            pearson, spearmanr (regression); default accuracy, or pearson and spearmanr. ``score`` is
            their mean.
    """

    files: dict | str | None = None
    dataset: str | None = None
    config: str | None = None
    format: str | None = None
    text: list[str] = field(default_factory=lambda: ["text"])
    label: str = "label"
    splits: dict = field(default_factory=dict)
    split_column: str | None = None
    labels: list | None = None
    kind: str = "auto"
    metric: list[str] = field(default_factory=list)

    def __post_init__(self):
        check_fields(self, "data.custom")
        _check((self.files is None) != (self.dataset is None),
               "data.custom needs exactly one source: files (local CSV/TSV/JSON Lines) or dataset (a datasets "
               "name or folder).")
        if isinstance(self.files, str):
            _check(bool(self.split_column), f"data.custom.files is one file ({self.files}): name the column that "
                                            f"holds each row's split in data.custom.split_column, or give "
                                            f"files: {{train: ..., dev: ...}}.")
        elif isinstance(self.files, dict):
            unknown = sorted(set(self.files) - set(SPLITS))
            _check(not unknown, f"data.custom.files has unknown split(s) {', '.join(map(str, unknown))}: use "
                                f"{', '.join(SPLITS)}.")
            _check("train" in self.files and "dev" in self.files,
                   f"data.custom.files needs a train and a dev file, got {', '.join(self.files) or 'none'}.")
            _check(not self.split_column, "data.custom.split_column applies to one file (files: PATH); with a "
                                          "file per split, remove it.")
            _check(not self.splits, "data.custom.splits applies to a dataset or a split_column; with files, "
                                    "the keys of files name the splits.")
        if isinstance(self.files, dict):
            for split, path in self.files.items():
                _check(isinstance(path, str) and bool(path.strip()),
                       f"data.custom.files.{split} must be a file path, got {path!r}.")
        _check(self.files != "", "data.custom.files holds an empty path.")
        _check(self.format is None or self.format in FORMATS,
               f"data.custom.format must be one of {', '.join(FORMATS)}, got {self.format!r}.")
        if self.format is None:
            for path in self.paths():
                _check(Path(path).suffix.lower() in _EXTENSIONS,
                       f"data.custom.files: cannot tell the format of {path} from its extension; name the files "
                       f"*.csv, *.tsv or *.jsonl, or set data.custom.format.")
        _check(self.dataset is None or bool(self.dataset.strip()), "data.custom.dataset is empty.")
        _check(self.dataset is not None or self.config is None,
               "data.custom.config is the Hub config of a dataset: it needs data.custom.dataset.")
        _check(self.dataset is None or not self.split_column,
               "data.custom.split_column applies to one file (files: PATH); a dataset names its own splits.")
        _check(1 <= len(self.text) <= 2 and all(c.strip() for c in self.text),
               f"data.custom.text must name one text column, or two [first, second] for sentence pairs, "
               f"got {self.text!r}.")
        _check(bool(self.label.strip()), "data.custom.label is empty: name the label column.")
        unknown = sorted(set(self.splits) - set(SPLITS))
        _check(not unknown, f"data.custom.splits has unknown split(s) {', '.join(map(str, unknown))}: use "
                            f"{', '.join(SPLITS)}.")
        _check(self.kind in CUSTOM_KINDS,
               f"data.custom.kind must be one of {', '.join(CUSTOM_KINDS)}, got {self.kind!r}.")
        if self.labels is not None:
            _check(self.kind != "regression", "data.custom.labels declares classes, but kind is regression.")
            _check(all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in self.labels),
                   f"data.custom.labels must list the classes as strings or integers, got {self.labels!r}.")
            _check(len(self.labels) >= 2 and len({str(v) for v in self.labels}) == len(self.labels),
                   f"data.custom.labels must list at least two different classes, got {self.labels!r}.")
        known = CLASSIFICATION_METRICS + REGRESSION_METRICS
        bad = [m for m in self.metric if m not in known]
        _check(not bad, f"Unknown metric {bad[0]!r} in data.custom.metric: use {', '.join(known)}." if bad else "")
        kinds = {"classification" if m in CLASSIFICATION_METRICS else "regression" for m in self.metric}
        _check(len(kinds) <= 1, f"data.custom.metric mixes classification and regression metrics "
                                f"({', '.join(self.metric)}); a task is one or the other.")
        _check(not kinds or self.kind in ("auto", *kinds),
               f"data.custom.metric {', '.join(self.metric)} cannot score a {self.kind} task; use "
               f"{', '.join(CLASSIFICATION_METRICS if self.kind == 'classification' else REGRESSION_METRICS)}.")
        _check(not (self.labels is not None and kinds == {"regression"}),
               "data.custom.labels declares classes, but data.custom.metric names regression metrics.")

    @classmethod
    def from_dict(cls, data) -> "CustomSpec":
        """Build from a mapping of settings (``data.custom``); an unknown key is a ConfigError naming the known."""
        _check(isinstance(data, dict), f"data.custom must be a mapping of settings (files, text, label ...), got "
                                       f"{data!r}.")
        known = [f.name for f in fields(cls)]
        unknown = set(data) - set(known)
        _check(not unknown, unknown_keys_message("data.custom", unknown, known) if unknown else "")
        return cls(**data)

    def paths(self) -> list[str]:
        """The local files, as written."""
        if self.files is None:
            return []
        return [self.files] if isinstance(self.files, str) else [str(v) for v in self.files.values()]

    def declared_kind(self) -> str:
        """``classification``/``regression`` when the config says it (kind, labels or metric), else ``auto``."""
        if self.kind != "auto":
            return self.kind
        if self.labels is not None or any(m in CLASSIFICATION_METRICS for m in self.metric):
            return "classification"
        return "regression" if self.metric else "auto"

    def to_dict(self) -> dict:
        return asdict(self)


def custom_metrics(spec: CustomSpec, regression: bool) -> tuple[str, ...]:
    """The metrics of a task: those named in ``metric``, else accuracy or pearson and spearmanr."""
    if spec.metric:
        return tuple(spec.metric)
    return REGRESSION_METRICS if regression else ("accuracy",)


@dataclass
class CustomData:
    """A data set read and checked: examples per gapkit split, and how it is scored.

    Attributes:
        splits: ``train``, ``dev`` and, when given, ``test`` -> examples (file order).
        regression: whether labels are scores (else class ids).
        label_names: class names in id order (None for regression).
        metrics: the metric names (``score`` is their mean).
    """

    splits: dict[str, list[Example]]
    regression: bool
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)


# ----------------------------------------------------------------------------------------------------
# Reading: sources -> {split: (where, Dataset)}
# ----------------------------------------------------------------------------------------------------
def load_custom(spec: CustomSpec | dict, task: str, data_dir: str | Path | None = None) -> CustomData:
    """Read, check and label the data set ``spec`` describes.

    Args:
        spec: a CustomSpec (or a mapping of its settings).
        task: the task's name (example ids, messages).
        data_dir: the folder relative file paths are read from (None: the working directory).
    Raises:
        DataError: a missing file or split, a file that is not UTF-8 or not valid JSON Lines, a missing
            column, an empty split, a label outside the declared set, labels of mixed types.
    """
    spec = spec if isinstance(spec, CustomSpec) else CustomSpec.from_dict(spec)
    tables = _read_tables(spec, data_dir)
    for split, (where, ds) in tables.items():
        missing = [c for c in (*spec.text, spec.label) if c not in ds.column_names]
        if missing:
            raise DataError(f"{where} has no column {missing[0]!r} (its columns: {', '.join(ds.column_names)}); "
                            f"set data.custom.{'label' if missing[0] == spec.label else 'text'} to one of them.")
        if len(ds) == 0:
            raise DataError(f"{where} has no rows: the {split} split cannot be empty.")
    raw = {split: _raw_labels(spec, where, ds) for split, (where, ds) in tables.items()}
    regression = _is_regression(spec, raw, tables)
    label_names, ids = (None, None) if regression else _label_set(spec, raw, tables)
    if "f1" in spec.metric and label_names is not None and len(label_names) != 2:
        raise DataError(f"data.custom.metric f1 is binary F1 (positive class id 1), but the labels hold "
                        f"{len(label_names)} classes ({', '.join(label_names)}); use accuracy or mcc.")
    splits = {}
    for split, (where, ds) in tables.items():
        texts = [_texts(where, ds, column) for column in spec.text]
        labels = [_score(where, i, v) for i, v in enumerate(raw[split])] if regression else [
            _class_id(spec, where, i, v, ids) for i, v in enumerate(raw[split])]
        second = texts[1] if len(texts) == 2 else [None] * len(labels)
        splits[split] = [Example(a, b, y, guid=f"{task}-{split}-{i}")
                         for i, (a, b, y) in enumerate(zip(texts[0], second, labels))]
    return CustomData(splits, regression, label_names, custom_metrics(spec, regression))


def _read_tables(spec: CustomSpec, data_dir) -> dict[str, tuple[str, Any]]:
    """{gapkit split: (how messages name it, a datasets.Dataset)} in SPLITS order."""
    import datasets  # deferred: importing datasets costs about a second

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one sentence on stderr for a bad file, not a progress bar above it
    try:
        if spec.files is not None:
            return _read_files(spec, data_dir)
        return _read_dataset(spec)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _resolve(path: str, data_dir) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or data_dir is None else Path(data_dir).expanduser() / p


def _format_of(spec: CustomSpec, path: Path) -> str:
    return spec.format or _EXTENSIONS[path.suffix.lower()]


def _read_files(spec: CustomSpec, data_dir) -> dict[str, tuple[str, Any]]:
    files = {"all": spec.files} if isinstance(spec.files, str) else dict(spec.files)
    paths = {split: _resolve(str(p), data_dir) for split, p in files.items()}
    for split, path in paths.items():
        if not path.is_file():
            where = "data.custom.files" if split == "all" else f"data.custom.files.{split}"
            raise DataError(f"The file {path} ({where}) does not exist; check the path"
                            f"{' (relative paths are read from data.data_dir)' if data_dir is not None else ''}.")
        if _format_of(spec, path) == "jsonl":
            _check_utf8(path)  # Arrow's JSON reader does not check: a bad byte would surface later, or never
        else:
            _check_header(spec, path, _format_of(spec, path))
    tables = {split: (f"File {path}", _load_file(spec, path, split)) for split, path in paths.items()}
    if not isinstance(spec.files, str):
        return {s: tables[s] for s in SPLITS if s in tables}
    where, ds = tables["all"]
    return _split_by_column(spec, where, ds)


def _check_header(spec: CustomSpec, path: Path, fmt: str) -> None:
    """A CSV/TSV file's header names every column the config names (read before the whole file is)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is no column name
            header = next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ",",
                                     quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL), None)
    except UnicodeDecodeError:
        _check_utf8(path)
        raise
    if header is None:
        raise DataError(f"File {path} is empty; expected a header row naming its columns.")
    for column in (*spec.text, spec.label, *([spec.split_column] if spec.split_column else [])):
        if column not in header:
            key = ("split_column" if column == spec.split_column else "label" if column == spec.label else "text")
            raise DataError(f"File {path} has no column {column!r} (its columns: {', '.join(header)}); set "
                            f"data.custom.{key} to one of them.")


def _check_utf8(path: Path) -> None:
    """Raise the sentence of :func:`_not_utf8` unless the file is UTF-8 (read in chunks, not whole)."""
    error = _not_utf8(path)
    if error is not None:
        raise error


def _not_utf8(path: Path) -> DataError | None:
    """The sentence for a file that is not UTF-8 (None when it is), found without reading it whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                bad = offset + err.start
                line = lines + chunk.count(b"\n", 0, err.start) + 1
                return DataError(f"File {path} is not UTF-8 text at byte {bad} (line {line}): convert it to "
                                 f"UTF-8 (e.g. iconv -f latin1 -t utf-8).")
            offset, lines = offset + len(chunk), lines + chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return utf8_error(path, "File")  # an incomplete character at the very end
    return None


def _load_file(spec: CustomSpec, path: Path, split: str):
    """One local file as a datasets.Dataset, through the csv or json builder (cached as Arrow)."""
    import datasets

    from .text import cache_root

    fmt = _format_of(spec, path)
    if fmt == "jsonl":
        builder, kwargs = "json", {}
    else:
        # Only an empty cell is missing (pandas would also read "NA", "null", "n/a" ... as missing), and text
        # columns stay exactly as written (pandas would read "007" as the number 7).
        kwargs = dict(keep_default_na=False, na_values=[""], converters={c: str for c in spec.text})
        if fmt == "tsv":  # tab-separated, quotes are text (GLUE's convention: "the witness" stays quoted)
            kwargs.update(sep="\t", quoting=csv.QUOTE_NONE)
        builder = "csv"
    try:
        return datasets.load_dataset(builder, data_files={"rows": [str(path)]}, split="rows",
                                     cache_dir=str(cache_root() / "datasets"), **kwargs)
    except Exception as err:  # the builders' errors come in many types: find what is wrong with the file
        raise _file_problem(path, fmt, split, err) from None


def _file_problem(path: Path, fmt: str, split: str, err: Exception) -> DataError:
    """The one sentence for a local file the datasets builder could not read."""
    not_utf8 = _not_utf8(path)
    if not_utf8 is not None:
        return not_utf8
    with open(path, encoding="utf-8") as f:
        rows = sum(1 for line in f if line.strip()) - (fmt != "jsonl")  # a CSV/TSV file's header is no row
    if rows <= 0:
        what = "the split column's splits" if split == "all" else f"the {split} split"
        return DataError(f"File {path} has no rows: {what} cannot be empty.")
    if fmt == "jsonl":
        try:
            with open(path, encoding="utf-8") as f:
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as bad:
                        return DataError(f"File {path}, line {line_no} is not JSON ({bad.msg}): each line of a JSON "
                                         f"Lines file must be one JSON object; fix or remove that line.")
                    if not isinstance(row, dict):
                        return DataError(f"File {path}, line {line_no} is a JSON {type(row).__name__}, not an object "
                                         f"of columns; fix or remove that line.")
        except UnicodeDecodeError:
            pass
    return DataError(f"Could not read {fmt} file {path} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                     f"); check that it is {'one JSON object a line' if fmt == 'jsonl' else 'a ' + fmt.upper() + ' file with a header row'}.")


def _split_by_column(spec: CustomSpec, where: str, ds) -> dict[str, tuple[str, Any]]:
    column = spec.split_column
    if column not in ds.column_names:
        raise DataError(f"{where} has no column {column!r} (its columns: {', '.join(ds.column_names)}); set "
                        f"data.custom.split_column to one of them.")
    values = ds[column]
    present = sorted({str(v) for v in values if v is not None})
    missing = next((i for i, v in enumerate(values) if v is None or str(v).strip() == ""), None)
    if missing is not None:
        raise DataError(f"{where}, row {missing + 1} has no value in the split column {column!r}; give every row "
                        f"its split ({', '.join(present)}) or remove it.")
    wanted = {s: v for s, v in _COLUMN_SPLITS.items() if s != "test" or v in present}
    wanted.update(spec.splits)
    out = {}
    for split in SPLITS:
        if split not in wanted:
            continue
        value = str(wanted[split])
        rows = [i for i, v in enumerate(values) if str(v) == value]
        if not rows:
            raise DataError(f"{where} has no row with {column} = {value!r}, so the {split} split is empty (its "
                            f"{column} values: {', '.join(present)}); set data.custom.splits.{split} to one of them.")
        out[split] = (f"{where} (rows with {column} = {value!r})", ds.select(rows))
    return out


def _read_dataset(spec: CustomSpec) -> dict[str, tuple[str, Any]]:
    import datasets

    name = spec.dataset
    folder = Path(name).expanduser()
    saved = folder.is_dir() and any((folder / f).is_file() for f in ("dataset_dict.json", "state.json"))
    try:
        if saved:  # written by save_to_disk: Arrow files, memory-mapped as they are
            loaded = datasets.load_from_disk(str(folder))
        else:  # a Hub name, or a folder of data files (load_dataset reads the formats it knows)
            loaded = datasets.load_dataset(str(folder) if folder.is_dir() else name, spec.config)
    except Exception as err:  # network, cache, Hub and builder errors come in many types
        raise DataError(f"Could not load the dataset {name!r}{f' (config {spec.config!r})' if spec.config else ''} "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check the name "
                        f"and the network, or give a local folder (data files or save_to_disk).") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict(train=loaded)
    wanted = dict(_DATASET_SPLITS, **spec.splits)
    out = {}
    for split in SPLITS:
        if split not in wanted:
            continue
        source = str(wanted[split])
        if source not in loaded:
            raise DataError(f"The dataset {name!r} has no split {source!r} (its splits: {', '.join(loaded)}); set "
                            f"data.custom.splits.{split} to one of them.")
        out[split] = (f"The dataset {name!r} split {source!r}", loaded[source])
    return out


# ----------------------------------------------------------------------------------------------------
# Checking and labeling
# ----------------------------------------------------------------------------------------------------
def _class_names(ds, column: str) -> list[str] | None:
    """The names of a ClassLabel column (its ids index them), else None."""
    import datasets

    feature = ds.features.get(column)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _raw_labels(spec: CustomSpec, where: str, ds) -> list:
    """The label column's values, a ClassLabel's ids turned into names; missing values refused."""
    values = ds[spec.label]
    names = _class_names(ds, spec.label)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise DataError(f"{where}, row {i + 1} has no label in column {spec.label!r}; fix or remove that row.")
        if names is not None and not 0 <= v < len(names):  # -1: a hidden label (a test split)
            raise DataError(f"{where}, row {i + 1}: label id {v} is not one of the {len(names)} classes "
                            f"{', '.join(names)} (-1 marks a hidden label): this split cannot be trained or scored.")
    return [names[v] for v in values] if names is not None else list(values)


def _type_name(v) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "number" if _is_number(v) else "string"
    return type(v).__name__


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_regression(spec: CustomSpec, raw: dict[str, list], tables) -> bool:
    """Whether the labels are scores: from the config, else from the label type (refusing mixed types)."""
    first = None  # (split, row, value) of the first label, whose type the others must share
    for split, values in raw.items():
        where = tables[split][0]
        for i, v in enumerate(values):
            if isinstance(v, (list, dict)):
                raise DataError(f"{where}, row {i + 1}: the label {v!r} is a {type(v).__name__}, not a class or a "
                                f"score; fix or remove that row.")
            if first is None:
                first = (where, i, v)
            elif _type_name(v) != _type_name(first[2]):
                raise DataError(f"{where}, row {i + 1}: the label {v!r} is a {_type_name(v)} but {first[0]}, row "
                                f"{first[1] + 1} has the {_type_name(first[2])} {first[2]!r}: labels of mixed types; "
                                f"make them all class names, class ids or scores.")
    kind = spec.declared_kind()
    if kind != "auto":
        return kind == "regression"
    return any(isinstance(v, float) for values in raw.values() for v in values)


def _label_key(v) -> str:
    """How a label is compared with the declared classes: as written in a file (1, "1" and 1.0 are one class)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _label_set(spec: CustomSpec, raw: dict[str, list], tables) -> tuple[tuple[str, ...], dict[str, int]]:
    """(class names in id order, label key -> id)."""
    if spec.labels is not None:
        names = [str(v) for v in spec.labels]
    else:
        class_names = [_class_names(ds, spec.label) for _, ds in tables.values()]
        if class_names[0] is not None and all(n == class_names[0] for n in class_names):
            names = class_names[0]  # the dataset's own id -> name table
        else:
            values = {_label_key(v): v for vs in raw.values() for v in vs}
            numeric = all(_is_number(k) for k in values)
            names = sorted(values, key=(lambda k: float(k)) if numeric else None)
            if len(names) < 2:
                raise DataError(f"The labels of data set {spec.dataset or spec.files} hold one class ({names[0]!r}) "
                                f"in every split: a classifier needs at least two; check data.custom.label.")
    return tuple(names), {n: i for i, n in enumerate(names)}


def _class_id(spec: CustomSpec, where: str, i: int, v, ids: dict[str, int]) -> int:
    key = _label_key(v)
    if isinstance(v, float) and not v.is_integer():
        raise DataError(f"{where}, row {i + 1}: the label {v!r} is not a class (kind is classification); set "
                        f"data.custom.kind: regression for scores.")
    if key not in ids:
        raise DataError(f"{where}, row {i + 1}: the label {v!r} is not in data.custom.labels [{', '.join(ids)}]; add "
                        f"it there or fix the row.")
    return ids[key]


def _score(where: str, i: int, v) -> float:
    try:
        score = float(v)
    except (TypeError, ValueError):
        raise DataError(f"{where}, row {i + 1}: the label {v!r} is not a number, and the task is a regression; fix "
                        f"the row, or set data.custom.kind: classification.") from None
    if not math.isfinite(score):  # NaN or inf would poison the loss and every metric
        raise DataError(f"{where}, row {i + 1}: the score {v!r} is not a finite number; fix or remove that row.")
    return score


def _texts(where: str, ds, column: str) -> list[str]:
    values = ds[column]
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"{where}, row {i + 1} has no text in column {column!r}; fix or remove that row.")
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise DataError(f"{where}, row {i + 1}: column {column!r} holds a {type(v).__name__}, not text; set "
                            f"data.custom.text to a text column.")
    return [v if isinstance(v, str) else str(v) for v in values]
