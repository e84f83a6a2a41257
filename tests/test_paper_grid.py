"""The paper's grid at the paper's scale: configs/sweeps/paper_glue.yaml holds the authors' settings by default
(and its documented quick profile parses), MNLI's two dev sets are scored apart, the paper's GLUE average and
the teacher check on made-up tables whose numbers are worked by hand, exact GFLOPs for the paper's points,
and the paper's figure on its own axes (linear 0 to 1.4, panels stacked, one metric per y axis)."""

import shlex
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gapkit.analysis.paper import (PAPER_GLUE_TASKS, figure_axes, format_teachers_vs_paper,  # noqa: E402
                                   glue_average, glue_entries, paper_results, plot_paper_figure, teachers_vs_paper)
from gapkit.data.glue import GLUE_TASKS, glue_entry  # noqa: E402
from gapkit.data.metrics import glue_score  # noqa: E402
from gapkit.errors import ConfigError, DataError  # noqa: E402
from gapkit.sweep import SweepSpec  # noqa: E402
from gapkit.sweep.plan import estimate, plan  # noqa: E402
from gapkit.sweep.table import COLUMNS  # noqa: E402
from gapkit.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "sweeps" / "paper_glue.yaml"
ONE_TASK = ["tasks=[{task: rte, max_len: 128}]"]  # the grid on one task: the same structure, planned fast


# -- the config ------------------------------------------------------------------------------------------
def test_paper_grid_holds_the_authors_settings_by_default():
    spec = SweepSpec.from_file(CONFIG)
    assert [v.label for v in spec.variants] == ["kd", "minilm", "minilm_ta", "minimoe"]
    assert dict(spec.variants[2].options)["assistant"] == "12L-384H"
    assert dict(spec.variants[3].options) == {"experts": "1,4E", "load_balance": 0.01}
    assert spec.student_shapes == ["2L-192H", "2L-384H", "3L-384H", "4L-384H", "6L-384H"]
    assert [t.ref for t in spec.teacher_list] == ["bert-base-uncased", "bert-large-uncased"]
    assert [t.task for t in spec.task_data] == ["sst2", "mrpc", "stsb", "qnli", "rte", "mnli", "qqp", "conll"]
    assert all(t.max_len == 128 for t in spec.task_data) and spec.relation_heads == 32
    # task stage and teacher fine-tuning: up to 10 epochs, evaluated once an epoch, patience 5 epochs
    for stage in ("task", "finetune"):
        t = spec.train_spec(stage, 0)
        assert (t.lr, t.batch_size, t.weight_decay, t.warmup, t.epochs, t.grad_clip) == (3e-5, 16, 0.01, 0.1, 10, 5.0)
        assert t.eval_every is None and t.early_stopping == 5 and t.max_steps is None
    a = spec.train_spec("agnostic", 0)
    assert (a.lr, a.batch_size, a.weight_decay, a.warmup, a.epochs, a.grad_clip) == (3e-4, 1024, 0.01, 0.01, 5, 5.0)
    # five epochs over the whole corpus: no cap on the task-agnostic data
    assert spec.agnostic_spec.max_train_examples is None and spec.agnostic_spec.text == ["wikimedia/wikipedia"]
    # after the task-agnostic stage: the labels alone; plain KD: (soft + hard) / 2 at temperature 1
    assert spec.weights["task"] == {"relation": 0.0, "soft": 0.0, "hard": 1.0}
    assert spec.weights["kd"] == {"relation": 0.0, "soft": 0.5, "hard": 0.5, "temperature": 1.0}


def test_the_header_and_the_declared_deviations_say_what_differs(capsys):
    header = "\n".join(line for line in CONFIG.read_text().splitlines() if line.startswith("#"))
    for said in ("MNLI-m and MNLI-mm as two entries", "once an epoch", "quick pass", "not the paper's setting",
                 "deviations"):
        assert said in header, said
    deviations = SweepSpec.from_file(CONFIG).deviations
    for said in ("holdout", "One seed", "random init", "bf16", "CoLA is left out"):
        assert any(said in d for d in deviations), said
    # the dry run prints every one of them, where the plan is read
    assert main(["sweep", str(CONFIG), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"Deviations from the setup this sweep reproduces ({len(deviations)}" in out
    assert all(f"  - {d}" in out for d in deviations)


@pytest.mark.parametrize("bad", ["one sentence", [""], [3]])
def test_deviations_must_be_sentences(bad, tmp_path):
    with pytest.raises(ConfigError, match=r"sweep\.deviations must be a list"):
        SweepSpec.from_file(CONFIG, [f"deviations={bad!r}" if isinstance(bad, str) else f"deviations={bad}"])


def quick_profile() -> list[str]:
    """The --set overrides of the quick pass, as the config's header writes them."""
    lines = [line.lstrip("#").strip() for line in CONFIG.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("gapkit sweep") and "--set" in line)
    command = [lines[start]]
    while command[-1].endswith("\\"):  # a shell line continued
        command.append(lines[start + len(command)])
    words = shlex.split(" ".join(c.rstrip("\\") for c in command))
    return [words[i + 1] for i, w in enumerate(words) if w == "--set"]


def test_the_documented_quick_profile_caps_the_corpus_and_the_epochs():
    overrides = quick_profile()
    assert "agnostic_data.max_train_examples=2000000" in overrides
    spec = SweepSpec.from_file(CONFIG, overrides + ONE_TASK)
    assert spec.output_dir != SweepSpec.from_file(CONFIG).output_dir  # never mixed with the faithful runs
    assert spec.train_spec("task", 0).epochs == 3 and spec.train_spec("finetune", 0).epochs == 3
    rows = {r["id"]: r for r in estimate(plan(spec))}
    agnostic = [rows[n.id]["steps"] for n in plan(spec) if n.kind == "agnostic"]
    assert agnostic and set(agnostic) == {9765}  # 5 epochs of 2M segments at batch 1024


def test_the_grid_plans_plain_kd_from_the_teachers_and_fine_tunes_the_others_on_labels():
    nodes = plan(SweepSpec.from_file(CONFIG, ONE_TASK))
    kinds = [n.kind for n in nodes]
    # per teacher: 1 fine-tune; 5 x 3 agnostic students + 1 assistant; 5 x 4 task students
    assert (kinds.count("finetune"), kinds.count("agnostic"), kinds.count("task")) == (2, 32, 40)
    by_id = {n.id: n for n in nodes}
    for n in (n for n in nodes if n.kind == "task"):
        teacher_deps = [d for d in n.deps if by_id[d].kind == "finetune"]
        if n.meta["method"] == "kd":  # soft labels of the fine-tuned teacher
            assert teacher_deps and n.spec().teacher and n.spec().weights.soft == 0.5
        else:  # the labels alone after the task-agnostic stage
            assert not teacher_deps and n.spec().teacher is None and n.spec().weights.active("task") == ("hard",)
    # the assistant is distilled task-agnostically only: no student learns from a task-stage assistant
    assert not [n for n in nodes if n.meta.get("role") == "assistant" and n.kind == "task"]


# -- MNLI's two dev sets ---------------------------------------------------------------------------------
def test_glue_entries_count_mnli_twice_and_leave_cola_out():
    assert GLUE_TASKS["mnli"].dev_splits == ("dev_matched", "dev_mismatched")
    assert GLUE_TASKS["sst2"].dev_splits == ("dev",) and GLUE_TASKS["cola"].dev_splits == ("dev",)
    assert [glue_entry("mnli", s) for s in ("dev", "dev_matched", "dev_mismatched")] == ["mnli_m", "mnli_m", "mnli_mm"]
    assert [e for _, _, e in glue_entries()] == ["mnli_m", "mnli_mm", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte"]
    with pytest.raises(DataError, match=r"'test' is not a dev split of GLUE task 'mnli' \(its dev splits: "
                                        r"dev_matched, dev_mismatched\)"):
        glue_entry("mnli", "test")


MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")


def _mnli_folder(root: Path) -> Path:
    labels = ["entailment", "neutral", "contradiction"]
    for split, n in (("train", 12), ("dev_matched", 3), ("dev_mismatched", 4)):
        rows = [f"{i}\t1\t2\tg\t(a)\t(b)\t(A)\t(B)\tPremise {split} {i}.\tHypothesis {i}.\t{labels[i % 3]}\t"
                f"{labels[i % 3]}" for i in range(n)]
        path = root / "MNLI" / f"{split}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([MNLI_HEADER, *rows]) + "\n")
    return root


@pytest.mark.parametrize("select_on", ["holdout", "dev"])
def test_an_mnli_run_scores_matched_and_mismatched_apart(tmp_path, select_on):
    from data_helpers import minilm_tokenizer

    from gapkit.data.tasks import build_task
    from gapkit.distill.config import DataSpec

    spec = DataSpec(task="mnli", data_dir=str(_mnli_folder(tmp_path)), max_len=32, select_on=select_on, holdout=2)
    task = build_task(spec, minilm_tokenizer())
    scored = {**task.evals, **task.tests}
    assert {s: len(f) for s, f in scored.items() if s != "holdout"} == {"dev_matched": 3, "dev_mismatched": 4}
    assert ("holdout" in task.evals) == (select_on == "holdout")
    right = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])  # every label of the folder
    assert task.metrics("dev_mismatched", right, torch.tensor([0, 1, 2, 0]))["score"] == 100.0
    assert task.metrics("dev_matched", right[:3], torch.tensor([0, 0, 0]))["score"] == pytest.approx(100 / 3)


# -- the paper's GLUE average and the teacher check on made-up tables ---------------------------------------
# One number per entry of each run (the GLUE rule: MRPC/QQP mean of F1 and accuracy, STS-B of the correlations).
ENTRY_SCORES = {"mnli_m": 84.0, "mnli_mm": 85.0, "qqp": (88.0, 91.0), "qnli": 91.0, "sst2": 93.0,
                "stsb": (89.0, 88.0), "mrpc": (90.0, 86.0), "rte": 68.0}
TWO_METRICS = {"qqp": ("f1", "accuracy"), "mrpc": ("f1", "accuracy"), "stsb": ("pearson", "spearmanr")}


def row(**values) -> dict:
    return dict(dict.fromkeys(COLUMNS), **values)


def run_rows(teacher: str, role: str, shift: float = 0.0, skip=(), **labels) -> list[dict]:
    """A run's rows on every GLUE task (and CoLA, which the average must leave out): best weights on the dev
    sets (MNLI: both), a ``final`` row and a training-split row that the average must not read."""
    stage = "finetune" if role == "teacher" else "task"
    base = dict(sweep="s", role=role, stage=stage, teacher=teacher, model="best", status="completed",
                convention="paper", seed=0, teacher_seed=0, run=f"{teacher}-{role}", **labels)
    out = [row(**base, task="cola", split="dev", metric="score", value=10.0 + shift)]
    for task, split, entry in glue_entries():
        if entry in skip:
            continue
        value = ENTRY_SCORES[entry]
        metrics = dict(zip(TWO_METRICS[task], value)) if task in TWO_METRICS else {"accuracy": value}
        metrics["score"] = float(np.mean(list(metrics.values())))
        for metric, v in metrics.items():
            out.append(row(**base, task=task, split=split, metric=metric, value=v + shift))
        out.append(row(**dict(base, model="final"), task=task, split=split, metric="score", value=0.0))
    return out


def by_hand(shift: float = 0.0) -> float:
    """The average of the 8 entries, worked out: (84 + 85 + 89.5 + 91 + 93 + 88.5 + 88 + 68) / 8 + shift."""
    return (84 + 85 + 89.5 + 91 + 93 + 88.5 + 88 + 68) / 8 + shift


def test_glue_average_counts_mnli_twice_and_not_cola():
    table = pd.DataFrame(run_rows("bert-base", "teacher", shift=1.0, student="bert-base", method="finetune")
                         + run_rows("bert-base", "student", student="2L-192H", method="kd", gflops=0.1132))
    out = glue_average(table)
    assert list(out.columns) == COLUMNS and len(out) == 2
    assert set(out.task) == {"glue"} and set(out.metric) == {"glue"} and set(out.split) == {"dev"}
    teacher, student = out[out.role == "teacher"].iloc[0], out[out.role == "student"].iloc[0]
    assert teacher.value == pytest.approx(by_hand(1.0)) and student.value == pytest.approx(by_hand())
    assert by_hand() == pytest.approx(85.875)  # and not the mean with CoLA or MNLI once (85.7, 75.5)
    assert student.gflops == 0.1132 and student.method == "kd"
    # the same rule as gapkit's glue_score on the entries
    assert student.value == pytest.approx(glue_score({"mnli_m": {"accuracy": 84}, "mnli_mm": {"accuracy": 85},
                                                      "qqp": {"f1": 88, "accuracy": 91}, "qnli": {"accuracy": 91},
                                                      "sst2": {"accuracy": 93},
                                                      "stsb": {"pearson": 89, "spearmanr": 88},
                                                      "mrpc": {"f1": 90, "accuracy": 86}, "rte": {"accuracy": 68}}))


def test_glue_average_of_a_run_that_lacks_an_entry_is_no_number_and_says_why():
    table = pd.DataFrame(run_rows("bert-base", "student", skip=("mnli_mm",), student="2L-192H", method="minilm"))
    r = glue_average(table).iloc[0]
    assert np.isnan(r.value) and r.status == "incomplete"
    assert r.reason == "no dev score on mnli_mm: the paper's GLUE average needs all 8 entries"
    failed = pd.DataFrame(run_rows("bert-base", "student", student="2L-192H", method="minilm")).assign(status="failed")
    assert glue_average(failed).empty


def test_teachers_vs_paper_reports_measured_against_the_papers_teachers():
    table = pd.DataFrame(
        run_rows("bert-base", "teacher", shift=86.2 - by_hand(), student="bert-base", method="finetune")
        + run_rows("bert-large", "teacher", shift=85.0 - by_hand(), student="bert-large", method="finetune")
        + run_rows("4L-128H", "teacher", student="4L-128H", method="finetune")  # not one of the paper's: left out
        + run_rows("bert-base", "student", student="2L-192H", method="kd"))
    check = teachers_vs_paper(table)
    assert list(check.teacher) == ["bert-base", "bert-large"] and list(check.paper) == [86.7, 88.3]
    assert check.measured.round(6).tolist() == [86.2, 85.0]
    assert check.difference.round(6).tolist() == [-0.5, -3.3] and check.within.tolist() == [True, False]
    text = format_teachers_vs_paper(check)
    assert "bert-base (teacher seed 0): measured 86.2 vs paper 86.7, difference -0.5: within 1 GLUE point(s)" in text
    assert "bert-large (teacher seed 0): measured 85.0 vs paper 88.3, difference -3.3: 3.3 GLUE points below" in text
    assert teachers_vs_paper(table, tolerance=5).within.all()
    # a teacher without every entry is not measured, and the check says what it lacks
    lacking = pd.DataFrame(run_rows("bert-large", "teacher", skip=("rte",), student="bert-large", method="finetune"))
    r = teachers_vs_paper(lacking).iloc[0]
    assert np.isnan(r.measured) and not r.within and "no dev score on rte" in r.note
    assert "measured not measured" not in format_teachers_vs_paper(teachers_vs_paper(lacking))
    assert "not measured vs paper 88.3" in format_teachers_vs_paper(teachers_vs_paper(lacking))
    # no paper teacher: nothing to check, said in one sentence
    none = teachers_vs_paper(pd.DataFrame(run_rows("4L-128H", "teacher", student="4L-128H", method="finetune")))
    assert none.empty and format_teachers_vs_paper(none).startswith("No teacher of these results is one of the paper's")
    with pytest.raises(DataError, match="tolerance is a number of GLUE points >= 0"):
        teachers_vs_paper(table, tolerance=-1)


# -- exact GFLOPs ------------------------------------------------------------------------------------------
def test_the_papers_points_carry_exact_gflops_and_the_unknown_shape_its_figure_value():
    paper = paper_results()
    fig = paper[paper.sweep == "paper:fig1"]
    small = fig[fig.student == "2L-192H"].gflops.iloc[0]
    assert small == pytest.approx(2 * 128 * 12 * 192 ** 2 / 1e9)  # 0.1132, printed 0.11 in the figure
    assert fig[fig.student.isna()].gflops.unique().tolist() == [0.04]  # no shape: the figure's own value
    base = paper[(paper.role == "teacher") & (paper.teacher == "bert-base")].gflops.iloc[0]
    assert round(base / small, 1) == 96.0  # and not 10.87 / 0.11 = 98.8


def test_a_figure_value_that_its_shape_does_not_count_is_refused(tmp_path):
    for name in ("fig1_curse.csv", "table1_excerpt.csv"):
        (tmp_path / name).write_text((REPO / "results" / "paper" / name).read_text())
    path = tmp_path / "fig1_curse.csv"
    path.write_text(path.read_text().replace("0.45,2L-384H,bert-base-uncased", "0.68,2L-384H,bert-base-uncased"))
    with pytest.raises(DataError, match=r"gives student 2L-384H at 0.68 GFLOPs, but that shape counts 0.4530"):
        paper_results(tmp_path)


# -- the paper's figure ------------------------------------------------------------------------------------
def glue_sweep(methods=("minilm", "minilm_ta", "kd")) -> pd.DataFrame:
    """Students of the paper's five shapes on every GLUE task from both teachers, 2 seeds."""
    sizes = {"2L-192H": 0.1132, "2L-384H": 0.453, "3L-384H": 0.6795, "4L-384H": 0.906, "6L-384H": 1.359}
    rows = []
    for teacher in ("bert-base", "bert-large"):
        for method in methods:
            for student, gflops in sizes.items():
                for seed in (0, 1):
                    rows += [dict(r, seed=seed, run=f"{teacher}-{student}-{method}-{seed}") for r in run_rows(
                        teacher, "student", shift=gflops + seed - (teacher == "bert-large"), student=student,
                        method=method, gflops=gflops, experts="dense")]
    return pd.DataFrame(rows)


def test_the_papers_figure_alone_has_the_papers_axes_and_layout():
    fig = plot_paper_figure()
    axes = figure_axes(fig)
    assert list(axes.panel) == ["without assistant (MiniLM)", "with assistant (MiniLM w/ TA)"]
    assert list(axes.row) == [0, 1] and set(axes.column) == {0}  # stacked, one column
    assert set(axes.xscale) == {"linear"} and set(axes.xmin) == {0.0} and set(axes.xmax) == {1.4}
    assert set(axes.xlabel) == {"student GFLOPs (paper convention: linear layers, sequence length 128)"}
    assert set(axes.ylabel) == {"GLUE average (dev), paper"} and set(axes.right_ylabel) == {""}
    top = fig.axes[0]
    xs = sorted(round(x, 4) for line in top.get_lines() for x in line.get_xdata())
    assert xs[:2] == [0.04, 0.04] and 0.1132 in xs  # the unknown shape at its figure value, the others exact
    plt.close(fig)


def test_a_glue_sweep_shares_the_papers_axis_and_another_metric_gets_its_own():
    glue = plot_paper_figure(measured=glue_sweep())
    axes = figure_axes(glue)
    assert list(axes.panel) == ["without assistant (MiniLM)", "with assistant (MiniLM w/ TA)", "plain logit KD"]
    assert list(axes.row) == [0, 1, 2] and set(axes.xmax) == {1.4}
    assert set(axes.ylabel) == {"GLUE average (dev)"} and set(axes.right_ylabel) == {""}
    # the measured points are the GLUE averages, seed means: bert-base 2L-192H = by_hand + 0.1132 + 0.5
    line = glue.axes[0].get_lines()[0]
    assert line.get_ydata()[0] == pytest.approx(by_hand() + 0.1132 + 0.5)
    plt.close(glue)
    sst2 = plot_paper_figure(measured=glue_sweep(), task="sst2")
    axes = figure_axes(sst2)
    assert set(axes.ylabel) == {"score (sst2, dev), measured"}
    assert list(axes.right_ylabel) == ["GLUE average (dev), paper"] * 2 + [""]  # never under sst2's label
    plt.close(sst2)


def test_the_papers_figure_refuses_what_it_cannot_draw():
    with pytest.raises(ConfigError, match=r"counted in the macs FLOP convention and the paper's axis in paper"):
        plot_paper_figure(measured=glue_sweep().assign(convention="macs"))
    partial = glue_sweep()
    partial = partial[partial.task != "qqp"]
    with pytest.raises(ConfigError, match=r"the table lacks qqp: pass task= one of its tasks instead"):
        plot_paper_figure(measured=partial, task="glue")
    assert set(PAPER_GLUE_TASKS) - set(partial.task) == {"qqp"}
