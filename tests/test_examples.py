"""Intervals over dev examples: runs store their best weights' predictions, and the curse is bootstrapped
over them (gapkit.analysis.example_curse), checked on hand-made predictions and on a real sweep."""

import numpy as np
import pandas as pd
import pytest
import torch

from gapkit.analysis import example_curse, load_table, report
from gapkit.data.tasks import score_predictions
from gapkit.distill.runfiles import PREDICTIONS
from gapkit.io import save_safetensors

LABELS = torch.tensor([1, 0] * 10, dtype=torch.int32)  # 20 dev examples


def _run(tmp_path, name: str, correct: int, labels=LABELS) -> str:
    """A run folder whose best weights got the first ``correct`` examples right."""
    pred = labels.clone()
    pred[correct:] = 1 - pred[correct:]
    folder = tmp_path / name
    (folder / "best").mkdir(parents=True)
    save_safetensors({"dev.prediction": pred, "dev.label": labels}, folder / "best" / PREDICTIONS)
    return str(folder)


def _table(runs: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    """(teacher, teacher_params, seed, run_dir) -> a results table of synthetic students, the value being
    the accuracy its stored predictions give (so that table and predictions agree)."""
    rows = []
    for teacher, size, seed, run_dir in runs:
        if run_dir is not None:
            t = __import__("safetensors.torch", fromlist=["load_file"]).load_file(f"{run_dir}/best/{PREDICTIONS}")
            value = score_predictions("synthetic", "dev", t["dev.prediction"], t["dev.label"])["score"]
        else:
            value = 70.0
        rows.append(dict(role="student", stage="task", task="synthetic", split="dev", metric="score", value=value,
                         model="best", seed=seed, status="completed", teacher=teacher, teacher_params=size,
                         teacher_family="0:scratch", student="1L-32H-4A", experts="dense", method="kd",
                         run=f"{teacher}-s{seed}", run_dir=run_dir, params_total=1000, params_active=1000,
                         gflops=0.1, convention="paper", teacher_gflops=1.0))
    return pd.DataFrame(rows)


def test_stored_predictions_give_the_runs_own_scores(tmp_path):
    """A real run: best/predictions.safetensors rescored equals the dev score result.json holds."""
    import json

    from gapkit.distill import DistillSpec, run

    out = tmp_path / "run"
    spec = DistillSpec(stage="finetune", student="1L-32H-4A", output_dir=str(out),
                       data=dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=40),
                       train=dict(lr=3e-3, max_steps=4, batch_size=16, eval_every=2, device="cpu"),
                       weights=dict(relation=0, hard=1.0))
    run(spec, progress=False)
    from safetensors.torch import load_file

    t = load_file(out / "best" / PREDICTIONS)
    assert t["dev.prediction"].shape == (40,) and t["dev.label"].dtype == torch.int32
    best = {m["metric"]: m["value"] for m in json.loads((out / "result.json").read_text())["metrics"]
            if m["model"] == "best" and m["split"] == "dev"}
    assert score_predictions("synthetic", "dev", t["dev.prediction"], t["dev.label"]) == best


def test_the_curse_over_examples_by_hand(tmp_path):
    # the small teacher's student gets 18 of 20 right, the large one's 14: accuracies 90 and 70
    table = _table([("small", 10, 0, _run(tmp_path, "a", 18)), ("large", 100, 0, _run(tmp_path, "b", 14))])
    row = example_curse(table, n_resamples=400, seed=0).iloc[0]
    assert (row.best_teacher, row.largest_teacher, row.n_examples, row.n_seeds) == ("small", "large", 20, 1)
    assert row.best_score == 90.0 and row.largest_score == 70.0 and row.curse == "yes" and row.curse_drop == 20.0
    # paired: the two runs differ on examples 14-17 only (right vs wrong), so each resample's drop is
    # 5 x (how many of its 20 draws fall there): 0 to 100, mean 20
    assert row.curse_drop_low < 20.0 < row.curse_drop_high and row.curse_drop_low >= 0.0
    # the small teacher's student is never worse: always best (ties go to the smaller teacher); a curse
    # needs a draw among examples 14-17, which a resample misses with probability 0.8^20 = 1.2 %
    assert row.best_share == 1.0 and 0.97 < row.curse_share < 1.0
    assert row.note == ""
    # the same seed gives the same interval; another seed another one
    again = example_curse(table, n_resamples=400, seed=0).iloc[0]
    assert (again.curse_drop_low, again.curse_drop_high) == (row.curse_drop_low, row.curse_drop_high)


def test_no_curse_and_identical_students(tmp_path):
    same = _table([("small", 10, 0, _run(tmp_path, "a", 15)), ("large", 100, 0, _run(tmp_path, "b", 15))])
    row = example_curse(same, n_resamples=200).iloc[0]
    assert row.best_teacher == "small" and row.curse == "no" and row.curse_drop == 0.0  # a tie goes to the smaller
    assert (row.curse_drop_low, row.curse_drop_high, row.curse_share) == (0.0, 0.0, 0.0)
    better = _table([("small", 10, 0, _run(tmp_path, "c", 12)), ("large", 100, 0, _run(tmp_path, "d", 19))])
    row = example_curse(better, n_resamples=200).iloc[0]
    assert row.best_teacher == "large" and row.curse == "no" and row.curse_drop == 0.0


def test_seeds_are_averaged_before_the_teachers_are_compared(tmp_path):
    table = _table([("small", 10, 0, _run(tmp_path, "a", 20)), ("small", 10, 1, _run(tmp_path, "b", 12)),
                    ("large", 100, 0, _run(tmp_path, "c", 17)), ("large", 100, 1, _run(tmp_path, "d", 17))])
    row = example_curse(table, n_resamples=100).iloc[0]
    # small: seeds at 100 and 60, mean 80 (its better seed alone would beat large); large: 85 and 85
    assert row.n_seeds == 2 and row.best_teacher == "large" and row.curse == "no"
    assert row.best_score == pytest.approx(85.0) and row.largest_score == pytest.approx(85.0)


@pytest.mark.parametrize("case, message", [
    ("missing", "no stored predictions for large-s0"),
    ("other_examples", "scored on different dev examples"),
    ("one_teacher", "1 teacher (needs 2 or more"),
])
def test_what_cannot_be_estimated_says_why(tmp_path, case, message):
    small = ("small", 10, 0, _run(tmp_path, "a", 18))
    if case == "missing":
        table = _table([small, ("large", 100, 0, None)])
    elif case == "other_examples":
        table = _table([small, ("large", 100, 0, _run(tmp_path, "b", 10, labels=LABELS.flip(0)))])
    else:
        table = _table([small])
    row = example_curse(table, n_resamples=50).iloc[0]
    assert row.note.startswith("not estimable") and message in row.note
    assert pd.isna(row.curse_drop_low)


def test_bad_bootstrap_settings_are_refused(tmp_path):
    table = _table([("small", 10, 0, _run(tmp_path, "a", 18)), ("large", 100, 0, _run(tmp_path, "b", 14))])
    from gapkit.errors import DataError

    with pytest.raises(DataError, match="confidence level"):
        example_curse(table, level=1.5)


def test_the_report_has_the_example_table_for_a_real_sweep(quickstart_results):
    """The cut-budget quickstart (one seed): the seed bootstrap has no interval, the example one has."""
    table = load_table(quickstart_results.out)
    tables = report(table, n_resamples=100)
    examples = tables["curse_examples"]
    assert len(examples) == 2 and set(examples.n_teachers) == {3}  # dense and MiniMoE 1L-16H-4A, 3 teachers each
    assert (examples.note == "").all(), examples.note.tolist()
    assert np.isfinite(examples.curse_drop_low).all() and (examples.curse_drop_low <= examples.curse_drop).all()
    assert (examples.curse_drop <= examples.curse_drop_high).all()
    assert examples.n_examples.iloc[0] == 64
    assert tables["curse"].note.str.contains("1 seed").all()


@pytest.mark.parametrize("task, kind, classes", [("sst2", "sequence", 2), ("mrpc", "sequence", 2), ("cola", "sequence", 2),
                                                 ("mnli", "sequence", 3), ("stsb", "regression", 1),
                                                 ("conll", "token", 9), ("synthetic", "sequence", 2)])
def test_stored_predictions_score_as_the_logits_they_came_from(task, kind, classes):
    from gapkit.data.features import IGNORE_INDEX, align_predictions
    from gapkit.data.metrics import classification_metrics, glue_metrics, ner_metrics
    from gapkit.data.tasks import predictions_of

    g = torch.Generator().manual_seed(0)
    if kind == "token":
        logits = torch.randn(12, 7, classes, generator=g)
        labels = torch.randint(0, classes, (12, 7), generator=g)
        labels[:, -2:] = IGNORE_INDEX  # word pieces and padding
        want = ner_metrics(*align_predictions(logits, labels))
    elif kind == "regression":
        logits, labels = 5 * torch.rand(30, 1, generator=g), 5 * torch.rand(30, generator=g)
        want = glue_metrics(task, logits.numpy(), labels.numpy())
    else:
        logits, labels = torch.randn(30, classes, generator=g), torch.randint(0, classes, (30,), generator=g)
        want = (classification_metrics(logits.numpy(), labels.numpy()) if task == "synthetic"
                else glue_metrics("mnli_m" if task == "mnli" else task, logits.numpy(), labels.numpy()))
    stored = predictions_of(kind, logits)
    split = "dev_matched" if task == "mnli" else "dev"
    assert score_predictions(task, split, stored, labels.to(torch.int32) if kind != "regression" else labels) == want
