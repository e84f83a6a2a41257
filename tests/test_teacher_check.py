"""Teachers checked before students learn from them (gapkit.analysis.teacher_check): the test of a model's
predictions against chance and the majority class (against scipy, and its false-positive rate by simulation),
a sweep whose teacher is forced to chance (its result, table, status, report and figure mark it, and
``teachers_must_beat`` stops its students with the reason), and the warning where a student beats its teacher."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, pearsonr, ttest_1samp

from gapkit.analysis.above_teacher import student_above_teacher
from gapkit.analysis.teacher_check import (ABOVE_CHANCE, ABOVE_CHANCE_ONLY, ABOVE_MAJORITY, NOT_ABOVE, at_level,
                                           check_predictions, flagged, stops)
from gapkit.cli import main
from gapkit.errors import ConfigError
from gapkit.sweep import SweepSpec, build_table, run_sweep
from gapkit.sweep.table import COLUMNS

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_sweep import tiny  # noqa: E402


# ----------------------------------------------------------------------------------------------------
# The test, case by case
# ----------------------------------------------------------------------------------------------------
def _labels(counts):
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


GOLD = _labels([30, 20, 10])  # 60 dev examples, majority 50%, chance 33.3%


def _right(k, gold=GOLD):
    """Predictions with exactly the first k right (the rest shifted to another class)."""
    preds = (gold + 1) % 3
    preds[:k] = gold[:k]
    return preds


@pytest.mark.parametrize("k, verdict", [
    (60, ABOVE_MAJORITY),     # every one right
    (40, ABOVE_MAJORITY),     # 67% against a 50% majority, n 60: p 0.006
    (28, ABOVE_CHANCE_ONLY),  # 47%: above 1/3, not above the 50% of always "class 0"
    (20, NOT_ABOVE),          # 33%: chance
    (5, NOT_ABOVE),
])
def test_classification_is_an_exact_binomial_test_against_chance_and_majority(k, verdict):
    check = check_predictions(_right(k), GOLD, num_labels=3, split="dev")
    assert check["verdict"] == verdict
    assert check["p_chance"] == pytest.approx(binomtest(k, 60, 1 / 3, alternative="greater").pvalue)
    assert check["p_majority"] == pytest.approx(binomtest(k, 60, 0.5, alternative="greater").pvalue)
    assert (check["n"], check["score"], check["chance"], check["majority"]) == (60, pytest.approx(100 * k / 60),
                                                                                pytest.approx(100 / 3), 50.0)


def test_always_the_majority_class_is_above_chance_but_not_above_majority():
    check = check_predictions(np.zeros(60, dtype=np.int32), GOLD, num_labels=3)
    assert check["verdict"] == ABOVE_CHANCE_ONLY and flagged(check["verdict"])
    assert stops(check, "majority") and not stops(check, "chance") and not stops(check, "none")


def test_without_num_labels_the_classes_come_from_the_ids():
    check = check_predictions(np.zeros(4, dtype=np.int32), np.array([0, 1, 0, 1]))
    assert check["chance"] == 50.0


@pytest.mark.parametrize("noise, verdict", [(0.3, ABOVE_CHANCE), (None, NOT_ABOVE), ("constant", NOT_ABOVE)])
def test_regression_tests_a_positive_correlation(noise, verdict):
    rng = np.random.default_rng(1)
    gold = rng.normal(size=80).astype(np.float32)
    preds = (np.zeros(80) if noise == "constant" else rng.normal(size=80) if noise is None
             else gold + noise * rng.normal(size=80)).astype(np.float32)
    check = check_predictions(preds, gold)
    assert check["kind"] == "regression" and check["verdict"] == verdict
    if noise != "constant":
        assert check["p_chance"] == pytest.approx(pearsonr(preds, gold, alternative="greater").pvalue)
    else:
        assert check["p_chance"] == 1.0


def _tags(rng, n=120, length=14, o_rate=0.8, classes=9):
    gold = np.where(rng.random((n, length)) < o_rate, 0, rng.integers(1, classes, (n, length)))
    lengths = rng.integers(4, length + 1, n)
    gold[np.arange(length)[None, :] >= lengths[:, None]] = -100
    return gold


def test_token_tasks_count_tags_per_sentence_against_the_all_o_tagger():
    rng = np.random.default_rng(2)
    gold = _tags(rng)
    all_o = np.zeros_like(gold)
    check = check_predictions(all_o, gold, num_labels=9)
    assert check["kind"] == "token" and check["verdict"] == ABOVE_CHANCE_ONLY and check["p_majority"] == 1.0
    labeled = gold != -100
    correct = ((all_o == gold) & labeled).sum(1)
    assert check["p_chance"] == pytest.approx(ttest_1samp(correct - labeled.sum(1) / 9, 0, alternative="greater").pvalue)
    perfect = np.where(labeled, gold, 0)
    assert check_predictions(perfect, gold, num_labels=9)["verdict"] == ABOVE_MAJORITY
    noise = rng.integers(0, 9, gold.shape)
    assert check_predictions(noise, gold, num_labels=9)["verdict"] == NOT_ABOVE


def test_the_verdict_follows_the_level_and_untestable_input_says_why():
    check = check_predictions(_right(40), GOLD, num_labels=3)  # p against majority 0.006
    assert at_level(check, 0.001)["verdict"] == ABOVE_CHANCE_ONLY
    assert check_predictions(np.zeros(3), np.zeros(4))["verdict"].startswith("not tested (")
    assert check_predictions(np.ones(2, dtype=np.float32), np.ones(2, dtype=np.float32))["verdict"].startswith(
        "not tested (2 labeled")


# ----------------------------------------------------------------------------------------------------
# False positives: a teacher at the baseline called "above" at most alpha of the time
# ----------------------------------------------------------------------------------------------------
def _rate(hits, reps):
    return hits / reps, 2 * np.sqrt(0.05 * 0.95 / reps)  # rate and two binomial standard errors at alpha


def test_a_chance_level_classifier_is_called_above_at_most_alpha_of_the_time():
    rng = np.random.default_rng(3)
    reps, above_chance, above_majority = 2000, 0, 0
    for _ in range(reps):
        gold = rng.choice(3, size=60, p=[0.5, 0.3, 0.2])
        guess = rng.integers(0, 3, 60)  # uniform guesses: accuracy 1/3 in expectation (chance exactly)
        majority = rng.choice(3, size=60, p=[0.9, 0.05, 0.05])  # leaning on the majority class: below its rate
        above_chance += check_predictions(guess, gold, num_labels=3)["above_chance"]
        above_majority += check_predictions(majority, gold, num_labels=3)["above_majority"]
    for hits in (above_chance, above_majority):
        rate, se = _rate(hits, reps)
        assert rate <= 0.05 + se, rate


def test_an_uncorrelated_regression_and_an_all_o_level_tagger_are_called_above_at_most_alpha():
    rng = np.random.default_rng(4)
    reps, reg, tok = 1000, 0, 0
    for _ in range(reps):
        gold = rng.normal(size=40).astype(np.float32)
        reg += check_predictions(rng.normal(size=40).astype(np.float32), gold)["above_chance"]
        tags = _tags(rng, n=60)
        # right as often as the all-O tagger, token by token, independently of it
        right = rng.random(tags.shape) < (tags[tags != -100] == 0).mean()
        preds = np.where(right, tags, (tags + 1) % 9)
        tok += check_predictions(preds, tags, num_labels=9)["above_majority"]
    for hits in (reg, tok):
        rate, se = _rate(hits, reps)
        assert rate <= 0.05 + se, rate


# ----------------------------------------------------------------------------------------------------
# Students above their own teacher
# ----------------------------------------------------------------------------------------------------
def _table(student_values, teacher_value=40.0, teacher="T1"):
    rows = [dict(dict.fromkeys(COLUMNS), role="teacher", stage="finetune", task="synthetic", teacher=teacher,
                 student=teacher, method="finetune", seed=0, teacher_seed=0, split="dev", metric="score",
                 model="best", value=teacher_value, status="completed", teacher_params=1000)]
    for seed, v in enumerate(student_values):
        rows.append(dict(dict.fromkeys(COLUMNS), role="student", stage="task", task="synthetic", teacher=teacher,
                         student="1L-16H", experts="dense", method="kd", seed=seed, teacher_seed=0, split="dev",
                         metric="score", model="best", value=v, status="completed", teacher_params=1000,
                         params_total=100))
    return pd.DataFrame(rows, columns=COLUMNS)


def test_a_student_clearly_above_its_teacher_is_warned_about():
    frame = student_above_teacher(_table([90.0, 91.0, 92.0, 90.5]), examples=False)
    r = frame.iloc[0]
    assert r.verdict == "student above teacher" and r.established == "yes"
    assert r.above == pytest.approx(50.875) and r.n_units == 4 and r.units == "seeds"
    close = student_above_teacher(_table([39.0, 42.0, 40.5]), examples=False).iloc[0]
    assert close.verdict == "not established"
    one = student_above_teacher(_table([90.0]), examples=False).iloc[0]
    assert "not estimable: 1 seed" in one.note


def test_a_student_equal_to_its_teacher_is_warned_about_at_most_alpha_of_the_time():
    rng = np.random.default_rng(5)
    reps, hits = 400, 0
    for _ in range(reps):
        hits += student_above_teacher(_table(list(40 + rng.normal(0, 2, 3))), examples=False).iloc[0].established == "yes"
    rate, se = _rate(hits, reps)
    assert rate <= 0.05 + se, rate


# ----------------------------------------------------------------------------------------------------
# A sweep whose teachers are at chance
# ----------------------------------------------------------------------------------------------------
def test_teachers_must_beat_is_checked_when_the_sweep_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.teachers_must_beat must be one of none, chance, majority"):
        SweepSpec(**tiny(tmp_path, teachers_must_beat="half"))


@pytest.fixture(scope="module")
def chance_sweep(tmp_path_factory):
    """A tiny synthetic sweep whose scratch teachers learn nothing (lr 1e-9, one step: at chance, or predicting
    the majority class): run with ``teachers_must_beat: majority`` (students skipped), then again with
    ``none`` (students trained)."""
    out = tmp_path_factory.mktemp("chance") / "sweep"
    over = dict(methods=["kd"], budgets=dict(finetune=dict(lr=1e-9, max_steps=1, batch_size=16, eval_every=1,
                                                           device="cpu"),
                                             task=dict(lr=3e-3, max_steps=2, batch_size=16, eval_every=2,
                                                       device="cpu")))
    lines = []
    report = run_sweep(SweepSpec(**tiny(out, teachers_must_beat="majority", **over)), progress=False,
                       log=lines.append)
    return out, over, report, lines


def test_a_chance_level_teacher_is_recorded_and_its_students_are_skipped_with_the_reason(chance_sweep, capsys):
    out, _, report, lines = chance_sweep
    teacher = next((out / "runs").glob("teacher-1L-*"))
    check = json.loads((teacher / "result.json").read_text())["chance_check"]
    assert check["verdict"] == NOT_ABOVE and check["split"] == "dev" and check["n"] == 32
    assert len(report.skipped) == 2 and not report.failures
    assert all("is not above the majority class" in why and "teachers_must_beat: majority" in why
               for _, why in report.skipped)
    assert any(line.startswith("teacher 1L-32H-4A: not above chance") for line in lines)
    table = build_table(out)
    students = table[table.role == "student"]
    assert set(students.status) == {"skipped"} and students.reason.str.contains("not above the majority").all()
    assert set(table.teacher_check) <= {NOT_ABOVE, ABOVE_CHANCE_ONLY}
    assert set(table[table.teacher == "1L-32H-4A"].teacher_check) == {NOT_ABOVE}
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "2 skipped" in shown and "skipped  task-1L-32H-4A" in shown
    assert "teacher 1L-32H-4A (teacher-1L-32H-4A" in shown and "its students are skipped" in shown


def test_with_none_the_students_train_and_report_and_figures_mark_them(chance_sweep, capsys):
    out, over, _, _ = chance_sweep
    lines = []
    report = run_sweep(SweepSpec(**tiny(out, teachers_must_beat="none", **over)), progress=False, log=lines.append)
    assert report.ok and any(line.startswith("WARNING: teacher 1L-32H-4A: not above chance") for line in lines)
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Teachers against chance and the majority class" in text
    assert "teacher 1L-32H-4A not above chance on dev: this student did not learn from a working teacher" in " ".join(
        text.split())
    assert "Warnings (teachers against chance" in text and "its smallest teacher 1L-32H-4A is not above chance" in \
        " ".join(text.split())
    checks = pd.read_csv(out / "report" / "teacher_check.csv")
    assert set(checks.verdict) <= {NOT_ABOVE, ABOVE_CHANCE_ONLY} and (checks.n == 32).all()
    from matplotlib.figure import Figure

    from gapkit.analysis.plots import plot_gap_curve, teacher_flags

    table = pd.read_parquet(out / "results.parquet")
    assert set(teacher_flags(table)) == {"1L-32H-4A", "2L-32H-4A"} and teacher_flags(table)["1L-32H-4A"] == NOT_ABOVE
    fig = plot_gap_curve(table)
    assert isinstance(fig, Figure)
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "hollow grey markers: students of a teacher not shown above the majority class" in caption
    hollow = [line for line in fig.axes[0].lines if line.get_markerfacecolor() == "white"
              and line.get_markeredgecolor() == "0.5"]
    assert hollow and sum(len(line.get_xdata()) for line in hollow) == 2
