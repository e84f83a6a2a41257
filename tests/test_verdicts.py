"""Calibrated verdicts (gapkit.analysis.inference and .verdicts): each statistic by hand on small cases, the
false-positive rate of the curse and lift verdicts simulated over thousands of null sweeps (per student and per
report), the power against a known effect, the old rule shown to fail the same calibration, and the tables on
hand-built results (teacher fine-tunes as replicates, dev examples from stored predictions)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy import stats

from gapkit.analysis.inference import (contrast_stats, detectable_effect, fieller, holm, power, seeds_needed,
                                       signflip_p)
from gapkit.analysis.verdicts import curse_test, lift_test
from gapkit.errors import DataError
from gapkit.sweep.table import COLUMNS

from test_analysis import cells, row

ALPHA = 0.05


def mc_bound(rate: float, n: int) -> float:
    """The nominal rate plus 3 Monte Carlo standard errors of a rate estimated from n draws."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / n)


# -- each statistic by hand -------------------------------------------------------------------------
def test_paired_t_over_seeds_by_hand():
    small, large = np.array([77.1, 76.4, 78.0, 77.7]), np.array([75.9, 76.0, 76.1, 75.2])
    d = small - large  # 1.2, 0.4, 1.9, 2.5
    st = contrast_stats(d[:, None])
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 3)
    assert st.estimate == pytest.approx(1.5) and st.se == pytest.approx(sd / 2) and st.df == 3
    assert st.p == pytest.approx(stats.ttest_rel(small, large).pvalue)
    low, high = st.interval(0.95)
    assert (low, high) == pytest.approx((1.5 - 3.182446305284263 * sd / 2, 1.5 + 3.182446305284263 * sd / 2))


def test_crossed_seed_by_example_variance_by_hand():
    # 2 replicates x 3 example groups. Row means 2, 4; column means 2, 3, 4; grand mean 3.
    x = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    st = contrast_stats(x)
    ms_rep = 3 * ((2 - 3) ** 2 + (4 - 3) ** 2) / 1  # G * var(row means) = 6
    ms_ex = 2 * ((2 - 3) ** 2 + 0 + (4 - 3) ** 2) / 2  # R * var(column means) = 2
    ms_res = 0.0  # additive: no interaction
    var = (ms_rep + ms_ex - ms_res) / 6
    assert st.estimate == 3.0 and st.se ** 2 == pytest.approx(var)
    assert st.rep_var == pytest.approx((ms_rep - ms_res) / 3) and st.ex_var == pytest.approx((ms_ex - ms_res) / 2)
    assert st.df == 1  # two replicates: the replicate df alone
    # An example component estimated below 0 is set to 0: then only the replicate mean square counts.
    noisy = np.array([[1.0, 3.0, 2.0], [3.0, 1.0, 5.0]])
    st = contrast_stats(noisy)
    assert st.ex_var == 0 and st.se ** 2 == pytest.approx(3 * np.var(noisy.mean(1), ddof=1) / 6)


def test_holm_by_hand():
    p = np.array([[0.01, 0.04, 0.03, np.nan], [0.5, 0.001, 0.02, 0.03]])
    adjusted = holm(p)
    # Row 1, three tests: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 -> running max 0.06.
    assert adjusted[0, :3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[0, 3])
    # Row 2, four tests: 0.001 * 4, 0.02 * 3, 0.03 * 2 -> 0.06, 0.5 * 1 -> 0.5.
    assert adjusted[1] == pytest.approx([0.5, 0.004, 0.06, 0.06])


def test_signflip_exact_by_hand():
    assert signflip_p(np.array([1.0, 2.0, 3.0])) == 0.25  # only the two all-same patterns reach |6|
    assert signflip_p(np.array([1.0, -2.0, 3.0])) == 0.75  # |sum| >= 2 for 6 of the 8 patterns
    assert signflip_p(np.ones(6)) == pytest.approx(2 / 64)  # the floor, 2 / 2**R


def test_fieller_by_hand():
    # Uncorrelated, b well away from 0: the roots of (a - r b)^2 = t^2 (va + r^2 vb).
    a, b, va, vb, df = 1.0, 2.0, 0.04, 0.09, 10
    low, high = fieller(a, b, va, vb, 0.0, df, 0.95)
    t2 = stats.t.ppf(0.975, df) ** 2
    for r in (low, high):
        assert (a - r * b) ** 2 == pytest.approx(t2 * (va + r * r * vb))
    assert low < a / b < high
    assert fieller(a, 0.3, va, vb, 0.0, df, 0.95) is None  # b not clearly above 0: unbounded, no interval


# -- calibration: the verdicts' false-positive rate under no teacher effect --------------------------
def null_sweeps(rng, n_sweeps, n_students, n_teachers, n_seeds, seed_sd=0.9, noise="normal"):
    """Scores (sweeps, students, teachers, seeds) with no teacher effect: a student-seed effect shared across
    teachers (seeds are matched) plus run noise."""
    shared = rng.normal(0, seed_sd * 0.6, (n_sweeps, n_students, 1, n_seeds))
    if noise == "normal":
        own = rng.normal(0, seed_sd * 0.8, (n_sweeps, n_students, n_teachers, n_seeds))
    else:  # heavy tails: Student's t with 4 df, scaled to the same SD
        own = rng.standard_t(4, (n_sweeps, n_students, n_teachers, n_seeds)) * seed_sd * 0.8 / math.sqrt(2)
    return 76.0 + shared + own


def curse_verdicts(scores):
    """The curse verdicts of curse_test on (sweeps, students, teachers, seeds) arrays, vectorised: drop =
    smallest - largest per seed, the design's test, Holm across the students of each sweep."""
    drop = scores[..., 0, :] - scores[..., -1, :]  # (sweeps, students, seeds)
    st = contrast_stats(drop[..., None])
    adjusted = holm(st.p, axis=-1)
    return (adjusted <= ALPHA) & (st.estimate > 0), (adjusted <= ALPHA)


@pytest.mark.parametrize("noise", ["normal", "heavy"])
@pytest.mark.parametrize("n_seeds", [3, 6])
def test_curse_false_positive_rate_at_or_below_nominal(n_seeds, noise):
    n = 4000
    curse, any_verdict = curse_verdicts(null_sweeps(np.random.default_rng(n_seeds), n, 4, 3, n_seeds, noise=noise))
    per_student = curse.mean()  # a false "curse" for one student: at most alpha / 2 (one direction)
    per_report = any_verdict.any(-1).mean()  # any false verdict in a report of 4 students: at most alpha (Holm)
    assert per_student <= mc_bound(ALPHA / 2, n * 4), per_student
    assert per_report <= mc_bound(ALPHA, n), per_report


def old_rule(scores, rng, n_resamples=1000):
    """The rule gapkit used before: a percentile bootstrap of best-minus-largest with each cell's seeds
    resampled on their own; a curse when the 2.5% bound of the drop is above 0 and the best is not the largest."""
    S, K, T, R = scores.shape
    idx = rng.integers(0, R, size=(n_resamples, S, K, T, R))
    means = np.take_along_axis(np.broadcast_to(scores, (n_resamples, S, K, T, R)), idx, -1).mean(-1)  # (B, S, K, T)
    drop = means.max(-1) - means[..., -1]
    low = np.quantile(drop, 0.025, axis=0, method="lower")
    point = scores.mean(-1)
    return (point.argmax(-1) < T - 1) & (low > 0)


def test_the_old_rule_fails_the_same_calibration():
    rng = np.random.default_rng(0)
    scores = null_sweeps(rng, 1000, 4, 3, 3)
    old = old_rule(scores, rng)
    assert old.mean() > 0.1  # about 19% of students in the simulation, against a nominal 2.5%
    assert old.mean() > mc_bound(ALPHA / 2, old.size)
    new, _ = curse_verdicts(scores)
    assert new.mean() <= mc_bound(ALPHA / 2, new.size)


def test_lift_false_positive_rate_at_or_below_nominal():
    # (sweeps, students, method, teachers, seeds): a real curse for both methods, equal in size: no lift.
    rng = np.random.default_rng(5)
    n, K, R = 4000, 2, 4
    shared = rng.normal(0, 0.5, (n, K, 1, 1, R))
    scores = shared + rng.normal(0, 0.8, (n, K, 2, 2, R)) + np.array([1.5, 0.0])[:, None]  # drop 1.5 both
    drop = scores[..., 0, :] - scores[..., 1, :]  # (n, K, 2, R)
    lift = drop[..., 0, :] - drop[..., 1, :]
    st = contrast_stats(lift[..., None])
    rejected = holm(st.p, axis=-1) <= ALPHA
    assert rejected.any(-1).mean() <= mc_bound(ALPHA, n)


def test_with_dev_examples_the_false_positive_rate_stays_nominal():
    """Runs scored on the same dev examples: per-example correctness with example difficulty (shared by all
    runs), a seed effect, and no teacher effect; the grouped pseudo-values of accuracy are group means."""
    rng = np.random.default_rng(11)
    n, R, N, G = 1500, 3, 400, 100
    difficulty = rng.normal(0, 1.5, (n, 1, 1, N))
    seed = rng.normal(0, 0.15, (n, 1, R, 1))
    logits = 1.0 + difficulty + seed + rng.normal(0, 0.6, (n, 2, R, N))  # (sims, teachers, seeds, examples)
    correct = 100.0 * (rng.random((n, 2, R, N)) < 1 / (1 + np.exp(-logits)))
    groups = correct.reshape(n, 2, R, G, N // G).mean(-1)  # (sims, teachers, seeds, G)
    st = contrast_stats(groups[:, 0] - groups[:, 1])
    assert (st.p <= ALPHA).mean() <= mc_bound(ALPHA, n)
    assert st.df.min() >= R - 1  # the examples add degrees of freedom, never fewer than the seeds'


# -- power ----------------------------------------------------------------------------------------------
def test_power_matches_simulation_and_seeds_needed_reach_it():
    rng = np.random.default_rng(3)
    sd, R, effect, n = 0.9, 6, 1.2, 6000
    predicted = power(effect, sd ** 2, 0.0, R, R - 1, ALPHA)
    d = rng.normal(effect, sd, (n, R, 1))
    simulated = (contrast_stats(d).p <= ALPHA).mean()
    assert simulated == pytest.approx(predicted, abs=3 * math.sqrt(predicted * (1 - predicted) / n))
    # The smallest detectable effect of a design has 80% power by construction; with its seeds_needed the
    # simulated power is at least 80%.
    pilot = contrast_stats(rng.normal(0.0, sd, (4, 1)))
    mde = detectable_effect(pilot, ALPHA)
    assert power(mde, float(pilot.per_replicate()), 0.0, 4, 3, ALPHA) == pytest.approx(0.8, abs=1e-6)
    need = int(seeds_needed(pilot, 1.0, ALPHA))
    pilot_sd = float(np.sqrt(pilot.per_replicate()))
    hits = contrast_stats(rng.normal(1.0, pilot_sd, (n, need, 1))).p <= ALPHA
    fewer = contrast_stats(rng.normal(1.0, pilot_sd, (n, need - 1, 1))).p <= ALPHA
    assert hits.mean() >= 0.8 - 0.02 and fewer.mean() < 0.8 + 0.02


def test_seeds_needed_is_infinite_when_the_dev_set_alone_is_too_noisy():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 0.3, (3, 1)) + rng.normal(0, 8, (1, 50)) + rng.normal(0, 1, (3, 50))
    st = contrast_stats(x)
    assert st.ex_var > 0 and seeds_needed(st, 0.2, ALPHA) == float("inf")
    assert seeds_needed(st, 20.0, ALPHA) == 2


# -- the tables -----------------------------------------------------------------------------------------
def curse_table(spec, **over):
    return pd.DataFrame(cells(spec, **over), columns=COLUMNS)


CLEAR = {  # 2L-10H kd: 2 points worse with the largest teacher, every seed; 4L-10H: bigger is better
    ("T1", "2L-10H", "kd"): [76.0, 77.1, 75.6, 76.4, 77.0, 76.2],
    ("T2", "2L-10H", "kd"): [75.5, 76.0, 75.1, 76.1, 76.2, 75.6],
    ("T3", "2L-10H", "kd"): [74.1, 75.0, 73.7, 74.5, 74.9, 74.2],
    ("T1", "4L-10H", "kd"): [78.0, 78.4, 77.9, 78.2, 78.1, 78.3],
    ("T2", "4L-10H", "kd"): [78.1, 78.6, 78.0, 78.2, 78.3, 78.2],
    ("T3", "4L-10H", "kd"): [78.2, 78.5, 78.1, 78.1, 78.4, 78.3],
}


def test_curse_table_by_hand():
    table = curse_table(CLEAR)
    curse = curse_test(table, effect=0.5)
    r = curse[curse.student == "2L-10H"].iloc[0]
    d = np.array(CLEAR[("T1", "2L-10H", "kd")]) - np.array(CLEAR[("T3", "2L-10H", "kd")])
    p = stats.ttest_rel(CLEAR[("T1", "2L-10H", "kd")], CLEAR[("T3", "2L-10H", "kd")]).pvalue
    assert (r.smallest_teacher, r.largest_teacher, r.units, r.n_units) == ("T1", "T3", "seeds", 6)
    assert r.curse_drop == pytest.approx(d.mean()) and r.p == pytest.approx(p)
    flat = curse[curse.student == "4L-10H"].iloc[0]
    assert r.p_holm == pytest.approx(min(1.0, 2 * min(r.p, flat.p)) if r.p < flat.p else max(r.p, 2 * flat.p))
    assert (r.verdict, r.established) == ("curse", "yes")
    # The top teacher is the smallest measured: the onset is only an upper bound.
    assert (r.onset_kind, r.onset_teacher, r.onset_ratio_params) == ("upper bound", "T1", 10.0)
    assert r.best_teachers == "T1" and r.top_teacher == "T1" and r.trend < 0 and r.trend_high < 0
    assert (flat.verdict, flat.established) == ("not established", "no")
    assert pd.isna(flat.onset_ratio_params) and "onset not estimable: no established curse" in flat.note
    assert flat.best_teachers == "T1, T2, T3"
    assert r.seeds_for >= 2 and r.mde > 0 and flat.effect == 0.5
    assert "example variance not included" in r.note and r.scope == "seeds, this dev set"


def test_an_interior_top_teacher_is_an_estimate_and_one_seed_no_verdict():
    spec = {k: list(v) for k, v in CLEAR.items() if k[1] == "2L-10H"}
    spec[("T2", "2L-10H", "kd")] = [v + 1.5 for v in CLEAR[("T1", "2L-10H", "kd")]]
    r = curse_test(curse_table(spec)).iloc[0]
    assert (r.verdict, r.onset_kind, r.onset_teacher, r.onset_ratio_params) == ("curse", "estimate", "T2", 20.0)
    single = curse_test(curse_table({k: v[:1] for k, v in spec.items()})).iloc[0]
    assert (single.verdict, single.established) == ("not established", "no") and "1 matched seed (needs 2 or more)" in single.note


def test_teacher_fine_tunes_are_the_replicates_when_there_are_several():
    rng = np.random.default_rng(0)
    rows = []
    for tseed in (0, 1, 2):
        for teacher, shift in (("T1", 1.0), ("T3", 0.0)):
            fine_tune = rng.normal(0, 0.5)  # the same for every student of this teacher fine-tune
            for seed in range(3):
                rows.append(row(teacher, "2L-10H", "kd", seed, 75 + shift + fine_tune + rng.normal(0, 0.2),
                                teacher_seed=tseed))
    table = pd.DataFrame(rows, columns=COLUMNS)
    r = curse_test(table).iloc[0]
    assert (r.units, r.n_units, r.df) == ("teacher fine-tunes", 3, 2.0)
    per_fine_tune = table.groupby(["teacher_seed", "teacher"]).value.mean().unstack()
    d = per_fine_tune["T1"] - per_fine_tune["T3"]
    assert r.curse_drop == pytest.approx(d.mean()) and r.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert "teacher fine-tunes" in r.scope


def write_predictions(folder, preds, labels):
    (folder / "best").mkdir(parents=True)
    save_file({"dev.prediction": torch.tensor(preds, dtype=torch.int32),
               "dev.label": torch.tensor(labels, dtype=torch.int32)}, folder / "best" / "predictions.safetensors")


def test_dev_examples_enter_the_variance_from_stored_predictions(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    labels = rng.integers(0, 2, n)
    rows = []
    for teacher, accuracy in (("T1", 0.80), ("T3", 0.76)):
        for seed in range(4):
            right = rng.random(n) < accuracy
            preds = np.where(right, labels, 1 - labels)
            folder = tmp_path / f"{teacher}-{seed}"
            write_predictions(folder, preds, labels)
            rows.append(row(teacher, "2L-10H", "kd", seed, 100 * right.mean(), task="sst2", run_dir=str(folder)))
    table = pd.DataFrame(rows, columns=COLUMNS)
    with_examples = curse_test(table).iloc[0]
    seeds_only = curse_test(table, examples=False).iloc[0]
    assert with_examples.scope == "seeds + dev examples" and with_examples.n_examples == n
    assert with_examples.curse_drop == pytest.approx(seeds_only.curse_drop)  # accuracy: the pseudo-values are group means
    # Independent runs: the example component adds little, but the df are those of the crossed design.
    assert with_examples.df >= 3 and seeds_only.df == 3
    # The grouped pseudo-values by hand: per run, the mean accuracy of each of the 100 example groups.
    group = np.random.default_rng(0).permutation(n) % 100
    x = []
    for seed in range(4):
        diff = []
        for teacher, sign in (("T1", 1), ("T3", -1)):
            from safetensors.torch import load_file
            got = load_file(tmp_path / f"{teacher}-{seed}" / "best" / "predictions.safetensors")
            right = (got["dev.prediction"] == got["dev.label"]).numpy() * 100.0
            diff.append(sign * np.array([right[group == g].mean() for g in range(100)]))
        x.append(diff[0] + diff[1])
    assert with_examples.p == pytest.approx(float(contrast_stats(np.array(x)).p))


LIFT = {
    ("T1", "2L-10H", "kd"): [76.0, 77.1, 75.6, 76.4, 77.0, 76.2],
    ("T3", "2L-10H", "kd"): [74.1, 75.0, 73.7, 74.5, 74.9, 74.2],
    ("T1", "2L-10H", "minimoe"): [76.3, 77.0, 75.9, 76.6, 77.1, 76.1],
    ("T3", "2L-10H", "minimoe"): [76.1, 76.8, 75.5, 76.6, 76.7, 76.3],
}


def test_lift_and_recovered_by_hand():
    table = curse_table(LIFT)
    lift = lift_test(table, baseline="kd")
    r = lift.iloc[0]
    b = np.array(LIFT[("T1", "2L-10H", "kd")]) - np.array(LIFT[("T3", "2L-10H", "kd")])
    m = np.array(LIFT[("T1", "2L-10H", "minimoe")]) - np.array(LIFT[("T3", "2L-10H", "minimoe")])
    assert r.lift == pytest.approx((b - m).mean()) and r.p == pytest.approx(stats.ttest_1samp(b - m, 0).pvalue)
    assert (r.verdict, r.established) == ("lift", "yes")
    assert r.recovered == pytest.approx((b - m).mean() / b.mean())
    assert r.recovered_low < r.recovered < r.recovered_high
    gain = np.array(LIFT[("T3", "2L-10H", "minimoe")]) - np.array(LIFT[("T3", "2L-10H", "kd")])
    assert r.gain_at_largest == pytest.approx(gain.mean())


def test_recovered_is_not_estimable_without_an_established_baseline_curse():
    spec = dict(LIFT)
    spec[("T3", "2L-10H", "kd")] = [76.3, 76.9, 75.4, 76.5, 76.8, 76.4]  # no curse for kd
    r = lift_test(curse_table(spec), baseline="kd").iloc[0]
    assert pd.isna(r.recovered) and "recovered not estimable: kd has no established curse" in r.note
    none = lift_test(curse_table({k: v for k, v in LIFT.items() if k[2] == "minimoe"}), baseline="kd").iloc[0]
    assert "no kd (baseline) runs" in none.note and none.verdict == "not established"


@pytest.mark.parametrize("kwargs, message", [
    (dict(level=1.5), "confidence level must be between 0 and 1"),
    (dict(effect=-1.0), "effect to plan seeds for must be a positive number"),
    (dict(effect="big"), "effect to plan seeds for must be a positive number"),
])
def test_bad_settings_are_one_sentence(kwargs, message):
    with pytest.raises(DataError, match=message):
        curse_test(curse_table(CLEAR), **kwargs)


# -- the command line: report --seeds-for, sweep --dry-run --pilot --------------------------------------
def test_report_and_a_dry_run_say_how_many_seeds_an_effect_needs(tmp_path, capsys):
    from gapkit.cli import main

    pilot = tmp_path / "pilot"
    pilot.mkdir()
    curse_table(CLEAR).to_csv(pilot / "results.csv", index=False)
    assert main(["report", str(pilot), "--seeds-for", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "seeds for 0.50" in out and "What the tests establish" in out
    assert "curse synthetic 2L-10H kd: curse," in out  # the clear curse of CLEAR, established
    written = pd.read_csv(pilot / "report" / "curse.csv")
    assert set(written.effect) == {0.5} and (written.seeds_for >= 2).all()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("tasks: [{task: synthetic, max_len: 16}]\nteachers: [{family: scratch, shapes: [1L-16H-4A, "
                     "2L-16H-4A]}]\nstudents: {shapes: [1L-8H-2A]}\nmethods: [kd]\nseeds: [0, 1]\n"
                     f"output_dir: {tmp_path / 'out'}\n")
    assert main(["sweep", str(sweep), "--dry-run", "--pilot", str(pilot), "--seeds-for", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Seeds to detect 0.5 metric points with 80% power" in out and "this plan has 2 seed(s)" in out
    for student in ("2L-10H", "4L-10H"):
        need = int(written[written.student == student].seeds_for.iloc[0])
        line = next(x for x in out.split("Seeds to detect")[1].splitlines() if student in x).split()
        assert line[5:8] == ["6", "seeds", line[7]] and line[8] == str(need)  # pilot, unit sd, needed
        assert line[9] == ("yes" if need <= 2 else "no")
    assert not (tmp_path / "out").exists()  # a dry run trains nothing
    assert main(["sweep", str(sweep), "--pilot", str(pilot), "--seeds-for", "0.5"]) == 2  # without --dry-run
    assert "--pilot and --seeds-for go together, with --dry-run" in capsys.readouterr().err
