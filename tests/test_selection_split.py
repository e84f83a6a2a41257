"""Best weights selected on a split of their own: the holdout carved from the training split
(``data.select_on: holdout``), the dev split then only scored. Tiny synthetic runs of a few steps."""

import json

import pytest
from safetensors.torch import load_file

from gapkit.data.tasks import build_task
from gapkit.distill import DataSpec, DistillSpec, run
from gapkit.errors import DataError
from gapkit.sweep import SweepSpec, build_table, run_sweep

DATA = dict(task="synthetic", max_len=32, synthetic=dict(n_train=200, n_dev=48))


def _key(example) -> tuple:
    return tuple(example["input_ids"])


def _positions(task, examples) -> set:
    """Indices of ``examples`` in the task's whole training split (its sequences are all distinct)."""
    from gapkit.data.tasks import _synthetic_task

    whole = [_key(e) for e in _synthetic_task(DataSpec(**DATA)).examples("train")]
    index = {k: i for i, k in enumerate(whole)}
    assert len(index) == len(whole)
    return {index[_key(e)] for e in examples}


def test_the_holdout_is_disjoint_from_training_and_fixed_by_the_data_seed():
    spec = DataSpec(**DATA, select_on="holdout", holdout=0.25)
    a, b, other = build_task(spec, seed=3), build_task(spec, seed=3), build_task(spec, seed=4)
    assert set(a.evals) == {"holdout"} and set(a.tests) == {"dev"}
    held, train = _positions(a, a.evals["holdout"]), _positions(a, a.train)
    assert len(held) == 50 and len(train) == 150 and not held & train and held | train == set(range(200))
    assert [_key(e) for e in a.evals["holdout"]] == [_key(e) for e in b.evals["holdout"]]
    assert _positions(other, other.evals["holdout"]) != held
    # The dev split is the task's own, untouched: the same as with select_on: dev.
    dev = build_task(DataSpec(**DATA), seed=3)
    assert set(dev.evals) == {"dev"} and not dev.tests
    assert [_key(e) for e in a.tests["dev"]] == [_key(e) for e in dev.evals["dev"]]


def test_max_train_examples_keeps_the_training_size_and_max_eval_examples_spares_the_holdout():
    spec = DataSpec(**DATA, select_on="holdout", holdout=30, max_train_examples=120, max_eval_examples=16)
    task = build_task(spec, seed=0)
    assert len(task.train) == 120 and len(task.evals["holdout"]) == 30 and len(task.tests["dev"]) == 16
    assert not _positions(task, task.train) & _positions(task, task.evals["holdout"])
    # The holdout does not move with max_train_examples (drawn first, from the whole split).
    again = build_task(DataSpec(**DATA, select_on="holdout", holdout=30, max_train_examples=60), seed=0)
    assert [_key(e) for e in again.evals["holdout"]] == [_key(e) for e in task.evals["holdout"]]
    # A fraction is of the training examples the run uses; too few left: training keeps them all.
    small = build_task(DataSpec(**DATA, select_on="holdout", holdout=0.1, max_train_examples=190), seed=0)
    assert len(small.evals["holdout"]) == 19 and len(small.train) == 181
    with pytest.raises(DataError, match=r"DataSpec\.holdout \(200: 200 examples\) leaves nothing to train on"):
        build_task(DataSpec(**DATA, select_on="holdout", holdout=200), seed=0)


def _spec(out, select_on: str, **data) -> DistillSpec:
    return DistillSpec(stage="finetune", student="1L-32H-4A", output_dir=str(out),
                       data=dict(DATA, select_on=select_on, **data),
                       train=dict(lr=3e-3, max_steps=12, batch_size=16, eval_every=2, log_every=4, device="cpu"),
                       weights=dict(relation=0, hard=1.0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    return {s: (run(_spec(root / s, s), progress=False), root / s) for s in ("holdout", "dev")}


def test_the_holdout_selects_and_dev_is_only_scored(runs):
    result, folder = runs["holdout"]
    assert result.selection["split"] == "holdout" and result.selection["scored"] == ["dev"]
    assert result.selection["examples"] == {"train": 180, "holdout": 20, "dev": 48}
    saved = json.loads((folder / "result.json").read_text())
    assert saved["selection"] == result.selection
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    holdout = {r["step"]: r["value"] for r in rows if r["split"] == "holdout" and r["metric"] == "score"}
    dev = {r["step"]: r["value"] for r in rows if r["split"] == "dev" and r["metric"] == "score"}
    # Every evaluation scores the holdout; dev only where the holdout improved (best/ was written).
    assert sorted(holdout) == list(range(2, 13, 2)) and set(dev) <= set(holdout)
    improved, best = [], None
    for step in sorted(holdout):
        if best is None or holdout[step] > best:
            improved.append(step)
            best = holdout[step]
    assert sorted(dev) == improved and result.best_step == improved[-1]
    best_rows = {(r["split"], r["model"]) for r in result.metrics}
    assert best_rows == {("holdout", "best"), ("dev", "best"), ("holdout", "final")}
    assert result.metric("score") == dev[result.best_step]  # the reported score: dev, with the selected weights
    assert result.metric("score", split="holdout") == holdout[result.best_step]
    kept = load_file(folder / "best" / "predictions.safetensors")
    assert {"dev.prediction", "dev.label", "holdout.prediction", "holdout.label"} <= set(kept)
    assert len(kept["dev.label"]) == 48


def test_dev_selection_is_unchanged_and_says_so(runs):
    result, folder = runs["dev"]
    assert result.selection["split"] == "dev" and result.selection["scored"] == []
    assert result.selection["examples"] == {"train": 200, "dev": 48}
    assert {(r["split"], r["model"]) for r in result.metrics} == {("dev", "best"), ("dev", "final")}


def test_a_killed_holdout_run_resumes_on_the_same_holdout(tmp_path, runs):
    class Kill(Exception):
        pass

    def stop(step, logs, model):
        if step == 7:
            raise Kill

    spec = _spec(tmp_path / "r", "holdout")
    with pytest.raises(Kill):
        run(spec, callback=stop, progress=False)
    resumed = run(spec, resume=True, progress=False)
    whole, folder = runs["holdout"]
    assert resumed.metrics == whole.metrics and resumed.best_step == whole.best_step
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count('"split": "holdout"') == \
        (folder / "metrics.jsonl").read_text().count('"split": "holdout"')
    a = load_file(tmp_path / "r" / "best" / "predictions.safetensors")
    b = load_file(folder / "best" / "predictions.safetensors")
    assert all((a[k] == b[k]).all() for k in b)


def test_a_sweep_selects_on_the_holdout_unless_a_task_says_dev(tmp_path):
    sweep = dict(
        name="sel", output_dir=str(tmp_path / "sweep"),
        tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=32, holdout=16)],
        teachers=[dict(family="scratch", shapes=["1L-32H-4A"])], students=dict(shapes=["1L-16H-4A"]),
        methods=["kd"], stages=["task"], relation_heads=4, seeds=[0],
        budgets=dict(all=dict(lr=3e-3, max_steps=2, batch_size=16, eval_every=2, device="cpu")))
    spec = SweepSpec(**sweep)
    assert spec.tasks[0]["select_on"] == "holdout"
    assert SweepSpec(**dict(sweep, tasks=[dict(task="synthetic", select_on="dev")])).tasks[0]["select_on"] == "dev"
    assert run_sweep(spec, progress=False, log=lambda *a: None).ok
    table = build_table(spec.output_dir)
    assert set(table.selected_on) == {"holdout"}
    best_dev = table[(table.model == "best") & (table.split == "dev")]
    assert set(best_dev.role) == {"teacher", "student"}  # what the analysis reads is still there
    assert set(table[table.split == "holdout"].model) == {"best", "final"}
