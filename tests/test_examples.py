"""Dev examples in the verdicts: runs store their best weights' predictions, the curse test reads them as its
example component (gapkit.analysis.curse_test), checked on hand-made predictions and on a real sweep."""

import pandas as pd
import pytest
import torch

from gapkit.analysis import curse_test, load_table, report
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


def test_seeds_and_examples_by_hand(tmp_path):
    # Two seeds per teacher: the small teacher's students get 18 and 17 of 20 right, the large one's 14 and 13.
    table = _table([("small", 10, 0, _run(tmp_path, "a", 18)), ("small", 10, 1, _run(tmp_path, "b", 17)),
                    ("large", 100, 0, _run(tmp_path, "c", 14)), ("large", 100, 1, _run(tmp_path, "d", 13))])
    row = curse_test(table).iloc[0]
    assert (row.smallest_teacher, row.largest_teacher, row.n_examples, row.n_units) == ("small", "large", 20, 2)
    assert row.scope == "seeds + dev examples" and row.curse_drop == pytest.approx(20.0)
    # 20 examples: 20 groups of one. Per seed the difference is 100 on the examples only the small teacher's
    # student gets right (14-17 and 13-16), else 0; two replicates: the replicate df alone (1).
    assert row.df == 1
    seeds_only = curse_test(table, examples=False).iloc[0]
    assert seeds_only.scope == "seeds, this dev set" and pd.isna(seeds_only.p)  # both seeds drop exactly 20


@pytest.mark.parametrize("case, message", [
    ("missing", "example variance not included: no stored dev predictions in"),
    ("other_examples", "example variance not included: runs scored different dev examples"),
])
def test_what_leaves_the_examples_out_says_why(tmp_path, case, message):
    small = [("small", 10, s, _run(tmp_path, f"a{s}", 18 - s)) for s in (0, 1)]
    if case == "missing":
        table = _table(small + [("large", 100, 0, None), ("large", 100, 1, None)])
    else:
        table = _table(small + [("large", 100, s, _run(tmp_path, f"b{s}", 10, labels=LABELS.flip(0))) for s in (0, 1)])
    row = curse_test(table).iloc[0]
    assert message in row.note and row.scope == "seeds, this dev set"


def test_the_report_reads_a_real_sweeps_predictions(quickstart_results):
    """The cut-budget quickstart (one seed): its runs' predictions are there, but one seed tests nothing."""
    table = load_table(quickstart_results.out)
    curse = report(table)["curse"]
    assert len(curse) == 2 and set(curse.n_teachers) == {3}  # dense and MiniMoE 1L-16H-4A, 3 teachers each
    assert (curse.established == "no").all() and curse.note.str.contains("1 matched seed").all()


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
