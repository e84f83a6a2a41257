"""Bad sweep input and empty or partial results as data, as tests/test_bad_inputs.py does it.

Two tables:
- ``CLI``: ``gapkit sweep/report/plot ...`` command lines. Each must exit with status 2, print exactly one
  line ``gapkit: error: ...`` matching the case's pattern, no traceback, and change no file under the
  test's folder (an earlier plan and table stay as they were).
- ``API``: ``SweepSpec(...)`` and analysis calls. Each must raise the case's class with a one-line message
  matching its pattern.

Beside them: a node's folder name carries the run_id its result.json records; the plan's DistillSpec is
the one the node holds; extending a sweep is not refused, ``--replan`` plans a changed one anew; the
verdicts' orientation and top teacher are the ones the fit, the Pareto front and the sweep summary use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gapkit.cli import main
from gapkit.errors import ConfigError, DataError
from gapkit.sweep import SweepSpec, plan
from gapkit.sweep.table import COLUMNS
from config_helpers import fill

BASE = dict(  # a sweep that plans offline in a second; every case breaks one thing of it
    name="tiny", output_dir="{tmp}/sweep",
    tasks=[dict(task="synthetic", max_len=24, max_train_examples=64, max_eval_examples=32)],
    teachers=[dict(family="scratch", shapes=["1L-32H-4A", "2L-32H-4A"])],
    students=dict(shapes=["1L-16H-4A"]),
    methods=["kd", dict(name="minimoe", experts="1,2E")],
    stages=["task"],
    budgets=dict(all=dict(lr=3e-3, max_steps=2, batch_size=16, eval_every=2, device="cpu")),
    relation_heads=4, seeds=[0],
)


def _fill(obj, tmp: Path):
    return fill(obj, {"{tmp}": str(tmp)})


def sweep_dict(tmp: Path, **over) -> dict:
    return _fill(dict(BASE, **over), tmp)


def _files(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------------------------------
# Setups: what a case's folder holds before the command
# ----------------------------------------------------------------------------------------------------
def write_sweep(**over):
    def setup(tmp: Path) -> None:
        (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict(tmp, **over)))
    return setup


def table(rows: list[dict], name: str = "results.parquet"):
    """A sweep folder ``{tmp}/done`` whose results table holds ``rows`` (COLUMNS, the rest empty)."""
    def setup(tmp: Path) -> None:
        folder = tmp / "done"
        folder.mkdir()
        frame = pd.DataFrame(rows, columns=COLUMNS)
        if name.endswith(".parquet"):
            frame.to_parquet(folder / name, index=False)
        else:
            frame.to_csv(folder / name, index=False)
    return setup


def started_sweep(**over):
    """``{tmp}/sweep``: the plan of BASE written with one started run, then sweep.yaml changed by ``over``."""
    def setup(tmp: Path) -> None:
        from gapkit.sweep.plan import plan_json

        spec = SweepSpec(**sweep_dict(tmp))
        nodes = plan(spec)
        out = Path(spec.output_dir)
        out.mkdir(parents=True)
        (out / "plan.json").write_text(plan_json(nodes, spec))
        started = nodes[-1].folder(out)
        started.mkdir(parents=True)
        (started / "config.json").write_text(nodes[-1].spec().to_json())
        write_sweep(**over)(tmp)
    return setup


FAILED_ROW = dict(sweep="tiny", run="task-x-1", role="student", stage="task", teacher="1L-32H-4A",
                  student="1L-16H-4A", experts="dense", method="kd", task="synthetic", seed=0, status="failed",
                  reason="the loss is NaN at step 2")
AGNOSTIC_ROW = dict(sweep="tiny", run="agn-x-1", role="student", stage="agnostic", teacher="1L-32H-4A",
                    student="1L-16H-4A", experts="dense", method="minilm", task="synthetic", split="dev",
                    metric="relation", value=0.5, model="best", seed=0, status="completed")


def cli(id: str, pattern: str, args: list[str], setup=None):
    return pytest.param(args, setup, pattern, id=id)


CLI = [
    # -- the sweep spec ---------------------------------------------------------------------------------
    cli("sweep:student-twice", r"sweep\.students lists the student shape 1L-16H-4A twice: list each student once",
        ["sweep", "{tmp}/sweep.yaml", "--dry-run"], write_sweep(students=dict(shapes=["1L-16H-4A", "1L-16H-4A"]))),
    cli("sweep:seeds-twice", r"sweep\.seeds lists seed 0 twice: list each seed once",
        ["sweep", "{tmp}/sweep.yaml", "--dry-run"], write_sweep(seeds=[0, 0])),
    cli("sweep:workers-negative", r"sweep\.executor\.workers must be a whole number of CPU worker processes >= 1, "
                                  r"got -1", ["sweep", "{tmp}/sweep.yaml"],
        write_sweep(executor=dict(kind="local", workers=-1))),
    cli("sweep:experts-word", r"sweep\.methods\[1\]\.experts must be 'x,yE' \(attention experts, FFN experts, "
                              r"e\.g\. '1,4E'\), got 'abc'", ["sweep", "{tmp}/sweep.yaml", "--dry-run"],
        write_sweep(methods=["kd", dict(name="minimoe", experts="abc")])),
    cli("sweep:seeds-override-twice", r"sweep\.seeds lists seed 1 twice",
        ["sweep", "{tmp}/sweep.yaml", "--dry-run", "--set", "seeds=[1,1]"], write_sweep()),
    # -- a sweep folder reused with a changed spec ------------------------------------------------------
    cli("sweep:folder-replanned", r"sweep holds a sweep planned from other settings \(settings changed: budgets\): "
                                  r"1 of its started runs \(e\.g\. task-.*\) are not in this plan .* pass --replan",
        ["sweep", "{tmp}/sweep.yaml", "--quiet"],
        started_sweep(budgets=dict(all=dict(lr=1e-3, max_steps=2, batch_size=16, eval_every=2, device="cpu")))),
    # -- empty or partial results -----------------------------------------------------------------------
    cli("report:zero-rows", r"done holds no results \(0 rows\): no run of the sweep has finished or failed yet",
        ["report", "{tmp}/done"], table([])),
    cli("report:zero-rows-csv", r"done holds no results \(0 rows\)", ["report", "{tmp}/done"],
        table([], "results.csv")),
    cli("report:all-failed", r"done holds no score: all 1 run\(s\) in it failed \(first: task-x-1: the loss is NaN "
                             r"at step 2\)", ["report", "{tmp}/done"], table([FAILED_ROW])),
    cli("report:agnostic-only", r"done holds 1 row\(s\) but no score yet: .*only agnostic stage rows",
        ["report", "{tmp}/done"], table([AGNOSTIC_ROW])),
    cli("plot:zero-rows", r"results\.parquet holds no results \(0 rows\)", ["plot", "{tmp}/done"], table([])),
    cli("plot:all-failed", r"results\.parquet holds no score: all 1 run\(s\) in it failed",
        ["plot", "{tmp}/done"], table([FAILED_ROW])),
]


@pytest.mark.parametrize("args, setup, pattern", CLI)
def test_cli_bad_input_is_one_sentence_and_exit_2(args, setup, pattern, tmp_path, capsys):
    if setup is not None:
        setup(tmp_path)
    before = _files(tmp_path)
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("gapkit: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert _files(tmp_path) == before  # nothing written, nothing replaced


# ----------------------------------------------------------------------------------------------------
# The API table
# ----------------------------------------------------------------------------------------------------
def _sweep(**over):
    return SweepSpec(**sweep_dict(Path("/tmp"), **over))


def _report(rows, **kw):
    from gapkit.analysis import report

    return report(pd.DataFrame(rows, columns=COLUMNS), **kw)


def api(id: str, call, exc, pattern: str):
    return pytest.param(call, exc, pattern, id=id)


API = [
    api("sweep:student-twice-spelled", lambda: _sweep(students=dict(shapes=["2L-192H", "2L-192H-12A"])), ConfigError,
        r"sweep\.students lists one student twice \(2L-192H and 2L-192H-12A are the same architecture\)"),
    api("sweep:student-grid-twice", lambda: _sweep(students=dict(layers=[1, 1], hidden=[16], heads=4)), ConfigError,
        r"sweep\.students lists the student shape 1L-16H-4A twice"),
    api("sweep:students-empty", lambda: _sweep(students=dict(shapes=[])), ConfigError,
        r"sweep\.students\.shapes must be a non-empty list of shapes"),
    api("sweep:students-string", lambda: _sweep(students=dict(shapes="1L-16H-4A")), ConfigError,
        r"sweep\.students\.shapes must be a non-empty list of shapes .*got '1L-16H-4A'"),
    api("sweep:teachers-empty", lambda: _sweep(teachers=[]), ConfigError, r"sweep\.teachers is empty"),
    api("sweep:seeds-twice", lambda: _sweep(seeds=[2, 0, 2]), ConfigError, r"sweep\.seeds lists seed 2 twice"),
    api("sweep:seeds-negative", lambda: _sweep(seeds=[0, -1]), ConfigError,
        r"sweep\.seeds must be a non-empty list of integers >= 0, got \[0, -1\]"),
    api("sweep:seeds-empty", lambda: _sweep(seeds=[]), ConfigError, r"sweep\.seeds must be a non-empty list"),
    api("sweep:seeds-int", lambda: _sweep(seeds=3), ConfigError, r"sweep\.seeds must be a list, got 3"),
    api("sweep:methods-empty", lambda: _sweep(methods=[]), ConfigError, r"sweep\.methods is empty: list at least one"),
    api("sweep:method-unknown", lambda: _sweep(methods=["distil"]), ConfigError,
        r"sweep\.methods\[0\] must be one of minilm, minimoe, minilm_ta, kd"),
    api("sweep:experts-word", lambda: _sweep(methods=[dict(name="minimoe", experts="abc")]), ConfigError,
        r"sweep\.methods\[0\]\.experts must be 'x,yE'.*got 'abc'"),
    api("sweep:experts-int", lambda: _sweep(methods=[dict(name="minimoe", experts=4)]), ConfigError,
        r"sweep\.methods\[0\]\.experts must be 'x,yE'.*got 4"),
    api("sweep:experts-in-a-list", lambda: _sweep(methods=[dict(name="minimoe", experts=["1,2E", "x"])]),
        ConfigError, r"sweep\.methods\[0\]\.experts must be 'x,yE'.*got 'x'"),
    api("sweep:routing-unknown", lambda: _sweep(methods=[dict(name="minimoe", experts="1,2E", routing="best")]),
        ConfigError, r"sweep\.methods\[0\]: StudentSpec\.routing must be one of learned, random, hash, got 'best'"),
    api("sweep:gate-noise-word", lambda: _sweep(methods=[dict(name="minimoe", experts="1,2E", gate_noise="lots")]),
        ConfigError, r"sweep\.methods\[0\]: StudentSpec\.gate_noise must be a number, got 'lots'"),
    api("sweep:routing-on-dense", lambda: _sweep(methods=[dict(name="kd", routing="random")]), ConfigError,
        r"sweep\.methods\[0\]\.routing applies to minimoe only, not kd: remove it"),
    api("sweep:assistant-on-kd", lambda: _sweep(methods=[dict(name="kd", assistant="2L-32H-4A")]), ConfigError,
        r"sweep\.methods\[0\]\.assistant applies to minilm_ta only"),
    api("sweep:load-balance-negative", lambda: _sweep(methods=[dict(name="minimoe", experts="1,2E", load_balance=-1)]),
        ConfigError, r"sweep\.methods\[0\]\.load_balance must be a number >= 0"),
    api("sweep:option-empty-list", lambda: _sweep(methods=[dict(name="minimoe", routing=[])]), ConfigError,
        r"sweep\.methods\[0\]\.routing is an empty list"),
    api("sweep:workers-negative", lambda: _sweep(executor=dict(kind="local", workers=-1)), ConfigError,
        r"sweep\.executor\.workers must be a whole number of CPU worker processes >= 1, got -1"),
    api("sweep:workers-fraction", lambda: _sweep(executor=dict(kind="local", workers=2.5)), ConfigError,
        r"sweep\.executor\.workers must be a whole number .*got 2\.5"),
    api("sweep:executor-unknown-key", lambda: _sweep(executor=dict(kind="local", gpus=2)), ConfigError,
        r"Unknown setting\(s\) sweep\.executor\.gpus; known settings of sweep\.executor: cluster, kind, slurm, workers"),
    api("sweep:executor-word", lambda: _sweep(executor="local"), ConfigError, r"sweep\.executor must be a mapping"),
    api("sweep:task-twice", lambda: _sweep(tasks=[dict(task="synthetic"), dict(task="synthetic", max_len=64)]),
        ConfigError, r"sweep\.tasks\[1\] repeats task 'synthetic' \(also sweep\.tasks\[0\]\)"),
    api("sweep:budget-seed", lambda: _sweep(budgets=dict(all=dict(seed=3))), ConfigError,
        r"sweep\.budgets\.all\.seed: a sweep sets each run's seeds from seeds and teacher_seed; remove it"),
    api("sweep:budgets-merged", lambda: _sweep(budgets=dict(all=dict(batch_size=18), task=dict(grad_accum=4))),
        ConfigError, r"sweep\.budgets \(all and task together\): TrainSpec\.batch_size \(18\) must be divisible by "
                     r"grad_accum \(4\)"),
    api("sweep:budget-not-mapping", lambda: _sweep(budgets=dict(task=3)), ConfigError,
        r"sweep\.budgets\.task must be a mapping of settings, got 3"),
    api("report:zero-rows", lambda: _report([]), DataError, r"The results table holds no results \(0 rows\)"),
    api("report:all-failed", lambda: _report([FAILED_ROW]), DataError, r"holds no score: all 1 run\(s\) in it failed"),
    api("report:missing-column", lambda: __import__("gapkit.analysis").analysis.report(
        pd.DataFrame([AGNOSTIC_ROW]).drop(columns=["model"])), DataError,
        r"The results table lacks column model, which scoring runs needs"),
    api("plot:missing-column", lambda: __import__("gapkit.analysis").analysis.plot_pareto(
        pd.DataFrame([AGNOSTIC_ROW], columns=COLUMNS).drop(columns=["gflops"])), ConfigError,
        r"The results table lacks column gflops, which the Pareto figure needs"),
]


@pytest.mark.parametrize("call, exc, pattern", API)
def test_api_bad_input_is_one_sentence(call, exc, pattern):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert re.search(pattern, message), message


def test_the_tables_cover_every_edge_of_the_issue():
    ids = {p.id for p in CLI + API}
    assert {"sweep:student-twice", "sweep:seeds-twice", "report:zero-rows", "sweep:workers-negative",
            "sweep:experts-word", "plot:zero-rows", "sweep:folder-replanned"} <= ids
    assert len(CLI) + len(API) >= 40


# ----------------------------------------------------------------------------------------------------
# One hash; nodes hold their DistillSpec
# ----------------------------------------------------------------------------------------------------
def test_a_nodes_folder_carries_the_run_id_its_result_records(tmp_path):
    from gapkit.distill import DistillSpec, run
    from gapkit.distill.result import run_id
    from gapkit.sweep.plan import ID_HASH, plan_json, read_plan

    spec = SweepSpec(**sweep_dict(tmp_path))
    nodes = plan(spec)
    for node in nodes:
        assert node.spec() is node.run  # built once, by the plan
        assert node.config == node.run.to_dict()
        assert node.id.endswith("-" + run_id(node.config)[:ID_HASH])
        again = DistillSpec.from_dict(json.loads(json.dumps(node.config)))  # as a worker rebuilds it
        assert run_id(again.to_dict()) == run_id(node.config)
    students = [n for n in nodes if n.kind == "task"]
    assert all(n.teacher_from in {m.id for m in nodes if m.kind == "finetune"} for n in students)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "plan.json").write_text(plan_json(nodes, spec))
    _, read = read_plan(tmp_path / "sweep")
    assert [(n.id, n.teacher_from, n.config) for n in read] == [(n.id, n.teacher_from, n.config) for n in nodes]
    teacher = nodes[0]
    result = run(teacher.spec(), progress=False)
    assert result.run_id.startswith(teacher.id.rsplit("-", 1)[1])
    assert Path(result.run_dir).name == teacher.id


def test_a_changed_setting_changes_only_the_ids_of_the_runs_it_reaches(tmp_path):
    base = {n.id for n in plan(SweepSpec(**sweep_dict(tmp_path)))}
    task_only = sweep_dict(tmp_path)
    task_only["budgets"] = dict(task_only["budgets"], task=dict(lr=1e-3))
    changed = plan(SweepSpec(**task_only))
    assert {n.id for n in changed if n.kind == "finetune"} <= base  # the teachers' configs did not change
    assert not {n.id for n in changed if n.kind == "task"} & base


def test_the_spec_expands_once_and_round_trips(tmp_path, monkeypatch):
    from gapkit.distill.config import DataSpec, TrainSpec

    spec = SweepSpec(**sweep_dict(tmp_path, seeds=[0, 1]))
    assert [type(t) for t in spec.task_data] == [DataSpec] and spec.task_data[0].select_on == "holdout"
    assert isinstance(spec.train_spec("task", 1), TrainSpec) and spec.train_spec("task", 1).data_seed == 1
    assert SweepSpec(**spec.to_dict()).to_dict() == spec.to_dict()
    assert "task_data" not in spec.to_dict()
    for name in ("_teacher_entries", "_student_shapes", "_method_variants"):  # planning does not expand again
        monkeypatch.setattr(SweepSpec, name, lambda self: pytest.fail("expanded again"))
    assert len(plan(spec)) == 2 + 2 * 2 * 2


# ----------------------------------------------------------------------------------------------------
# A sweep folder reused: extended (accepted), changed (refused above), replanned (--replan)
# ----------------------------------------------------------------------------------------------------
def _stub_run_sweep(monkeypatch) -> list:
    import gapkit.sweep

    calls = []

    def fake(spec, executor=None, progress=True, log=print, replan=False):
        calls.append(spec)

        class Report:
            failures = []
        return Report()

    monkeypatch.setattr(gapkit.sweep, "run_sweep", fake)
    monkeypatch.setattr("gapkit.sweep.table.build_table", lambda d: pd.DataFrame(columns=COLUMNS))
    return calls


def test_an_extended_sweep_reuses_its_folder_and_a_replanned_one_says_so(tmp_path, monkeypatch, capsys):
    started_sweep(seeds=[0, 1])(tmp_path)  # more seeds: every earlier run is still planned
    calls = _stub_run_sweep(monkeypatch)
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--quiet"]) == 0 and len(calls) == 1
    write_sweep(seeds=[1])(tmp_path)  # seed 0's started run would drop out
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"]) == 0
    assert "Note: " in capsys.readouterr().out
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--quiet"]) == 2 and len(calls) == 1
    assert "settings changed: seeds" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--quiet", "--replan"]) == 0 and len(calls) == 2
    assert "1 run(s) of its earlier plan are left out" in capsys.readouterr().err


def test_run_sweep_itself_refuses_a_plan_that_drops_started_runs(tmp_path):
    """The guard is in run_sweep, so the quickstart, notebooks and scripts get it as gapkit sweep does."""
    from gapkit.sweep import run_sweep

    started_sweep(seeds=[1])(tmp_path)
    spec = SweepSpec.from_file(tmp_path / "sweep.yaml")
    before = (Path(spec.output_dir) / "plan.json").read_text()
    with pytest.raises(ConfigError, match="settings changed: seeds"):
        run_sweep(spec, progress=False)
    assert (Path(spec.output_dir) / "plan.json").read_text() == before  # nothing written


# ----------------------------------------------------------------------------------------------------
# The verdicts' rules, used by every reader
# ----------------------------------------------------------------------------------------------------
def test_a_loss_is_oriented_everywhere_a_best_is_chosen():
    from gapkit.analysis.plots import pareto_front
    from gapkit.analysis.verdicts import default_metric, orientation, top_teacher

    assert orientation("relation") == -1.0 and orientation("score") == 1.0
    assert top_teacher([0.3, 0.1, 0.2], "relation") == 1 and top_teacher([0.3, 0.1, 0.3], "score") == 0
    points = pd.DataFrame(dict(gflops=[1.0, 2.0, 3.0], mean=[0.5, 0.4, 0.6], metric="relation"))
    assert list(pareto_front(points).gflops) == [1.0, 2.0]  # a lower loss at more compute is on the front
    assert list(pareto_front(points.assign(metric="score")).gflops) == [1.0, 3.0]
    assert default_metric("conll", {"f1", "score"}) == "f1" and default_metric("mine", {"relation"}) == "relation"
    assert default_metric("sst2", {"accuracy", "score"}) == "score" and default_metric("x", {"loss"}) is None
