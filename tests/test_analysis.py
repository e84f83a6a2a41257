"""gapkit.analysis: every estimate against values worked out by hand on small hand-built tables, the cases
the data cannot support, bad tables, `gapkit report` on a real tiny sweep, and the paper's numbers."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gapkit.analysis import (
    NOT_ESTIMABLE,
    curse_test,
    gap_curve,
    gap_curves,
    load_table,
    not_estimable,
    paper_results,
    lift_test,
    report,
    student_scores,
    teacher_scale_fit,
    teacher_scores,
)
from gapkit.cli import main
from gapkit.errors import DataError
from gapkit.sweep.table import COLUMNS

T_975_2 = 4.302652729749464  # Student's t, 97.5% quantile, 2 degrees of freedom (any t table)

# Teachers: name -> (params, GFLOPs).
TEACHERS = {"T1": (100, 1.5), "T2": (200, 3.0), "T3": (400, 6.0)}
# Students: shape -> (params_total dense, GFLOPs); a 1,4E MiniMoE student has 4x the parameters.
STUDENTS = {"2L-10H": (10, 0.1), "4L-10H": (20, 0.2)}


def row(teacher, student, method, seed, value, role="student", experts=None, task="synthetic", metric="score",
        **over):
    params, gflops = TEACHERS[teacher]
    experts = experts or ("1,4E" if method == "minimoe" else "dense")
    if role == "teacher":
        s_params, s_params_active, s_gflops, stage = params, params, gflops, "finetune"
    else:
        s_params, s_gflops = STUDENTS[student]
        s_params_active = s_params
        s_params *= 4 if experts != "dense" else 1
        stage = "task"
    base = dict(sweep="hand", run=f"{role}-{teacher}-{student}-{method}-{seed}", role=role, stage=stage,
                teacher=teacher, teacher_kind="scratch", teacher_family="0:scratch", teacher_params=params,
                teacher_gflops=gflops, student=student if role == "student" else teacher,
                experts=None if role == "teacher" else experts, method=method if role == "student" else "finetune",
                params_total=s_params, params_active=s_params_active, gflops=s_gflops, convention="paper", task=task,
                split="dev", metric=metric, value=value, model="best", step=10, seed=seed, status="completed",
                reason=None, wall_time_s=1.0, git_revision="abc", run_dir="/nowhere")
    base.update(over)
    return base


def cells(spec: dict, **over) -> list[dict]:
    """Rows from {(teacher, student, method): [value per seed]}."""
    return [row(t, s, m, seed, v, **over) for (t, s, m), values in spec.items() for seed, v in enumerate(values)]


# Two students x three teachers x three seeds, numbers chosen so that every estimate is known by hand.
HAND = {
    # 2L-10H, dense MiniLM: best teacher T2 (74); T3 (71) is bigger and worse: the curse, onset at T2.
    ("T1", "2L-10H", "minilm"): [68, 70, 72],
    ("T2", "2L-10H", "minilm"): [74, 74, 74],
    ("T3", "2L-10H", "minilm"): [71, 71, 71],
    # 2L-10H, MiniMoE: the largest teacher is best (74): no curse. At T3 it gains 74 - 71 = 3 on MiniLM.
    ("T1", "2L-10H", "minimoe"): [71, 71, 71],
    ("T2", "2L-10H", "minimoe"): [73, 73, 73],
    ("T3", "2L-10H", "minimoe"): [73, 74, 75],
    # 4L-10H: bigger is better for both methods: no curse, nothing to recover.
    ("T1", "4L-10H", "minilm"): [75, 75, 75],
    ("T2", "4L-10H", "minilm"): [77, 77, 77],
    ("T3", "4L-10H", "minilm"): [79, 79, 79],
    ("T1", "4L-10H", "minimoe"): [76, 76, 76],
    ("T2", "4L-10H", "minimoe"): [78, 78, 78],
    ("T3", "4L-10H", "minimoe"): [80, 80, 80],
}


def hand_table() -> pd.DataFrame:
    teachers = [row("T1", None, None, 0, 80.0, role="teacher"), row("T2", None, None, 0, 85.0, role="teacher"),
                row("T2", None, None, 1, 87.0, role="teacher"), row("T3", None, None, 0, 88.0, role="teacher")]
    # Rows a score never comes from: final weights, another split, a failed run, the agnostic stage.
    noise = [row("T2", "2L-10H", "minilm", 0, 10.0, model="final"),
             row("T2", "2L-10H", "minilm", 0, 11.0, split="test"),
             row("T2", "2L-10H", "minilm", 7, None, status="failed", reason="nan loss"),
             row("T2", "2L-10H", "minilm", 0, 0.5, stage="agnostic", metric="relation")]
    return pd.DataFrame(cells(HAND) + teachers + noise, columns=COLUMNS)


def one(frame, **where):
    hit = frame
    for k, v in where.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, (where, hit)
    return hit.iloc[0]


# -- scores -----------------------------------------------------------------------------------------
def test_student_scores_mean_std_and_t_interval_by_hand():
    scores = student_scores(hand_table())
    assert len(scores) == 12 and set(scores.metric) == {"score"} and set(scores.split) == {"dev"}
    r = one(scores, teacher="T1", student="2L-10H", method="minilm")
    half = T_975_2 * 2.0 / math.sqrt(3)  # std of 68, 70, 72 is 2
    assert (r.n_seeds, r.seeds, r["mean"], r["std"]) == (3, "0,1,2", 70.0, 2.0)
    assert r.ci_low == pytest.approx(70 - half, abs=1e-12) and r.ci_high == pytest.approx(70 + half, abs=1e-12)
    assert r.ratio_params == 10.0 and r.ratio_gflops == pytest.approx(15.0)
    moe = one(scores, teacher="T3", student="2L-10H", method="minimoe")
    assert (moe.experts, moe.params_total, moe.params_active) == ("1,4E", 40, 10) and moe.ratio_params == 10.0
    flat = one(scores, teacher="T2", student="2L-10H", method="minilm")  # the noise rows are not in it
    assert (flat["mean"], flat["std"], flat.ci_low, flat.ci_high) == (74.0, 0.0, 74.0, 74.0)


def test_teacher_scores_and_one_seed_has_no_interval():
    scores = teacher_scores(hand_table())
    assert list(scores.teacher) == ["T1", "T2", "T3"]
    t1, t2 = one(scores, teacher="T1"), one(scores, teacher="T2")
    assert t1["mean"] == 80.0 and t1.n_seeds == 1 and "1 seed" in t1.note
    assert all(pd.isna(t1[c]) for c in ("std", "ci_low", "ci_high"))
    half = 12.706204736174703 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * std / sqrt(2), std of 85, 87 = sqrt 2
    assert t2["mean"] == 86.0 and t2.ci_low == pytest.approx(86 - half) and t2.ci_high == pytest.approx(86 + half)
    assert t2.note == ""


def test_the_csv_of_a_one_seed_cell_has_empty_cells_not_nan(tmp_path):
    path = tmp_path / "t.csv"
    teacher_scores(hand_table()).to_csv(path, index=False)
    assert "nan" not in path.read_text().lower()


# -- gap curves -------------------------------------------------------------------------------------
def test_gap_curves_on_every_axis():
    table = hand_table()
    teacher_axis = gap_curve(table, "teacher_params")
    curve = teacher_axis[teacher_axis.series == "2L-10H minilm"]
    assert list(curve.x) == [100, 200, 400] and list(curve["mean"]) == [70, 74, 71]
    assert set(teacher_axis.series) == {"2L-10H minilm", "2L-10H-1,4E minimoe", "4L-10H minilm", "4L-10H-1,4E minimoe"}
    student_axis = gap_curve(table, "student_params")
    curve = student_axis[student_axis.series == "T3: minimoe 1,4E"]
    assert list(curve.x) == [40, 80] and list(curve["mean"]) == [74, 80]
    ratio = gap_curve(table, "ratio_gflops")
    assert list(ratio[ratio.series == "4L-10H minilm"].x) == pytest.approx([7.5, 15, 30])
    stacked = gap_curves(table)
    assert list(dict.fromkeys(stacked.axis)) == ["teacher_params", "teacher_gflops", "student_params",
                                                  "student_params_active", "student_gflops", "ratio_params",
                                                  "ratio_gflops"]
    assert len(stacked) == 7 * 12
    with pytest.raises(DataError, match="Unknown gap-curve axis 'size'"):
        gap_curve(table, "size")


# -- the curse (the tests themselves: test_verdicts.py) ------------------------------------------------
def test_the_curse_is_the_smallest_teacher_against_the_largest():
    curse = curse_test(hand_table())
    assert len(curse) == 4 and set(curse.family) == {"all"}
    r = one(curse, student="2L-10H", method="minilm")
    # T2 (74) beats both, but the declared contrast is T1 (68, 70, 72) against T3 (71, 71, 71): -1 on average,
    # per seed -3, -1, 1. A middle teacher's peak is not a curse by this definition; best_teachers shows it.
    assert (r.smallest_teacher, r.largest_teacher, r.curse_drop, r.top_teacher) == ("T1", "T3", -1.0, "T2")
    assert r.p == pytest.approx(0.4777670321329)  # paired t = -1 / (2 / sqrt 3) = -0.866 on 2 df
    assert (r.verdict, r.established) == ("not established", "no")
    assert r.n_units == 3 and r.units == "seeds"
    assert r.best_teachers == ""  # T2 - T3 is 3 for every seed: no variance, so no test says which can be best
    grows = one(curse, student="4L-10H", method="minilm")  # bigger is better, but no spread at all
    assert grows.curse_drop == -4.0 and pd.isna(grows.p) and "test not estimable" in grows.note


def test_the_relation_loss_is_better_when_lower():
    table = pd.DataFrame(cells({("T1", "2L-10H", "minilm"): [0.30, 0.32, 0.31],
                                ("T3", "2L-10H", "minilm"): [0.20, 0.21, 0.23]}, metric="relation"), columns=COLUMNS)
    r = one(curse_test(table, metric="relation"))
    # a lower loss with the larger teacher is a bigger teacher that is better: a negative drop
    assert r.curse_drop == pytest.approx(-(0.31 - 0.2133333333333333))


@pytest.mark.parametrize("spec, note", [
    ({("T1", "2L-10H", "minilm"): [70, 71]}, f"{NOT_ESTIMABLE}: 1 teacher (needs 2 or more of different sizes)"),
    ({("T1", "2L-10H", "minilm"): [70], ("T2", "2L-10H", "minilm"): [72]},
     f"{NOT_ESTIMABLE}: 1 matched seed (needs 2 or more)"),
])
def test_curse_not_estimable(spec, note):
    assert note in one(curse_test(pd.DataFrame(cells(spec), columns=COLUMNS))).note


def test_a_family_restricts_the_teachers():
    curse = curse_test(hand_table(), family="0:scratch")
    assert set(curse.family) == {"0:scratch"} and len(curse) == 4
    with pytest.raises(DataError, match=r"No teacher of family 'bert' in the results table \(its families: 0:s"):
        curse_test(hand_table(), family="bert")


def test_same_size_teachers_are_not_ordered():
    table = pd.DataFrame(cells({("T1", "2L-10H", "minilm"): [70], ("T2", "2L-10H", "minilm"): [72]}), columns=COLUMNS)
    table.loc[table.teacher == "T2", "teacher_params"] = 100
    assert one(curse_test(table)).note == f"{NOT_ESTIMABLE}: teachers T1 and T2 have the same size (100 parameters)"


@pytest.mark.parametrize("spec, note", [
    ({("T1", "2L-10H", "minimoe"): [70], ("T2", "2L-10H", "minimoe"): [72]}, "no minilm (baseline) runs"),
    ({("T1", "2L-10H", "minilm"): [70], ("T1", "2L-10H", "minimoe"): [72]}, "share 1 teacher(s) (needs 2)"),
])
def test_lift_not_estimable(spec, note):
    r = one(lift_test(pd.DataFrame(cells(spec), columns=COLUMNS)))
    assert note in r.note and pd.isna(r.recovered) and r.verdict == "not established"


# -- the optimal teacher size -----------------------------------------------------------------------
def scale_table(best: dict) -> pd.DataFrame:
    """Students of params 10, 20, 40; teachers of params 20 to 320; each student's top teacher given."""
    teachers = {"A": 20, "B": 40, "C": 80, "D": 160, "E": 320}
    rows = []
    for student, params in (("1L-8H", 10), ("2L-8H", 20), ("4L-8H", 40)):
        for name, t_params in teachers.items():
            value = 80.0 if name == best[student] else 70.0 - t_params / 100
            rows.append(dict(row("T1", "2L-10H", "minilm", 0, value), teacher=name, student=student,
                             teacher_params=t_params, teacher_gflops=t_params / 100, params_total=params,
                             params_active=params, gflops=params / 100))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_teacher_scale_fit_on_exact_points():
    # best teacher params = 4 x student params: linear slope 4, intercept 0; log-log slope 1, intercept log10 4.
    fit = teacher_scale_fit(scale_table({"1L-8H": "B", "2L-8H": "C", "4L-8H": "D"}))
    lin, log = one(fit, space="linear"), one(fit, space="log-log")
    assert lin.n_points == 3 and lin.students == "1L-8H 2L-8H 4L-8H"
    assert lin.slope == pytest.approx(4, rel=1e-12) and lin.intercept == pytest.approx(0, abs=1e-9)
    assert lin.r2 == pytest.approx(1, rel=1e-12)
    assert log.slope == pytest.approx(1, rel=1e-12) and log.intercept == pytest.approx(math.log10(4), rel=1e-12)
    assert log.r2 == pytest.approx(1, rel=1e-12)
    assert lin.n_at_edge == 0 and lin.note == ""
    by_gflops = one(teacher_scale_fit(scale_table({"1L-8H": "B", "2L-8H": "C", "4L-8H": "D"}), size="gflops"),
                    space="linear")
    # A top teacher at the smallest (or largest) size only bounds the optimum: that student is left out.
    edge = one(teacher_scale_fit(scale_table({"1L-8H": "A", "2L-8H": "C", "4L-8H": "D"})), space="linear")
    assert edge.n_at_edge == 1 and edge.n_points == 2 and pd.isna(edge.slope)
    assert "2 student(s) whose top teacher is inside the measured sizes (needs 3; 1 at the edge" in edge.note
    assert by_gflops.slope == pytest.approx(4, rel=1e-12)


def test_teacher_scale_fit_not_estimable():
    table = scale_table({"1L-8H": "B", "2L-8H": "B", "4L-8H": "B"})
    same = one(teacher_scale_fit(table), space="linear")
    assert same.slope == 0 and pd.isna(same.r2) and f"R^2 {NOT_ESTIMABLE}" in same.note
    two = one(teacher_scale_fit(table[table.student != "4L-8H"]), space="linear")
    assert pd.isna(two.slope) and two.note.startswith(f"{NOT_ESTIMABLE}: 2 student(s) whose top teacher is inside")
    with pytest.raises(DataError, match="size must be 'params' or 'gflops'"):
        teacher_scale_fit(table, size="layers")


# -- bad tables -------------------------------------------------------------------------------------
@pytest.mark.parametrize("drop, call, message", [
    (["value"], student_scores, r"lacks column value, which student_scores needs"),
    (["seed", "model"], teacher_scores, r"lacks columns model, seed, which teacher_scores needs"),
    (["teacher_params"], curse_test, r"lacks column teacher_params, which the curse tests need"),
    (["gflops"], lambda t: gap_curve(t, "ratio_gflops"), r"lacks column gflops, which the ratio_gflops gap curve"),
    (["experts"], student_scores, r"lacks column experts, which student_scores needs"),
])
def test_missing_columns_get_one_sentence(drop, call, message):
    with pytest.raises(DataError, match=message):
        call(hand_table().drop(columns=drop))


@pytest.mark.parametrize("change, message", [
    (lambda t: pd.concat([t, t]), r"several runs with seed 0 for task=synthetic, teacher=T1, student=2L-10H"),
    (lambda t: t.assign(convention=np.where(t.teacher == "T1", "macs", "paper")),
     r"mixes FLOP conventions \(macs, paper\)"),
    (lambda t: t.assign(value=t.value.astype(object).where(t.teacher != "T3", "high")), r"non-numeric value"),
])
def test_bad_tables_get_one_sentence(change, message):
    with pytest.raises(DataError, match=message):
        student_scores(change(hand_table()))


def test_a_metric_or_split_that_is_not_there():
    with pytest.raises(DataError, match=r"Metric 'f1' has no scores for task 'synthetic' on split 'dev'"):
        student_scores(hand_table(), metric="f1")
    with pytest.raises(DataError, match=r"Split 'valid' has no scores for task 'synthetic'"):
        student_scores(hand_table(), split="valid")


# -- the paper's numbers ----------------------------------------------------------------------------
def test_paper_results_schema_and_numbers():
    paper = paper_results()
    assert list(paper.columns) == [*COLUMNS, "source", "student_scale"]
    assert set(paper.source) == {"paper"} and set(paper.convention) == {"paper"}
    assert set(paper.task) == {"glue"} and set(paper.metric) == {"glue"} and set(paper.model) == {"best"}
    assert len(paper) == 24 + 4 and set(paper.teacher) == {"bert-base", "bert-large"}
    fig = paper[paper.sweep == "paper:fig1"]
    assert one(fig, teacher="bert-large", method="minilm", student="6L-384H").value == 85.1
    assert [round(g, 2) for g in sorted(set(fig.gflops))] == [0.04, 0.11, 0.45, 0.68, 0.91, 1.36]  # exact, printed
    assert fig[fig.gflops == 0.04].student.isna().all()
    teachers = paper[paper.role == "teacher"]
    assert list(teachers.value) == [86.7, 88.3]
    assert list(teachers.teacher_gflops.round(2)) == [10.87, 38.65]
    kd = paper[paper.method == "kd"]
    assert list(kd.value) == [81.3, 80.8] and list(kd.student_scale) == [0.10, 0.05]
    # the analysis reads them like any table, and one published value per point supports no verdict
    curse = curse_test(paper)
    r = one(curse, student="2L-192H", method="minilm")
    assert (r.top_teacher, r.verdict) == ("bert-base", "not established") and r.curse_drop == pytest.approx(0.4)
    assert "1 matched seed" in r.note


def test_the_shipped_paper_numbers_are_the_reference_numbers():
    from data_helpers import SHARED_DATA, on_ci

    reference = SHARED_DATA.parent / "reference"
    if not (reference / "paper_fig1_curse.csv").is_file():
        if on_ci():
            pytest.fail(f"CI=true and the reference numbers in {reference} are missing", pytrace=False)
        pytest.skip(f"needs the development reference files in {reference}")
    ours = Path(__file__).resolve().parents[1] / "results" / "paper"
    for mine, theirs in (("fig1_curse.csv", "paper_fig1_curse.csv"),
                         ("table1_excerpt.csv", "paper_table1_excerpt.csv")):
        a = pd.read_csv(ours / mine, comment="#").fillna({"student": "unknown"})
        b = pd.read_csv(reference / theirs, comment="#")
        pd.testing.assert_frame_equal(a, b)


def test_paper_results_without_its_files(tmp_path):
    with pytest.raises(DataError, match=r"paper's reference numbers are not at .*fig1_curse.csv"):
        paper_results(tmp_path)


def test_not_estimable_lists_every_estimate_the_notes_refuse_with_its_reason():
    tables = report(paper_results())
    missing = not_estimable(tables)
    assert list(missing.columns) == ["table", "task", "student", "experts", "method", "space", "estimate", "reason"]
    notes = pd.concat([f.note for f in tables.values() if "note" in f.columns]).dropna()
    assert len(missing) == notes.str.count(NOT_ESTIMABLE).sum() > 0  # every refusal, once
    rows = {tuple(r) for r in missing[["table", "student", "method", "estimate", "reason"]].itertuples(index=False)}
    # a note without a prefix refuses the table's own estimate: one published value per point, no test
    assert ("curse", "2L-192H", "minilm", "curse", "1 matched seed (needs 2 or more)") in rows
    assert ("lift", "table1-student", "kd", "lift", "no minilm (baseline) runs for this student shape") in rows
    assert not_estimable({"curse": tables["curse"].assign(note="")}).empty
    assert not_estimable({"gap_curves": tables["gap_curves"]}).empty  # a table without notes


def test_report_on_the_paper_numbers_has_every_table():
    tables = report(paper_results())
    assert list(tables) == ["teacher_check", "teacher_scores", "student_scores", "curse", "lift", "above_teacher",
                            "teacher_scale_fit", "gap_curves"]
    assert (tables["curse"].established == "no").all()
    fit = one(tables["teacher_scale_fit"], method="minilm", space="linear")
    assert fit.n_points == 0 and fit.n_at_edge == 5  # the 0.04 student has no size; 2 teachers: all at an edge


# -- gapkit report on a real sweep ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from test_sweep import tiny

    from gapkit.sweep import SweepSpec, run_sweep

    out = tmp_path_factory.mktemp("analysis") / "sweep"
    spec = SweepSpec(**tiny(out, methods=["minilm", dict(name="minimoe", experts="1,2E")], stages=["task"]))
    assert run_sweep(spec, progress=False, log=lambda *_: None).ok
    return out


def test_gapkit_report_on_a_real_sweep(tiny_sweep, capsys):
    assert main(["report", str(tiny_sweep), "--seeds-for", "1.0"]) == 0
    out = capsys.readouterr().out
    for title in ("Teachers' own scores", "Student scores", "Curse of capacity gap per student",
                  "Lift of the curse against minilm", "Top teacher size against student size", "Gap curves:",
                  "What the tests establish"):
        assert title in out
    assert not re.search(r"\bnan\b", out, re.IGNORECASE)
    assert "1L-16H-4A" in out and "1 seed: no spread or interval" in out
    written = {p.name: pd.read_csv(p) for p in (tiny_sweep / "report").glob("*.csv")}
    assert set(written) == {f"{n}.csv" for n in ("teacher_check", "teacher_scores", "student_scores", "curse",
                                                  "lift", "above_teacher", "teacher_scale_fit", "gap_curves")}
    scores = written["student_scores.csv"]
    assert len(scores) == 4 and set(scores.method) == {"minilm", "minimoe"} and set(scores.metric) == {"score"}
    table = load_table(tiny_sweep)
    assert len(written["curse.csv"]) == 2 and len(written["lift.csv"]) == 1
    assert (written["curse.csv"].n_teachers == 2).all()
    # the same report from the CSV file, into another folder
    assert main(["report", str(tiny_sweep / "results.csv"), "--out", str(tiny_sweep / "again")]) == 0
    again = pd.read_csv(tiny_sweep / "again" / "student_scores.csv")
    pd.testing.assert_frame_equal(again, scores)
    assert len(table) and capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda d: d, "holds no results table"),
    (lambda d: d / "missing.parquet", "No results file or sweep folder"),
    (lambda d: (d / "x.txt").write_text("a") and d / "x.txt", r"neither a \.parquet nor a \.csv"),
    (lambda d: (d / "bad.parquet").write_bytes(b"not parquet") and d / "bad.parquet", "Cannot read"),
])
def test_gapkit_report_refuses_what_is_not_a_table(tmp_path, capsys, make, message):
    assert main(["report", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gapkit: error: ") and re.search(message, err) and err.count("\n") == 1


def test_the_default_baseline_is_minilm_else_plain_kd():
    from gapkit.analysis.report import default_baseline

    assert default_baseline(pd.DataFrame({"method": ["minilm", "minimoe", "kd"]})) == "minilm"
    assert default_baseline(pd.DataFrame({"method": ["kd", "minimoe", None]})) == "kd"
    assert default_baseline(pd.DataFrame({"method": ["minimoe"]})) == "minilm"  # then recovered says what is missing
