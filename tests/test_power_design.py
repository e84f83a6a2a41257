"""What a sweep designed for power needs: length-grouped batches, dense students as wide as a MiniMoE
(``2L-192H-3072F``), paired teacher/student replicates, a method for some shapes only, soft labels of a
fixed entropy, and the lift of a method against a parameter-matched dense student."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gapkit.analysis.verdicts import curse_test, lift_test
from gapkit.distill.batches import Batches
from gapkit.distill.losses import mean_entropy, temperature_for_entropy
from gapkit.errors import ConfigError
from gapkit.models import Student, parse_shape, spec_from_name
from gapkit.sweep import SweepSpec, build_table, plan, run_sweep
from gapkit.sweep.table import COLUMNS

from test_analysis import row


# -- length-grouped batches -------------------------------------------------------------------------
def features(n=700, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input_ids": [1] * int(k), "attention_mask": [1] * int(k), "labels": 0}
            for k in rng.integers(2, 60, size=n)]


def padded_tokens(batches: Batches, steps: int) -> int:
    return sum(b["input_ids"].numel() for step in range(steps) for b in batches.for_step(step))


def test_grouped_batches_cover_each_epoch_once_with_far_less_padding():
    feats = features()
    plain = Batches(feats, 8, 1, seed=3, pad_token_id=0)
    grouped = Batches(feats, 8, 1, seed=3, pad_token_id=0, group_by_length=True)
    for epoch in (0, 1):
        order = grouped.order(epoch)
        assert sorted(order.tolist()) == list(range(len(feats)))  # a permutation: every example once
    assert not torch.equal(grouped.order(0), grouped.order(1))  # a new grouping each epoch
    again = Batches(feats, 8, 1, seed=3, pad_token_id=0, group_by_length=True)
    assert torch.equal(again.order(1), grouped.order(1))  # a function of (seed, epoch) only
    steps = grouped.per_epoch
    assert padded_tokens(grouped, steps) < 0.7 * padded_tokens(plain, steps)
    real = sum(len(f["input_ids"]) for f in feats)
    assert padded_tokens(grouped, steps) < 1.2 * real  # nearly no padding left
    spans = []  # each batch's examples come from one stretch of a length-sorted pool
    for step in range(steps):
        lengths = [len(feats[i]["input_ids"]) for i in grouped.order(0)[step * 8:(step + 1) * 8].tolist()]
        spans.append(max(lengths) - min(lengths))
    assert np.mean(spans) < 0.1 * 58


def test_a_grouped_pool_is_the_plain_pool_sorted():
    feats = features(300, seed=1)
    g = torch.Generator().manual_seed(5 * 1000003)
    grouped = Batches(feats, 10, 1, seed=5, pad_token_id=0, group_by_length=True)
    plain = torch.randperm(len(feats), generator=g)
    order = grouped.order(0)
    pool = Batches.POOL * 10  # 640 > 300: one pool, so the batches are consecutive runs of the sorted order
    assert len(feats) < pool
    by_length = sorted(plain.tolist(), key=lambda i: -len(feats[i]["input_ids"]))
    batches = {tuple(order[i * 10:(i + 1) * 10].tolist()) for i in range(grouped.per_epoch)}
    assert batches == {tuple(by_length[i * 10:(i + 1) * 10]) for i in range(grouped.per_epoch)}


# -- FFN width in shape strings ---------------------------------------------------------------------
def test_a_wide_dense_student_has_the_parameters_of_the_minimoe_it_controls_for():
    assert parse_shape("2L-192H-3072F") == dict(layers=2, hidden=192, heads=12, ffn=3072)
    assert parse_shape("2L-64H-4A-512F-1,4E")["ffn"] == 512
    wide, moe = spec_from_name("2L-192H-3072F"), spec_from_name("2L-192H-1,4E")
    assert (wide.name, wide.ffn, wide.is_moe) == ("2L-192H-3072F", 3072, False)
    assert spec_from_name("2L-192H").name == "2L-192H"  # 4 H is the default: no suffix
    small = dict(vocab_size=1000, max_positions=64)
    w = Student(spec_from_name("2L-48H-768F", **small))
    m = Student(spec_from_name("2L-48H-1,4E", **small))
    routers = sum(p.numel() for n, p in m.named_parameters() if "router" in n or "gate" in n)
    extra_bias = 2 * 3 * 48  # each expert's FFN output has its own bias: 3 more per layer than one FFN
    assert routers > 0 and w.num_parameters() == m.num_parameters() - routers - extra_bias
    assert w.num_parameters(active=True) > m.num_parameters(active=True)  # all of it active


# -- paired replicates and a method for some shapes --------------------------------------------------
def sweep(out, **over) -> dict:
    base = dict(
        name="power", output_dir=str(out),
        tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=32, holdout=16)],
        teachers=[dict(family="scratch", shapes=["1L-32H-4A", "2L-32H-4A"])],
        students=dict(shapes=["1L-16H-4A", "1L-16H-4A-256F"]),
        methods=["kd", dict(name="minimoe", experts="1,4E", students=["1L-16H-4A"])], stages=["task"],
        relation_heads=4, seeds=[0, 1, 2], teacher_seed="paired",
        budgets=dict(all=dict(lr=3e-3, max_steps=2, batch_size=16, eval_every=2, device="cpu", group_by_length=True)),
    )
    base.update(over)
    return base


def test_paired_replicates_fine_tune_a_teacher_per_seed_and_pair_them(tmp_path):
    nodes = plan(SweepSpec(**sweep(tmp_path)))
    teachers = [n for n in nodes if n.kind == "finetune"]
    students = [n for n in nodes if n.kind == "task"]
    assert {(n.meta["teacher"], n.meta["teacher_seed"]) for n in teachers} == {
        (t, s) for t in ("1L-32H-4A", "2L-32H-4A") for s in (0, 1, 2)}
    assert all(s.meta["seed"] == s.meta["teacher_seed"] for s in students)
    # kd for both shapes, MiniMoE for the narrow one only: 3 cells x 2 teachers x 3 replicates.
    cells = {(s.meta["student"], s.meta["method"]) for s in students}
    assert cells == {("1L-16H-4A", "kd"), ("1L-16H-4A-256F", "kd"), ("1L-16H-4A-1,4E", "minimoe")} or cells == {
        ("1L-16H-4A", "kd"), ("1L-16H-4A-256F", "kd"), ("1L-16H-4A", "minimoe")}
    assert len(students) == 3 * 2 * 3
    by_id = {n.id: n for n in nodes}
    for s in students:
        (dep,) = s.deps
        assert by_id[dep].meta["teacher_seed"] == s.meta["seed"]


def test_a_paired_sweep_runs_with_entropy_matched_soft_labels(tmp_path):
    spec = SweepSpec(**sweep(tmp_path, seeds=[0, 1], methods=["kd"], students=dict(shapes=["1L-16H-4A"]),
                             weights=dict(kd=dict(soft=1.0, hard=1.0, target_entropy=0.4))))
    run_sweep(spec, progress=False, log=lambda *a: None)
    table = build_table(tmp_path)
    students = table[(table.role == "student") & (table.split == "dev")]
    assert set(students.status) == {"completed"} and set(students.teacher_seed) == {0, 1}
    soft = []
    for folder in set(students.run_dir):
        soft.append(json.loads((tmp_path / "runs" / Path(folder).name / "result.json").read_text())["teacher"][
            "soft_labels"])
    assert all(s["entropy"] == pytest.approx(0.4, abs=1e-4) and s["target_entropy"] == 0.4 for s in soft)
    assert len({round(s["temperature"], 6) for s in soft}) > 1  # each teacher replicate its own temperature
    r = curse_test(table[table.split == "dev"]).iloc[0]
    assert (r.units, r.n_units) == ("teacher fine-tunes", 2) and "one student seed each" in r.scope


# -- the temperature of a target entropy -----------------------------------------------------------
def test_the_solved_temperature_gives_the_target_entropy():
    logits = torch.randn(500, 2) * 3
    for target in (0.1, 0.3, 0.6):
        t = temperature_for_entropy(logits, target)
        p = F.softmax(logits.double() / t, -1)
        assert float(-(p * p.log()).sum(-1).mean()) == pytest.approx(target, abs=1e-5)
    assert mean_entropy(logits, 1.0) < mean_entropy(logits, 2.0)  # softer with T
    with pytest.raises(ConfigError, match=r"target_entropy 0\.8 nats is out of reach .*log C = 0\.6931"):
        temperature_for_entropy(logits, 0.8)


# -- lift against a parameter-matched dense student ------------------------------------------------
def wide_table(curse_wide: float, curse_moe: float, n=6, seed=0):
    """2L-12H kd with a 2-point curse; 2L-12H-192F kd (the parameters of 2L-12H-1,4E) and MiniMoE with the
    given curses; a replicate effect (sd 1) shared by every cell, and noise of sd 0.05 in each."""
    rng = np.random.default_rng(seed)
    replicate = rng.normal(0, 1.0, size=n)
    rows = []
    for student, method, drop in (("2L-12H", "kd", 2.0), ("2L-12H-192F", "kd", curse_wide),
                                  ("2L-12H", "minimoe", curse_moe)):
        for teacher, shift in (("T1", drop), ("T3", 0.0)):
            for s in range(n):
                r = row(teacher, "2L-10H", method, s, 75 + shift + replicate[s] + rng.normal(0, 0.05))
                r["student"] = student
                rows.append(r)
    return pd.DataFrame(rows, columns=COLUMNS)


def test_lift_rows_compare_minimoe_and_the_wide_dense_student_with_both_baselines():
    lift = lift_test(wide_table(curse_wide=2.0, curse_moe=0.0), baseline="kd")
    got = {(r.student, r.method, r.baseline_student, r.comparison): r for r in lift.itertuples()}
    assert set(got) == {("2L-12H", "minimoe", "2L-12H", "same shape"),
                        ("2L-12H-192F", "kd", "2L-12H", "wider FFN"),
                        ("2L-12H", "minimoe", "2L-12H-192F", "same parameters")}
    assert got[("2L-12H", "minimoe", "2L-12H", "same shape")].verdict == "lift"
    wide = got[("2L-12H-192F", "kd", "2L-12H", "wider FFN")]
    assert wide.verdict == "not established" and abs(wide.lift) < 0.3  # parameters alone lift nothing
    matched = got[("2L-12H", "minimoe", "2L-12H-192F", "same parameters")]
    assert matched.verdict == "lift" and matched.lift == pytest.approx(2.0, abs=0.4)
    assert len(lift) == 3 and (lift.p_holm >= lift.p).all() and lift.p_holm.max() > 0.05  # one Holm family


def test_when_the_wide_student_lifts_as_much_minimoe_gains_nothing_at_equal_parameters():
    lift = lift_test(wide_table(curse_wide=0.0, curse_moe=0.0, seed=1), baseline="kd")
    matched = lift[lift.comparison == "same parameters"].iloc[0]
    assert matched.verdict == "not established" and abs(matched.lift) < 0.3
    assert lift[lift.comparison == "wider FFN"].iloc[0].verdict == "lift"


# -- a task stage on the labels alone after a task-agnostic one -------------------------------------
def test_a_labels_only_task_stage_needs_no_fine_tuned_teacher(tmp_path):
    # Pre-trained teachers: the task-agnostic stage distils from them as they are, once for every teacher seed.
    spec = SweepSpec(**sweep(tmp_path, stages=["agnostic", "task"], methods=["minilm", dict(name="minimoe")],
                             teachers=["org/bert-a", "org/bert-b"], students=dict(shapes=["1L-16H-4A"]),
                             teacher_seed=[0, 1], seeds=[0, 1],
                             weights=dict(task=dict(soft=0.0, hard=1.0))))
    nodes = plan(spec)
    by_id = {n.id: n for n in nodes}
    tasks = [n for n in nodes if n.kind == "task"]
    assert len(tasks) == 2 * 2 * 2  # teachers x methods x seeds: not multiplied by the teacher seeds
    for n in tasks:
        (dep,) = n.deps
        assert by_id[dep].kind == "agnostic" and n.config["stage"] == "finetune" and n.config["teacher"] is None
        assert n.meta["teacher_seed"] is None and "-t0" not in n.id and "-t1" not in n.id
        assert n.config["train"]["lr"] == spec.budgets["all"]["lr"] and n.config["weights"]["hard"] == 1.0
    # With soft labels the task stage distils from each fine-tuned replicate, as before.
    soft = plan(SweepSpec(**sweep(tmp_path, stages=["agnostic", "task"], methods=["minilm"], teacher_seed=[0, 1],
                                  teachers=["org/bert-a", "org/bert-b"],
                                  students=dict(shapes=["1L-16H-4A"]), seeds=[0],
                                  weights=dict(task=dict(soft=1.0)))))
    distilled = [n for n in soft if n.kind == "task"]
    assert len(distilled) == 2 * 2 and all(n.config["stage"] == "task" and n.config["teacher"] for n in distilled)


# -- committed results that stand on their own ----------------------------------------------------
def test_an_exported_sweep_reports_as_the_sweep_does_with_its_dev_examples(tmp_path):
    from gapkit.analysis import load_table
    from gapkit.sweep.table import export_table

    out = tmp_path / "sweep"
    spec = SweepSpec(**sweep(out, seeds=[0, 1], methods=["kd"], students=dict(shapes=["1L-16H-4A"]),
                             tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=24,
                                         holdout=16)]))
    run_sweep(spec, progress=False, log=lambda *a: None)
    export_table(out, tmp_path / "export")
    exported = load_table(tmp_path / "export")
    assert not any(p.startswith(str(out)) for p in exported.run_dir.dropna())  # nothing points back at the sweep
    assert all((Path(p) / "best" / "predictions.safetensors").is_file() for p in exported.run_dir.dropna())
    assert not list((tmp_path / "export").rglob("*model*.safetensors"))  # no weights
    here, there = curse_test(load_table(out)), curse_test(exported)
    # Every run scored the same 24 dev examples (a fixed subset, whatever the run's seed), so the test takes
    # their variance, and the exported copy gives the same verdict to the last digit.
    assert here.iloc[0].scope == "teacher fine-tunes (one student seed each) + dev examples"
    assert here.iloc[0].n_examples == 24
    cols = ["curse_drop", "drop_low", "drop_high", "p", "verdict", "scope"]
    pd.testing.assert_frame_equal(here[cols], there[cols])
    with pytest.raises(ConfigError, match="needs a folder other than the sweep's own"):
        export_table(out, out)


def test_the_summary_says_when_no_number_of_seeds_can_reach_an_effect_on_this_dev_set():
    from gapkit.analysis.report import summary
    from gapkit.analysis.verdicts import CURSE_COLUMNS

    row = {c: None for c in CURSE_COLUMNS}
    row.update(task="sst2", student="2L-192H", experts="dense", method="kd", curse_drop=0.4, drop_low=-1.5,
               drop_high=2.3, p_holm=1.0, established="no", verdict="not established", mde=3.06, units="seeds",
               n_units=4, n_examples=872, effect=1.0, seeds_for=float("inf"), note="")
    text = summary({"curse": pd.DataFrame([row], columns=CURSE_COLUMNS)})
    assert "no number of seeds would detect 1.00 points with 80% power on these 872 dev examples" in text
    row.update(seeds_for=9.0)
    assert "9 seeds would detect 1.00 points" in summary({"curse": pd.DataFrame([row], columns=CURSE_COLUMNS)})


def test_the_lift_caption_names_each_comparison():
    from gapkit.analysis.plots import verdict_caption

    caption = verdict_caption(wide_table(curse_wide=2.0, curse_moe=0.0), kind="lift")
    assert "established for 2L-12H-1,4E minimoe (lift), 2L-12H-1,4E minimoe vs 2L-12H-192F (lift)" in caption
    assert caption.endswith("not established for the other 1")
    none = verdict_caption(wide_table(curse_wide=2.0, curse_moe=2.0, seed=2), kind="lift")
    assert none.endswith("not established for any of the 3 comparisons (gapkit report: power, seeds needed)")


def test_the_offline_corpus_interleaves_the_training_sentences_of_every_source(tmp_path):
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("offline_corpus", repo / "configs" / "sweeps" / "offline_corpus.py")
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    samples = repo / "tests" / "samples"
    docs = list(corpus.documents(str(samples / "glue"), str(samples / "conll2003")))
    assert len(docs[0]) == 2 and len(docs[1]) == 2  # an MRPC pair, then an STS-B pair
    assert 1 <= len(docs[2]) <= corpus.DOC and 1 <= len(docs[3]) <= corpus.DOC  # SST-2, then CoNLL sentences
    out = tmp_path / "corpus.txt"
    corpus.main(str(samples / "glue"), str(samples / "conll2003"), str(out))
    text = out.read_text(encoding="utf-8")
    assert text.count("\n\n") == len(docs) and docs[2][0] in text
