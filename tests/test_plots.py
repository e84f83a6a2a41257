"""Figures: each plot function on a hand-built results table whose numbers are known (the plotted
values are checked, not just that a file appears), the routing figures on real run folders, the bad
tables each figure refuses, and ``gapkit plot`` on a real tiny sweep."""

import json
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from gapkit.analysis.plots import (method_options, pareto_front, plot_ablations, plot_curse,  # noqa: E402
                                   plot_expert_share, plot_gap_curve, plot_moe_vs_dense, plot_pareto,
                                   plot_routing_training, plot_top_tokens, run_load_balance, student_points)
from gapkit.analysis.style import method_colours, save_figure  # noqa: E402
from gapkit.cli import main  # noqa: E402
from gapkit.errors import ConfigError  # noqa: E402
from gapkit.sweep.table import COLUMNS  # noqa: E402


# The paper's student sizes (GFLOPs, paper convention) and teachers (parameters, GFLOPs).
STUDENTS = {"2L-192H": 0.11, "2L-384H": 0.45, "3L-384H": 0.68, "4L-384H": 0.91, "6L-384H": 1.36}
TEACHERS = {"bert-base": (109_482_240, 10.87), "bert-large": (335_141_888, 38.65)}
SEEDS = (0, 1, 2)


def score(teacher, student, method, seed) -> float:
    """A made-up score with a curse: the large teacher costs small dense students 1 point (0.3 with an
    assistant), MiniMoE lifts 0.8 of it; seeds spread by +-0.2."""
    base = 76 + 6 * np.log10(STUDENTS[student] / 0.11)
    small = STUDENTS[student] < 1
    penalty = {"minilm": 1.0, "minilm_ta": 0.3, "minimoe": 0.2}.get(method.split("[")[0], 0.0)
    return float(base - (penalty if teacher == "bert-large" and small else 0) + 0.2 * (seed - 1)
                 + (0.5 if method.startswith("minimoe") else 0))


def row(**values) -> dict:
    return dict(dict.fromkeys(COLUMNS), **values)


def results_table(run_dirs: dict | None = None) -> pd.DataFrame:
    """Teachers, then minilm / minilm_ta / minimoe students at the paper's sizes from both teachers,
    3 seeds; plus routing-mode ablations of 3L-384H from bert-base. Each student has a ``final`` row and an
    ``accuracy`` row that the figures must not use."""
    rows = []
    for teacher, (params, gflops) in TEACHERS.items():
        t = dict(teacher=teacher, teacher_params=params, teacher_gflops=gflops, convention="paper", task="sst2",
                 split="dev", model="best", status="completed")
        rows.append(row(**t, run=f"ft-{teacher}", role="teacher", stage="finetune", student=teacher, method="finetune",
                        metric="score", value=90.0, gflops=gflops, seed=0))
        methods = [("minilm", "dense"), ("minilm_ta", "dense"), ("minimoe", "1,4E")]
        for student, sgf in STUDENTS.items():
            for method, experts in methods + ([(f"minimoe[routing={r}]", "1,4E") for r in ("learned", "random", "hash")]
                                              if student == "3L-384H" and teacher == "bert-base" else []):
                for seed in SEEDS:
                    run = f"task-{teacher}-{student}-{method}-s{seed}"
                    s = dict(t, run=run, role="student", stage="task", student=student, experts=experts, method=method,
                             gflops=sgf, params_active=int(sgf * 1e8), seed=seed,
                             run_dir=(run_dirs or {}).get(method, {}).get(seed))
                    value = score(teacher, student, method, seed)
                    rows.append(row(**s, metric="score", value=value))
                    rows.append(row(**s, metric="accuracy", value=value - 5))
                    rows.append(row(**dict(s, model="final"), metric="score", value=value - 3))
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("teacher_params", "params_total", "params_active", "step", "seed"):
        table[col] = table[col].astype("Int64")
    return table


def paper_table() -> pd.DataFrame:
    rows = [row(source="paper", role="student", stage="task", teacher=t, method=m, gflops=g, value=80.0 + g,
                task="sst2", metric="score", split="dev")
            for t in TEACHERS for m in ("minilm", "minilm_ta") for g in (0.11, 0.45)]
    return pd.DataFrame(rows)


def expected(teacher, student, method) -> tuple[float, float]:
    """Mean over seeds and half-width of the 95% t-interval."""
    values = [score(teacher, student, method, s) for s in SEEDS]
    return float(np.mean(values)), float(stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3))


def written(fig, tmp_path, name) -> list[Path]:
    paths = save_figure(fig, tmp_path / name)
    plt.close(fig)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    return paths


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def errorbar_lines(ax):
    """The data lines of an axes' error-bar containers, by label."""
    return {c.get_label(): c.lines[0] for c in ax.containers if hasattr(c, "has_yerr")}


# -- 1. the curse ------------------------------------------------------------------------------------
def test_curse_figure_draws_seed_means_per_teacher_with_the_papers_points(tmp_path):
    fig = plot_curse(results_table(), paper=paper_table())
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["without assistant (MiniLM)", "with assistant (MiniLM w/ TA)"]
    for ax in axes:
        assert ax.get_xlabel() == "student GFLOPs (paper convention, log scale)" and ax.get_xscale() == "log"
        assert len(ax.get_lines()) >= 4
    assert axes[0].get_ylabel() == "score (sst2, dev)"
    # one legend for the panels, under them (it covers no line)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["bert-base", "bert-base (paper)", "bert-large",
                                                          "bert-large (paper)"]
    line = errorbar_lines(axes[0])["bert-large"]
    assert list(line.get_xdata()) == sorted(STUDENTS.values())
    np.testing.assert_allclose(line.get_ydata(), [expected("bert-large", s, "minilm")[0] for s in STUDENTS])
    # the error bar of 2L-192H spans the t-interval
    bars = [c for c in axes[0].containers if c.get_label() == "bert-large"][0]
    segment = bars.lines[2][0].get_segments()[0]
    mean, half = expected("bert-large", "2L-192H", "minilm")
    np.testing.assert_allclose([segment[0][1], segment[1][1]], [mean - half, mean + half])
    paper = [l for l in axes[1].get_lines() if l.get_label() == "bert-base (paper)"][0]
    assert paper.get_linestyle() == "--" and paper.get_markerfacecolor() == "white"
    written(fig, tmp_path, "curse")


def test_curse_figure_with_the_papers_published_numbers():
    from gapkit.analysis import paper_results

    paper_rows = paper_results()
    # A sweep's table counts each shape exactly, as the paper's points do (0.1132 for 2L-192H, printed 0.11).
    exact = paper_rows.dropna(subset=["student", "gflops"]).groupby("student").gflops.first()
    table = results_table()
    table["gflops"] = [exact.get(s, g) if r == "student" else g for s, g, r in zip(table.student, table.gflops, table.role)]
    fig = plot_curse(table, paper=paper_rows)
    # The paper's GLUE averages never sit under the table's SST-2 label: they get an axis of their own.
    panels = [ax for ax in fig.axes if ax.get_title()]
    left, twin = panels[0], fig.axes[len(panels)]  # the twins follow the panels
    assert left.get_ylabel() == "score (sst2, dev)" and fig.axes[-1].get_ylabel() == "paper (dashed): GLUE average, dev"
    assert not [l for l in left.get_lines() if "(paper)" in l.get_label()]
    paper = [l for l in twin.get_lines() if l.get_label() == "bert-large (paper)"][0]
    assert [round(x, 2) for x in paper.get_xdata()] == [0.04, 0.11, 0.45, 0.68, 0.91, 1.36]  # exact counts
    assert paper.get_ydata()[-1] == pytest.approx(85.1)  # the paper's 6L-384H student of BERT-large
    assert "bert-large (paper)" in [t.get_text() for t in fig.legends[0].get_texts()]  # one legend names both
    assert "0.04" in [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close(fig)


def test_colours_follow_methods_and_teachers_across_figures():
    table = results_table()
    curse = plot_curse(table)
    # the smaller teacher always takes the palette's first colour, in every panel
    colours = {ax.get_title(): errorbar_lines(ax)["bert-base"].get_color() for ax in curse.axes}
    assert len(set(colours.values())) == 1
    pareto = plot_pareto(table)
    fixed = method_colours(["minilm", "minilm_ta", "minimoe"])
    assert method_colours(["minimoe", "kd", "minilm"])["minilm"] == fixed["minilm"]
    lines = errorbar_lines(pareto.axes[0])
    assert matplotlib.colors.to_rgb(lines["minilm"].get_color()) == pytest.approx(fixed["minilm"])
    plt.close("all")


# -- 2. dense vs MiniMoE -----------------------------------------------------------------------------
def test_moe_vs_dense_draws_solid_dense_dashed_moe_and_shades_the_gain(tmp_path):
    fig = plot_moe_vs_dense(results_table(), moe="minimoe")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "teacher parameters (M, log scale)"
    texts = legend_texts(ax)
    assert texts[:2] == ["2L-192H dense", "2L-192H MiniMoE 1,4E"] and len(texts) == 2 * len(STUDENTS)
    lines = errorbar_lines(ax)
    assert lines["3L-384H dense"].get_linestyle() == "-" and lines["3L-384H MiniMoE 1,4E"].get_linestyle() == "--"
    np.testing.assert_allclose(lines["3L-384H MiniMoE 1,4E"].get_ydata(),
                               [expected(t, "3L-384H", "minimoe")[0] for t in TEACHERS])
    assert len(ax.collections) >= len(STUDENTS)  # one shaded band per student
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == list(TEACHERS)
    written(fig, tmp_path, "moe_vs_dense")


def test_shading_switches_sides_where_the_lines_cross_on_the_log_axis():
    from gapkit.analysis.plots import _on_log_axis

    # dense rises 0 -> 1 and MiniMoE falls 1 -> 0 between x = 1 and x = 100: on a log axis they cross at 10
    xs, dense, moe = _on_log_axis(np.array([1.0, 100.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    at = int(np.argmin(np.abs(dense - moe)))
    assert xs[at] == pytest.approx(10.0) and dense[at] == pytest.approx(moe[at]) == pytest.approx(0.5)
    assert xs[0] == 1 and xs[-1] == pytest.approx(100.0) and (np.diff(xs) > 0).all()


def test_moe_vs_dense_shows_losses_hatched_and_the_lift_verdict_under_it():
    table = results_table()
    worse = (table.method == "minimoe") & (table.teacher == list(TEACHERS)[-1])
    table.loc[worse, "value"] = table.loc[worse, "value"] - 10  # MiniMoE below dense with the largest teacher
    fig = plot_moe_vs_dense(table, moe="minimoe")
    ax = fig.axes[0]
    hatched = [c for c in ax.collections if c.get_hatch()]
    assert hatched and "hatched: below" in ax.get_title()
    caption = "\n".join(t.get_text() for t in fig.texts)
    assert "lift test: drop(baseline) - drop(method), paired, Holm" in caption


def test_the_gap_curve_caption_says_what_the_curse_test_establishes():
    fig = plot_gap_curve(with_total_params(results_table()), "teacher_params")
    caption = "\n".join(t.get_text() for t in fig.texts)
    assert "curse test: smallest vs largest teacher, paired, Holm" in caption


# -- 2b. gap curves ----------------------------------------------------------------------------------
def with_total_params(table):
    """results_table() without the routing ablations, with params_total (a 1,4E MiniMoE: twice its active)."""
    table = table[~table.method.str.contains("routing")].copy()
    table["params_total"] = table.params_active * table.experts.eq("1,4E").map({True: 2, False: 1}).astype("Int64")
    return table


def test_gap_curve_draws_score_against_teacher_size_and_the_ratio(tmp_path):
    table = with_total_params(results_table())
    fig = plot_gap_curve(table, "teacher_params")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "teacher parameters (M, log scale)"
    lines = errorbar_lines(ax)
    assert len(lines) == 3 * len(STUDENTS)  # one line per student shape and method
    dense, moe = lines["3L-384H minilm"], lines["3L-384H-1,4E minimoe"]
    np.testing.assert_allclose(dense.get_xdata(), [p / 1e6 for p, _ in TEACHERS.values()])
    np.testing.assert_allclose(moe.get_ydata(), [expected(t, "3L-384H", "minimoe")[0] for t in TEACHERS])
    assert dense.get_linestyle() == "-" and moe.get_linestyle() == "--" and moe.get_markerfacecolor() == "white"
    assert dense.get_color() == moe.get_color() != lines["2L-192H minilm"].get_color()  # a colour per shape
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == list(TEACHERS)
    written(fig, tmp_path, "gap_teacher")

    fig = plot_gap_curve(table, "ratio_params")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "teacher / student parameters (capacity gap, log scale)"
    active = int(STUDENTS["3L-384H"] * 1e8)
    np.testing.assert_allclose(errorbar_lines(ax)["3L-384H-1,4E minimoe"].get_xdata(),
                               [p / (2 * active) for p, _ in TEACHERS.values()])
    written(fig, tmp_path, "gap_ratio")


@pytest.mark.parametrize("figure, change, message", [
    (partial(plot_gap_curve, x="size"), with_total_params, r"Unknown gap-curve axis 'size'; the axes are teacher_params"),
    (partial(plot_gap_curve, x="ratio_params"), lambda t: t, r"ratio_params gap curve has no point: .* whose "
                                                               r"ratio_params is known"),
    (plot_gap_curve, lambda t: pd.concat([t, t.assign(task="mrpc")]), r"several tasks \(mrpc, sst2\): pass task="),
    (partial(plot_gap_curve, task="mnli"), lambda t: t, r"no student score on task 'mnli' with a known teacher_params"),
    (plot_gap_curve, lambda t: t.drop(columns=["teacher_params"]), r"lacks column teacher_params"),
])
def test_gap_curve_refuses_what_it_cannot_draw(figure, change, message):
    with pytest.raises(ConfigError, match=message):
        figure(change(results_table()))


def test_curse_figure_refuses_paper_points_counted_in_another_convention():
    from gapkit.analysis import paper_results

    with pytest.raises(ConfigError, match=r"paper's points are counted in the paper FLOP convention and the table's "
                                          r"students in macs, so they cannot share the GFLOPs axis"):
        plot_curse(results_table().assign(convention="macs"), paper=paper_results())


# -- 3. ablations ------------------------------------------------------------------------------------
def routing_folder(folder: Path, balance: float, steps=(10, 20)) -> Path:
    """A run folder with a routing.parquet: 2 layers of 4 FFN experts, ``balance`` at the last dev step."""
    rows = []
    for step in steps:
        for split in ("train", "dev"):
            for layer in range(2):
                lb = balance if step == steps[-1] else 1.5
                fractions = [0.4, 0.3, 0.2, 0.1]
                rows += [dict(step=step, split=split, layer=layer, block="ffn", expert=e, token_fraction=f,
                              mean_gate_prob=f, load_balance=lb + (0.1 if layer else -0.1) * (split == "dev"),
                              gate_entropy=0.9 + 0.1 * layer)
                         for e, f in enumerate(fractions)]
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "routing.parquet", index=False)
    return folder


def test_ablation_figure_shows_score_and_load_balance_per_routing_mode(tmp_path):
    balance = {"learned": 1.05, "random": 1.0, "hash": 1.3}
    run_dirs = {f"minimoe[routing={mode}]": {s: str(routing_folder(tmp_path / f"{mode}-{s}", b + 0.01 * s))
                                             for s in SEEDS} for mode, b in balance.items()}
    assert run_load_balance(run_dirs["minimoe[routing=hash]"][0]) == pytest.approx(1.3)  # (1.2 + 1.4) / 2
    fig = plot_ablations(results_table(run_dirs))
    (score_ax, lb_ax) = fig.axes[:2]
    assert len(fig.axes) == 2  # one setting varies: routing
    assert score_ax.get_xlabel() == lb_ax.get_xlabel() == "routing"
    assert [t.get_text() for t in score_ax.get_xticklabels()] == ["learned", "random", "hash"]
    assert lb_ax.get_ylabel() == "load balance (1 = balanced)"
    heights = [p.get_height() for p in lb_ax.patches]
    np.testing.assert_allclose(heights, [balance[m] + 0.01 for m in ("learned", "random", "hash")])
    scores = [p.get_height() for p in score_ax.patches]
    np.testing.assert_allclose(scores, [expected("bert-base", "3L-384H", f"minimoe[routing={m}]")[0]
                                        for m in ("learned", "random", "hash")])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["3L-384H from bert-base"]
    written(fig, tmp_path, "ablations")


def test_ablation_axes_come_from_labels_and_the_experts_column():
    assert method_options("minimoe[experts=1,4E,routing=hash]") == ("minimoe", {"experts": "1,4E", "routing": "hash"})
    assert method_options("minilm") == ("minilm", {})
    table = results_table()
    table = table[~table.method.str.contains("routing")]
    extra = table[(table.method == "minimoe") & (table.student == "2L-384H")].assign(
        experts="2,4E", method="minimoe[experts=2,4E]")
    table = pd.concat([table.assign(method=table.method.where(table.method != "minimoe", "minimoe[experts=1,4E]")),
                       extra])
    fig = plot_ablations(table)  # no routing.parquet: the load-balance panel says so
    assert fig.axes[0].get_xlabel() == "experts (attention,FFN)"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1,4E", "2,4E"]
    assert "no routing.parquet" in fig.axes[1].texts[0].get_text()
    plt.close(fig)


# -- 4. Pareto ---------------------------------------------------------------------------------------
def test_pareto_front_is_the_best_score_at_each_compute(tmp_path):
    table = results_table()
    points = student_points(table)
    front = pareto_front(points)
    assert list(front.gflops) == sorted(STUDENTS.values())
    assert all(m.startswith("minimoe") for m in front.method)  # made-up MiniMoE scores are the highest
    fig = plot_pareto(table)
    ax = fig.axes[0]
    assert "Pareto front" in legend_texts(ax) and {"minilm", "minilm_ta", "minimoe"} <= set(legend_texts(ax))
    step = [l for l in ax.get_lines() if l.get_label() == "Pareto front"][0]
    np.testing.assert_allclose(sorted(set(step.get_xdata())), sorted(STUDENTS.values()))
    assert ax.get_xlabel() == "student GFLOPs (paper convention, active path, log scale)"
    written(fig, tmp_path, "pareto")


# -- figures refuse tables they cannot draw ----------------------------------------------------------
def one_teacher(table):
    return table[table.teacher == "bert-base"]


@pytest.mark.parametrize("figure, change, message", [
    (plot_curse, one_teacher, r"curse figure needs students distilled with minilm, minilm_ta or kd from at least 2 "
                              r"teachers; .* minilm: 1, minilm_ta: 1"),
    (plot_curse, lambda t: t.drop(columns=["gflops"]), r"lacks column gflops, which the curse figure needs"),
    (plot_curse, lambda t: t[t.role != "student"], r"no finished task-stage student"),
    (plot_curse, lambda t: pd.concat([t, t.assign(task="mrpc")]), r"several tasks \(mrpc, sst2\): pass task="),
    (plot_moe_vs_dense, lambda t: t[~t.method.str.startswith("minimoe")], r"needs MiniMoE students .* has none"),
    (plot_moe_vs_dense, lambda t: t[t.method != "minimoe"], r"several MiniMoE variants .*: pass moe="),
    (plot_moe_vs_dense, lambda t: one_teacher(t[t.method.isin(["minilm", "minimoe"])]),
     r"minilm and minimoe students distilled from the same 2 or more teachers"),
    (plot_ablations, lambda t: t[~t.method.str.contains("routing")], r"ablation figure needs MiniMoE students that "
                                                                      r"differ in one setting"),
    (plot_pareto, lambda t: t[(t.student == "2L-192H") & (t.method == "minilm") & (t.teacher == "bert-base")]
     .astype({"seed": "Int64"}), r"Pareto figure needs at least 2 students .* has 1"),
    (plot_pareto, lambda t: t.assign(convention=np.where(t.student == "2L-192H", "macs", "paper")),
     r"mixes FLOP conventions"),
    (plot_pareto, lambda t: t.drop(columns=["metric"]), r"lacks column metric, which the Pareto figure needs"),
])
def test_a_table_without_what_a_figure_needs_gets_one_sentence(figure, change, message):
    with pytest.raises(ConfigError, match=message):
        figure(change(results_table()))


def test_mean_over_tasks_averages_per_seed_and_needs_every_task():
    table = results_table()
    two = pd.concat([table, table.assign(task="mrpc", value=table.value + 2)])
    points = student_points(two, task="mean")
    got = points[(points.teacher == "bert-base") & (points.student == "2L-192H") & (points.method == "minilm")]
    assert got["mean"].iloc[0] == pytest.approx(expected("bert-base", "2L-192H", "minilm")[0] + 1)
    assert set(points.task) == {"mean"}
    partial = two[~((two.task == "mrpc") & (two.student == "2L-192H") & (two.seed == 1))]
    with pytest.raises(ConfigError, match=r"Student 2L-192H .* lacks a score on some of the tasks mrpc, sst2"):
        student_points(partial, task="mean")


# -- 5. routing of one run ---------------------------------------------------------------------------
def test_routing_figures_of_a_hand_written_run(tmp_path):
    run = routing_folder(tmp_path / "run", 1.1)
    fig = plot_expert_share(run)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("expert", "layer")
    assert ax.get_title() == "FFN experts (uniform: 25%)"
    assert [t.get_text() for t in ax.texts][:4] == ["40", "30", "20", "10"]
    assert "dev, step 20" in fig._suptitle.get_text()
    written(fig, tmp_path, "share")
    fig = plot_routing_training(run)
    lb, entropy = fig.axes[:2]
    assert lb.get_xlabel() == "training step" and entropy.get_ylabel() == "gate entropy (nats)"
    assert legend_texts(lb) == ["layer 0 ffn", "layer 1 ffn", "mean (train)", "mean (dev)", "balanced (1.0)"]
    mean = [l for l in lb.get_lines() if l.get_label() == "mean (train)"][0]
    assert list(mean.get_xdata()) == [10, 20] and list(mean.get_ydata()) == pytest.approx([1.5, 1.1])
    written(fig, tmp_path, "training")


def covered_points(fig) -> list[str]:
    """Data points of the figure's lines that a legend box covers (drawn figure, display coordinates)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    boxes = [legend.get_window_extent(renderer) for legend in legends]
    covered = []
    for ax in fig.axes:
        for line in ax.get_lines():
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            if not len(xy) or line.get_label().startswith("_child"):
                continue
            shown = ax.transData.transform(xy[np.isfinite(xy).all(axis=1)])
            for box in boxes:
                if any(box.contains(x, y) for x, y in shown):
                    covered.append(f"{ax.get_title() or 'axes'}: {line.get_label()}")
    return covered


def test_no_legend_covers_a_line(tmp_path):
    from gapkit.analysis import paper_results

    table = with_total_params(results_table())
    figures = {"curse": plot_curse(table, paper=paper_results()), "gap curve": plot_gap_curve(table, "teacher_params"),
               "moe vs dense": plot_moe_vs_dense(table, moe="minimoe"), "pareto": plot_pareto(table),
               "routing training": plot_routing_training(routing_folder(tmp_path / "run", 1.1))}
    for name, fig in figures.items():
        assert covered_points(fig) == [], f"the {name} figure's legend covers data"
        plt.close(fig)


def token_run(tmp_path) -> Path:
    """A run folder whose routing.parquet has top_tokens, from a real hash-routed student (expert = id % 3)."""
    from gapkit.models import Student, StudentSpec
    from gapkit.routing import RoutingAccumulator

    ids = torch.arange(1, 61).reshape(4, 15) % 20 + 1  # ids 1..20, each 3 times
    mask = torch.ones_like(ids)
    model = Student(StudentSpec(layers=2, hidden=48, heads=4, vocab_size=100, max_positions=64, ffn_experts=3,
                                routing="hash")).eval()
    acc = RoutingAccumulator()
    acc.add(model(ids, mask).routing, mask, ids)
    folder = tmp_path / "tokens"
    folder.mkdir()
    pd.DataFrame(acc.rows(step=5, split="dev")).to_parquet(folder / "routing.parquet", index=False)
    return folder


def test_top_tokens_figure_decodes_with_a_tokenizer_or_shows_ids(tmp_path):
    from transformers import BertTokenizer

    run = token_run(tmp_path)
    fig = plot_top_tokens(run, k=5)
    assert [ax.get_title() for ax in fig.axes] == ["expert 0 (30% of tokens)", "expert 1 (35% of tokens)",
                                                   "expert 2 (35% of tokens)"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 5 and all(l.startswith("#") and int(l[1:]) % 3 == 0 for l in labels)
    written(fig, tmp_path, "ids")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(5, 100)]))
    fig = plot_top_tokens(run, k=3, tokenizer=BertTokenizer(str(vocab)))
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == ["word7 (7)", "[MASK] (4)", "[UNK] (1)"]  # most frequent (ties: smallest id) at the top
    plt.close(fig)
    BertTokenizer(str(vocab)).save_pretrained(run / "best")  # the run's own tokenizer, found in best/
    fig = plot_top_tokens(run, k=3)
    assert [t.get_text() for t in fig.axes[2].get_yticklabels()] == ["word8 (8)", "word5 (5)", "[CLS] (2)"]
    written(fig, tmp_path, "decoded")


def test_top_tokens_of_a_synthetic_run_name_its_special_ids(tmp_path):
    """A synthetic-task run saves no tokenizer: its special ids ([CLS] 1, [SEP] 2 ...) are named anyway."""
    run = token_run(tmp_path)
    (run / "config.json").write_text(json.dumps(dict(stage="finetune", student="2L-48H-4A",
                                                     data=dict(task="synthetic", synthetic=dict(rule="span")))))
    fig = plot_top_tokens(run, k=20)
    labels = {t.get_text() for ax in fig.axes for t in ax.get_yticklabels()}
    assert {"[CLS] (1)", "[SEP] (2)", "[OPEN] (3)", "[CLOSE] (4)"} <= labels and "#1" not in labels and "#7" in labels
    plt.close(fig)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "dense", r"does not exist: only MiniMoE students record routing"),
    (lambda p: (p / "bad.parquet").write_text("not parquet") and p / "bad.parquet", r"not a readable parquet file"),
    (lambda p: routing_folder(p / "old", 1.0), r"has no top_tokens column"),
])
def test_routing_figures_refuse_what_they_cannot_draw(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message):
        plot_top_tokens(make(tmp_path))


def test_routing_figures_refuse_a_missing_step(tmp_path):
    with pytest.raises(ConfigError, match=r"no rows for step 7 on dev \(steps: 10, 20\)"):
        plot_expert_share(routing_folder(tmp_path / "r", 1.0), step=7)


# -- gapkit plot on a real sweep -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """One teacher, a dense and a MiniMoE student, task stage only: a real sweep in a few seconds."""
    from test_sweep import tiny

    from gapkit.sweep import SweepSpec, run_sweep

    out = tmp_path_factory.mktemp("plots") / "sweep"
    spec = SweepSpec(**tiny(out, stages=["task"], teachers=[dict(family="scratch", shapes=["1L-32H-4A"])],
                            budgets=dict(all=dict(lr=3e-3, max_steps=3, batch_size=16, eval_every=3, routing_every=1,
                                                  device="cpu"))))
    run_sweep(spec, progress=False)
    return out


def test_gapkit_plot_writes_what_a_real_sweep_supports_and_names_the_rest(sweep_dir, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["plot", str(sweep_dir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    run = [d for d in (sweep_dir / "runs").iterdir() if d.name.startswith("task-") and "minimoe" in d.name]
    assert len(run) == 1  # the one MiniMoE student: its routing is drawn
    run = run[0]
    # runs record top_tokens once the trainer passes the batch's input_ids to the routing statistics
    tokens = "top_tokens" in pd.read_parquet(run / "routing.parquet").columns
    routing = ["expert_share", "routing_training"] + (["top_tokens"] if tokens else [])
    expected = [out / f"pareto.{fmt}" for fmt in ("png", "pdf")] + [out / "pareto.csv"] + [
        out / "routing" / f"{run.name}-{name}.{fmt}" for name in routing for fmt in ("png", "pdf")]
    assert [line for line in lines if line.startswith("wrote ")] == [f"wrote {p}" for p in expected]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in expected if p.suffix != ".csv")
    every = pd.read_csv(out / "pareto.csv")  # the figure names the front; the table names every point
    assert len(every) == len(student_points(pd.read_parquet(sweep_dir / "results.parquet")).dropna(subset=["gflops"]))
    assert every.on_front.any() and {"student", "method", "teacher", "gflops", "mean"} <= set(every.columns)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(expected)
    skipped = [line for line in lines if line.startswith("skipped ")]
    no_tokens = [] if tokens else [f"skipped top_tokens of {run.name}"]
    assert [line.split(":")[0] for line in skipped] == [
        "skipped curse", "skipped gap_curve", "skipped moe_vs_dense", "skipped ablations"] + no_tokens
    assert "from at least 2 teachers" in skipped[0] and "at least 2 teachers; the table has 1" in skipped[1]
    assert "minilm and minimoe students" in skipped[2] and "differ in one setting" in skipped[3]
    # the real run's routing figure reads its routing.parquet: the dev evaluation at the last step
    fig = plot_expert_share(run)
    assert "dev, step 3" in fig._suptitle.get_text()
    assert sum(float(t.get_text()) for t in fig.axes[0].texts) == pytest.approx(100, abs=1)
    plt.close(fig)


def test_gapkit_plot_refuses_a_folder_without_results(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no results.parquet" in capsys.readouterr().err


def test_result_rows_written_by_the_sweep_have_the_columns_the_figures_read(sweep_dir):
    table = pd.read_parquet(sweep_dir / "results.parquet")
    points = student_points(table)
    assert set(points.method) == {"minilm", "minimoe"} and (points.n_seeds == 1).all()
    assert json.loads((sweep_dir / "plan.json").read_text())["sweep"]["name"] == "tiny"


def test_close_log_ticks_keep_their_lines_but_not_overlapping_labels():
    from gapkit.analysis.plots import _spaced

    # the paper's axis alone: every point labelled; with the quickstart's much smaller students beside it,
    # 0.68 and 0.91 lose their labels (their tick lines stay), the largest point always keeps one
    paper = [0.11, 0.45, 0.68, 0.91, 1.36]
    assert _spaced(paper) == set(paper)
    assert _spaced([0.00157, 0.0126, 0.04] + paper) == {0.00157, 0.0126, 0.04, 0.11, 0.45, 1.36}
    assert _spaced([1.0, 1.01, 100.0]) == {1.0, 100.0}
