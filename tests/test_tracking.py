"""Experiment tracking (``train.tracking: mlflow``): a tiny synthetic run mirrored to an MLflow file store, read
back through MLflow's own client; a resumed run continues its MLflow run; a missing package is one sentence."""

import json
import sys

import pytest

from gapkit.distill import DistillSpec, run
from gapkit.distill.config import TrainSpec
from gapkit.distill.result import run_id
from gapkit.distill.runfiles import RunDir
from gapkit.errors import ConfigError

pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'gapkit[mlflow]'); the "
                                     "test extra installs it")


def spec_for(folder, max_steps=4, **train):
    return DistillSpec(
        stage="finetune", student="2L-32H-4A", output_dir=str(folder),
        data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=16),
        train=dict(dict(lr=1e-3, max_steps=max_steps, batch_size=16, log_every=1, eval_every=2, device="cpu",
                        tracking="mlflow"), **train),
        weights=dict(relation=0, hard=1.0),
    )


def jsonl_rows(folder) -> dict[tuple[str, int], float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {(f"{r['split']}/{r['metric']}", r["step"]): r["value"] for r in rows if r["value"] is not None}


def mlflow_rows(client, mlflow_run_id, keys) -> dict[tuple[str, int], list[float]]:
    out = {}
    for key in keys:
        for m in client.get_metric_history(mlflow_run_id, key):
            out.setdefault((key, m.step), []).append(m.value)
    return out


def tracked_runs(client):
    """The MLflow runs of experiment ``gapkit`` in the client's store, read by MLflow."""
    return client.search_runs([client.get_experiment_by_name("gapkit").experiment_id])


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return tmp_path / "r" / "mlruns"


def test_a_tracked_run_writes_the_same_metrics_to_an_mlflow_file_store(tmp_path, store):
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "r"
    result = run(spec_for(folder), progress=False)
    client = MlflowClient(tracking_uri=store.as_uri())
    runs = tracked_runs(client)
    assert len(runs) == 1
    tracked = runs[0]
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == result.name
    assert tracked.data.tags["gapkit.run_id"] == result.run_id and tracked.data.tags["gapkit.status"] == "completed"
    # params: the resolved config, flattened
    assert tracked.data.params["train.lr"] == "0.001" and tracked.data.params["stage"] == "finetune"
    assert tracked.data.params["train.tracking"] == "mlflow"
    # every metrics.jsonl row, once, at its step
    expected = jsonl_rows(folder)
    got = mlflow_rows(client, tracked.info.run_id, {k for k, _ in expected})
    assert set(got) == set(expected)
    assert all(got[k] == pytest.approx([v]) for k, v in expected.items())
    assert {"train/hard", "train/total", "train/lr", "dev/accuracy"} <= {k for k, _ in expected}
    # the result's rows
    best = result.metric("accuracy", model="best")
    assert tracked.data.metrics["result/best/dev/accuracy"] == pytest.approx(best)


def test_tracking_does_not_change_a_runs_id():
    on, off = spec_for("x").to_dict(), spec_for("x", tracking="off").to_dict()
    assert on != off and run_id(on) == run_id(off)


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, store):
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "r"

    class Stop(Exception):
        pass

    def stop_at_3(step, logs, model):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        run(spec_for(folder, max_steps=6), progress=False, callback=stop_at_3)
    client = MlflowClient(tracking_uri=store.as_uri())
    (first,) = tracked_runs(client)
    assert first.info.status == "KILLED"
    run(spec_for(folder, max_steps=6), resume=True, progress=False)
    (again,) = tracked_runs(client)
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    expected = jsonl_rows(folder)
    got = mlflow_rows(client, again.info.run_id, {k for k, _ in expected})
    assert set(got) == set(expected)
    # steps after the checkpoint (2) that the stopped process had logged (3) are there twice, as documented
    assert len(got[("train/total", 3)]) == 2 and len(got[("train/total", 5)]) == 1


def test_missing_mlflow_is_one_sentence_before_the_run_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"pip install 'gapkit\[mlflow\]'"):
        run(spec_for(tmp_path / "r"), progress=False)
    assert not RunDir(tmp_path / "r").started()  # refused before the folder was written


@pytest.mark.parametrize("value, sentence", [
    ("wandb", r"TrainSpec.tracking must be one of off, mlflow, got 'wandb'"),
    (3, r"TrainSpec.tracking must be a string"),
])
def test_bad_tracking_is_one_sentence(value, sentence):
    with pytest.raises(ConfigError, match=sentence):
        TrainSpec(tracking=value)
