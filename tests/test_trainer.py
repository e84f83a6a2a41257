"""The training loop on gapkit's synthetic task: files, reproducibility, resume, failures, DDP, pipelines."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gapkit.distill import DistillSpec, PipelineSpec, run, run_pipeline, ta_chain
from gapkit.distill import trainee as trainee_module
from gapkit.errors import ConfigError, DataError, TrainingFailed

DATA = dict(task="synthetic", max_len=32, max_train_examples=256, max_eval_examples=64)


def finetune_spec(out, **train):
    return DistillSpec(
        stage="finetune", student="2L-32H-4A", output_dir=str(out), data=DATA,
        train=dict(dict(lr=2e-3, max_steps=8, batch_size=16, eval_every=4, log_every=2, device="cpu"), **train),
        weights=dict(relation=0, hard=1.0),
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny teacher fine-tuned on the synthetic task (a BertForSequenceClassification folder)."""
    out = tmp_path_factory.mktemp("teacher")
    spec = DistillSpec(
        stage="finetune", student="2L-64H-4A", output_dir=str(out / "run"), data=dict(DATA, max_train_examples=512),
        train=dict(lr=3e-3, max_steps=40, batch_size=32, eval_every=20, device="cpu"), weights=dict(relation=0, hard=1.0),
    )
    run(spec, progress=False)
    return str(out / "run" / "best")


def test_finetune_writes_one_run_folder(tmp_path):
    result = run(finetune_spec(tmp_path / "r"), progress=False)
    r = tmp_path / "r"
    assert result.status == "completed" and result.steps == 8
    assert {"config.json", "metrics.jsonl", "result.json", "best", "checkpoint"} <= {p.name for p in r.iterdir()}
    rows = [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
    assert {row["split"] for row in rows} == {"train", "dev"}
    assert [row["step"] for row in rows if row["split"] == "dev" and row["metric"] == "score"] == [4, 8]
    saved = json.loads((r / "result.json").read_text())
    assert saved["metrics"] == result.metrics and result.metric("score") == 40.625 or result.metric("score") >= 0
    assert {"run_id", "gapkit_version", "git_revision", "student", "teacher", "seeds", "status", "reason",
            "wall_time_s", "selection", "schema"} <= set(saved)
    assert saved["student"]["params_total"] > 0 and saved["student"]["init"] == "random"
    assert set(saved["student"]["gflops"]) == {"macs", "flops", "paper"} and saved["teacher"] is None
    assert saved["selection"] == {"split": "dev", "metric": "score", "higher_is_better": True, "scored": [],
                                  "examples": {"train": 256, "dev": 64}}
    assert {(m["split"], m["model"], m["step"]) for m in saved["metrics"]} == {("dev", "best", result.best_step),
                                                                               ("dev", "final", 8)}
    assert DistillSpec.from_dict(json.loads((r / "config.json").read_text())).train.max_steps == 8
    # best/ is a plain Hugging Face classifier
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(r / "best")
    assert model.config.num_labels == 2
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run(finetune_spec(r), progress=False)
    assert run(finetune_spec(r), resume=True, progress=False).metrics == result.metrics  # read back
    with pytest.raises(ConfigError, match="finished run of a different config"):
        run(finetune_spec(r, lr=1e-3), resume=True, progress=False)


def test_cpu_runs_are_bitwise_reproducible(tmp_path):
    run(finetune_spec(tmp_path / "a"), progress=False)
    run(finetune_spec(tmp_path / "b"), progress=False)
    a = load_file(tmp_path / "a" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(run(finetune_spec(tmp_path / "c", seed=1), progress=False).run_dir + "/checkpoint/model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_killed_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    full = run(finetune_spec(tmp_path / "full", checkpoint_every=3), progress=False)

    def kill(step, logs, model):
        if step == 5:  # after the step-3 checkpoint: steps 4-5 are lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(finetune_spec(tmp_path / "cut", checkpoint_every=3), callback=kill, progress=False)
    assert not (tmp_path / "cut" / "result.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        run(finetune_spec(tmp_path / "cut", checkpoint_every=3), progress=False)
    resumed = run(finetune_spec(tmp_path / "cut", checkpoint_every=3), resume=True, progress=False)
    a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoint" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == full.metrics and resumed.run_id == full.run_id
    full_rows = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    cut_rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [{k: v for k, v in json.loads(r).items()} for r in rows
                          if json.loads(r)["metric"] != "tokens_per_s"]
    assert strip(full_rows) == strip(cut_rows)


def test_nan_loss_stops_with_a_failure_record(tmp_path, monkeypatch):
    real = trainee_module.hard_label_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainee_module, "hard_label_loss", poisoned)
    with pytest.raises(TrainingFailed, match="step 3") as err:
        run(finetune_spec(tmp_path / "r"), progress=False)
    assert "hard" in str(err.value)
    failure = json.loads((tmp_path / "r" / "failure.json").read_text())
    assert failure["step"] == 3 and failure["term"] == "hard"
    saved = json.loads((tmp_path / "r" / "result.json").read_text())  # strict JSON: no bare NaN
    assert saved["status"] == "failed" and "hard" in saved["reason"] and saved["student"]["params_total"] > 0
    for resume in (False, True):
        with pytest.raises(ConfigError, match="holds a failed run"):
            run(finetune_spec(tmp_path / "r"), resume=resume, progress=False)


def test_early_stopping(tmp_path):
    result = run(finetune_spec(tmp_path / "r", lr=1e-9, warmup=0.0, eval_every=1, early_stopping=2), progress=False)
    assert result.status == "early_stopped" and result.steps == 3


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    specs = []
    for accum in (1, 4):
        s = finetune_spec(tmp_path / f"acc{accum}", grad_accum=accum, max_steps=3, eval_every=3)
        s.student = "2L-32H-4A"
        specs.append(s)
    for s in specs:  # no dropout: the two runs then see the same numbers
        s.student = s.student_spec()
        s.student.dropout = s.student.attention_dropout = 0.0
        run(s, progress=False)
    a = load_file(tmp_path / "acc1" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "acc4" / "checkpoint" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_distillation_stages_and_routing_table(tmp_path, teacher):
    agnostic = DistillSpec(
        stage="agnostic", student="2L-32H-4A-1,4E", teacher=teacher, output_dir=str(tmp_path / "agn"),
        data=DATA, relation_heads=4, train=dict(lr=2e-3, max_steps=6, batch_size=16, eval_every=3, routing_every=2, device="cpu"),
    )
    res = run(agnostic, progress=False)
    assert res.metric("relation", model="final") > 0 and res.params_total > res.params_active
    assert res.teacher["params"] > 0 and res.selection["higher_is_better"] is False
    task = DistillSpec(
        stage="task", student=str(tmp_path / "agn" / "best"), teacher=teacher, output_dir=str(tmp_path / "task"),
        data=DATA, relation_heads=4, weights=dict(relation=0, soft=1.0, hard=0.5, temperature=2.0),
        train=dict(lr=2e-3, max_steps=6, batch_size=16, eval_every=3, routing_every=2, device="cpu"),
    )
    res = run(task, progress=False)
    assert 0 <= res.metric("score", model="final") <= 100
    assert res.student["init"] == "pretrained" and res.student["new_weights"] == ["classifier.weight", "classifier.bias"]
    table = pd.read_parquet(tmp_path / "task" / "routing.parquet")
    assert {"step", "split", "layer", "block", "expert", "token_fraction", "mean_gate_prob", "load_balance",
            "gate_entropy"} <= set(table.columns)
    assert set(table.split) == {"train", "dev"} and set(table.block) == {"ffn"} and set(table.expert) == {0, 1, 2, 3}
    sums = table.groupby(["step", "split", "layer", "block"]).token_fraction.sum()
    assert ((sums - 1).abs() < 1e-6).all()
    assert table.load_balance.between(0.5, 4.0).all()  # E * sum(p_i f_i): about 1 when balanced, at most E
    logs = [json.loads(line) for line in (tmp_path / "task" / "metrics.jsonl").read_text().splitlines()]
    assert {"soft", "hard", "load_balance", "total"} <= {r["metric"] for r in logs if r["split"] == "train"}


def test_teacher_assistant_chain_as_one_pipeline(tmp_path, teacher):
    defaults = dict(data=DATA, relation_heads=4, weights=dict(soft=1.0, hard=0.0),
                    train=dict(lr=2e-3, max_steps=3, batch_size=16, device="cpu"))
    pipeline = ta_chain(teacher=teacher, assistant="2L-48H-4A", student="1L-32H-4A", task_teacher=teacher,
                        output_dir=str(tmp_path / "ta"), defaults=defaults)
    results = run_pipeline(pipeline, progress=False)
    assert [Path(r.run_dir).name for r in results] == ["assistant_agnostic", "assistant_task",
                                                      "student_agnostic", "student_task"]
    config = json.loads((tmp_path / "ta" / "student_task" / "config.json").read_text())
    assert config["teacher"].endswith("assistant_task/best") and config["student"].endswith("student_agnostic/best")
    again = run_pipeline(pipeline, progress=False)  # finished stages are read back, not re-run
    assert [r.metrics for r in again] == [r.metrics for r in results]
    changed = ta_chain(teacher=teacher, assistant="2L-48H-4A", student="1L-32H-4A", task_teacher=teacher,
                       output_dir=str(tmp_path / "ta"), defaults=dict(defaults, train=dict(defaults["train"], lr=1e-3)))
    with pytest.raises(ConfigError, match="finished run of a different config"):
        run_pipeline(changed, progress=False)
    with pytest.raises(ConfigError, match="not an earlier stage"):
        PipelineSpec(stages=[dict(name="a", stage="task", teacher="@b", student="2L-32H-4A")])


# -- bad input, before any training ------------------------------------------------------------
def test_bad_input_is_reported_before_training(tmp_path, teacher):
    def no_training(step, logs, model):
        raise AssertionError("training started")

    with pytest.raises(DataError, match="Unknown task"):
        run(DistillSpec(stage="finetune", student="2L-32H-4A", output_dir=str(tmp_path / "a"),
                        data=dict(task="sst3"), weights=dict(relation=0, hard=1)), callback=no_training)
    with pytest.raises(ConfigError, match="predicts 2 labels"):
        run(DistillSpec(stage="task", student="2L-32H-4A", teacher=teacher, output_dir=str(tmp_path / "b"),
                        data=dict(DATA, synthetic=dict(num_labels=3)), relation_heads=4,
                        weights=dict(soft=1.0)), callback=no_training)
    with pytest.raises(DataError, match="position"):
        run(DistillSpec(stage="task", student="2L-32H-4A", teacher=teacher, output_dir=str(tmp_path / "c"),
                        data=dict(DATA, max_len=1024), relation_heads=4, weights=dict(soft=1.0)), callback=no_training)
    with pytest.raises(ConfigError, match="relation_heads=5 does not divide"):
        run(DistillSpec(stage="agnostic", student="2L-32H-4A", teacher=teacher, output_dir=str(tmp_path / "d"),
                        data=DATA, relation_heads=5), callback=no_training)
    with pytest.raises(ConfigError, match="teacher is empty"):
        DistillSpec(stage="task", student="2L-32H-4A")
    with pytest.raises(ConfigError, match="TrainSpec.lr"):
        DistillSpec(stage="finetune", train=dict(lr=-1))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no folder for a run that never started




def test_pipeline_set_reaches_the_pipeline_and_its_stages(tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("output_dir: runs/a\nstages: [{name: t, stage: finetune, student: 2L-32H-4A, weights: {hard: 1.0}}]\n")
    spec = PipelineSpec.from_file(config, [f"output_dir={tmp_path / 'b'}", "train.lr=1e-3"])
    (stage,) = spec.resolved()
    assert stage.output_dir == str(tmp_path / "b" / "t") and stage.train.lr == 1e-3


def test_optimizer_and_schedule_follow_the_authors_recipe():
    from gapkit.distill.trainer import make_optimizer, make_scheduler

    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = make_optimizer(module, DistillSpec(stage="finetune", weights=dict(hard=1.0)).train)
    assert all(g["eps"] == 1e-6 for g in opt.param_groups)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]  # decay only on the Linear weight
    assert opt.defaults["fused"]  # torch's fused kernel on CPU: the same update as the loop, to rounding
    loop = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    loop.load_state_dict(module.state_dict())
    reference = torch.optim.AdamW([{"params": [loop[0].weight], "weight_decay": 0.01},
                                   {"params": [loop[0].bias, *loop[1].parameters()], "weight_decay": 0.0}],
                                  lr=opt.defaults["lr"], eps=1e-6, foreach=False)
    x = torch.randn(8, 4)
    for model, o in ((module, opt), (loop, reference)):
        for _ in range(3):
            o.zero_grad()
            model(x).pow(2).sum().backward()
            o.step()
    for a, b in zip(module.parameters(), loop.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    sched = make_scheduler(opt, total_steps=10, warmup=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0] / opt.defaults["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == [0.0, 0.5, 1.0, 7 / 8]  # warmup from 0 over 2 steps, then linear decay to 0
